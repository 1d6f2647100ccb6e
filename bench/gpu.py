"""The GPU checks of issue 3, as one script for a session that has a device machine.

    .venv/bin/python bench/gpu.py [--questions 512] [--out bench/results/gpu.json]

On a CUDA device (NEURONMAP_DEVICE=auto picks it), SmolLM2-135M:

1. compute dtype: the extractor loads the model in bfloat16 (or float16 where bfloat16 is missing);
   its stored activations are compared with a float32 forward of the same prompts (relative error);
2. speed: all 30 resid_post points to a local lake in fp16, against a bare AutoModelForCausalLM forward
   over the same batches in the same dtype (tokens/s and the ratio), interleaved, 3 repeats;
3. out of memory: with the process limited to a slice of the GPU's memory
   (torch.cuda.set_per_process_memory_fraction), a batch too large to fit is split and retried: the run
   completes and equals a run with small batches (within fp16 rounding).

On a machine without CUDA it says so and runs part 2 on the CPU, so the script itself stays tested.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from bench.common import make_questions
from neuronmap.lake import Lake
from neuronmap.settings import load_settings
from neuronmap_extractor.batching import pad, plan_batches, tokenize
from neuronmap_extractor.extraction import ExtractionRequest, execute, prepare
from neuronmap_extractor.loading import LoadedModel, load_model, weights_location
from neuronmap_extractor.registry import Registry

POINTS = tuple(f"blocks.{i}.resid_post" for i in range(30))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(
    model: torch.nn.Module, loaded: LoadedModel, prompts: tuple[str, ...], batch_size: int
) -> float:
    """Seconds for a bare forward (logits computed) over the batches the extractor forms."""
    tokens = tokenize(loaded.tokenizer, prompts, 2048)
    batches = plan_batches(tokens.lengths, batch_size)
    _synchronize(loaded.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            ids, mask = pad([tokens.ids[int(i)] for i in batch], 0)
            model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device), use_cache=False)
    _synchronize(loaded.device)
    return time.perf_counter() - start


def extract(
    loaded: LoadedModel, request: ExtractionRequest, registry: Registry, lake_dir: Path
) -> tuple[float, Any]:
    settings = load_settings()
    prepared = prepare(request, registry, settings)
    shutil.rmtree(lake_dir, ignore_errors=True)
    _synchronize(loaded.device)
    start = time.perf_counter()
    outcome = execute(prepared, loaded, Lake(str(lake_dir)), window_bytes=1 << 30)
    _synchronize(loaded.device)
    return time.perf_counter() - start, Lake(str(lake_dir)).open_run(outcome.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    settings = load_settings()
    registry = Registry.load()
    spec = registry.resolve("smollm2_135m")
    loaded = load_model(spec, registry, settings)
    cuda = loaded.device.type == "cuda"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(loaded.device) if cuda else "cpu (no CUDA here)",
        "compute_dtype": str(loaded.dtype),
        "torch": torch.__version__,
    }
    print(json.dumps(report), flush=True)
    if not cuda:  # only checks that the script runs: a CPU pass over 512 questions takes minutes
        args.questions, args.repeats, args.batch_size = min(args.questions, 32), 1, 16
    prompts = make_questions(loaded.tokenizer, args.questions)
    request = ExtractionRequest(
        model="smollm2_135m", prompts=prompts, points=POINTS, batch_size=args.batch_size
    )
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    try:
        # 1. the compute dtype against float32
        if cuda:
            location, _ = weights_location(spec, settings)
            reference = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
            reference.to(loaded.device).eval()
            _, run = extract(loaded, request, registry, work / "dtype")
            tokens = tokenize(loaded.tokenizer, prompts[:8], 2048)
            worst = 0.0
            with torch.inference_mode():
                for p, ids in enumerate(tokens.ids):
                    hidden = reference(
                        input_ids=torch.from_numpy(ids.astype(np.int64))[None].to(loaded.device),
                        output_hidden_states=True,
                    ).hidden_states
                    for i in (0, 14, 28):
                        stored = run.array(f"blocks.{i}.resid_post").prompt(p).astype(np.float32)
                        expected = hidden[i + 1][0].float().cpu().numpy()
                        worst = max(
                            worst, float(np.abs(stored - expected).max() / (np.abs(expected).max() + 1e-6))
                        )
            report["max_error_vs_float32_relative_to_max"] = worst
        # 2. speed against a bare forward in the same dtype
        bare_times, ours = [], []
        for _ in range(args.repeats):
            bare_times.append(bare_forward(loaded.model, loaded, prompts, args.batch_size))
            ours.append(extract(loaded, request, registry, work / "speed")[0])
        n_tokens = int(tokenize(loaded.tokenizer, prompts, 2048).lengths.sum())
        report["speed"] = {
            "tokens": n_tokens,
            "bare_s": bare_times,
            "neuronmap_s": ours,
            "ratio_median": statistics.median(ours) / statistics.median(bare_times),
            "neuronmap_tokens_per_s": n_tokens / statistics.median(ours),
        }
        # 3. out-of-memory splitting
        if cuda:
            total = torch.cuda.get_device_properties(loaded.device).total_memory
            used = torch.cuda.memory_allocated(loaded.device)
            torch.cuda.set_per_process_memory_fraction(min(1.0, (used + (2 << 30)) / total), loaded.device)
            long_prompts = tuple(p * 12 for p in prompts[:256])  # ~1,500 tokens each
            big = ExtractionRequest(
                model="smollm2_135m", prompts=long_prompts, points=POINTS[:4], batch_size=256
            )
            small = ExtractionRequest(
                model="smollm2_135m", prompts=long_prompts, points=POINTS[:4], batch_size=4
            )
            _, split_run = extract(loaded, big, registry, work / "oom-big")
            torch.cuda.set_per_process_memory_fraction(1.0, loaded.device)
            _, small_run = extract(loaded, small, registry, work / "oom-small")
            diff = max(
                float(
                    np.abs(split_run.read(p).astype(np.float32) - small_run.read(p).astype(np.float32)).max()
                )
                for p in POINTS[:4]
            )
            report["oom_split"] = {
                "completed": split_run.status == "complete",
                "max_abs_diff_vs_small_batches": diff,
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
