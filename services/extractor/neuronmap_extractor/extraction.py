"""One extraction, from a request to a committed run in the lake. Knows nothing of gRPC or job queues.

    prepared = prepare(request, registry, settings)     # checks everything it can without weights
    lake.has_run(prepared.run_id)                       # a complete run is served as it is
    outcome = execute(prepared, loaded_model, lake, ...)

`prepare` resolves the model and its points on a weightless (meta-device) copy, so a bad request fails
at once, and computes the run id: a hash of everything that determines the stored bytes.
`execute` tokenises, checks the hooks against a plain forward pass on the first prompt, then runs
length-sorted batches window by window, handing each window to the background writer.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from neuronmap.errors import Cancelled, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from neuronmap.lake import REDUCTIONS, STORAGE_DTYPES, Lake, PointInfo, RunWriter
from neuronmap.settings import Settings
from neuronmap_extractor.batching import Tokenized, pad, plan_batches, plan_windows, tokenize
from neuronmap_extractor.capture import AxisRows, Capture, Collect, WindowBuffers
from neuronmap_extractor.discovery import ModelMap, Site, hidden_size
from neuronmap_extractor.loading import (
    LoadedModel,
    context_length,
    meta_model,
    model_kind,
    weights_location,
)
from neuronmap_extractor.registry import ModelSpec, Registry
from neuronmap_extractor.writer import make_writer, writer_mode

RUN_FORMAT = 1
MAX_BATCH_SIZE = 4096
STORAGE_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass(frozen=True)
class ExtractionRequest:
    model: str
    prompts: tuple[str, ...]
    points: tuple[str, ...]
    reduction: str = "tokens"
    dtype: str = "float16"
    batch_size: int = 0
    max_length: int = 0
    decoder_targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prepared:
    """A request checked against the model's structure, with the id of the run it produces."""

    request: ExtractionRequest
    spec: ModelSpec
    config: PretrainedConfig
    kind: str
    location: str
    revision: str
    sites: tuple[Site, ...]
    max_length: int
    batch_size: int
    run_spec: dict[str, Any]
    run_id: str
    parameters_run: int = 0  # multiplied per token (for time estimates)
    warnings: tuple[str, ...] = ()

    @property
    def needs_decoder(self) -> bool:
        return any(site.axis == "decoder_tokens" for site in self.sites)


@dataclass
class Progress:
    batches_done: int = 0
    batches_total: int = 0
    prompts_done: int = 0
    prompts_total: int = 0
    tokens_done: int = 0
    tokens_total: int = 0
    tokens_per_second: float = 0.0
    eta_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    def advance(self, tokens: int, compute_seconds: float, elapsed_seconds: float) -> None:
        """One more batch of `tokens` done; the rate counts compute time since the first batch."""
        self.batches_done += 1
        self.tokens_done += tokens
        self.elapsed_seconds = elapsed_seconds
        self.tokens_per_second = self.tokens_done / compute_seconds if compute_seconds > 0 else 0.0
        remaining = self.tokens_total - self.tokens_done
        self.eta_seconds = remaining / self.tokens_per_second if self.tokens_per_second else 0.0


@dataclass
class Outcome:
    run_id: str
    uri: str
    points: list[PointInfo]
    n_rows: dict[str, int]
    truncated: int
    resumed_from: int
    progress: Progress
    provenance: dict[str, Any] = field(default_factory=dict)


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate(request: ExtractionRequest, settings: Settings) -> None:
    if not request.prompts:
        raise InvalidArgument("no prompts to extract (is the question file empty?)")
    if len(request.prompts) > settings.max_prompts:
        raise ResourceExhausted(
            f"{len(request.prompts)} prompts exceed this server's limit of {settings.max_prompts} per request"
        )
    if not request.points:
        raise InvalidArgument("no points asked for: name hook points (blocks.3.resid_post) or module paths")
    if request.reduction not in REDUCTIONS:
        raise InvalidArgument(f"reduction {request.reduction!r} is not one of {', '.join(REDUCTIONS)}")
    if request.dtype not in STORAGE_DTYPES:
        raise InvalidArgument(f"dtype {request.dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
    if not 0 <= request.batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgument(f"batch size {request.batch_size} is outside 1..{MAX_BATCH_SIZE}")
    if request.max_length < 0:
        raise InvalidArgument(f"max length {request.max_length} is negative")
    if request.decoder_targets and len(request.decoder_targets) != len(request.prompts):
        raise InvalidArgument(
            f"{len(request.decoder_targets)} decoder targets for {len(request.prompts)} prompts: "
            "give one per prompt"
        )


def prepare(
    request: ExtractionRequest,
    registry: Registry,
    settings: Settings,
    model_maps: dict[tuple[str, str], ModelMap] | None = None,
) -> Prepared:
    """Checks a request against the model's structure (no weights) and computes its run id.

    `model_maps` caches the structure of models already seen, keyed by (location, revision).
    """
    validate(request, settings)
    spec = registry.resolve(request.model)
    location, revision = weights_location(spec, settings)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=False, revision=spec.revision or None)
    except OSError as error:
        reason = str(error).splitlines()[0]
        if spec.in_registry:
            raise NotFound(
                f"registry model {spec.key!r} ({spec.hf_id}) has no weights here and could not download them "
                f"({reason}); download it into the Hugging Face cache on this server first"
            ) from None
        raise NotFound(
            f"model {request.model!r} is not a registry key, a local folder, or a model this server can load "
            f"({reason}){registry.nearest_keys(request.model)}"
        ) from None
    revision = revision or str(getattr(config, "_commit_hash", "") or "unknown")
    family = registry.family(config.model_type)
    kind = model_kind(config, family)
    key = (location, revision)
    model_map = (model_maps or {}).get(key)
    if model_map is None:
        model_map = ModelMap(meta_model(config, kind), config, family)
        if model_maps is not None:
            model_maps[key] = model_map
    sites: dict[str, Site] = {}
    problems = []
    for name in request.points:
        try:
            site = model_map.resolve(name)
        except InvalidArgument as error:
            problems.append(str(error))
            continue
        sites.setdefault(site.name, site)
    if problems:
        raise InvalidArgument("; ".join(problems))
    if request.decoder_targets and not any(s.axis == "decoder_tokens" for s in sites.values()):
        raise InvalidArgument("decoder targets were given but no decoder point was asked for")
    warnings = []
    context = context_length(spec, config, None)
    max_length = request.max_length or context
    if max_length > context:
        warnings.append(f"max length {max_length} exceeds the model's context of {context}; using {context}")
        max_length = context
    batch_size = request.batch_size or spec.batch_size
    decoder_input = "none"
    if any(s.axis == "decoder_tokens" for s in sites.values()):
        decoder_input = (
            f"start token + targets sha256:{_sha256_json(list(request.decoder_targets))}"
            if request.decoder_targets
            else "start token"
        )
    run_spec = {
        "format": RUN_FORMAT,
        "model": spec.key,
        "model_id": spec.hf_id,
        "revision": revision,
        "points": list(sites),
        "modules": {name: f"{s.module_path}:{s.kind}" for name, s in sites.items()},
        "reduction": request.reduction,
        "dtype": request.dtype,
        "max_length": max_length,
        "n_prompts": len(request.prompts),
        "prompts_sha256": _sha256_json(list(request.prompts)),
        "decoder_input": decoder_input,
    }
    hashed = {k: v for k, v in run_spec.items() if k != "model"}  # a key and its hub id are the same bytes
    hashed["points"] = sorted(sites)
    return Prepared(
        request=request,
        spec=spec,
        config=config,
        kind=kind,
        location=location,
        revision=revision,
        sites=tuple(sites.values()),
        max_length=max_length,
        batch_size=batch_size,
        run_spec=run_spec,
        run_id="run-" + _sha256_json(hashed)[:24],
        parameters_run=model_map.parameters_run(list(sites.values())),
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class DryRun:
    """What an extraction would do, found by tokenising only."""

    prompts: int
    tokens: int
    bytes_to_write: int
    estimated_seconds: float
    truncated: int
    basis: str


def dry_run(
    prepared: Prepared, tokenizer: PreTrainedTokenizerBase, seconds_per_token_parameter: float, basis: str
) -> DryRun:
    """Sizes and a time estimate: tokens x parameters run x a rate (measured, or from a matmul rate)."""
    tokens = tokenize(tokenizer, prepared.request.prompts, prepared.max_length)
    n_tokens = int(tokens.lengths.sum())
    n_prompts = len(prepared.request.prompts)
    itemsize = STORAGE_ITEMSIZE[prepared.request.dtype]
    rows = n_tokens if prepared.request.reduction == "tokens" else n_prompts
    width = hidden_size(prepared.config)
    activations = sum(rows * (site.width if site.width > 0 else width) * itemsize for site in prepared.sites)
    token_bytes = 4 * n_tokens + 8 * (n_prompts + 1)
    seconds = seconds_per_token_parameter * n_tokens * prepared.parameters_run
    return DryRun(n_prompts, n_tokens, activations + token_bytes, seconds, len(tokens.truncated), basis)


def tokenize_decoder(
    loaded: LoadedModel, targets: Sequence[str], n_prompts: int, max_length: int
) -> list[np.ndarray]:
    """Decoder inputs: the start token, then each target's tokens (teacher forcing), truncated."""
    start = getattr(loaded.config, "decoder_start_token_id", None)
    if start is None:
        raise FailedPrecondition(f"model {loaded.spec.key} has no decoder_start_token_id in its config")
    if not targets:
        return [np.array([start], dtype=np.int32) for _ in range(n_prompts)]
    encoded = loaded.tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    return [np.asarray([start, *ids[: max_length - 1]], dtype=np.int32) for ids in encoded]


class _Forward:
    """Calls the model the way its kind needs, skipping the decoder when only encoder points are read."""

    def __init__(self, loaded: LoadedModel, needs_decoder: bool) -> None:
        self.loaded = loaded
        self.needs_decoder = needs_decoder
        self._accepts_use_cache = "use_cache" in inspect.signature(loaded.model.forward).parameters

    def __call__(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        decoder: tuple[torch.Tensor, torch.Tensor] | None,
        output_hidden_states: bool = False,
    ) -> Any:
        model = self.loaded.model
        device = self.loaded.device
        inputs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        if output_hidden_states:
            inputs["output_hidden_states"] = True
        if self.loaded.kind == "seq2seq" and not self.needs_decoder:
            return model.get_encoder()(**inputs)  # type: ignore[operator]
        if decoder is not None:
            inputs["decoder_input_ids"] = decoder[0].to(device)
            inputs["decoder_attention_mask"] = decoder[1].to(device)
        if self._accepts_use_cache:
            inputs["use_cache"] = False
        return model(**inputs)


def _pad_id(loaded: LoadedModel) -> int:
    for value in (loaded.tokenizer.pad_token_id, getattr(loaded.config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return 0  # masked out anyway; any valid id will do


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("neuronmap", "torch", "transformers", "zarr", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class _Batcher:
    """Pads batches and runs them through a Capture, splitting a batch that runs out of GPU memory."""

    capture: Capture
    forward: _Forward
    token_ids: list[np.ndarray]
    decoder_ids: list[np.ndarray] | None
    pad_id: int

    def run(self, prompts: np.ndarray, window: WindowBuffers) -> None:
        """Places the batch of (global) prompts into the window; halves it on CUDA out-of-memory."""
        try:
            self._run_once(prompts, window)
        except torch.cuda.OutOfMemoryError:
            if len(prompts) == 1:
                raise _does_not_fit(len(self.token_ids[int(prompts[0])])) from None
            torch.cuda.empty_cache()
            half = len(prompts) // 2
            self.run(prompts[:half], window)
            self.run(prompts[half:], window)

    def _run_once(self, prompts: np.ndarray, window: WindowBuffers) -> None:
        input_ids, mask = pad([self.token_ids[int(p)] for p in prompts], self.pad_id)
        axes = {"tokens": AxisRows.from_mask(mask.to(self.forward.loaded.device))}
        decoder = None
        if self.decoder_ids is not None:
            decoder = pad([self.decoder_ids[int(p)] for p in prompts], self.pad_id)
            axes["decoder_tokens"] = AxisRows.from_mask(decoder[1].to(self.forward.loaded.device))
        self.capture.run(lambda: self.forward(input_ids, mask, decoder), axes, window.placer(prompts))


def _does_not_fit(n_tokens: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"one prompt of {n_tokens} tokens does not fit in GPU memory: "
        "lower max_length, or free the device (other models in the pool, other processes)"
    )


def _reference_check(
    loaded: LoadedModel,
    prepared: Prepared,
    forward: _Forward,
    token_ids: list[np.ndarray],
    decoder_ids: list[np.ndarray] | None,
) -> tuple[dict[str, int], dict[str, np.ndarray], dict[str, Any]]:
    """Runs prompt 0 alone with every hook and output_hidden_states, without stopping early.

    Returns each site's width, its values for prompt 0 (to compare with the same prompt inside its
    batch later), and the largest difference between resid_post/embed hooks and the hidden states.
    """
    capture = Capture(loaded.model, prepared.sites, stop_early=False)
    collect = Collect()
    input_ids, mask = pad([token_ids[0]], _pad_id(loaded))
    axes = {"tokens": AxisRows.from_mask(mask.to(loaded.device))}
    decoder = None
    if decoder_ids is not None:
        decoder = pad([decoder_ids[0]], _pad_id(loaded))
        axes["decoder_tokens"] = AxisRows.from_mask(decoder[1].to(loaded.device))
    result: dict[str, Any] = {}

    def run() -> None:
        result["output"] = forward(input_ids, mask, decoder, output_hidden_states=True)

    try:
        with capture:
            capture.run(run, axes, collect)
    except torch.cuda.OutOfMemoryError:
        raise _does_not_fit(len(token_ids[0])) from None
    alone = collect.values
    widths = {name: int(values.shape[-1]) for name, values in alone.items()}
    output = result.get("output")
    compared: dict[str, float] = {}
    hidden = getattr(output, "hidden_states", None) or getattr(output, "encoder_hidden_states", None)
    if hidden is not None:
        n_blocks = len(hidden) - 1
        for site in prepared.sites:
            if site.stack == "decoder":
                continue
            bare = site.name.removeprefix("encoder.")
            index = None
            if bare == "embed":
                index = 0
            elif bare.startswith("blocks.") and bare.endswith(".resid_post"):
                block = int(bare.split(".")[1])
                # The last hidden state is often taken after the final norm: compare the others.
                index = block + 1 if block < n_blocks - 1 else None
            if index is not None:
                reference = hidden[index][0].to(torch.float32).cpu().numpy()
                compared[site.name] = float(np.max(np.abs(reference - alone[site.name])))
    check = {
        "prompt": 0,
        "reference": "output_hidden_states of a plain forward pass on prompt 0 alone",
        "points_compared": sorted(compared),
        "max_abs_diff_hidden_states": max(compared.values()) if compared else None,
    }
    return widths, alone, check


def execute(
    prepared: Prepared,
    loaded: LoadedModel,
    lake: Lake,
    *,
    window_bytes: int,
    writer: str = "auto",
    on_start: Callable[[RunWriter, int, int], None] = lambda *_: None,
    on_progress: Callable[[Progress], None] = lambda _: None,
    on_commit: Callable[[int], None] = lambda _: None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Extracts every prompt not yet committed into the run `prepared.run_id` and completes it.

    Calls on_start(run, resumed_from, truncated prompts) once the run exists in the lake, on_progress
    after every batch, on_commit(committed prompts) after every stored window (from the writer thread).
    """
    request = prepared.request
    started = time.monotonic()
    tokens = tokenize(loaded.tokenizer, request.prompts, prepared.max_length)
    decoder_ids = (
        tokenize_decoder(loaded, request.decoder_targets, len(request.prompts), prepared.max_length)
        if prepared.needs_decoder
        else None
    )
    forward = _Forward(loaded, prepared.needs_decoder)
    widths, alone, check = _reference_check(loaded, prepared, forward, tokens.ids, decoder_ids)
    points = [
        PointInfo(
            s.name,
            widths[s.name],
            s.module_path,
            s.kind,
            s.axis if request.reduction == "tokens" else "tokens",
        )
        for s in prepared.sites
    ]
    run, resumed_from = _open_or_create(prepared, lake, request, tokens, decoder_ids, points)
    mode = writer_mode(writer, loaded.device)
    on_start(run, resumed_from, len(tokens.truncated))
    provenance: dict[str, Any] = {
        "versions": library_versions(),
        "model": prepared.spec.key,
        "model_id": loaded.model_id,
        "revision": loaded.revision,
        "compute_dtype": str(loaded.dtype).removeprefix("torch."),
        "storage_dtype": request.dtype,
        "device": str(loaded.device),
        "batch_size": prepared.batch_size,
        "writer": mode,
        "truncated_prompts": len(tokens.truncated),
        "reference_check": check,
    }
    lengths = tokens.lengths
    batch_plan = _plan(run, points, prepared.batch_size, window_bytes, resumed_from)
    progress = Progress(
        batches_total=sum(len(b) for _, _, b in batch_plan),
        prompts_total=len(lengths),
        prompts_done=resumed_from,
        tokens_total=int(lengths[resumed_from:].sum()),
    )
    on_progress(progress)
    batcher = _Batcher(
        Capture(loaded.model, prepared.sites),
        forward,
        tokens.ids,
        decoder_ids,
        _pad_id(loaded),
    )
    storer = make_writer(run, on_commit, mode)
    largest = _largest_rows(run, points, [(p0, p1) for p0, p1, _ in batch_plan])
    free: list[Mapping[str, torch.Tensor]] = []
    previous: WindowBuffers | None = None
    compute_start = time.monotonic()
    try:
        with batcher.capture:
            for p0, p1, batches in batch_plan:
                storage = free.pop() if free else WindowBuffers.allocate(run, points, largest)
                window = WindowBuffers(run, points, p0, p1, storage)
                for local in batches:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(
                            f"run {prepared.run_id} cancelled after {progress.prompts_done} prompts; "
                            "the committed ones stay, and the same request resumes it"
                        )
                    batcher.run(local + p0, window)
                    now = time.monotonic()
                    progress.advance(int(lengths[local + p0].sum()), now - compute_start, now - started)
                    on_progress(progress)
                if p0 == 0:
                    check["max_abs_diff_batched_vs_alone"] = _batched_vs_alone(window, alone)
                storer.submit(p0, p1, window.arrays())
                # Once submit returns, an inline writer is done with this window and a background one
                # with the one before: their memory takes the next window's activations.
                stored, previous = (window, None) if mode == "inline" else (previous, window)
                if stored is not None:
                    free.append(stored.storage)
                progress.prompts_done = p1
    finally:
        storer.close()
    seconds = time.monotonic() - started
    provenance.update(
        seconds=round(seconds, 3),
        tokens_per_second=round(progress.tokens_per_second, 1),
        resumed_from_prompt=resumed_from,
    )
    run.set_status("complete", provenance=provenance)
    progress.elapsed_seconds = seconds
    progress.eta_seconds = 0.0
    on_progress(progress)
    return Outcome(
        run_id=prepared.run_id,
        uri=run.uri,
        points=points,
        n_rows={p.name: run.layout.n_rows(p) for p in points},
        truncated=len(tokens.truncated),
        resumed_from=resumed_from,
        progress=progress,
        provenance=provenance,
    )


def _plan(
    run: RunWriter, points: Sequence[PointInfo], batch_size: int, window_bytes: int, resumed_from: int
) -> list[tuple[int, int, list[np.ndarray]]]:
    """(p0, p1, batches of prompt indices relative to p0) for every window still to do.

    Windows are planned from prompt 0 even on resume: the same windows give the same batches, and so
    the same bytes as an uninterrupted run (which prompts share a batch changes float rounding).
    """
    n_prompts = run.layout.n_prompts
    itemsize = STORAGE_ITEMSIZE[run.layout.dtype]
    per_prompt_bytes = np.zeros(n_prompts, dtype=np.int64)
    for point in points:
        rows = np.diff(run.offsets(point.axis)) if run.layout.reduction == "tokens" else 1
        per_prompt_bytes += rows * point.width * itemsize
    budget = max(1, window_bytes)
    windows = [w for w in plan_windows(per_prompt_bytes, 0, budget, batch_size) if w[0] >= resumed_from]
    if resumed_from and (not windows or windows[0][0] != resumed_from):  # the settings changed
        windows = plan_windows(per_prompt_bytes, resumed_from, budget, batch_size)
    lengths = np.diff(run.offsets("tokens"))
    return [(p0, p1, plan_batches(lengths[p0:p1], batch_size)) for p0, p1 in windows]


def _largest_rows(
    run: RunWriter, points: Sequence[PointInfo], windows: Sequence[tuple[int, int]]
) -> dict[str, int]:
    """The most rows any of the windows needs, per point (the size of the reused window storage)."""
    largest = dict.fromkeys((p.name for p in points), 0)
    for p0, p1 in windows:
        for point in points:
            r0, r1 = run.rows_of(p0, p1, point.axis)
            largest[point.name] = max(largest[point.name], r1 - r0)
    return largest


def _batched_vs_alone(window: WindowBuffers, alone: dict[str, np.ndarray]) -> float:
    """Largest difference between prompt 0 inside its batch and prompt 0 run alone (tokens runs)."""
    if window.reduction != "tokens":
        return float("nan")
    worst = 0.0
    for name, tensor in window.tensors.items():
        rows = len(alone[name])
        batched = tensor[:rows].to(torch.float32).numpy()
        reference = torch.from_numpy(alone[name]).to(tensor.dtype).to(torch.float32).numpy()
        worst = max(worst, float(np.max(np.abs(batched - reference))))
    return worst


def _open_or_create(
    prepared: Prepared,
    lake: Lake,
    request: ExtractionRequest,
    tokens: Tokenized,
    decoder_ids: list[np.ndarray] | None,
    points: list[PointInfo],
) -> tuple[RunWriter, int]:
    """Resumes a run of the same spec from its committed prompts, or creates it."""
    if lake.has_run(prepared.run_id):
        run = lake.open_run_for_write(prepared.run_id)
        same_points = [asdict(p) for p in run.layout.points] == [asdict(p) for p in points]
        if run.spec == prepared.run_spec and same_points and run.status != "complete":
            return run, run.committed_prompts
        if run.status == "complete":
            raise FailedPrecondition(f"run {prepared.run_id} is already complete")
    run = lake.create_run(
        prepared.run_id,
        spec=prepared.run_spec,
        prompts=request.prompts,
        token_ids=tokens.ids,
        points=points,
        reduction=request.reduction,
        dtype=request.dtype,
        decoder_token_ids=decoder_ids if any(p.axis == "decoder_tokens" for p in points) else None,
    )
    return run, 0
