"""The thin Python client: one object for the three services, and run handles that read the lake.

    import neuronmap
    nm = neuronmap.connect("127.0.0.1:50051")
    run = nm.extract("smollm2_135m", ["The capital of France is"], points=["blocks.3.resid_post"])
    acts = run.array("blocks.3.resid_post")          # numpy [tokens, d_model]
    lazy = run.array("blocks.3.resid_post", lazy=True)  # reads chunks on slicing
    stats = nm.statistics(run.run_id, "blocks.3.resid_post")

Every failed call raises a `neuronmap.errors.NeuronMapError` subclass named after its gRPC status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from neuronmap import protos
from neuronmap.errors import NeuronMapError, Unavailable
from neuronmap.grpc_errors import from_rpc_error
from neuronmap.lake import Lake, PointArray, RunReader
from neuronmap.settings import Settings, load_settings
from neuronmap.v1 import (
    analyzer_pb2,
    analyzer_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    extractor_pb2,
    extractor_pb2_grpc,
)

T = TypeVar("T")
SERVICE_NAMES = {
    "catalog": catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name,
    "extractor": extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name,
    "analyzer": analyzer_pb2.DESCRIPTOR.services_by_name["Analyzer"].full_name,
}
EventCallback = Callable[[extractor_pb2.JobEvent], None]
TERMINAL_JOB_STATES = (
    extractor_pb2.JOB_STATE_COMPLETE,
    extractor_pb2.JOB_STATE_FAILED,
    extractor_pb2.JOB_STATE_CANCELLED,
)


def channel_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.max_message_mb << 20
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def _call(fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


def _stream(events: Iterable[T]) -> Generator[T, None, None]:
    try:
        yield from events
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


def timestamp(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    return ts


@dataclass(frozen=True)
class Statistics:
    """Statistics of one point: per neuron `[d]` arrays and layer-level numbers."""

    analysis_id: str
    run_id: str
    point: str
    n_rows: int
    neurons: dict[str, np.ndarray]
    layer: dict[str, float]
    cached: bool
    uri: str

    @staticmethod
    def from_proto(response: analyzer_pb2.StatisticsResponse) -> Statistics:
        names = ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis")
        return Statistics(
            analysis_id=response.analysis_id,
            run_id=response.run_id,
            point=response.point,
            n_rows=response.n_rows,
            neurons={n: np.asarray(getattr(response.neurons, n), dtype=np.float64) for n in names},
            layer={**{n: float(getattr(response.layer, n)) for n in names}, "count": response.layer.count},
            cached=response.cached,
            uri=response.uri,
        )


class Run:
    """A run: its catalog record, and its activations read straight from the lake."""

    def __init__(self, client: Client, info: common_pb2.Run) -> None:
        self._client = client
        self.info = info
        self._reader: RunReader | None = None

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, model={self.info.model!r}, status={self.status!r})"

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def status(self) -> str:
        return protos.status_from_proto(self.info.status)

    @property
    def points(self) -> dict[str, tuple[int, ...]]:
        return {p.point: tuple(p.shape) for p in self.info.points}

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.info.spec_json or "{}"))

    def refresh(self) -> Run:
        self.info = self._client.get_run(self.run_id).info
        self._reader = None
        return self

    def reader(self) -> RunReader:
        """The lake reader of this run (opened once; `refresh()` reopens)."""
        if self._reader is None:
            self._reader = Lake.open_run_at(self.info.uri, self._client.settings.storage_options())
        return self._reader

    @overload
    def array(self, point: str, lazy: Literal[False] = False) -> np.ndarray: ...

    @overload
    def array(self, point: str, lazy: Literal[True]) -> PointArray: ...

    def array(self, point: str, lazy: bool = False) -> np.ndarray | PointArray:
        """Activations of a point: `[tokens, d]` (or `[prompts, d]` for reduced runs).

        lazy=False reads everything into a numpy array; lazy=True returns a PointArray that reads only
        the chunks a slice touches.
        """
        array = self.reader().array(point)
        return array if lazy else array[:]

    def prompts(self) -> list[str]:
        return self.reader().prompts()

    def offsets(self) -> np.ndarray:
        return self.reader().offsets()

    def statistics(self, point: str, **kwargs: Any) -> Statistics:
        return self._client.statistics(self.run_id, point, **kwargs)


class Client:
    """Connection to a NeuronMap deployment (one target, or one per service from Settings)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, service: str) -> grpc.Channel:
        target = self.settings.for_service(service)
        if target not in self._channels:
            self._channels[target] = grpc.insecure_channel(target, options=channel_options(self.settings))
        return self._channels[target]

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogStub:
        return catalog_pb2_grpc.CatalogStub(self._channel("catalog"))

    @property
    def extractor(self) -> extractor_pb2_grpc.ExtractorStub:
        return extractor_pb2_grpc.ExtractorStub(self._channel("extractor"))

    @property
    def analyzer(self) -> analyzer_pb2_grpc.AnalyzerStub:
        return analyzer_pb2_grpc.AnalyzerStub(self._channel("analyzer"))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Each service's health (SERVING, NOT_SERVING...), or the gRPC code that answered instead."""
        statuses = {}
        for service, full_name in SERVICE_NAMES.items():
            stub = health_pb2_grpc.HealthStub(self._channel(service))
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=full_name), timeout=timeout)
                statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                statuses[service] = error.code().name
        return statuses

    def wait_ready(self, timeout: float = 30.0) -> dict[str, str]:
        """Blocks until every service is SERVING; Unavailable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.health(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            if all(status == "SERVING" for status in statuses.values()):
                return statuses
            if time.monotonic() >= deadline:
                where = ", ".join(f"{s} at {self.settings.for_service(s)}: {statuses[s]}" for s in statuses)
                raise Unavailable(f"not ready after {timeout:.0f} s ({where})")
            time.sleep(0.2)

    # -- extractor ------------------------------------------------------------------------------
    def models(self, test_availability: bool = False) -> list[extractor_pb2.ModelInfo]:
        request = extractor_pb2.ListModelsRequest(test_availability=test_availability)
        return list(_call(self.extractor.ListModels, request).models)

    def describe(self, model: str, include_modules: bool = False) -> extractor_pb2.ModelDescription:
        request = extractor_pb2.DescribeModelRequest(model=model, include_modules=include_modules)
        description: extractor_pb2.ModelDescription = _call(self.extractor.DescribeModel, request)
        return description

    def extract_events(
        self,
        model: str,
        prompts: Sequence[str],
        points: Sequence[str],
        reduction: str = "tokens",
        dtype: str = "float16",
        batch_size: int = 0,
        max_length: int = 0,
        dry_run: bool = False,
        decoder_targets: Sequence[str] = (),
    ) -> Generator[extractor_pb2.JobEvent, None, None]:
        """Starts an extraction and yields its events; the job goes on if the caller stops reading."""
        request = extractor_pb2.ExtractRequest(
            model=model,
            prompts=list(prompts),
            points=list(points),
            reduction=protos.REDUCTION_TO_PROTO[protos.normalize_reduction(reduction)],
            dtype=protos.DTYPE_TO_PROTO[protos.normalize_dtype(dtype)],
            batch_size=batch_size,
            max_length=max_length,
            dry_run=dry_run,
            decoder_targets=list(decoder_targets),
        )
        return _stream(self.extractor.Extract(request))

    def extract(
        self,
        model: str,
        prompts: Sequence[str],
        points: Sequence[str],
        reduction: str = "tokens",
        dtype: str = "float16",
        batch_size: int = 0,
        max_length: int = 0,
        on_event: EventCallback | None = None,
        decoder_targets: Sequence[str] = (),
    ) -> Run:
        """Extracts and waits: returns the complete run (read back from the lake if it existed).

        decoder_targets: for decoder points of encoder-decoder models, one target text per prompt
        (teacher forcing); without them the decoder sees its start token only.
        """
        events = self.extract_events(
            model, prompts, points, reduction, dtype, batch_size, max_length, decoder_targets=decoder_targets
        )
        return self._follow(events, on_event)

    def dry_run(
        self,
        model: str,
        prompts: Sequence[str],
        points: Sequence[str],
        reduction: str = "tokens",
        dtype: str = "float16",
        max_length: int = 0,
        decoder_targets: Sequence[str] = (),
    ) -> tuple[str, extractor_pb2.DryRunReport]:
        """(run id, report): tokens, bytes to write and an estimated time; nothing runs."""
        events = self.extract_events(
            model,
            prompts,
            points,
            reduction,
            dtype,
            0,
            max_length,
            dry_run=True,
            decoder_targets=decoder_targets,
        )
        event = next(events)
        events.close()
        return event.run_id, event.dry_run

    def watch(self, job_id: str, on_event: EventCallback | None = None) -> Run:
        """Follows a running job (started by anyone) to its end."""
        return self._follow(
            _stream(self.extractor.WatchJob(extractor_pb2.WatchJobRequest(job_id=job_id))), on_event
        )

    def cancel(self, job_id: str) -> extractor_pb2.JobEvent:
        event: extractor_pb2.JobEvent = _call(
            self.extractor.CancelJob, extractor_pb2.CancelJobRequest(job_id=job_id)
        )
        return event

    def jobs(self) -> list[extractor_pb2.JobEvent]:
        return list(_call(self.extractor.ListJobs, extractor_pb2.ListJobsRequest()).jobs)

    def _follow(self, events: Iterator[extractor_pb2.JobEvent], on_event: EventCallback | None) -> Run:
        last: extractor_pb2.JobEvent | None = None
        for event in events:
            last = event
            if on_event is not None:
                on_event(event)
        if last is None:
            raise NeuronMapError("the extractor closed the stream without an event")
        if last.state != extractor_pb2.JOB_STATE_COMPLETE:
            state = protos.job_state_from_proto(last.state)
            raise NeuronMapError(f"job {last.job_id} ended {state}: {last.message}")
        return self.get_run(last.run_id)

    # -- catalog --------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run:
        return Run(self, _call(self.catalog.GetRun, catalog_pb2.GetRunRequest(run_id=run_id)))

    def runs(
        self,
        model: str = "",
        status: str = "",
        point: str = "",
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        request = catalog_pb2.ListRunsRequest(
            model=model,
            status=protos.STATUS_TO_PROTO[status] if status else common_pb2.RUN_STATUS_UNSPECIFIED,
            point=point,
            limit=limit,
            offset=offset,
        )
        if created_after is not None:
            request.created_after.CopyFrom(timestamp(created_after))
        if created_before is not None:
            request.created_before.CopyFrom(timestamp(created_before))
        return [Run(self, info) for info in _call(self.catalog.ListRuns, request).runs]

    def analyses(self, run_id: str = "", point: str = "", kind: str = "") -> list[common_pb2.Analysis]:
        request = catalog_pb2.ListAnalysesRequest(run_id=run_id, point=point, kind=kind)
        return list(_call(self.catalog.ListAnalyses, request).analyses)

    # -- analyzer -------------------------------------------------------------------------------
    def statistics(
        self, run_id: str, point: str, sparsity_threshold: float = 0.0, recompute: bool = False
    ) -> Statistics:
        request = analyzer_pb2.StatisticsRequest(
            run_id=run_id, point=point, sparsity_threshold=sparsity_threshold, recompute=recompute
        )
        return Statistics.from_proto(_call(self.analyzer.Statistics, request))


def connect(target: str | None = None, settings: Settings | None = None) -> Client:
    """A client for `target` (host:port), else the one in settings (NEURONMAP_TARGET, 127.0.0.1:50051)."""
    settings = settings or load_settings()
    if target:
        settings = dataclasses.replace(settings, target=target)
    return Client(settings)
