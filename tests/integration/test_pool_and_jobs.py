"""The model pool (lazy loads, a memory budget, least recently used out) and the device's job queue."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from neuronmap.client import Client
from neuronmap.errors import NeuronMapError
from neuronmap.v1 import extractor_pb2
from neuronmap_extractor.loading import weights_location
from neuronmap_extractor.pool import ModelPool
from neuronmap_extractor.registry import Registry
from tests.conftest import StartServer, make_settings

TinyModel = Callable[..., Path]


def test_pool_keeps_models_within_its_budget_least_recently_used_out(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    registry = Registry.load()
    specs = {family: registry.resolve(str(tiny_model(family))) for family in ("gpt2", "llama", "bert")}
    probe = ModelPool(registry, make_settings(tmp_path))
    sizes = {f: probe.get(s, *weights_location(s, probe.settings)).n_bytes for f, s in specs.items()}
    # Room for the two largest, not for all three.
    budget = sorted(sizes.values())[-1] + sorted(sizes.values())[-2]
    pool = ModelPool(registry, make_settings(tmp_path, model_memory_gb=budget / (1 << 30)))

    def get(family: str) -> object:
        return pool.get(specs[family], *weights_location(specs[family], pool.settings))

    first = get("gpt2")
    assert get("gpt2") is first  # loaded once, then served from the pool
    get("llama")
    get("gpt2")  # gpt2 is now the most recently used
    get("bert")
    loaded = [m.spec.key for m in pool.models()]
    assert specs["llama"].key not in loaded, "the least recently used model is unloaded first"
    assert loaded == [specs["gpt2"].key, specs["bert"].key]
    assert sum(m.n_bytes for m in pool.models()) <= pool.budget


def test_loaded_models_are_listed(client: Client, tiny_model: TinyModel) -> None:
    folder = str(tiny_model("gpt2"))
    client.extract(folder, ["load me"], ["blocks.0.resid_post"])
    response = client.extractor.ListModels(extractor_pb2.ListModelsRequest())
    assert folder in [m.model for m in response.loaded]
    assert all(m.bytes > 0 and m.device == "cpu" for m in response.loaded)


def test_jobs_for_one_device_queue_and_a_queued_job_can_be_cancelled(
    start_server: StartServer, tiny_model: TinyModel, tmp_path: Path
) -> None:
    running = start_server(settings=make_settings(tmp_path))
    folder = str(tiny_model("gpt2"))
    long_prompts = [f"long job prompt {i} with a few more words" for i in range(800)]
    with Client(running.settings) as client:
        first = client.extract_events(folder, long_prompts, ["blocks.2.resid_post"], batch_size=1)
        first_id = next(first).job_id
        second = client.extract_events(folder, ["queued behind"], ["blocks.0.resid_post"])
        second_event = next(second)
        assert second_event.job_id != first_id
        states = {j.job_id: j.state for j in client.jobs()}
        assert states[second_event.job_id] == extractor_pb2.JOB_STATE_QUEUED
        assert states[first_id] in (extractor_pb2.JOB_STATE_LOADING, extractor_pb2.JOB_STATE_RUNNING)
        cancelled = client.cancel(second_event.job_id)
        assert cancelled.state == extractor_pb2.JOB_STATE_CANCELLED
        with pytest.raises(NeuronMapError, match="cancelled before it started"):
            client.watch(second_event.job_id)
        # The running job is untouched and completes.
        run = client.watch(first_id)
        assert run.status == "complete" and run.info.n_prompts == 800
        second.close()
        first.close()


def test_dry_run_sizes_and_estimates_without_extracting(
    client: Client, tiny_model: TinyModel, tmp_path: Path
) -> None:
    # A copy the server has never run: the first estimate must come from the matmul rate, not a measured one.
    folder = Path(shutil.copytree(tiny_model("llama"), tmp_path / "llama-never-run"))
    prompts = ["a dry run question", "and another one, a little longer than the first"]
    points = ["blocks.0.resid_post", "blocks.1.mlp_out"]
    run_id, report = client.dry_run(str(folder), prompts, points)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert report.tokens == tokens and report.prompts == 2 and not report.already_in_lake
    assert report.bytes_to_write == tokens * 32 * 2 * len(points) + 4 * tokens + 8 * 3
    assert report.estimated_seconds > 0 and "GFLOP/s" in report.estimate_basis
    with pytest.raises(NeuronMapError):
        client.get_run(run_id)  # nothing was registered
    started = time.monotonic()
    run = client.extract(str(folder), prompts, points)
    assert run.run_id == run_id
    assert time.monotonic() - started < 60
    _, again = client.dry_run(str(folder), prompts, points)
    assert again.already_in_lake and again.bytes_to_write == 0
    _, measured = client.dry_run(str(folder), [*prompts, "a new one"], points)
    assert "measured" in measured.estimate_basis and measured.estimated_seconds > 0
    np.testing.assert_equal(run.info.n_tokens, tokens)
