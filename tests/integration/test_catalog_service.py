"""The Catalog service through a real gRPC server on 127.0.0.1: round trips, filters, status codes, health."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from neuronmap.client import Client
from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound
from neuronmap.grpc_errors import from_rpc_error
from neuronmap.server import RunningServer
from neuronmap.settings import Settings
from neuronmap.v1 import catalog_pb2, common_pb2

StartServer = Callable[..., RunningServer]


@pytest.fixture
def client(start_server: StartServer, settings: Settings) -> Iterator[Client]:
    running = start_server(services=("catalog",))
    with Client(dataclasses.replace(settings, target=running.target)) as connected:
        yield connected


def _run(run_id: str, points: list[common_pb2.PointShape] | None = None, **fields: Any) -> common_pb2.Run:
    if points is None:
        points = [
            common_pb2.PointShape(
                point="blocks.0.resid_post", shape=[-1, 768], module_path="transformer.h.0", kind="output"
            ),
            common_pb2.PointShape(
                point="embed", shape=[-1, 768], module_path="transformer.wte", kind="output"
            ),
        ]
    values: dict[str, Any] = {
        "model": "gpt2",
        "model_id": "openai-community/gpt2",
        "status": common_pb2.RUN_STATUS_PENDING,
        "reduction": common_pb2.REDUCTION_TOKENS,
        "dtype": common_pb2.STORAGE_DTYPE_FLOAT16,
        "n_prompts": 10,
        "n_tokens": 70,
        "uri": f"file:///lake/runs/{run_id}",
        "spec_json": '{"model": "gpt2"}',
    }
    values.update(fields)
    return common_pb2.Run(run_id=run_id, points=points, **values)


def _register(client: Client, run: common_pb2.Run) -> common_pb2.Run:
    response: common_pb2.Run = client.catalog.RegisterRun(catalog_pb2.RegisterRunRequest(run=run))
    return response


def _update(client: Client, run_id: str, **fields: Any) -> common_pb2.Run:
    response: common_pb2.Run = client.catalog.UpdateRun(catalog_pb2.UpdateRunRequest(run_id=run_id, **fields))
    return response


def _created(run: common_pb2.Run) -> dt.datetime:
    return run.created_at.ToDatetime(tzinfo=dt.UTC)


def _assert_serving(client: Client) -> None:
    """The server still answers after an error."""
    assert client.catalog.ListRuns(catalog_pb2.ListRunsRequest(limit=1)).total >= 0


def test_register_and_get_a_run(client: Client) -> None:
    asked = _run("r1", reduction=common_pb2.REDUCTION_MEAN, dtype=common_pb2.STORAGE_DTYPE_BFLOAT16)
    registered = _register(client, asked)
    assert registered.HasField("created_at")
    assert registered.created_at == registered.updated_at
    assert abs(_created(registered) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)

    run = client.get_run("r1")
    assert run.info == registered
    assert run.status == "pending"
    assert run.points == {"blocks.0.resid_post": (-1, 768), "embed": (-1, 768)}
    assert run.spec == {"model": "gpt2"}
    assert (run.info.reduction, run.info.dtype) == (
        common_pb2.REDUCTION_MEAN,
        common_pb2.STORAGE_DTYPE_BFLOAT16,
    )
    assert [p.module_path for p in run.info.points] == ["transformer.h.0", "transformer.wte"]
    # Idempotent: the same id again returns the stored run.
    assert _register(client, _run("r1", model="other")) == registered


def test_unspecified_enums_take_their_defaults(client: Client) -> None:
    bare = _register(client, common_pb2.Run(run_id="bare", model="gpt2"))
    assert bare.status == common_pb2.RUN_STATUS_PENDING
    assert bare.reduction == common_pb2.REDUCTION_TOKENS
    assert bare.dtype == common_pb2.STORAGE_DTYPE_FLOAT16
    assert list(bare.points) == []


def test_update_run_progress_status_and_error(client: Client) -> None:
    _register(client, _run("r1"))
    running = _update(
        client, "r1", status=common_pb2.RUN_STATUS_RUNNING, committed_prompts=4, has_committed_prompts=True
    )
    assert (running.status, running.committed_prompts) == (common_pb2.RUN_STATUS_RUNNING, 4)
    # Without has_committed_prompts, 0 is "unset"; UNSPECIFIED keeps the status.
    kept = _update(client, "r1", committed_prompts=0)
    assert (kept.status, kept.committed_prompts) == (common_pb2.RUN_STATUS_RUNNING, 4)
    # With it, 0 is a value, but progress never moves backwards.
    assert _update(client, "r1", committed_prompts=0, has_committed_prompts=True).committed_prompts == 4
    failed = _update(client, "r1", status=common_pb2.RUN_STATUS_FAILED, error="CUDA out of memory")
    assert (failed.status, failed.error) == (common_pb2.RUN_STATUS_FAILED, "CUDA out of memory")
    # Registering the stopped run again resumes it.
    resumed = _register(client, _run("r1", status=common_pb2.RUN_STATUS_RUNNING))
    assert (resumed.status, resumed.error, resumed.committed_prompts) == (
        common_pb2.RUN_STATUS_RUNNING,
        "",
        4,
    )
    done = _update(
        client, "r1", status=common_pb2.RUN_STATUS_COMPLETE, committed_prompts=10, has_committed_prompts=True
    )
    assert client.get_run("r1").status == "complete"
    assert client.get_run("r1").info == done


def test_list_runs_with_filters(client: Client) -> None:
    r1 = _register(client, _run("r1"))
    r2 = _register(
        client,
        _run(
            "r2",
            model="smollm2_135m",
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            points=[common_pb2.PointShape(point="blocks.3.resid_post", shape=[-1, 576])],
        ),
    )
    r3 = _register(client, _run("r3", model="/models/gpt2", status=common_pb2.RUN_STATUS_RUNNING))

    def ids(**filters: object) -> list[str]:
        return [run.run_id for run in client.runs(**filters)]  # type: ignore[arg-type]

    assert ids() == ["r3", "r2", "r1"]
    assert ids(model="gpt2") == ["r1"]
    assert ids(model="openai-community/gpt2") == ["r3", "r1"]
    assert ids(model="HuggingFaceTB/SmolLM2-135M-Instruct") == ["r2"]
    assert ids(status="running") == ["r3"]
    assert ids(status="complete") == []
    assert ids(point="embed") == ["r3", "r1"]
    assert ids(point="blocks.3.resid_post") == ["r2"]
    assert ids(model="openai-community/gpt2", status="pending", point="embed") == ["r1"]
    assert ids(created_after=_created(r2)) == ["r3", "r2"]
    assert ids(created_before=_created(r2)) == ["r1"]
    assert ids(created_after=_created(r1), created_before=_created(r3)) == ["r2", "r1"]
    assert ids(limit=1, offset=1) == ["r2"]

    page = client.catalog.ListRuns(catalog_pb2.ListRunsRequest(point="embed", limit=1))
    assert [run.run_id for run in page.runs] == ["r3"]
    assert page.total == 2
    assert page.runs[0] == r3


def test_analyses_over_grpc(client: Client) -> None:
    _register(client, _run("r1"))
    _register(client, _run("r2"))
    asked = [
        common_pb2.Analysis(
            analysis_id="a1", run_id="r1", point="embed", kind="statistics", summary_json="{}"
        ),
        common_pb2.Analysis(analysis_id="a2", run_id="r1", point="blocks.0.resid_post", kind="statistics"),
        common_pb2.Analysis(analysis_id="a3", run_id="r2", point="embed", kind="pca", params_json='{"k": 2}'),
    ]
    registered = [
        client.catalog.RegisterAnalysis(catalog_pb2.RegisterAnalysisRequest(analysis=a)) for a in asked
    ]
    assert all(a.HasField("created_at") for a in registered)
    got = client.catalog.GetAnalysis(catalog_pb2.GetAnalysisRequest(analysis_id="a3"))
    assert got == registered[2]
    assert got.params_json == '{"k": 2}'

    assert [a.analysis_id for a in client.analyses()] == ["a3", "a2", "a1"]
    assert [a.analysis_id for a in client.analyses(run_id="r1")] == ["a2", "a1"]
    assert [a.analysis_id for a in client.analyses(point="embed")] == ["a3", "a1"]
    assert [a.analysis_id for a in client.analyses(kind="pca")] == ["a3"]
    listed = client.catalog.ListAnalyses(catalog_pb2.ListAnalysesRequest(run_id="r1", limit=1))
    assert ([a.analysis_id for a in listed.analyses], listed.total) == (["a2"], 2)


def test_errors_arrive_as_status_codes_and_the_server_keeps_serving(client: Client) -> None:
    _register(client, _run("r1"))

    with pytest.raises(NotFound, match="'missing'"):
        client.get_run("missing")
    _assert_serving(client)
    with pytest.raises(grpc.RpcError) as raw:
        client.catalog.GetRun(catalog_pb2.GetRunRequest(run_id="missing"))
    assert raw.value.code() == grpc.StatusCode.NOT_FOUND
    _assert_serving(client)

    with pytest.raises(InvalidArgument, match="limit 5000"):
        client.runs(limit=5000)
    _assert_serving(client)
    with pytest.raises(grpc.RpcError) as raw:
        client.catalog.ListRuns(catalog_pb2.ListRunsRequest(limit=-1))
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_serving(client)

    _update(client, "r1", status=common_pb2.RUN_STATUS_COMPLETE)
    with pytest.raises(grpc.RpcError) as raw:
        _update(client, "r1", status=common_pb2.RUN_STATUS_RUNNING)
    assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "r1 is complete" in raw.value.details()
    assert isinstance(from_rpc_error(raw.value), FailedPrecondition)
    _assert_serving(client)
    assert client.get_run("r1").status == "complete"


@pytest.mark.parametrize(
    ("call", "request_message", "code"),
    [
        ("GetRun", catalog_pb2.GetRunRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("UpdateRun", catalog_pb2.UpdateRunRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("UpdateRun", catalog_pb2.UpdateRunRequest(run_id="missing"), grpc.StatusCode.NOT_FOUND),
        ("RegisterRun", catalog_pb2.RegisterRunRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (
            "RegisterRun",
            catalog_pb2.RegisterRunRequest(run=common_pb2.Run(model="gpt2")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "RegisterRun",
            catalog_pb2.RegisterRunRequest(run=common_pb2.Run(run_id="bad", spec_json="{")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "UpdateRun",
            catalog_pb2.UpdateRunRequest(run_id="r1", committed_prompts=11, has_committed_prompts=True),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "RegisterAnalysis",
            catalog_pb2.RegisterAnalysisRequest(
                analysis=common_pb2.Analysis(analysis_id="a", run_id="missing")
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "RegisterAnalysis",
            catalog_pb2.RegisterAnalysisRequest(analysis=common_pb2.Analysis(run_id="r1")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("GetAnalysis", catalog_pb2.GetAnalysisRequest(analysis_id="missing"), grpc.StatusCode.NOT_FOUND),
        ("ListAnalyses", catalog_pb2.ListAnalysesRequest(limit=1001), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_requests_map_to_status_codes(
    client: Client, call: str, request_message: object, code: grpc.StatusCode
) -> None:
    _register(client, _run("r1"))
    with pytest.raises(grpc.RpcError) as raw:
        getattr(client.catalog, call)(request_message)
    assert raw.value.code() == code
    _assert_serving(client)
    assert client.get_run("r1").info.committed_prompts == 0


def test_health_reports_the_catalog_serving(client: Client) -> None:
    with grpc.insecure_channel(client.settings.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("neuronmap.v1.Catalog", ""):
            response = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        # Only the catalog runs on this server.
        with pytest.raises(grpc.RpcError) as raw:
            health.Check(health_pb2.HealthCheckRequest(service="neuronmap.v1.Extractor"))
        assert raw.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_catalog_file_outlives_the_server(start_server: StartServer, settings: Settings) -> None:
    first = start_server(services=("catalog",))
    with Client(dataclasses.replace(settings, target=first.target)) as client:
        registered = _register(client, _run("r1"))
    first.stop(grace=0)
    assert Path(settings.catalog_path).exists()

    second = start_server(services=("catalog",))
    with Client(dataclasses.replace(settings, target=second.target)) as client:
        assert client.get_run("r1").info == registered
        assert [run.run_id for run in client.runs(point="embed")] == ["r1"]


def test_reflection_lists_every_service(start_server: StartServer) -> None:
    """grpcurl-style discovery: server reflection names the three services and health checking."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    running = start_server()
    with grpc.insecure_channel(running.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
    assert {
        "neuronmap.v1.Catalog",
        "neuronmap.v1.Extractor",
        "neuronmap.v1.Analyzer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
