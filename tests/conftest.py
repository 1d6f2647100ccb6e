"""Fixtures shared by every tier: settings for a temporary lake and catalog, and real servers on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Nothing may download from a model hub during tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuronmap.server import SERVICES, RunningServer, serve
from neuronmap.settings import Settings, load_settings

StartServer = Callable[..., RunningServer]


def make_settings(root: Path, **overrides: object) -> Settings:
    """Settings whose lake, catalog and model cache live under `root`; the environment is ignored."""
    return load_settings(
        env={},
        lake_uri=str(root / "lake"),
        catalog_path=str(root / "catalog.duckdb"),
        model_cache_dir=str(root / "models"),
        **overrides,
    )


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
