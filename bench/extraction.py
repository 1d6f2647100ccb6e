"""Extraction speed: NeuronMap against a bare forward pass, and against the tools people use instead.

    .venv/bin/python bench/extraction.py [--questions 256] [--repeats 3] [--skip-optional] [--out FILE]

What it measures (issue 3, "Speed and memory"): SmolLM2-135M on the CPU with 2 threads, deterministic
questions of 100-155 tokens, wall time of

  a  bare      `AutoModelForCausalLM` forward, logits computed, as a user would run it (the baseline)
  b  hidden    the same forward with output_hidden_states=True
  c  nm30      NeuronMap `execute`: all 30 blocks.{i}.resid_post, fp16, into a fresh local lake
               (its writer mode "auto": inline here, where torch's threads own both cores)
  d  nm6       NeuronMap `execute`: blocks 0-5 resid_post only
  e  nm30bg    as c, with the background writer forced (NEURONMAP_WRITER=background)
  f  tlens     TransformerLens `TransformerBridge.run_with_cache`, names_filter = the 30 hook_resid_post
  g  nnsight   nnsight `trace` + `.save()` of the 30 decoder layers' outputs
  i  body      the base model's forward alone (`model.model` here: every block and the final norm, no
               LM head), with --body-variant: the floor for any tool that reads all 30 blocks

over the batches NeuronMap forms for the 30-point run (windows of consecutive prompts under the
extractor's window budget, length-sorted batches inside each window): the baselines (a, b, f, g) run
exactly those padded batches, and the benchmark checks that `execute` ran the same ones. NeuronMap's
time is end to end (tokenising, its reference check on prompt 0, creating the run, writing and
committing every window, marking the run complete); the baselines' is the forward passes alone, their
activations kept in memory as each tool hands them over. f and g run only when installed (the `bench`
extra); each gets its own copy of the model, loaded from the same converted folder as NeuronMap's (so the
same weights), because TransformerLens switches its model to eager attention in place. Before timing,
each alternative's activations on one batch are compared with what NeuronMap stored in a lake.

Repetitions are interleaved (a b c ... a b c ...) so a slow spell of the shared machine hits every
variant alike; the report gives the median and minimum of each, each one's ratio to the bare forward
(median/median, min/min, and the median of per-repetition ratios), and the issue's targets:
nm30 <= 0.85x and nm6 <= 0.35x of the bare forward. Speed is a goal, not an assert.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse
import gc
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from unittest import mock

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

from bench.common import (
    DEFAULT_MODEL_CACHE,
    MODEL_KEY,
    machine,
    make_questions,
    summary,
    table,
    write_results,
)
from neuronmap.lake import Lake, RunReader, RunWriter
from neuronmap.settings import Settings, load_settings
from neuronmap_extractor import extraction
from neuronmap_extractor.batching import Tokenized, pad, plan_batches, plan_windows, tokenize
from neuronmap_extractor.extraction import ExtractionRequest, Prepared, execute, prepare
from neuronmap_extractor.loading import LoadedModel, load_model
from neuronmap_extractor.registry import Registry

TARGETS = {"nm30": 0.85, "nm6": 0.35}
N_BLOCKS = 30
FEW_BLOCKS = 6


@dataclass(frozen=True)
class Timing:
    """Wall seconds, and CPU seconds of the whole process (every thread: torch's, the writer's)."""

    wall: float
    cpu: float


class Stopwatch:
    """Measures a block's wall and process CPU time: `with Stopwatch() as watch: ...; watch.timing`."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


@dataclass
class Variant:
    key: str
    label: str
    run: Callable[[], Timing]
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


class NoWriter:
    """The writers' interface, committing each window without writing it: the cost of the rest."""

    def __init__(self, run: RunWriter, on_commit: Callable[[int], None], mode: str) -> None:
        self._run = run
        self._on_commit = on_commit

    def submit(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        self._run.commit(p1)
        self._on_commit(p1)

    def close(self) -> None:
        pass


def resid_points(n: int) -> tuple[str, ...]:
    return tuple(f"blocks.{i}.resid_post" for i in range(n))


def pad_id(loaded: LoadedModel) -> int:
    """The pad id NeuronMap uses (any id would do: padding is masked out)."""
    for value in (loaded.tokenizer.pad_token_id, getattr(loaded.config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def neuronmap_batches(
    tokens: Tokenized, widths: Sequence[int], itemsize: int, window_bytes: int, batch_size: int
) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """The windows and batches (prompt indices) `execute` forms for a token-level run of these widths."""
    lengths = tokens.lengths
    per_prompt = lengths * int(sum(widths)) * itemsize
    windows = plan_windows(per_prompt, 0, max(1, window_bytes), batch_size)
    batches = [b + p0 for p0, p1 in windows for b in plan_batches(lengths[p0:p1], batch_size)]
    return windows, batches


def padded_positions(tokens: Tokenized, batches: Sequence[np.ndarray]) -> int:
    lengths = tokens.lengths
    return int(sum(len(b) * int(lengths[b].max()) for b in batches))


# ---- the variants ------------------------------------------------------------------------------


def time_batches(
    run_batch: Callable[[torch.Tensor, torch.Tensor], object],
    tokens: Tokenized,
    batches: Sequence[np.ndarray],
    pad_value: int,
) -> Timing:
    """run_batch(ids, mask) over the padded batches (padding included in the time, as NeuronMap pads
    too); what it returns is dropped at once, as a caller done with a batch would."""
    with Stopwatch() as watch, torch.inference_mode():
        for batch in batches:
            ids, mask = pad([tokens.ids[int(p)] for p in batch], pad_value)
            output = run_batch(ids, mask)
            del output
    return watch.timing


def hf_forward(model: torch.nn.Module, hidden: bool) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """A plain HF forward, logits computed (and every hidden state with `hidden`)."""
    return lambda ids, mask: model(
        input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=hidden
    )


def time_execute(
    prepared: Prepared,
    loaded: LoadedModel,
    lake_parent: Path,
    window_bytes: int,
    writer: str = "auto",
    no_write: bool = False,
    record: list[np.ndarray] | None = None,
) -> Timing:
    """NeuronMap `execute` into a fresh local lake (deleted afterwards, outside the time)."""
    folder = Path(tempfile.mkdtemp(prefix="lake-", dir=lake_parent))
    patches: list[AbstractContextManager[Any]] = [nullcontext()]
    if no_write:
        patches.append(mock.patch.object(extraction, "make_writer", NoWriter))
    if record is not None:
        record.clear()
        original = extraction._Batcher.run

        def recording(self: Any, prompts: np.ndarray, window: Any) -> None:
            record.append(np.array(prompts))
            original(self, prompts, window)

        patches.append(mock.patch.object(extraction._Batcher, "run", recording))
    try:
        for patch in patches:
            patch.__enter__()
        try:
            with Stopwatch() as watch:
                execute(prepared, loaded, Lake(str(folder)), window_bytes=window_bytes, writer=writer)
        finally:
            for patch in reversed(patches):
                patch.__exit__(None, None, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.sync()  # no writeback of this run's pages lands in the next variant's time
    return watch.timing


def load_transformer_lens(location: str, loaded: LoadedModel, attention: str) -> Any | None:
    """A TransformerBridge over its own copy of the model, or None when TransformerLens is absent."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    hf = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    hf.eval().requires_grad_(False)
    bridge = TransformerBridge.boot_transformers(
        location, device="cpu", dtype=torch.float32, hf_model=hf, tokenizer=loaded.tokenizer
    )
    if attention != "eager":  # boot_transformers switched the model to eager attention
        hf.set_attn_implementation(attention)
    bridge.eval()
    return bridge


def tl_batch(bridge: Any, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [f"blocks.{i}.hook_resid_post" for i in range(N_BLOCKS)]
    _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)
    return {f"blocks.{i}.resid_post": cache[name] for i, name in enumerate(names)}


def load_nnsight(location: str, loaded: LoadedModel) -> Any | None:
    """An nnsight model over its own copy of the weights, or None when nnsight is absent."""
    try:
        from nnsight.modeling.transformers import TransformersModel
    except ImportError:
        return None
    hf = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    hf.eval().requires_grad_(False)
    return TransformersModel(hf, task="text-generation", tokenizer=loaded.tokenizer)


def nnsight_batch(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    # nnsight reads this function's source to run the traced block: keep it a plain loop.
    saved: list[Any] = []
    with model.trace({"input_ids": ids, "attention_mask": mask}, use_cache=False):
        for i in range(N_BLOCKS):
            saved.append(model.model.layers[i].output.save())
    return {
        f"blocks.{i}.resid_post": value[0] if isinstance(value, tuple) else value
        for i, value in enumerate(saved)
    }


# ---- same work: each alternative's activations against what NeuronMap stored ---------------------


def compare(
    reader: RunReader, batch: np.ndarray, values: Mapping[str, torch.Tensor], lengths: np.ndarray
) -> dict[str, Any]:
    """How an alternative's `[B, T, d]` values differ from the fp16 rows NeuronMap stored.

    `max_rel`: largest |difference| over the largest |value| of that point in the batch (fp16 rounding
    alone gives up to 2**-11 of a value). `exact_fp16`: the alternative's values rounded to fp16 are the
    stored bytes; otherwise `differing` says how often they differ. Same work when max_rel <= 2**-10.
    """
    worst_abs = 0.0
    worst_rel = 0.0
    differing = 0
    total = 0
    per_point: dict[str, float] = {}
    for name, tensor in values.items():
        alt = tensor.detach().to(torch.float32).numpy()
        stored = np.concatenate([reader.array(name).prompt(int(p)) for p in batch])
        mine = np.concatenate([alt[row, : int(lengths[p])] for row, p in enumerate(batch)])
        diff = float(np.max(np.abs(mine - stored.astype(np.float32))))
        scale = float(np.max(np.abs(mine))) or 1.0
        differing += int(np.count_nonzero(mine.astype(np.float16) != stored))
        total += mine.size
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / scale)
        per_point[name] = diff / scale
    return {
        "points": len(values),
        "max_abs_diff": worst_abs,
        "max_rel": worst_rel,
        "exact_fp16": differing == 0,
        "differing": differing / max(1, total),
        "same_work": worst_rel <= 2**-10,
        "worst_point": max(per_point, key=lambda k: per_point[k]),
    }


# ---- the run -----------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-optional", action="store_true", help="leave out TransformerLens and nnsight")
    parser.add_argument("--only", default="", help="comma-separated variant keys (default: all)")
    parser.add_argument(
        "--tl-attention",
        default="eager",
        choices=("eager", "sdpa"),
        help="TransformerLens boots its model with eager attention; sdpa switches it back",
    )
    parser.add_argument(
        "--no-write-variant",
        action="store_true",
        help="add h nm30nowrite: as c with the windows never written (what the writes cost)",
    )
    parser.add_argument(
        "--body-variant",
        action="store_true",
        help="add i body: the base model without its LM head (the floor for reading every block)",
    )
    parser.add_argument("--model-cache-dir", default=DEFAULT_MODEL_CACHE)
    parser.add_argument("--window-mb", type=float, default=Settings.window_mb)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the registry's (16 for SmolLM2)")
    parser.add_argument("--lake-dir", default="", help="where fresh lakes go (default: bench/results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    settings = load_settings(env={}, model_cache_dir=args.model_cache_dir, window_mb=args.window_mb)
    window_bytes = int(settings.window_mb * (1 << 20))
    registry = Registry.load()
    info = machine("nnsight", "transformer-lens")
    info["torch_threads"] = torch.get_num_threads()

    spec = registry.resolve(MODEL_KEY)
    loaded = load_model(spec, registry, settings)
    questions = make_questions(loaded.tokenizer, args.questions, seed=args.seed)

    def request(n_blocks: int, prompts: tuple[str, ...] = questions) -> Prepared:
        return prepare(
            ExtractionRequest(
                model=MODEL_KEY,
                prompts=prompts,
                points=resid_points(n_blocks),
                dtype="float16",
                batch_size=args.batch_size,
            ),
            registry,
            settings,
        )

    all_blocks, few_blocks = request(N_BLOCKS), request(FEW_BLOCKS)
    tokens = tokenize(loaded.tokenizer, questions, all_blocks.max_length)
    width = int(loaded.config.hidden_size)
    windows, batches = neuronmap_batches(tokens, [width] * N_BLOCKS, 2, window_bytes, all_blocks.batch_size)
    _, few_batches = neuronmap_batches(tokens, [width] * FEW_BLOCKS, 2, window_bytes, few_blocks.batch_size)
    pad_value = pad_id(loaded)
    lengths = tokens.lengths
    n_tokens = int(lengths.sum())
    plan: dict[str, Any] = {
        "questions": len(questions),
        "tokens": n_tokens,
        "tokens_per_question": {
            "mean": float(lengths.mean()),
            "min": int(lengths.min()),
            "max": int(lengths.max()),
        },
        "batch_size": all_blocks.batch_size,
        "window_mb": settings.window_mb,
        "windows": len(windows),
        "batches": len(batches),
        "padded_positions": padded_positions(tokens, batches),
        "padded_positions_nm6": padded_positions(tokens, few_batches),
        "batches_nm6": len(few_batches),
        "compute_dtype": str(loaded.dtype),
        "attention": str(getattr(getattr(loaded.model, "config", None), "_attn_implementation", "unknown")),
    }
    log(f"plan: {plan}")

    lake_parent = Path(args.lake_dir) if args.lake_dir else Path(__file__).resolve().parent / "results"
    lake_parent.mkdir(parents=True, exist_ok=True)
    model = loaded.model

    # The first window, extracted once: warms NeuronMap up and gives the stored values to compare with.
    p1 = windows[0][1]
    check_dir = Path(tempfile.mkdtemp(prefix="check-lake-", dir=lake_parent))
    check_batch = batches[0]
    checks: dict[str, Any] = {"batch_prompts": [int(p) for p in check_batch]}
    try:
        check_prepared = request(N_BLOCKS, questions[:p1])
        outcome = execute(check_prepared, loaded, Lake(str(check_dir)), window_bytes=window_bytes)
        reader = Lake(str(check_dir)).open_run(outcome.run_id)
        ids, mask = pad([tokens.ids[int(p)] for p in check_batch], pad_value)
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, use_cache=False)  # warm-up of a
            hidden = model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        # The last hidden state is taken after the final norm: compare blocks 0-28.
        checks["hidden"] = compare(
            reader,
            check_batch,
            {f"blocks.{i}.resid_post": hidden.hidden_states[i + 1] for i in range(N_BLOCKS - 1)},
            lengths,
        )
        del hidden
        bridge = nn_model = None
        if not args.skip_optional:
            bridge = load_transformer_lens(all_blocks.location, loaded, args.tl_attention)
            nn_model = load_nnsight(all_blocks.location, loaded)
        if bridge is not None:
            with torch.inference_mode():
                checks["tlens"] = compare(reader, check_batch, tl_batch(bridge, ids, mask), lengths)
            checks["tlens"]["attention"] = args.tl_attention
        if nn_model is not None:
            with torch.inference_mode():
                checks["nnsight"] = compare(reader, check_batch, nnsight_batch(nn_model, ids, mask), lengths)
    finally:
        shutil.rmtree(check_dir, ignore_errors=True)
    for name, result in checks.items():
        if name != "batch_prompts":
            log(f"same work, {name}: {result}")
    if args.repeats == 0:
        path = write_results(
            args.out or None, "extraction-check", {"machine": info, "plan": plan, "same_work": checks}
        )
        print(f"checks only (--repeats 0); results: {path}")
        return 0

    recorded: list[np.ndarray] = []
    variants = [
        Variant("a", "bare", lambda: time_batches(hf_forward(model, False), tokens, batches, pad_value)),
        Variant("b", "hidden", lambda: time_batches(hf_forward(model, True), tokens, batches, pad_value)),
        Variant(
            "c", "nm30", lambda: time_execute(all_blocks, loaded, lake_parent, window_bytes, record=recorded)
        ),
        Variant("d", "nm6", lambda: time_execute(few_blocks, loaded, lake_parent, window_bytes)),
        Variant(
            "e",
            "nm30bg",
            lambda: time_execute(all_blocks, loaded, lake_parent, window_bytes, writer="background"),
            note="the background writer forced",
        ),
    ]
    if args.no_write_variant:
        variants.append(
            Variant(
                "h",
                "nm30nowrite",
                lambda: time_execute(all_blocks, loaded, lake_parent, window_bytes, no_write=True),
                note="diagnostic: windows committed but never written (not a usable run)",
            )
        )
    if args.body_variant:
        body = model.get_submodule(str(model.base_model_prefix))
        variants.append(
            Variant(
                "i",
                "body",
                lambda: time_batches(
                    lambda ids, mask: body(input_ids=ids, attention_mask=mask, use_cache=False),
                    tokens,
                    batches,
                    pad_value,
                ),
                note="diagnostic: the blocks and the final norm without the LM head",
            )
        )
    if bridge is not None:
        tl = bridge
        variants.append(
            Variant(
                "f",
                "tlens",
                lambda: time_batches(partial(tl_batch, tl), tokens, batches, pad_value),
                note=f"TransformerBridge, {args.tl_attention} attention",
            )
        )
    if nn_model is not None:
        nn = nn_model
        variants.append(
            Variant(
                "g", "nnsight", lambda: time_batches(partial(nnsight_batch, nn), tokens, batches, pad_value)
            )
        )
    if args.only:
        keep = set(args.only.split(","))
        variants = [v for v in variants if v.key in keep or v.label in keep or v.label == "bare"]

    same_batches: bool | None = None
    for repeat in range(args.repeats):
        for variant in variants:
            gc.collect()
            timing = variant.run()
            variant.times.append(timing.wall)
            variant.cpu_times.append(timing.cpu)
            log(
                f"repeat {repeat + 1}/{args.repeats} {variant.key} {variant.label}: "
                f"{timing.wall:.2f} s wall, {timing.cpu:.2f} s CPU"
            )
            if variant.label == "nm30" and same_batches is None:
                same_batches = len(recorded) == len(batches) and all(
                    np.array_equal(r, b) for r, b in zip(recorded, batches, strict=True)
                )
                if not same_batches:
                    log("WARNING: execute ran other batches than the baselines")

    bare = next(v for v in variants if v.label == "bare")
    results: dict[str, Any] = {
        "benchmark": "extraction",
        "machine": info,
        "model": {"key": MODEL_KEY, "location": all_blocks.location, "revision": all_blocks.revision},
        "plan": plan,
        "same_batches_as_execute": same_batches,
        "same_work": checks,
        "repeats": args.repeats,
        "variants": {},
    }
    rows = []
    for variant in variants:
        s = summary(variant.times)
        paired = statistics.median(t / b for t, b in zip(variant.times, bare.times, strict=True))
        ratio_median = s["median"] / statistics.median(bare.times)
        ratio_min = s["min"] / min(bare.times)
        entry: dict[str, Any] = {
            "key": variant.key,
            "times_s": variant.times,
            **{f"{k}_s": v for k, v in s.items()},
            "ratio_median": ratio_median,
            "ratio_min": ratio_min,
            "ratio_paired_median": paired,
            "tokens_per_s_median": n_tokens / s["median"],
            "cpu_times_s": variant.cpu_times,
            "cpu_median_s": statistics.median(variant.cpu_times),
            "cpu_ratio_median": statistics.median(variant.cpu_times) / statistics.median(bare.cpu_times),
            "note": variant.note,
        }
        target = TARGETS.get(variant.label)
        if target is not None:
            entry["target"] = target
            entry["target_met_median"] = ratio_median <= target
            entry["target_met_min"] = ratio_min <= target
        results["variants"][variant.label] = entry
        rows.append(
            [
                f"{variant.key} {variant.label}",
                f"{s['median']:.2f}",
                f"{s['min']:.2f}",
                f"{ratio_median:.3f}",
                f"{ratio_min:.3f}",
                f"{paired:.3f}",
                f"{entry['cpu_ratio_median']:.3f}",
                f"<= {target}: {'met' if ratio_median <= target else 'NOT met'}" if target else "",
            ]
        )
    path = write_results(args.out or None, "extraction", results)
    print(
        f"SmolLM2-135M, {plan['questions']} questions, {plan['tokens']} tokens, {plan['batches']} batches "
        f"in {plan['windows']} windows, {info['torch_threads']} threads, {args.repeats} interleaved repeats"
    )
    print(
        table(
            [
                "variant",
                "median s",
                "min s",
                "x bare (median)",
                "x bare (min)",
                "x bare (paired)",
                "CPU x bare",
                "target",
            ],
            rows,
        )
    )
    print(f"batches as execute forms them: {same_batches}; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
