"""Fixtures shared by every tier: settings for a temporary lake and catalog, and real servers on loopback."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Nothing may download from a model hub during tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuronmap.client import Client
from neuronmap.server import SERVICES, RunningServer, serve
from neuronmap.settings import Settings, load_settings
from neuronmap.v1 import extractor_pb2

if TYPE_CHECKING:
    from tests.s3 import S3Server

StartServer = Callable[..., RunningServer]


def follow_until(events: Iterable[extractor_pb2.JobEvent], prompts_done: int, seconds: float) -> None:
    """Reads a job's events until it has done `prompts_done` prompts, or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    for event in events:
        if event.progress.prompts_done >= prompts_done or time.monotonic() > deadline:
            return


def make_settings(root: Path, **overrides: object) -> Settings:
    """Settings whose lake, catalog and model cache live under `root`; the environment is ignored."""
    values: dict[str, object] = {
        "lake_uri": str(root / "lake"),
        "catalog_path": str(root / "catalog.duckdb"),
        "model_cache_dir": str(root / "models"),
    }
    values.update(overrides)
    return load_settings(env={}, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def start_server(settings: Settings) -> Iterator[StartServer]:
    """Starts real gRPC servers on 127.0.0.1 (a free port each); stops them after the test."""
    started: list[RunningServer] = []

    def start(services: tuple[str, ...] = SERVICES, settings: Settings = settings) -> RunningServer:
        running = serve(settings, services=services, port=0)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop(grace=0)


ROOT = Path(__file__).resolve().parents[1]
# Converted packaged weights (GGUF -> safetensors) survive between local runs; CI converts once.
MODEL_CACHE = Path(os.environ.get("NEURONMAP_TEST_MODEL_CACHE", ROOT / ".pytest_cache" / "neuronmap-models"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Builds (once per session) a tiny random model folder of a family: tiny_model("gpt2")."""
    from tests import tiny_models

    built: dict[tuple[str, str], Path] = {}

    def make(family: str, padding_side: str = "right") -> Path:
        key = (family, padding_side)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{family}-{padding_side}")
            built[key] = tiny_models.build(family, folder, padding_side=padding_side)
        return built[key]

    return make


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded stack (catalog, extractor, analyzer) for a whole session: models load once."""
    root = tmp_path_factory.mktemp("stack")
    running = serve(make_settings(root, model_cache_dir=str(MODEL_CACHE)), port=0)
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="session")
def client(stack: RunningServer) -> Iterator[Client]:
    with Client(stack.settings) as session_client:
        yield session_client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback (one per session) with its bucket created; stopped after."""
    from tests.s3 import running_seaweedfs

    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as weed:
        yield weed.server
