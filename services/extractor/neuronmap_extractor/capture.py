"""Reading many points in one forward pass, and stopping the pass once the last one is read.

A `Capture` hooks the modules of the requested sites. During a forward pass each hook takes its tensor
`[batch, tokens, width]`, drops padding (or reduces over real tokens), converts to the storage dtype and
keeps the result; once every site has fired it raises `_Stop`, so the rest of the network (later
blocks, the LM head) never runs. Nothing the caller did not ask for is computed or kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neuronmap.errors import InvalidArgument
from neuronmap_extractor.discovery import Site

TORCH_STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class _Stop(Exception):
    """Raised by the last hook: everything asked for is in hand."""


@dataclass(frozen=True)
class AxisRows:
    """Which positions of one padded token axis are real.

    mask `[batch, tokens]` bool; lengths `[batch]`; flat `[real tokens]` indices into the flattened
    `[batch * tokens]` positions, prompt by prompt (the stored row order).
    """

    mask: torch.Tensor
    lengths: torch.Tensor
    flat: torch.Tensor

    @staticmethod
    def from_mask(mask: torch.Tensor) -> AxisRows:
        mask = mask.bool()
        return AxisRows(mask=mask, lengths=mask.sum(dim=1), flat=mask.reshape(-1).nonzero().squeeze(1))


def to_storage(values: torch.Tensor, dtype: str) -> np.ndarray:
    """A CPU numpy array in the lake's stored form (bfloat16 as uint16 bit patterns)."""
    if dtype == "bfloat16":
        return values.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    return values.to(TORCH_STORAGE[dtype]).cpu().numpy()


def _tensor_of(value: Any) -> Any:
    return value[0] if isinstance(value, tuple | list) and value else value


class Capture:
    """Hooks reading `sites` from `model`; use as a context manager around `run` calls."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[Site], reduction: str, dtype: str) -> None:
        self.model = model
        self.sites = list(sites)
        self.reduction = reduction
        self.dtype = dtype
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._axes: Mapping[str, AxisRows] = {}
        self._out: dict[str, np.ndarray] = {}
        self.stop_early = True

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
        if site.name in self._out:
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
        self._out[site.name] = to_storage(self._reduce(value.detach(), rows), self.dtype)
        if self.stop_early and len(self._out) == len(self.sites):
            raise _Stop

    def _reduce(self, x: torch.Tensor, rows: AxisRows) -> torch.Tensor:
        """`[batch, tokens, d]` -> `[real tokens, d]` ("tokens") or `[batch, d]` ("mean", "last")."""
        if self.reduction == "tokens":
            return x.reshape(-1, x.shape[-1]).index_select(0, rows.flat)
        if self.reduction == "mean":
            weights = rows.mask.unsqueeze(-1).to(torch.float32)
            return (x.to(torch.float32) * weights).sum(dim=1) / rows.lengths.unsqueeze(-1).to(torch.float32)
        return x[torch.arange(x.shape[0], device=x.device), rows.lengths - 1]

    def run(self, forward: Callable[[], Any], axes: Mapping[str, AxisRows]) -> dict[str, np.ndarray]:
        """Runs `forward` (one pass over a batch) and returns each site's rows, by name.

        Rows are in batch order: prompt 0's real tokens, then prompt 1's... (`[real tokens, d]`), or one
        row per prompt for reduced runs (`[batch, d]`).
        """
        self._axes = axes
        self._out = {}
        try:
            with torch.inference_mode():
                forward()
        except _Stop:
            pass
        missing = [s.name for s in self.sites if s.name not in self._out]
        if missing:
            raise InvalidArgument(f"points {missing} were never produced by a forward pass of this model")
        out, self._out = self._out, {}
        return out
