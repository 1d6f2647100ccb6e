"""The Extractor service over real gRPC: jobs, cancellation, resume, bad input, and staying up."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from neuronmap.client import Client
from neuronmap.errors import FailedPrecondition, InvalidArgument, NeuronMapError, NotFound
from neuronmap.v1 import catalog_pb2, common_pb2, extractor_pb2
from tests.conftest import StartServer, follow_until, make_settings

TinyModel = Callable[..., Path]


def _still_serving(client: Client) -> None:
    assert len(client.models()) >= 21


def _many_prompts(n: int, tag: str) -> list[str]:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "neurons", "fire"]
    return [f"{tag} {i}: " + " ".join(words[: 3 + i % 9]) for i in range(n)]


def test_bad_requests_get_the_right_status_and_the_server_stays_up(
    client: Client, tiny_model: TinyModel
) -> None:
    folder = str(tiny_model("gpt2"))
    with pytest.raises(NotFound, match="not a registry key"):
        client.extract("no_such_model", ["hi"], ["blocks.0.resid_post"])
    _still_serving(client)
    with pytest.raises(InvalidArgument, match=r"3 blocks \(blocks\.0 to blocks\.2\)"):
        client.extract(folder, ["hi"], ["blocks.7.resid_post"])
    _still_serving(client)
    with pytest.raises(InvalidArgument, match=r"nearest valid names: transformer\.h\.0\.mlp\.c_proj"):
        client.extract(folder, ["hi"], ["transformer.h.0.mlp.c_prj"])
    with pytest.raises(InvalidArgument, match="no prompts"):
        client.extract(folder, [], ["blocks.0.resid_post"])
    with pytest.raises(InvalidArgument, match="batch size"):
        client.extract(folder, ["hi"], ["blocks.0.resid_post"], batch_size=-1)
    with pytest.raises(NotFound, match="not in the catalog"):
        client.get_run("run-doesnotexist")
    with pytest.raises(NotFound, match="no job"):
        client.watch("run-doesnotexist")
    with pytest.raises(NotFound, match="no job"):
        client.cancel("run-doesnotexist")
    _still_serving(client)


def test_statuses_are_real_grpc_codes(stack: object, tiny_model: TinyModel) -> None:
    channel = grpc.insecure_channel(stack.target)  # type: ignore[attr-defined]
    from neuronmap.v1 import extractor_pb2_grpc

    stub = extractor_pb2_grpc.ExtractorStub(channel)
    request = extractor_pb2.ExtractRequest(
        model=str(tiny_model("gpt2")), prompts=["x"], points=["blocks.9.mlp_out"]
    )
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Extract(request))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Extract(extractor_pb2.ExtractRequest(model="nope/nope", prompts=["x"], points=["embed"])))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def test_a_prompt_longer_than_the_context_is_truncated_and_said_so(
    client: Client, tiny_model: TinyModel
) -> None:
    folder = str(tiny_model("llama"))
    long_prompt = "neurons " * 400  # far beyond the tiny model's 128 positions
    events: list[extractor_pb2.JobEvent] = []
    run = client.extract(folder, ["short one", long_prompt], ["blocks.1.resid_post"], on_event=events.append)
    assert run.info.truncated_prompts == 1
    assert run.info.max_length == 128
    assert np.diff(run.offsets()).max() == 128
    assert any("truncated" in w for e in events for w in e.warnings)
    short = client.extract(folder, [long_prompt], ["blocks.1.resid_post"], max_length=16)
    assert np.diff(short.offsets()).tolist() == [16]


def test_describe_lists_points_with_shapes_without_running_text(
    client: Client, tiny_model: TinyModel
) -> None:
    description = client.describe(str(tiny_model("bert")), include_modules=True)
    points = {p.point: list(p.shape) for p in description.points}
    assert points["blocks.2.resid_post"] == [-1, 32]
    assert "final_norm" not in points
    modules = {m.point: m.shape[-1] for m in description.modules}
    assert modules["encoder.layer.0.intermediate.dense"] == 64
    big = client.describe("gpt2_large")
    assert big.source == "registry" and big.info.n_blocks == 36 and big.info.d_model == 1280
    assert len(big.points) == 1 + 36 * 4 + 1


def test_jobs_survive_the_caller_and_can_be_watched_again(client: Client, tiny_model: TinyModel) -> None:
    folder = str(tiny_model("gpt2"))
    prompts = _many_prompts(600, "survive")
    events = client.extract_events(folder, prompts, ["blocks.2.resid_post"], batch_size=1)
    first = next(events)
    events.close()  # the caller goes away after the first event
    run = client.watch(first.job_id)
    assert run.status == "complete" and run.info.n_prompts == 600
    assert run.run_id == first.run_id


@pytest.mark.slow
def test_cancel_then_resume_gives_the_uninterrupted_result(
    start_server: StartServer, tiny_model: TinyModel, tmp_path: Path
) -> None:
    folder = str(tiny_model("gpt2"))
    prompts = _many_prompts(800, "cancel")
    points = ["blocks.0.resid_post", "blocks.2.mlp_out"]
    # Small windows: many commits, so a cancel leaves a committed prefix behind.
    running = start_server(settings=make_settings(tmp_path / "a", window_mb=0.02))
    with Client(running.settings) as client:
        events = client.extract_events(folder, prompts, points, batch_size=1)
        job_id = next(events).job_id
        follow_until(events, prompts_done=100, seconds=60)
        client.cancel(job_id)
        with pytest.raises(NeuronMapError, match="cancelled"):
            client.watch(job_id)
        record = client.get_run(job_id)
        assert record.status == "cancelled"
        assert 0 < record.info.committed_prompts < len(prompts)
        partial = record.array("blocks.0.resid_post")
        assert partial.shape[0] == record.offsets()[record.info.committed_prompts]

        resumed_events: list[extractor_pb2.JobEvent] = []
        resumed = client.extract(folder, prompts, points, batch_size=1, on_event=resumed_events.append)
        assert resumed.run_id == job_id and resumed.status == "complete"
        assert any(e.resumed for e in resumed_events)
        np.testing.assert_array_equal(resumed.array("blocks.0.resid_post")[: partial.shape[0]], partial)

    # Same batch size and windows: the same batches, so the same bytes.
    other = start_server(settings=make_settings(tmp_path / "b", window_mb=0.02))
    with Client(other.settings) as fresh:
        uninterrupted = fresh.extract(folder, prompts, points, batch_size=1)
        assert uninterrupted.run_id == job_id
        for point in points:
            np.testing.assert_array_equal(resumed.array(point), uninterrupted.array(point))


def test_concurrent_identical_requests_share_one_job(client: Client, tiny_model: TinyModel) -> None:
    folder = str(tiny_model("gpt2"))
    prompts = _many_prompts(300, "shared")
    results: list[str] = []

    def extract() -> None:
        results.append(client.extract(folder, prompts, ["blocks.1.resid_post"], batch_size=1).run_id)

    threads = [threading.Thread(target=extract) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(set(results)) == 1 and len(results) == 3
    runs = client.runs(point="blocks.1.resid_post", limit=1000)
    assert [r.run_id for r in runs].count(results[0]) == 1


def test_catalog_records_the_run(client: Client, tiny_model: TinyModel) -> None:
    folder = str(tiny_model("bert"))
    run = client.extract(
        folder, ["a catalog entry", "and another"], ["blocks.1.resid_post", "embed"], dtype="bfloat16"
    )
    record = client.catalog.GetRun(catalog_pb2.GetRunRequest(run_id=run.run_id))
    assert record.status == common_pb2.RUN_STATUS_COMPLETE
    assert record.dtype == common_pb2.STORAGE_DTYPE_BFLOAT16
    assert record.committed_prompts == 2 and record.n_prompts == 2
    assert {p.point: list(p.shape) for p in record.points} == {
        "blocks.1.resid_post": [record.n_tokens, 32],
        "embed": [record.n_tokens, 32],
    }
    assert run.run_id in [r.run_id for r in client.runs(model=folder, status="complete")]


def test_settings_point_the_client_at_one_target(stack: object) -> None:
    settings = dataclasses.replace(stack.settings, extractor_target="127.0.0.1:1")  # type: ignore[attr-defined]
    with Client(settings) as broken, pytest.raises(NeuronMapError, match="unavailable"):
        broken.models()


def test_services_run_as_separate_servers(
    start_server: StartServer, tiny_model: TinyModel, tmp_path: Path
) -> None:
    catalog = start_server(services=("catalog",), settings=make_settings(tmp_path))
    workers = start_server(
        services=("extractor", "analyzer"), settings=make_settings(tmp_path, catalog_target=catalog.target)
    )
    assert workers.target != catalog.target
    settings = dataclasses.replace(workers.settings, catalog_target=catalog.target)
    with Client(settings) as client:
        assert set(client.wait_ready(timeout=10).values()) == {"SERVING"}
        run = client.extract(
            str(tiny_model("gpt2")), ["split services", "two servers"], ["blocks.1.resid_post"]
        )
        stats = client.statistics(run.run_id, "blocks.1.resid_post")
        assert stats.n_rows == run.info.n_tokens
    with pytest.raises(FailedPrecondition, match="NEURONMAP_CATALOG_TARGET"):
        start_server(services=("extractor",), settings=make_settings(tmp_path / "alone"))


def test_background_and_inline_writers_store_the_same_bytes(
    start_server: StartServer, tiny_model: TinyModel, tmp_path: Path
) -> None:
    folder = str(tiny_model("llama"))
    prompts = _many_prompts(120, "writers")
    points = ["blocks.0.resid_post", "blocks.2.mlp_out"]
    arrays = {}
    for mode in ("background", "inline"):
        running = start_server(settings=make_settings(tmp_path / mode, window_mb=0.05, writer=mode))
        with Client(running.settings) as client:
            run = client.extract(folder, prompts, points, batch_size=4)
            assert run.reader().provenance["writer"] == mode
            arrays[mode] = {p: run.array(p) for p in points}
    for point in points:
        np.testing.assert_array_equal(arrays["background"][point], arrays["inline"][point])
