"""A batch that runs out of GPU memory is halved and retried; a single prompt that does not fit fails cleanly.

No GPU here: the out-of-memory error is raised from inside the real forward pass (a hook on block 1, after
block 0's rows were already placed), the way CUDA raises it midway through a pass. Everything else is the
real extraction into a real lake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from neuronmap.errors import ResourceExhausted
from neuronmap.lake import Lake
from neuronmap_extractor.extraction import ExtractionRequest, execute, prepare
from neuronmap_extractor.loading import LoadedModel, load_model
from neuronmap_extractor.registry import Registry
from tests.conftest import make_settings

PROMPTS = tuple(f"question number {i} " + "and some more words " * (i % 4) for i in range(9))
POINTS = ("embed", "blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.mlp_out")


@contextmanager
def out_of_memory_above(loaded: LoadedModel, max_rows: int, seen: list[int]) -> Iterator[None]:
    """Block 1 raises CUDA's out-of-memory error for any batch of more than `max_rows` prompts."""

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        rows = int(args[0].shape[0])
        seen.append(rows)
        if rows > max_rows:
            raise torch.cuda.OutOfMemoryError(f"injected: {rows} rows")

    handle = loaded.model.get_submodule("model.layers.1").register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture
def extract(tiny_model: Callable[..., Path], tmp_path: Path) -> Iterator[Callable[..., tuple[Lake, str]]]:
    settings = make_settings(tmp_path)
    registry = Registry.load()
    folder = tiny_model("llama")
    loaded = load_model(registry.resolve(str(folder)), registry, settings)

    def run(name: str, batch_size: int, max_rows: int, seen: list[int]) -> tuple[Lake, str]:
        request = ExtractionRequest(str(folder), PROMPTS, POINTS, batch_size=batch_size)
        lake = Lake(str(tmp_path / name))
        with out_of_memory_above(loaded, max_rows, seen):
            outcome = execute(prepare(request, registry, settings), loaded, lake, window_bytes=1 << 20)
        return lake, outcome.run_id

    yield run


def test_a_batch_out_of_memory_is_split_and_equals_small_batches(extract: Callable[..., Any]) -> None:
    seen: list[int] = []
    split_lake, run_id = extract("split", batch_size=8, max_rows=2, seen=seen)
    assert max(seen) == 8 and any(rows > 2 for rows in seen)  # the big batches were tried, then halved
    small_lake, small_id = extract("small", batch_size=2, max_rows=2, seen=[])
    assert run_id == small_id  # batch size is not part of what a run is
    split, small = split_lake.open_run(run_id), small_lake.open_run(run_id)
    assert split.status == "complete" and split.committed_prompts == len(PROMPTS)
    for point in POINTS:
        np.testing.assert_allclose(
            split.read(point).astype(np.float32), small.read(point).astype(np.float32), atol=2e-3
        )


def test_one_prompt_that_does_not_fit_is_resource_exhausted(extract: Callable[..., Any]) -> None:
    with pytest.raises(ResourceExhausted, match="does not fit in GPU memory"):
        extract("hopeless", batch_size=4, max_rows=0, seen=[])
