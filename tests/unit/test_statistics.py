"""compute_statistics on runs in a lake: numpy float64 on the decoded stored values, and bounded memory."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from neuronmap.errors import InvalidArgument
from neuronmap.lake import Lake, PointArray, PointInfo, RunWriter, chunk_rows, encode
from neuronmap_analyzer.moments import STATISTICS
from neuronmap_analyzer.statistics import analysis_id, compute_statistics
from tests.numpy_reference import numpy_statistics

POINT = "blocks.0.resid_post"
WIDTH = 512
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}
RTOL = 1e-6


def activations(rows: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """`[rows, WIDTH]`: skewed, heavy-tailed columns with their own offsets and scales, 10% exact zeros,
    and column 0 constant (2.0 is exact in every storage dtype)."""
    offsets = rng.uniform(-50.0, 50.0, size=WIDTH).astype(np.float32)
    scales = rng.uniform(0.5, 5.0, size=WIDTH).astype(np.float32)
    z = rng.standard_normal(size=(rows, WIDTH), dtype=np.float32)
    x: NDArray[np.float32] = offsets + scales * (z + 0.2 * z * z + 0.1 * z * z * z)
    x[rng.random((rows, WIDTH), dtype=np.float32) < 0.1] = 0.0
    x[:, 0] = 2.0
    return x


def lengths_summing_to(rows: int, rng: np.random.Generator) -> list[int]:
    """Prompt lengths (1 to 300 tokens) that add up to `rows`."""
    lengths: list[int] = []
    while sum(lengths) < rows:
        lengths.append(int(rng.integers(1, 300)))
    lengths[-1] -= sum(lengths) - rows
    return [n for n in lengths if n > 0]


def create(lake: Lake, run_id: str, lengths: list[int], reduction: str, dtype: str) -> RunWriter:
    return lake.create_run(
        run_id,
        spec={"model": "test"},
        prompts=[f"prompt {i}" for i in range(len(lengths))],
        token_ids=[np.arange(n, dtype=np.int32) for n in lengths],
        points=[PointInfo(POINT, WIDTH, "h.0")],
        reduction=reduction,
        dtype=dtype,
    )


def write_prompts(writer: RunWriter, x: NDArray[np.float32], p0: int, p1: int) -> None:
    """Writes and commits prompts [p0, p1) of `x` (all rows of the run), about a chunk of rows at a time."""
    rows_per_prompt = writer.rows_of(0, writer.layout.n_prompts)[1] / writer.layout.n_prompts
    window = max(1, int(writer.layout.chunk_rows / rows_per_prompt))
    for a in range(p0, p1, window):
        b = min(a + window, p1)
        r0, r1 = writer.rows_of(a, b)
        writer.write(a, b, {POINT: encode(x[r0:r1], writer.layout.dtype)})
        writer.commit(b)


def assert_matches(got: dict[str, NDArray[np.float64]], want: dict[str, NDArray[np.float64]]) -> None:
    assert set(got) == set(STATISTICS)
    for name in STATISTICS:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=0, err_msg=name)


@pytest.mark.parametrize("reduction", ["tokens", "mean"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_statistics_match_numpy_on_stored_values(tmp_path: Path, dtype: str, reduction: str) -> None:
    rng = np.random.default_rng(42)
    rows_per_chunk = chunk_rows(WIDTH, ITEMSIZE[dtype])
    n_rows = 2 * rows_per_chunk + rows_per_chunk // 3  # three chunks, the last one partial
    lengths = lengths_summing_to(n_rows, rng) if reduction == "tokens" else [3] * n_rows
    lake = Lake(str(tmp_path / "lake"))
    writer = create(lake, "r1", lengths, reduction, dtype)
    assert writer.layout.chunk_rows == rows_per_chunk
    x = activations(n_rows, rng)
    write_prompts(writer, x, 0, len(lengths))
    writer.set_status("complete")

    array = lake.open_run("r1").array(POINT)
    assert array.shape == (n_rows, WIDTH)
    assert len(list(array.iter_blocks())) == 3
    result = compute_statistics(array, threshold=0.25)
    stored = array[:].astype(np.float64)
    want = numpy_statistics(stored, threshold=0.25)
    assert_matches(result.neurons, want)
    assert (result.n_rows, result.n_neurons, result.count) == (n_rows, WIDTH, n_rows * WIDTH)
    # Column 0 is constant; no other column is.
    assert result.neurons["std"][0] == 0.0 and math.isnan(result.neurons["skewness"][0])
    assert np.isfinite(result.neurons["kurtosis"][1:]).all()
    assert 0.09 < result.neurons["sparsity"][1:].mean() < 0.12

    layer = numpy_statistics(stored.reshape(-1, 1), threshold=0.25)
    assert set(result.layer) == set(STATISTICS)
    for name in STATISTICS:
        assert result.layer[name] == pytest.approx(float(layer[name][0]), rel=RTOL), name
    assert result.seconds > 0


def test_a_running_run_is_read_up_to_its_committed_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n_rows = chunk_rows(WIDTH, 4) + 1000
    lengths = lengths_summing_to(n_rows, rng)
    lake = Lake(str(tmp_path))
    writer = create(lake, "r1", lengths, "tokens", "float32")
    x = activations(n_rows, rng)
    half = len(lengths) // 2
    write_prompts(writer, x, 0, half)
    committed = writer.rows_of(0, half)[1]

    result = compute_statistics(lake.open_run("r1").array(POINT))
    assert result.n_rows == committed < n_rows
    assert_matches(result.neurons, numpy_statistics(x[:committed].astype(np.float64), threshold=0.0))


def test_a_run_with_no_committed_rows_gives_nan(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    create(lake, "r1", [5, 5], "tokens", "float16")
    result = compute_statistics(lake.open_run("r1").array(POINT))
    assert result.n_rows == 0 and result.n_neurons == WIDTH and result.count == 0
    assert all(np.isnan(result.neurons[name]).all() for name in STATISTICS)
    assert all(math.isnan(result.layer[name]) for name in STATISTICS)


@pytest.mark.parametrize("threshold", [-1e-9, -1.0, math.nan, math.inf])
def test_rejects_bad_thresholds(tmp_path: Path, threshold: float) -> None:
    lake = Lake(str(tmp_path))
    create(lake, "r1", [5], "tokens", "float16")
    with pytest.raises(InvalidArgument, match="sparsity_threshold"):
        compute_statistics(lake.open_run("r1").array(POINT), threshold=threshold)
    with pytest.raises(InvalidArgument):
        analysis_id("r1", POINT, threshold)


def test_analysis_id_names_what_determines_the_result() -> None:
    first = analysis_id("r1", POINT, 0.0)
    assert first.startswith("stat_") and len(first) == 25
    int(first[5:], 16)
    assert analysis_id("r1", POINT, 0.0) == first == analysis_id("r1", POINT, -0.0)
    others = {analysis_id("r2", POINT, 0.0), analysis_id("r1", "embed", 0.0), analysis_id("r1", POINT, 0.1)}
    assert first not in others and len(others) == 3


def _peak_bytes(array: PointArray) -> int:
    """Peak bytes allocated (as tracemalloc sees numpy and zarr buffers) while computing statistics."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = compute_statistics(array)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.n_rows == array.shape[0]
    return peak


def test_memory_is_bounded_by_a_chunk_not_by_the_run(tmp_path: Path) -> None:
    dtype = "float16"
    rows_per_chunk = chunk_rows(WIDTH, ITEMSIZE[dtype])
    chunk_f64 = rows_per_chunk * WIDTH * 8
    rng = np.random.default_rng(0)
    lake = Lake(str(tmp_path))
    peaks = {}
    for n_chunks in (2, 8):
        # Prompts of a quarter chunk, written a chunk at a time: the test never holds the run either.
        prompt_rows = rows_per_chunk // 4
        writer = create(lake, f"r{n_chunks}", [prompt_rows] * (4 * n_chunks), "tokens", dtype)
        for c in range(n_chunks):
            writer.write(4 * c, 4 * c + 4, {POINT: encode(activations(rows_per_chunk, rng), dtype)})
            writer.commit(4 * c + 4)
        array = lake.open_run(f"r{n_chunks}").array(POINT)
        assert array.shape == (n_chunks * rows_per_chunk, WIDTH)
        peaks[n_chunks] = _peak_bytes(array)

    mib = 1 << 20
    print(
        f"\nchunk [{rows_per_chunk}, {WIDTH}] {dtype}: {chunk_f64 / mib:.0f} MiB in float64; peak "
        f"{peaks[2] / mib:.1f} MiB over 2 chunks, {peaks[8] / mib:.1f} MiB over 8 chunks "
        f"(the 8-chunk run is {8 * chunk_f64 / mib:.0f} MiB in float64)"
    )
    assert peaks[2] < 3 * chunk_f64
    assert peaks[8] < 3 * chunk_f64
    # 4x the rows, the same peak (give or take small allocations).
    assert peaks[8] < 1.05 * peaks[2] + mib
