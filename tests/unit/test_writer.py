"""Storing windows inline or in the background: same bytes, same commits, errors reach the caller."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronmap.errors import FailedPrecondition, InvalidArgument
from neuronmap.lake import Lake, PointInfo, RunWriter
from neuronmap_extractor.writer import BackgroundWriter, InlineWriter, make_writer, writer_mode


def _run(tmp_path: Path, name: str) -> RunWriter:
    return Lake(str(tmp_path)).create_run(
        name,
        spec={},
        prompts=[f"p{i}" for i in range(6)],
        token_ids=[np.arange(1 + i % 3) for i in range(6)],
        points=[PointInfo("a", 4)],
        reduction="tokens",
        dtype="float32",
    )


def _windows(run: RunWriter) -> list[tuple[int, int, dict[str, np.ndarray]]]:
    out = []
    for p0, p1 in [(0, 2), (2, 5), (5, 6)]:
        r0, r1 = run.rows_of(p0, p1)
        out.append((p0, p1, {"a": np.full((r1 - r0, 4), p0, dtype=np.float32)}))
    return out


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_both_writers_store_and_commit_every_window_in_order(tmp_path: Path, mode: str) -> None:
    run = _run(tmp_path, mode)
    commits: list[int] = []
    writer = make_writer(run, commits.append, mode)
    assert isinstance(writer, BackgroundWriter if mode == "background" else InlineWriter)
    for window in _windows(run):
        writer.submit(*window)
    writer.close()
    assert commits == [2, 5, 6]
    stored = Lake(str(tmp_path)).open_run(mode).read("a")
    expected = np.concatenate([w[2]["a"] for w in _windows(run)])
    np.testing.assert_array_equal(stored, expected)


def test_background_writer_holds_one_window_at_a_time(tmp_path: Path) -> None:
    run = _run(tmp_path, "slow")
    release = threading.Event()
    commits: list[int] = []

    def slow_commit(p1: int) -> None:
        commits.append(p1)
        release.wait(timeout=10)

    writer = BackgroundWriter(run, slow_commit)
    windows = _windows(run)
    writer.submit(*windows[0])
    second = threading.Thread(target=writer.submit, args=windows[1])
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive(), "submit must wait while the previous window is being stored"
    release.set()
    second.join(timeout=10)
    writer.submit(*windows[2])
    writer.close()
    assert commits == [2, 5, 6]


def test_a_failed_write_reaches_the_caller(tmp_path: Path) -> None:
    run = _run(tmp_path, "bad")
    writer = BackgroundWriter(run, lambda _: None)
    writer.submit(2, 5, {"a": np.zeros((6, 4), np.float32)})  # not the committed prefix
    with pytest.raises(FailedPrecondition):
        writer.submit(0, 2, {"a": np.zeros((3, 4), np.float32)})
    with pytest.raises(FailedPrecondition):
        writer.close()


def test_auto_writes_inline_when_torch_owns_every_core() -> None:
    import os

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    expected = "background" if threads < (os.cpu_count() or 1) else "inline"
    assert writer_mode("auto", cpu) == expected
    assert writer_mode("auto", torch.device("cuda")) == "background"
    assert writer_mode("inline", torch.device("cuda")) == "inline"
    with pytest.raises(InvalidArgument):
        writer_mode("sometimes", cpu)
