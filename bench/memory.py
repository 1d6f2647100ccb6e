"""Peak memory of an extraction: it must not grow with the number of questions.

    .venv/bin/python bench/memory.py [--sizes 256,2048] [--out FILE]

Each size runs in a child process of its own (a fresh interpreter, so no size inherits another's peak):
the child loads SmolLM2-135M as the extractor does, notes its peak RSS right after loading (the base:
weights, torch, transformers), then extracts all 30 blocks.{i}.resid_post of that many questions (the
same ~128-token questions as bench/extraction.py) in fp16 into a fresh local lake through `execute`,
sampling its current RSS after every batch, and reports its peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`).
The extractor's memory is meant to be bounded by the model, one window of activations (settings.window_mb,
its buffer reused from window to window) and what the writer holds while it stores a window, whatever the
number of questions: where every size fills several windows (--window-mb 256 for these sizes), the peak
of 2,048 questions should equal that of 256 within noise, though the lake it writes is eight times larger.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.common import DEFAULT_MODEL_CACHE, MODEL_KEY, machine, table, write_results
from neuronmap.settings import Settings

N_BLOCKS = 30
MARK = "RESULT "


def rss_mib() -> float:
    """Current resident set size of this process, MiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child(args: argparse.Namespace) -> int:
    """One extraction of `args.child` questions; prints its measurements as one JSON line."""
    import torch
    import transformers

    from bench.common import make_questions
    from neuronmap.lake import Lake
    from neuronmap.settings import load_settings
    from neuronmap_extractor.extraction import ExtractionRequest, Progress, execute, prepare
    from neuronmap_extractor.loading import load_model
    from neuronmap_extractor.registry import Registry

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    settings = load_settings(env={}, model_cache_dir=args.model_cache_dir, window_mb=args.window_mb)
    registry = Registry.load()
    loaded = load_model(registry.resolve(MODEL_KEY), registry, settings)
    after_load = {"peak_rss_mib": peak_rss_mib(), "rss_mib": rss_mib()}
    questions = make_questions(loaded.tokenizer, args.child, seed=args.seed)
    prepared = prepare(
        ExtractionRequest(
            model=MODEL_KEY,
            prompts=questions,
            points=tuple(f"blocks.{i}.resid_post" for i in range(N_BLOCKS)),
            dtype="float16",
        ),
        registry,
        settings,
    )
    samples: list[tuple[int, float]] = []

    def on_progress(progress: Progress) -> None:
        samples.append((progress.batches_done, rss_mib()))

    folder = Path(tempfile.mkdtemp(prefix="memory-lake-", dir=args.lake_dir))
    try:
        start = time.perf_counter()
        outcome = execute(
            prepared,
            loaded,
            Lake(str(folder)),
            window_bytes=int(settings.window_mb * (1 << 20)),
            on_progress=on_progress,
        )
        seconds = time.perf_counter() - start
        lake_bytes = folder_bytes(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "questions": args.child,
        "tokens": outcome.progress.tokens_total,
        "batches": outcome.progress.batches_total,
        "window_mb": settings.window_mb,
        "seconds": seconds,
        "lake_bytes": lake_bytes,
        "after_load": after_load,
        "peak_rss_mib": peak_rss_mib(),
        "max_sampled_rss_mib": max(r for _, r in samples),
        "rss_samples_mib": samples,
    }
    print(MARK + json.dumps(result), flush=True)
    return 0


def run_child(size: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(size),
        "--threads",
        str(args.threads),
        "--model-cache-dir",
        args.model_cache_dir,
        "--window-mb",
        str(args.window_mb),
        "--lake-dir",
        args.lake_dir,
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child for {size} questions failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARK) :])
    return result


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,2048", help="comma-separated numbers of questions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache-dir", default=DEFAULT_MODEL_CACHE)
    parser.add_argument("--window-mb", type=float, default=Settings.window_mb)
    parser.add_argument("--lake-dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    Path(args.lake_dir).mkdir(parents=True, exist_ok=True)
    if args.child:
        return child(args)
    info = machine()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    runs = []
    for size in sizes:
        print(f"extracting {size} questions in a child process...", file=sys.stderr, flush=True)
        runs.append(run_child(size, args))
    rows = []
    for run in runs:
        samples = [r for _, r in run["rss_samples_mib"]]
        quarters = [samples[max(0, round(q * len(samples)) - 1)] for q in (0.25, 0.5, 0.75, 1.0)]
        rows.append(
            [
                run["questions"],
                run["tokens"],
                f"{run['lake_bytes'] / 1e9:.2f}",
                f"{run['after_load']['peak_rss_mib']:.0f}",
                f"{run['peak_rss_mib']:.0f}",
                f"{run['peak_rss_mib'] - run['after_load']['peak_rss_mib']:.0f}",
                " / ".join(f"{q:.0f}" for q in quarters),
                f"{run['seconds']:.0f}",
            ]
        )
    growth = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"] if len(runs) > 1 else 1.0
    results = {
        "benchmark": "memory",
        "machine": info,
        "window_mb": args.window_mb,
        "runs": runs,
        "peak_ratio_largest_to_smallest": growth,
    }
    path = write_results(args.out or None, "memory", results)
    print(f"SmolLM2-135M, all {N_BLOCKS} resid_post in fp16 to a local lake, window {args.window_mb:g} MiB")
    print(
        table(
            [
                "questions",
                "tokens",
                "lake GB",
                "peak RSS after load MiB",
                "peak RSS MiB",
                "extraction adds MiB",
                "RSS at 25/50/75/100 % of batches MiB",
                "seconds",
            ],
            rows,
        )
    )
    print(f"peak RSS, {sizes[-1]} vs {sizes[0]} questions: {growth:.3f}x; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
