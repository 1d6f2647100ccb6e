"""The Catalog gRPC servicer: a thin adapter that validates, converts protos to records and calls the store.

`add_to_server` is how `neuronmap.server` plugs the catalog into a gRPC server.
"""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from neuronmap import protos
from neuronmap.client import timestamp
from neuronmap.errors import InvalidArgument
from neuronmap.grpc_errors import unary
from neuronmap.settings import Settings
from neuronmap.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2
from neuronmap_catalog.store import AnalysisRecord, CatalogStore, PointRecord, RunRecord


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):  # type: ignore[misc]
    """Serves `neuronmap.v1.Catalog` from one CatalogStore; `close()` closes the store."""

    def __init__(self, store: CatalogStore) -> None:
        self.store = store

    def close(self) -> None:
        self.store.close()

    @unary
    def RegisterRun(
        self, request: catalog_pb2.RegisterRunRequest, context: grpc.ServicerContext
    ) -> common_pb2.Run:
        if not request.HasField("run"):
            raise InvalidArgument("RegisterRun needs a run")
        _require("run_id", request.run.run_id)
        return run_to_proto(self.store.register_run(run_from_proto(request.run)))

    @unary
    def UpdateRun(
        self, request: catalog_pb2.UpdateRunRequest, context: grpc.ServicerContext
    ) -> common_pb2.Run:
        _require("run_id", request.run_id)
        record = self.store.update_run(
            request.run_id,
            status=protos.status_from_proto(request.status) or None,
            committed_prompts=request.committed_prompts if request.has_committed_prompts else None,
            error=request.error or None,
        )
        return run_to_proto(record)

    @unary
    def GetRun(self, request: catalog_pb2.GetRunRequest, context: grpc.ServicerContext) -> common_pb2.Run:
        _require("run_id", request.run_id)
        return run_to_proto(self.store.get_run(request.run_id))

    @unary
    def ListRuns(
        self, request: catalog_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListRunsResponse:
        runs, total = self.store.list_runs(
            model=request.model,
            status=protos.status_from_proto(request.status),
            point=request.point,
            created_after=_datetime(request.created_after) if request.HasField("created_after") else None,
            created_before=_datetime(request.created_before) if request.HasField("created_before") else None,
            limit=request.limit,
            offset=request.offset,
        )
        return catalog_pb2.ListRunsResponse(runs=[run_to_proto(r) for r in runs], total=total)

    @unary
    def RegisterAnalysis(
        self, request: catalog_pb2.RegisterAnalysisRequest, context: grpc.ServicerContext
    ) -> common_pb2.Analysis:
        if not request.HasField("analysis"):
            raise InvalidArgument("RegisterAnalysis needs an analysis")
        _require("analysis_id", request.analysis.analysis_id)
        _require("run_id", request.analysis.run_id)
        return analysis_to_proto(self.store.register_analysis(analysis_from_proto(request.analysis)))

    @unary
    def GetAnalysis(
        self, request: catalog_pb2.GetAnalysisRequest, context: grpc.ServicerContext
    ) -> common_pb2.Analysis:
        _require("analysis_id", request.analysis_id)
        return analysis_to_proto(self.store.get_analysis(request.analysis_id))

    @unary
    def ListAnalyses(
        self, request: catalog_pb2.ListAnalysesRequest, context: grpc.ServicerContext
    ) -> catalog_pb2.ListAnalysesResponse:
        analyses, total = self.store.list_analyses(
            run_id=request.run_id,
            point=request.point,
            kind=request.kind,
            limit=request.limit,
            offset=request.offset,
        )
        return catalog_pb2.ListAnalysesResponse(
            analyses=[analysis_to_proto(a) for a in analyses], total=total
        )


def add_to_server(server: grpc.Server, settings: Settings) -> CatalogServicer:
    """Opens the catalog file named by settings and serves it on `server`; close() the result to close it."""
    servicer = CatalogServicer(CatalogStore(settings.catalog_path))
    catalog_pb2_grpc.add_CatalogServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer


def run_from_proto(run: common_pb2.Run) -> RunRecord:
    """A record of a proto run; UNSPECIFIED status means pending (reduction and dtype have their defaults)."""
    return RunRecord(
        run_id=run.run_id,
        model=run.model,
        model_id=run.model_id,
        status=protos.status_from_proto(run.status) or "pending",
        points=tuple(
            PointRecord(point=p.point, shape=tuple(p.shape), module_path=p.module_path, kind=p.kind)
            for p in run.points
        ),
        reduction=protos.reduction_from_proto(run.reduction),
        dtype=protos.dtype_from_proto(run.dtype),
        n_prompts=run.n_prompts,
        n_tokens=run.n_tokens,
        committed_prompts=run.committed_prompts,
        uri=run.uri,
        error=run.error,
        spec_json=run.spec_json,
        truncated_prompts=run.truncated_prompts,
        max_length=run.max_length,
    )


def run_to_proto(record: RunRecord) -> common_pb2.Run:
    run = common_pb2.Run(
        run_id=record.run_id,
        model=record.model,
        model_id=record.model_id,
        status=protos.STATUS_TO_PROTO[record.status],
        points=[
            common_pb2.PointShape(point=p.point, shape=list(p.shape), module_path=p.module_path, kind=p.kind)
            for p in record.points
        ],
        reduction=protos.REDUCTION_TO_PROTO[record.reduction],
        dtype=protos.DTYPE_TO_PROTO[record.dtype],
        n_prompts=record.n_prompts,
        n_tokens=record.n_tokens,
        committed_prompts=record.committed_prompts,
        uri=record.uri,
        error=record.error,
        spec_json=record.spec_json,
        truncated_prompts=record.truncated_prompts,
        max_length=record.max_length,
    )
    if record.created_at is not None:
        run.created_at.CopyFrom(timestamp(record.created_at))
    if record.updated_at is not None:
        run.updated_at.CopyFrom(timestamp(record.updated_at))
    return run


def analysis_from_proto(analysis: common_pb2.Analysis) -> AnalysisRecord:
    return AnalysisRecord(
        analysis_id=analysis.analysis_id,
        run_id=analysis.run_id,
        point=analysis.point,
        kind=analysis.kind,
        params_json=analysis.params_json,
        uri=analysis.uri,
        summary_json=analysis.summary_json,
    )


def analysis_to_proto(record: AnalysisRecord) -> common_pb2.Analysis:
    analysis = common_pb2.Analysis(
        analysis_id=record.analysis_id,
        run_id=record.run_id,
        point=record.point,
        kind=record.kind,
        params_json=record.params_json,
        uri=record.uri,
        summary_json=record.summary_json,
    )
    if record.created_at is not None:
        analysis.created_at.CopyFrom(timestamp(record.created_at))
    return analysis


def _require(name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is empty")


def _datetime(ts: Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)
