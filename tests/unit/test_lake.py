"""The lake layout: round trips, committed prefixes, resume, bfloat16, and plain-zarr access."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from neuronmap.errors import FailedPrecondition, NotFound
from neuronmap.lake import Lake, PointInfo, RunWriter, chunk_rows, decode, encode


def _tokens(lengths: list[int]) -> list[np.ndarray]:
    return [np.arange(n, dtype=np.int32) + 10 * i for i, n in enumerate(lengths)]


def _create(lake: Lake, lengths: list[int], dtype: str = "float16", reduction: str = "tokens") -> RunWriter:
    return lake.create_run(
        "r1",
        spec={"model": "m"},
        prompts=[f"prompt {i}" for i in range(len(lengths))],
        token_ids=_tokens(lengths),
        points=[PointInfo("blocks.0.resid_post", 4, "h.0"), PointInfo("embed", 3)],
        reduction=reduction,
        dtype=dtype,
    )


def test_round_trip_tokens_layout(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lengths = [3, 1, 5]
    writer = _create(lake, lengths)
    rng = np.random.default_rng(0)
    full = {"blocks.0.resid_post": rng.normal(size=(9, 4)), "embed": rng.normal(size=(9, 3))}
    writer.write(0, 2, {k: encode(v[:4], "float16") for k, v in full.items()})
    writer.commit(2)
    # Only committed rows are visible while the run is being written.
    assert lake.open_run("r1").array("embed").shape == (4, 3)
    writer.write(2, 3, {k: encode(v[4:], "float16") for k, v in full.items()})
    writer.commit(3)
    writer.set_status("complete")

    run = lake.open_run("r1")
    assert run.status == "complete"
    assert run.prompts() == ["prompt 0", "prompt 1", "prompt 2"]
    np.testing.assert_array_equal(run.offsets(), [0, 3, 4, 9])
    np.testing.assert_array_equal(run.token_ids(), np.concatenate(_tokens(lengths)))
    got = run.read("blocks.0.resid_post")
    np.testing.assert_array_equal(got, full["blocks.0.resid_post"].astype(np.float16))
    np.testing.assert_array_equal(run.array("embed").prompt(2), full["embed"][4:9].astype(np.float16))


def test_plain_zarr_opens_a_run(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    writer = _create(lake, [2, 2])
    writer.write(
        0, 2, {"blocks.0.resid_post": np.ones((4, 4), np.float16), "embed": np.ones((4, 3), np.float16)}
    )
    writer.commit(2)
    group = zarr.open_group(str(tmp_path / "lake" / "runs" / "r1"), mode="r")
    assert group["points/blocks.0.resid_post"].shape == (4, 4)
    assert group["tokens/offsets"][:].tolist() == [0, 2, 4]
    assert group.attrs["committed_prompts"] == 2


def test_writes_must_follow_the_committed_prefix(tmp_path: Path) -> None:
    writer = _create(Lake(str(tmp_path)), [1, 1])
    with pytest.raises(FailedPrecondition):
        writer.write(1, 2, {})
    with pytest.raises(FailedPrecondition):
        writer.set_status("complete")


def test_resume_keeps_committed_rows(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    writer = _create(lake, [2, 3], reduction="tokens")
    first = {"blocks.0.resid_post": np.full((2, 4), 1, np.float16), "embed": np.full((2, 3), 2, np.float16)}
    writer.write(0, 1, first)
    writer.commit(1)
    resumed = lake.open_run_for_write("r1")
    assert resumed.committed_prompts == 1
    rest = {"blocks.0.resid_post": np.full((3, 4), 3, np.float16), "embed": np.full((3, 3), 4, np.float16)}
    resumed.write(1, 2, rest)
    resumed.commit(2)
    values = lake.open_run("r1").read("blocks.0.resid_post")
    np.testing.assert_array_equal(values[:2], 1)
    np.testing.assert_array_equal(values[2:], 3)


def test_reduced_runs_have_a_row_per_prompt(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    writer = _create(lake, [4, 7, 1], reduction="mean", dtype="float32")
    values = {"blocks.0.resid_post": np.eye(3, 4, dtype=np.float32), "embed": np.zeros((3, 3), np.float32)}
    writer.write(0, 3, values)
    writer.commit(3)
    np.testing.assert_array_equal(
        lake.open_run("r1").read("blocks.0.resid_post"), values["blocks.0.resid_post"]
    )


def test_bfloat16_round_trip_is_round_to_nearest_even() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32) * 100
    ours = decode(encode(x, "bfloat16"), "bfloat16")
    theirs = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_bfloat16_points_decode_on_read(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    writer = _create(lake, [2], dtype="bfloat16")
    x = np.array([[1.5, -2.0, 3.25, 1e-3]] * 2, dtype=np.float32)
    writer.write(0, 1, {"blocks.0.resid_post": encode(x, "bfloat16"), "embed": encode(x[:, :3], "bfloat16")})
    writer.commit(1)
    got = lake.open_run("r1").read("blocks.0.resid_post")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x, rtol=2**-8)


def test_unknown_run_and_point(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with pytest.raises(NotFound):
        lake.open_run("nope")
    assert not lake.has_run("nope")
    _create(lake, [1])
    with pytest.raises(NotFound, match=r"has no point 'blocks\.9\.resid_post'"):
        lake.open_run("r1").array("blocks.9.resid_post")


def test_open_run_at_full_uri(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    _create(lake, [1])
    assert Lake.open_run_at(lake.run_uri("r1")).run_id == "r1"


def test_analysis_round_trip(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    uri = lake.write_analysis("a1", {"mean": np.arange(3.0)}, {"kind": "statistics"})
    assert (Path(uri) / "report.json").exists()
    arrays, report = lake.read_analysis("a1")
    np.testing.assert_array_equal(arrays["mean"], [0, 1, 2])
    assert report == {"kind": "statistics"}
    with pytest.raises(NotFound):
        lake.read_analysis("a2")


def test_chunk_rows_power_of_two_under_target() -> None:
    assert chunk_rows(576, 2) == 4096
    assert chunk_rows(4096, 4) == 512
    assert chunk_rows(100_000, 4) == 256
