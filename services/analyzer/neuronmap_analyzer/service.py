"""The Analyzer gRPC servicer: a thin adapter over `neuronmap_analyzer.statistics`.

Runs are looked up in the catalog over gRPC (the analyzer never opens the DuckDB file) and read from the
lake at the URI the catalog records. Results of complete runs are written to the analyzer's lake
(`settings.lake_uri`) and registered in the catalog, so the same request is read back next time. A run
that is still being written is analysed over its committed rows and the result is not stored.

`add_to_server` is how `neuronmap.server` plugs the analyzer into a gRPC server.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from neuronmap.client import Client
from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound
from neuronmap.grpc_errors import from_rpc_error, unary
from neuronmap.lake import Lake
from neuronmap.settings import Settings
from neuronmap.v1 import analyzer_pb2, analyzer_pb2_grpc, catalog_pb2, common_pb2
from neuronmap_analyzer.moments import STATISTICS
from neuronmap_analyzer.statistics import (
    KIND,
    StatisticsResult,
    analysis_id,
    check_threshold,
    compute_statistics,
    layer_from_json,
    layer_to_json,
)


def _version() -> str:
    try:
        return importlib.metadata.version("neuronmap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class AnalyzerServicer(analyzer_pb2_grpc.AnalyzerServicer):  # type: ignore[misc]
    """Serves `neuronmap.v1.Analyzer`; `close()` closes its catalog channel."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = Client(settings)
        self.lake = Lake(settings.lake_uri, settings.storage_options())
        # One computation per analysis at a time in this process: a second identical request waits and
        # reads the stored result instead of computing it again (and racing the first one's write).
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = threading.Lock()
                self._locks[key] = lock
            return lock

    @unary
    def Statistics(
        self, request: analyzer_pb2.StatisticsRequest, context: grpc.ServicerContext
    ) -> analyzer_pb2.StatisticsResponse:
        start = time.perf_counter()
        if not request.run_id:
            raise InvalidArgument("run_id is empty")
        if not request.point:
            raise InvalidArgument("point is empty")
        threshold = check_threshold(request.sparsity_threshold)
        run = self.client.get_run(request.run_id)  # the catalog's NOT_FOUND comes back as NotFound
        if not run.info.uri:
            raise FailedPrecondition(
                f"run {request.run_id} has no lake URI in the catalog (status {run.status})"
            )
        reader = Lake.open_run_at(run.info.uri, self.settings.storage_options())
        array = reader.array(request.point)  # NotFound naming the run's points
        aid = analysis_id(request.run_id, request.point, threshold)
        # Only a complete run is immutable: anything else may gain rows, so its result is not kept.
        if reader.status != "complete":
            result = compute_statistics(array, threshold)
            return _response(aid, request, result, cached=False, uri="", seconds=time.perf_counter() - start)

        uri = self.lake.analysis_uri(aid)
        with self._lock(aid):
            stored = None if request.recompute else self._read_stored(aid)
            if stored is not None:
                result, layer_json = stored
                # Idempotent: repairs a catalog that missed the registration (a crash in between).
                self._register(aid, request.run_id, request.point, threshold, uri, layer_json)
                return _response(
                    aid, request, result, cached=True, uri=uri, seconds=time.perf_counter() - start
                )
            result = compute_statistics(array, threshold)
            layer_json = {**layer_to_json(result.layer), "count": result.count}
            report = {
                "kind": KIND,
                "analysis_id": aid,
                "run_id": request.run_id,
                "run_uri": run.info.uri,
                "point": request.point,
                "threshold": threshold,
                "n_rows": result.n_rows,
                "n_neurons": result.n_neurons,
                "layer": layer_json,
                "seconds": result.seconds,
                "neuronmap_version": _version(),
            }
            uri = self.lake.write_analysis(aid, arrays=result.neurons, report=report)
            self._register(aid, request.run_id, request.point, threshold, uri, layer_json)
            return _response(aid, request, result, cached=False, uri=uri, seconds=time.perf_counter() - start)

    def _read_stored(self, aid: str) -> tuple[StatisticsResult, dict[str, Any]] | None:
        """(result, layer numbers as stored) of a stored analysis, or None if there is none."""
        try:
            arrays, report = self.lake.read_analysis(aid)
        except NotFound:
            return None
        layer_json = dict(report["layer"])
        result = StatisticsResult(
            neurons={name: np.asarray(arrays[name], dtype=np.float64) for name in STATISTICS},
            layer=layer_from_json({name: layer_json[name] for name in STATISTICS}),
            n_rows=int(report["n_rows"]),
            n_neurons=int(report["n_neurons"]),
            seconds=float(report["seconds"]),
        )
        return result, layer_json

    def _register(
        self, aid: str, run_id: str, point: str, threshold: float, uri: str, layer: Mapping[str, Any]
    ) -> None:
        analysis = common_pb2.Analysis(
            analysis_id=aid,
            run_id=run_id,
            point=point,
            kind=KIND,
            params_json=json.dumps({"threshold": threshold}),
            uri=uri,
            summary_json=json.dumps(dict(layer), sort_keys=True),
        )
        request = catalog_pb2.RegisterAnalysisRequest(analysis=analysis)
        try:
            self.client.catalog.RegisterAnalysis(request)
        except grpc.RpcError as error:
            # The result stays in the lake: the next request reads it back and registers it again.
            raise from_rpc_error(error) from None


def _response(
    aid: str,
    request: analyzer_pb2.StatisticsRequest,
    result: StatisticsResult,
    cached: bool,
    uri: str,
    seconds: float,
) -> analyzer_pb2.StatisticsResponse:
    """The response; `seconds` is what this call took (reading a cached result back is quick)."""
    # NaN (a constant neuron's skewness, an empty run) travels as NaN: proto doubles are IEEE 754.
    neurons = analyzer_pb2.NeuronStatistics(**{name: result.neurons[name].tolist() for name in STATISTICS})
    layer = analyzer_pb2.LayerStatistics(
        **{name: result.layer[name] for name in STATISTICS}, count=result.count
    )
    return analyzer_pb2.StatisticsResponse(
        analysis_id=aid,
        run_id=request.run_id,
        point=request.point,
        n_rows=result.n_rows,
        n_neurons=result.n_neurons,
        layer=layer,
        neurons=neurons,
        cached=cached,
        uri=uri,
        seconds=seconds,
    )


def add_to_server(server: grpc.Server, settings: Settings) -> AnalyzerServicer:
    """Serves the analyzer on `server`; close() the result to close its catalog channel."""
    servicer = AnalyzerServicer(settings)
    analyzer_pb2_grpc.add_AnalyzerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
