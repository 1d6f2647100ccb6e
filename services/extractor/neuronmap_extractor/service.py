"""The Extractor gRPC service: a thin servicer over `Extractor`, the core that runs jobs and indexes runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator

import grpc
import torch
import transformers
from transformers import AutoTokenizer

from neuronmap import protos
from neuronmap.client import Client
from neuronmap.errors import NeuronMapError
from neuronmap.grpc_errors import streaming, unary
from neuronmap.lake import Lake, RunReader
from neuronmap.settings import Settings
from neuronmap.v1 import catalog_pb2, common_pb2, extractor_pb2, extractor_pb2_grpc
from neuronmap_extractor.discovery import ModelMap, Site, hidden_size, layer_count
from neuronmap_extractor.extraction import ExtractionRequest, Prepared, Progress, dry_run, execute, prepare
from neuronmap_extractor.jobs import Job, JobQueue, JobView
from neuronmap_extractor.loading import (
    availability,
    context_length,
    facts_config,
    load_config,
    meta_model,
    model_kind,
    resolve_device,
)
from neuronmap_extractor.pool import ModelPool
from neuronmap_extractor.registry import ModelSpec, Registry

log = logging.getLogger(__name__)


class Extractor:
    """Prepares requests, runs them on the device's job queue, and keeps the catalog told."""

    def __init__(self, settings: Settings) -> None:
        transformers.utils.logging.disable_progress_bar()
        self.settings = settings
        self.registry = Registry.load(settings.registry_path)
        self.lake = Lake(settings.lake_uri, settings.storage_options())
        self.pool = ModelPool(self.registry, settings)
        self.client = Client(settings)
        self.model_maps: dict[tuple[str, str], ModelMap] = {}
        # Seconds per (token x parameter run), measured by finished jobs, per (location, revision).
        self.rates: dict[tuple[str, str], float] = {}
        self._matmul_rate: float | None = None
        self.queue = JobQueue(self._run)

    def close(self) -> None:
        self.queue.close()
        self.client.close()
        self.pool.clear()

    # -- extraction -----------------------------------------------------------------------------
    def start(self, request: ExtractionRequest) -> tuple[JobView, bool]:
        """Starts (or joins) the job of a request; (view, True) when the lake already had the run."""
        prepared = prepare(request, self.registry, self.settings, self.model_maps)
        if self.lake.has_run(prepared.run_id):
            run = self.lake.open_run(prepared.run_id)
            if run.status == "complete":
                self._register(run, prepared, truncated=int(run.provenance.get("truncated_prompts", 0)))
                return _cached_view(prepared, run), True
        job, _ = self.queue.submit(prepared, prepared.warnings)
        return job.view, False

    def dry_run(self, request: ExtractionRequest) -> tuple[str, extractor_pb2.DryRunReport]:
        """Sizes and an estimated time, by tokenising only; nothing is loaded onto the device."""
        prepared = prepare(request, self.registry, self.settings, self.model_maps)
        tokenizer = AutoTokenizer.from_pretrained(prepared.location, revision=prepared.spec.revision or None)
        key = (prepared.location, prepared.revision)
        if key in self.rates:
            rate, basis = self.rates[key], "the rate this server measured on its last run of this model"
        else:
            rate = self._seconds_per_token_parameter()
            basis = (
                f"2 FLOPs per parameter per token at {2 / rate / 1e9:.0f} GFLOP/s "
                f"(half the matmul rate measured on {resolve_device(self.settings.device)})"
            )
        estimate = dry_run(prepared, tokenizer, rate, basis)
        run_exists = (
            self.lake.has_run(prepared.run_id) and self.lake.open_run(prepared.run_id).status == "complete"
        )
        return prepared.run_id, extractor_pb2.DryRunReport(
            prompts=estimate.prompts,
            tokens=estimate.tokens,
            bytes_to_write=0 if run_exists else estimate.bytes_to_write,
            estimated_seconds=0.0 if run_exists else estimate.estimated_seconds,
            truncated_prompts=estimate.truncated,
            estimate_basis=estimate.basis,
            already_in_lake=run_exists,
        )

    def _seconds_per_token_parameter(self) -> float:
        """From a short matmul benchmark on the device (once per process): 2 FLOPs per parameter."""
        if self._matmul_rate is None:
            device = resolve_device(self.settings.device)
            a = torch.randn(512, 512, device=device)
            torch.mm(a, a)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 0.2:
                torch.mm(a, a)
                n += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            flops_per_second = 2 * 512**3 * n / (time.perf_counter() - start)
            # A forward pass runs at roughly half the peak matmul rate (attention, norms, memory traffic).
            self._matmul_rate = 2 / (0.5 * flops_per_second)
        return self._matmul_rate

    def _run(self, job: Job) -> None:
        prepared = job.prepared
        job.update(state="loading", message=f"loading {prepared.spec.key}")
        loaded = self.pool.get(prepared.spec, prepared.location, prepared.revision)
        registered: list[bool] = []

        def on_start(run: RunReader, resumed_from: int, truncated: int) -> None:
            self._register(run, prepared, truncated)
            registered.append(True)
            warnings = list(job.view.warnings)
            if truncated:
                warnings.append(truncation_warning(truncated, prepared.max_length))
            job.update(
                state="running",
                message=f"resumed at prompt {resumed_from}" if resumed_from else "extracting",
                resumed=resumed_from > 0,
                points=tuple(run.layout.points),
                uri=run.uri,
                warnings=tuple(warnings),
            )

        def on_progress(progress: Progress) -> None:
            job.update(progress=dataclasses.replace(progress))

        def on_commit(committed: int) -> None:
            self._update_catalog(prepared.run_id, committed=committed)

        try:
            outcome = execute(
                prepared,
                loaded,
                self.lake,
                window_bytes=int(self.settings.window_mb * (1 << 20)),
                writer=self.settings.writer,
                on_start=on_start,
                on_progress=on_progress,
                on_commit=on_commit,
                cancel=job.cancel,
            )
        except NeuronMapError as error:
            if registered:
                status = "cancelled" if error.code == "CANCELLED" else "failed"
                self._update_catalog(prepared.run_id, status=status, error=str(error))
            raise
        except Exception as error:
            if registered:
                self._update_catalog(
                    prepared.run_id, status="failed", error=f"{type(error).__name__}: {error}"
                )
            raise
        self._update_catalog(prepared.run_id, status="complete", committed=len(prepared.request.prompts))
        compute_seconds = outcome.progress.tokens_done / max(outcome.progress.tokens_per_second, 1e-9)
        if outcome.progress.tokens_done and prepared.parameters_run:
            rate = compute_seconds / (outcome.progress.tokens_done * prepared.parameters_run)
            self.rates[(prepared.location, prepared.revision)] = rate
        job.update(
            state="complete",
            message=f"{outcome.progress.tokens_done} tokens in {outcome.progress.elapsed_seconds:.1f} s",
            progress=dataclasses.replace(outcome.progress),
        )

    # -- catalog --------------------------------------------------------------------------------
    def _register(self, run: RunReader, prepared: Prepared, truncated: int) -> None:
        layout = run.layout
        points = [
            common_pb2.PointShape(
                point=p.name, shape=[layout.n_rows(p), p.width], module_path=p.module_path, kind=p.kind
            )
            for p in layout.points
        ]
        status = run.status if run.status in protos.STATUS_TO_PROTO else "running"
        record = common_pb2.Run(
            run_id=run.run_id,
            model=prepared.request.model,
            model_id=prepared.spec.hf_id,
            status=protos.STATUS_TO_PROTO[status],
            points=points,
            reduction=protos.REDUCTION_TO_PROTO[layout.reduction],
            dtype=protos.DTYPE_TO_PROTO[layout.dtype],
            n_prompts=layout.n_prompts,
            n_tokens=layout.n_tokens,
            committed_prompts=run.committed_prompts,
            uri=run.uri,
            spec_json=json.dumps(run.spec, sort_keys=True),
            truncated_prompts=truncated,
            max_length=prepared.max_length,
        )
        stored = self.client.catalog.RegisterRun(catalog_pb2.RegisterRunRequest(run=record))
        if stored.status != record.status or stored.committed_prompts != record.committed_prompts:
            # Registered before (a resumed or cached run): bring the index up to date.
            self._update_catalog(run.run_id, status=status, committed=run.committed_prompts)

    def _update_catalog(
        self, run_id: str, status: str | None = None, committed: int | None = None, error: str = ""
    ) -> None:
        request = catalog_pb2.UpdateRunRequest(
            run_id=run_id,
            status=protos.STATUS_TO_PROTO[status] if status else common_pb2.RUN_STATUS_UNSPECIFIED,
            committed_prompts=committed or 0,
            has_committed_prompts=committed is not None,
            error=error,
        )
        self.client.catalog.UpdateRun(request)

    # -- models ---------------------------------------------------------------------------------
    def model_info(self, spec: ModelSpec, test_availability: bool) -> extractor_pb2.ModelInfo:
        family = self.registry.family(spec.model_type)
        info = extractor_pb2.ModelInfo(
            key=spec.key,
            hf_id=spec.hf_id,
            family=family.label if family else spec.model_type,
            kind=family.kind if family else "",
            source=spec.source,
            default_batch_size=spec.batch_size,
            max_length=spec.max_length,
            note=spec.note,
        )
        if spec.config:
            config = facts_config(spec)
            info.n_blocks = sum(layer_count(config, stack) or 0 for stack in _stacks_of(config))
            info.d_model = hidden_size(config)
        if test_availability:
            info.available, info.availability_note = availability(spec, self.settings)
        return info

    def describe(self, ref: str, include_modules: bool) -> extractor_pb2.ModelDescription:
        spec = self.registry.resolve(ref)
        config, source = load_config(spec)
        family = self.registry.family(config.model_type)
        kind = model_kind(config, family)
        model_map = ModelMap(meta_model(config, kind), config, family)
        info = self.model_info(spec, test_availability=False)
        info.kind = kind
        info.family = family.label if family else config.model_type
        info.n_blocks = sum(s.n_blocks for s in model_map.stacks)
        info.d_model = model_map.d_model
        info.max_length = context_length(spec, config, None)
        description = extractor_pb2.ModelDescription(
            info=info, points=[_shape(site) for site in model_map.points.values()], source=source
        )
        if include_modules:
            description.modules.extend(_shape(site) for site in model_map.module_sites())
        return description


def _stacks_of(config: transformers.PretrainedConfig) -> tuple[str, ...]:
    return ("encoder", "decoder") if getattr(config, "is_encoder_decoder", False) else ("",)


def _shape(site: Site) -> common_pb2.PointShape:
    return common_pb2.PointShape(
        point=site.name, shape=[-1, site.width], module_path=site.module_path, kind=site.kind
    )


def truncation_warning(truncated: int, max_length: int) -> str:
    return f"{truncated} prompt(s) were longer than {max_length} tokens and were truncated"


def _cached_view(prepared: Prepared, run: RunReader) -> JobView:
    """The one event of a request the lake already holds complete."""
    n_tokens = run.layout.n_tokens
    truncated = int(run.provenance.get("truncated_prompts", 0))
    warnings = (
        (*prepared.warnings, truncation_warning(truncated, prepared.max_length))
        if truncated
        else prepared.warnings
    )
    return JobView(
        job_id=prepared.run_id,
        run_id=prepared.run_id,
        state="complete",
        progress=Progress(
            prompts_done=run.layout.n_prompts,
            prompts_total=run.layout.n_prompts,
            tokens_done=n_tokens,
            tokens_total=n_tokens,
        ),
        points=tuple(run.layout.points),
        message="served from the lake: this run was extracted before",
        warnings=warnings,
        cached=True,
        uri=run.uri,
    )


def event_of(view: JobView) -> extractor_pb2.JobEvent:
    p = view.progress
    return extractor_pb2.JobEvent(
        job_id=view.job_id,
        run_id=view.run_id,
        state=protos.JOB_STATE_TO_PROTO[view.state],
        progress=extractor_pb2.Progress(
            batches_done=p.batches_done,
            batches_total=p.batches_total,
            prompts_done=p.prompts_done,
            prompts_total=p.prompts_total,
            tokens_done=p.tokens_done,
            tokens_total=p.tokens_total,
            tokens_per_second=p.tokens_per_second,
            eta_seconds=p.eta_seconds,
            elapsed_seconds=p.elapsed_seconds,
        ),
        points=[
            common_pb2.PointShape(
                point=pt.name, shape=[-1, pt.width], module_path=pt.module_path, kind=pt.kind
            )
            for pt in view.points
        ],
        message=view.message,
        warnings=list(view.warnings),
        cached=view.cached,
        uri=view.uri,
        error_code=view.error_code,
        resumed=view.resumed,
    )


def request_of(message: extractor_pb2.ExtractRequest) -> ExtractionRequest:
    return ExtractionRequest(
        model=message.model,
        prompts=tuple(message.prompts),
        points=tuple(p.strip() for p in message.points),
        reduction=protos.reduction_from_proto(message.reduction),
        dtype=protos.dtype_from_proto(message.dtype),
        batch_size=message.batch_size,
        max_length=message.max_length,
        decoder_targets=tuple(message.decoder_targets),
    )


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):  # type: ignore[misc]
    def __init__(self, core: Extractor) -> None:
        self.core = core

    def close(self) -> None:
        self.core.close()

    @unary
    def ListModels(
        self, request: extractor_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> extractor_pb2.ListModelsResponse:
        models = [
            self.core.model_info(spec, request.test_availability)
            for spec in self.core.registry.models.values()
        ]
        loaded = [
            extractor_pb2.LoadedModel(
                model=m.spec.key, model_id=m.model_id, bytes=m.n_bytes, device=str(m.device)
            )
            for m in self.core.pool.models()
        ]
        return extractor_pb2.ListModelsResponse(models=models, loaded=loaded)

    @unary
    def DescribeModel(
        self, request: extractor_pb2.DescribeModelRequest, context: grpc.ServicerContext
    ) -> extractor_pb2.ModelDescription:
        return self.core.describe(request.model, request.include_modules)

    @streaming
    def Extract(
        self, request: extractor_pb2.ExtractRequest, context: grpc.ServicerContext
    ) -> Iterator[extractor_pb2.JobEvent]:
        if request.dry_run:
            run_id, report = self.core.dry_run(request_of(request))
            yield extractor_pb2.JobEvent(
                run_id=run_id, message="dry run: nothing was extracted", dry_run=report
            )
            return
        view, cached = self.core.start(request_of(request))
        if cached:
            yield event_of(view)
            return
        for update in self.core.queue.watch(view.job_id, context.is_active):
            yield event_of(update)

    @streaming
    def WatchJob(
        self, request: extractor_pb2.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[extractor_pb2.JobEvent]:
        for update in self.core.queue.watch(request.job_id, context.is_active):
            yield event_of(update)

    @unary
    def CancelJob(
        self, request: extractor_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> extractor_pb2.JobEvent:
        return event_of(self.core.queue.cancel(request.job_id))

    @unary
    def ListJobs(
        self, request: extractor_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> extractor_pb2.ListJobsResponse:
        return extractor_pb2.ListJobsResponse(jobs=[event_of(job.view) for job in self.core.queue.jobs()])


def add_to_server(server: grpc.Server, settings: Settings) -> ExtractorServicer:
    servicer = ExtractorServicer(Extractor(settings))
    extractor_pb2_grpc.add_ExtractorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
