"""A killed extractor loses nothing committed: the same request after a restart resumes from
`committed_prompts`, and the finished arrays are identical to an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from neuronmap.client import Client
from neuronmap.lake import Lake
from neuronmap.settings import load_settings
from neuronmap.v1 import extractor_pb2
from tests.conftest import follow_until

PROMPTS = [
    f"prompt {i}: " + " ".join(["neurons", "fire", "when", "tokens", "arrive"][: 1 + i % 5])
    for i in range(1200)
]
POINTS = ["blocks.0.resid_post", "blocks.2.attn_out"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """`neuronmap up` as a separate process, so that it can be killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NEURONMAP_")},
            "HF_HUB_OFFLINE": "1",
            "NEURONMAP_WINDOW_MB": "0.05",  # many small windows: commits all along the run
            "NEURONMAP_MODEL_CACHE": str(self.root / "models"),
        }
        command = [sys.executable, "-m", "neuronmap.cli", "up", "--port", str(self.port)]
        command += ["--lake", str(self.root / "lake"), "--catalog", str(self.root / "catalog.duckdb")]
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        with Client(load_settings(env={}, target=self.target)) as client:
            client.wait_ready(timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def client(self) -> Client:
        return Client(load_settings(env={}, target=self.target, lake_uri=str(self.root / "lake")))


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Callable[[str], Stack]]:
    made: list[Stack] = []

    def make(name: str) -> Stack:
        (tmp_path / name).mkdir()
        stack = Stack(tmp_path / name)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()


@pytest.mark.slow
def test_killed_extractor_resumes_to_identical_arrays(
    stacks: Callable[[str], Stack], tiny_model: Callable[..., Path]
) -> None:
    folder = str(tiny_model("gpt2"))
    crashing = stacks("crashing")
    crashing.start()
    with crashing.client() as client:
        events = client.extract_events(folder, PROMPTS, POINTS, batch_size=2)
        run_id = next(events).run_id
        follow_until(events, prompts_done=200, seconds=120)
    crashing.kill()  # SIGKILL: no cleanup, no final status

    lake = Lake(str(crashing.root / "lake"))
    partial = lake.open_run(run_id)
    assert partial.status == "running"
    committed = partial.committed_prompts
    assert 0 < committed < len(PROMPTS)
    before = partial.read(POINTS[0])
    assert before.shape[0] == partial.offsets()[committed]

    crashing.start()  # same lake, same catalog file (DuckDB replays its log)
    with crashing.client() as client:
        resumed_events: list[extractor_pb2.JobEvent] = []
        run = client.extract(folder, PROMPTS, POINTS, batch_size=2, on_event=resumed_events.append)
        assert run.run_id == run_id and run.status == "complete"
        assert any(e.resumed for e in resumed_events)
        provenance = run.reader().provenance
        assert provenance["resumed_from_prompt"] == committed
        np.testing.assert_array_equal(run.array(POINTS[0])[: before.shape[0]], before)
        resumed = {p: run.array(p) for p in POINTS}

    clean = stacks("clean")
    clean.start()
    with clean.client() as client:
        uninterrupted = client.extract(folder, PROMPTS, POINTS, batch_size=2)
        assert uninterrupted.run_id == run_id
        for point in POINTS:
            np.testing.assert_array_equal(resumed[point], uninterrupted.array(point))
