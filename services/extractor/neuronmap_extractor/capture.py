"""Reading many points in one forward pass, and stopping the pass once the last one is read.

A `Capture` hooks the modules of the requested sites. During a forward pass each hook hands its padded
tensor `[batch, tokens, width]` to a placer, which keeps what is wanted of it; once every site has fired
the last hook raises `_Stop`, so the rest of the network (later blocks, the LM head) never runs.

`WindowBuffers` is the placer of an extraction: it copies each prompt's real tokens (or their mean, or
the last one) straight into the window's storage-dtype buffer, casting on the way, so an activation is
read once and written once: no padded copy, no float32 intermediate, no second scatter pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from neuronmap.errors import InvalidArgument
from neuronmap.lake import PointInfo, RunReader
from neuronmap_extractor.discovery import Site

TORCH_STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class _Stop(Exception):
    """Raised by the last hook: everything asked for is in hand."""


@dataclass(frozen=True)
class AxisRows:
    """Which positions of one padded token axis are real (always a prefix: batches are right-padded).

    mask `[batch, tokens]` bool; lengths `[batch]`; flat `[real tokens]` indices into the flattened
    `[batch * tokens]` positions, prompt by prompt.
    """

    mask: torch.Tensor
    lengths: torch.Tensor
    flat: torch.Tensor

    @staticmethod
    def from_mask(mask: torch.Tensor) -> AxisRows:
        mask = mask.bool()
        return AxisRows(mask=mask, lengths=mask.sum(dim=1), flat=mask.reshape(-1).nonzero().squeeze(1))


class Placer(Protocol):
    def __call__(self, site: Site, x: torch.Tensor, rows: AxisRows) -> None:
        """Keeps what is wanted of a site's padded output `x` `[batch, tokens, width]`."""


def _tensor_of(value: Any) -> Any:
    return value[0] if isinstance(value, tuple | list) and value else value


class Capture:
    """Hooks reading `sites` from `model`; use as a context manager around `run` calls."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[Site], stop_early: bool = True) -> None:
        self.model = model
        self.sites = list(sites)
        self.stop_early = stop_early
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._axes: Mapping[str, AxisRows] = {}
        self._place: Placer | None = None
        self._fired: set[str] = set()

    def __enter__(self) -> Capture:
        modules = dict(self.model.named_modules())
        for site in self.sites:
            module = modules[site.module_path]
            if site.kind == "input":
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(site), with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._hook(site)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre_hook(self, site: Site) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._take(site, args[0] if args else kwargs.get("hidden_states"))

        return hook

    def _hook(self, site: Site) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._take(site, _tensor_of(output))

        return hook

    def _take(self, site: Site, value: Any) -> None:
        if site.name in self._fired or self._place is None:
            return  # a module run twice in one pass (shared weights): the first call is the point
        rows = self._axes[site.axis]
        batch, tokens = rows.mask.shape
        if (
            not isinstance(value, torch.Tensor)
            or value.dim() != 3
            or tuple(value.shape[:2]) != (batch, tokens)
        ):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidArgument(
                f"{site.name} ({site.module_path}) gives {shape}, "
                f"not [batch, tokens, width] = [{batch}, {tokens}, ...]"
            )
        self._place(site, value.detach(), rows)
        self._fired.add(site.name)
        if self.stop_early and len(self._fired) == len(self.sites):
            raise _Stop

    def run(self, forward: Callable[[], Any], axes: Mapping[str, AxisRows], place: Placer) -> None:
        """Runs `forward` (one pass over a batch), handing every site's output to `place`."""
        self._axes, self._place, self._fired = axes, place, set()
        try:
            with torch.inference_mode():
                forward()
        except _Stop:
            pass
        finally:
            self._place = None
        missing = [s.name for s in self.sites if s.name not in self._fired]
        if missing:
            raise InvalidArgument(f"points {missing} were never produced by a forward pass of this model")


class Collect:
    """A placer keeping the first prompt's real tokens of each site as float32: `[tokens, width]`."""

    def __init__(self) -> None:
        self.values: dict[str, np.ndarray] = {}

    def __call__(self, site: Site, x: torch.Tensor, rows: AxisRows) -> None:
        n = int(rows.lengths[0])
        self.values[site.name] = x[0, :n].to(torch.float32).cpu().numpy()


class WindowBuffers:
    """The activations of one window of prompts [p0, p1), in the stored dtype, filled batch by batch.

    One tensor per point: `[rows of the window, width]`, rows in prompt order (token rows for
    reduction "tokens", else one per prompt), sliced from `storage` (see `allocate`): windows reuse
    the same memory, which spares the kernel from faulting in and zeroing hundreds of MiB per window.
    """

    def __init__(
        self,
        run: RunReader,
        points: Sequence[PointInfo],
        p0: int,
        p1: int,
        storage: Mapping[str, torch.Tensor],
    ) -> None:
        self.run = run
        self.points = {p.name: p for p in points}
        self.p0 = p0
        self.reduction = run.layout.reduction
        self.storage = storage
        self.tensors: dict[str, torch.Tensor] = {}
        for point in points:
            r0, r1 = run.rows_of(p0, p1, point.axis)
            self.tensors[point.name] = storage[point.name][: r1 - r0]

    @staticmethod
    def allocate(
        run: RunReader, points: Sequence[PointInfo], rows: Mapping[str, int]
    ) -> dict[str, torch.Tensor]:
        """Storage for windows of up to `rows[point]` rows: `[rows, width]` in the stored dtype."""
        dtype = TORCH_STORAGE[run.layout.dtype]
        return {p.name: torch.empty((rows[p.name], p.width), dtype=dtype) for p in points}

    def arrays(self) -> dict[str, np.ndarray]:
        """numpy views of the buffers in the lake's stored form (bfloat16 as uint16 bit patterns)."""
        if self.run.layout.dtype == "bfloat16":
            return {k: t.view(torch.int16).numpy().view(np.uint16) for k, t in self.tensors.items()}
        return {k: t.numpy() for k, t in self.tensors.items()}

    def placer(self, prompts: np.ndarray) -> Placer:
        """The placer for one batch whose rows are the (global) prompts `prompts`, in batch order."""
        spans: dict[str, list[tuple[int, int]]] = {}  # axis -> (window row, length) of each batch row
        for point in self.points.values():
            if point.axis not in spans and self.reduction == "tokens":
                offsets = self.run.offsets(point.axis)
                base = int(offsets[self.p0])
                spans[point.axis] = [
                    (int(offsets[p]) - base, int(offsets[p + 1] - offsets[p])) for p in prompts
                ]
        destinations = torch.from_numpy(np.asarray(prompts, dtype=np.int64) - self.p0)

        def place(site: Site, x: torch.Tensor, rows: AxisRows) -> None:
            buffer = self.tensors[site.name]
            if self.reduction == "mean":
                weights = rows.mask.unsqueeze(-1).to(torch.float32)
                mean = (x.to(torch.float32) * weights).sum(dim=1) / rows.lengths.unsqueeze(-1).to(
                    torch.float32
                )
                buffer.index_copy_(0, destinations, mean.to(buffer.dtype).cpu())
            elif self.reduction == "last":
                last = x[torch.arange(x.shape[0], device=x.device), rows.lengths - 1]
                buffer.index_copy_(0, destinations, last.to(buffer.dtype).cpu())
            elif x.device.type == "cpu":
                # One fused copy-and-cast per prompt, straight from the padded activation.
                for b, (start, n) in enumerate(spans[site.axis]):
                    buffer[start : start + n].copy_(x[b, :n])
            else:
                # On a GPU: gather and cast there, cross to the host once, then place the prompts.
                real = x.reshape(-1, x.shape[-1]).index_select(0, rows.flat).to(buffer.dtype).cpu()
                read = 0
                for start, n in spans[site.axis]:
                    buffer[start : start + n].copy_(real[read : read + n])
                    read += n

        return place
