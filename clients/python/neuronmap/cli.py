"""The `neuronmap` command line: the original NeuronMap's commands, against a NeuronMap deployment.

Every command takes `--target HOST:PORT` (default: $NEURONMAP_TARGET, else 127.0.0.1:50051) and most take
`--json`, which prints one JSON object for scripts. Errors print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from neuronmap import protos
from neuronmap.client import Client, Run, Statistics
from neuronmap.errors import InvalidArgument, NeuronMapError, Unavailable
from neuronmap.export import FORMATS, SUFFIXES, export_run, write_seed_csv
from neuronmap.points import BLOCK_SITES, layer_range
from neuronmap.questions import read_questions, read_targets
from neuronmap.settings import load_settings
from neuronmap.v1 import extractor_pb2

# Off a terminal (pipes, logs) rich would wrap tables at 80 columns; give them room instead.
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(highlight=False, soft_wrap=True, width=_WIDTH, markup=False)  # user data is text
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _client(args: argparse.Namespace) -> Client:
    settings = load_settings(target=args.target or None)
    return Client(settings)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, allow_nan=True, default=str))


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


# -- up / status ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from neuronmap.server import SERVICES, serve

    settings = load_settings(lake_uri=args.lake, catalog_path=args.catalog)
    services = tuple(s.strip() for s in args.services.split(",")) if args.services else SERVICES
    running = serve(settings, services=services, host=args.host, port=args.port)
    lines = [f"NeuronMap serving {', '.join(services)} on {running.target}"]
    if {"extractor", "analyzer"} & set(services):
        lines.append(f"  lake: {settings.lake_uri}")
    if "catalog" in services:
        lines.append(f"  catalog: {settings.catalog_path}")
    err.print("\n".join([*lines, "  Ctrl+C stops it."]))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    err.print("stopping...")
    running.stop()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            statuses = client.wait_ready(timeout=args.wait) if args.wait else client.health()
        except Unavailable:
            statuses = client.health()
        targets = {name: client.settings.for_service(name) for name in statuses}
    if args.json:
        _print_json(
            {"services": {name: {"status": s, "target": targets[name]} for name, s in statuses.items()}}
        )
    else:
        for name, status in statuses.items():
            out.print(f"{name:10s} {status:12s} {targets[name]}")
    return 0 if all(s == "SERVING" for s in statuses.values()) else 1


# -- discover -----------------------------------------------------------------------------------------
def cmd_discover(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.model:
            return _describe(client, args)
        models = client.models(test_availability=args.test_availability)
    if args.json:
        _print_json(
            {
                "models": [
                    {
                        "key": m.key,
                        "hf_id": m.hf_id,
                        "family": m.family,
                        "kind": m.kind,
                        "blocks": m.n_blocks,
                        "d_model": m.d_model,
                        "source": m.source,
                        "note": m.note,
                        **(
                            {"available": m.available, "availability": m.availability_note}
                            if args.test_availability
                            else {}
                        ),
                    }
                    for m in models
                ]
            }
        )
        return 0
    table = Table(title=f"{len(models)} models in the registry")
    for column in ("key", "hugging face id", "family", "blocks", "d_model", "source"):
        table.add_column(column)
    if args.test_availability:
        table.add_column("loads here")
    for m in models:
        row = [m.key, m.hf_id, m.family, str(m.n_blocks), str(m.d_model), m.source]
        if args.test_availability:
            row.append("yes" if m.available else f"no: {m.availability_note}")
        table.add_row(*row)
    out.print(table)
    return 0


def _describe(client: Client, args: argparse.Namespace) -> int:
    description = client.describe(args.model, include_modules=args.modules)
    info = description.info
    if args.json:
        _print_json(
            {
                "model": args.model,
                "hf_id": info.hf_id,
                "family": info.family,
                "kind": info.kind,
                "blocks": info.n_blocks,
                "d_model": info.d_model,
                "max_length": info.max_length,
                "described_from": description.source,
                "points": {
                    p.point: {"shape": list(p.shape), "module": p.module_path, "kind": p.kind}
                    for p in description.points
                },
                **(
                    {"modules": {m.point: list(m.shape) for m in description.modules}} if args.modules else {}
                ),
            }
        )
        return 0
    out.print(
        f"{args.model}: {info.family} ({info.kind}), {info.n_blocks} blocks, d_model {info.d_model}, "
        f"context {info.max_length} (described from {description.source})"
    )
    table = Table()
    for column in ("point", "shape", "module", "reads"):
        table.add_column(column)
    for p in description.points:
        table.add_row(p.point, str(list(p.shape)), p.module_path, p.kind)
    out.print(table)
    if args.modules:
        modules = Table(title="modules (raw paths)")
        modules.add_column("module")
        modules.add_column("width")
        for m in description.modules:
            modules.add_row(m.point, "?" if m.shape[-1] < 0 else str(m.shape[-1]))
        out.print(modules)
    return 0


# -- extraction ---------------------------------------------------------------------------------------
def _points_of(args: argparse.Namespace) -> list[str]:
    if args.layers and args.layer_range:
        raise InvalidArgument("give --layers or --layer-range, not both")
    if args.layer_range:
        start, end = args.layer_range
        try:
            return layer_range(start, end, tuple(args.kinds), stack=args.stack)
        except ValueError as error:
            raise InvalidArgument(str(error)) from None
    if args.layers:
        return [p for group in args.layers for p in group.split(",") if p.strip()]
    raise InvalidArgument("name the points: --layers blocks.3.resid_post ... or --layer-range START END")


class _ProgressBar:
    """A progress bar on a terminal; silent elsewhere (pipes, CI logs, --json)."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Progress | None = None
        self.task: Any = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )

    def __enter__(self) -> _ProgressBar:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("queued", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: extractor_pb2.JobEvent) -> None:
        for warning in event.warnings:
            if warning not in getattr(self, "_warned", set()):
                self.__dict__.setdefault("_warned", set()).add(warning)
                err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        if self.progress is None:
            return
        p = event.progress
        state = protos.job_state_from_proto(event.state)
        self.progress.update(
            self.task,
            description=f"{state} {event.run_id[:16]}",
            total=p.batches_total or None,
            completed=p.batches_done,
            rate=f"{p.tokens_per_second:,.0f} tok/s" if p.tokens_per_second else "",
        )


def _run_summary(run: Run, last: extractor_pb2.JobEvent | None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "status": run.status,
        "model": run.info.model,
        "points": {name: list(shape) for name, shape in run.points.items()},
        "n_prompts": run.info.n_prompts,
        "n_tokens": run.info.n_tokens,
        "truncated_prompts": run.info.truncated_prompts,
        "uri": run.info.uri,
    }
    if last is not None:
        summary.update(
            cached=last.cached,
            resumed=last.resumed,
            seconds=round(last.progress.elapsed_seconds, 3),
            tokens_per_second=round(last.progress.tokens_per_second, 1),
            warnings=list(last.warnings),
        )
    return summary


def _decoder_targets(args: argparse.Namespace, points: Sequence[str]) -> list[str]:
    """The question file's "target" fields, sent only when a decoder point is asked for."""
    if not any(p.startswith("decoder.") for p in points):
        return []
    return read_targets(args.questions_file)


def _extract(
    args: argparse.Namespace, points: Sequence[str], prompts: Sequence[str], reduction: str, dtype: str
) -> tuple[Run, extractor_pb2.JobEvent | None]:
    with _client(args) as client:
        last: list[extractor_pb2.JobEvent] = []
        with _ProgressBar(enabled=err.is_terminal and not args.json) as bar:

            def on_event(event: extractor_pb2.JobEvent) -> None:
                last[:] = [event]
                bar(event)

            run = client.extract(
                args.model,
                prompts,
                points,
                reduction=reduction,
                dtype=dtype,
                batch_size=args.batch_size,
                max_length=args.max_length,
                on_event=on_event,
                decoder_targets=_decoder_targets(args, points),
            )
        return run, (last[0] if last else None)


def _dry_run(args: argparse.Namespace, points: Sequence[str], prompts: Sequence[str], reduction: str) -> int:
    with _client(args) as client:
        run_id, report = client.dry_run(
            args.model,
            prompts,
            points,
            reduction=reduction,
            dtype=args.dtype,
            max_length=args.max_length,
            decoder_targets=_decoder_targets(args, points),
        )
    summary = {
        "run_id": run_id,
        "prompts": report.prompts,
        "tokens": report.tokens,
        "truncated_prompts": report.truncated_prompts,
        "bytes_to_write": report.bytes_to_write,
        "estimated_seconds": float(f"{report.estimated_seconds:.3g}"),
        "estimate_basis": report.estimate_basis,
        "already_in_lake": report.already_in_lake,
    }
    if args.json:
        _print_json(summary)
        return 0
    out.print(f"dry run of {run_id} ({len(points)} points): nothing was extracted")
    out.print(f"  prompts        {report.prompts} ({report.truncated_prompts} would be truncated)")
    out.print(f"  tokens         {report.tokens:,}")
    if report.already_in_lake:
        out.print("  already in the lake: the run would be served from it, nothing computed")
    else:
        out.print(f"  bytes to write {report.bytes_to_write / 2**20:,.1f} MiB")
        out.print(f"  estimated time {report.estimated_seconds:,.3g} s ({report.estimate_basis})")
    return 0


def cmd_multi_extract(args: argparse.Namespace) -> int:
    points = _points_of(args)
    prompts = read_questions(args.questions_file)
    if args.dry_run:
        return _dry_run(args, points, prompts, args.reduction)
    run, last = _extract(args, points, prompts, args.reduction, args.dtype)
    summary = _run_summary(run, last)
    if args.json:
        _print_json(summary)
        return 0
    print(run.run_id)
    if err.is_terminal:
        how = (
            "served from the lake"
            if summary.get("cached")
            else f"{summary.get('tokens_per_second', 0):,.0f} tok/s"
        )
        err.print(f"{len(points)} points x {run.info.n_prompts} prompts ({run.info.n_tokens} tokens), {how}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """The original single-layer extract: mean over tokens of one point, written as CSV."""
    prompts = read_questions(args.questions_file)
    points = [args.target_layer]
    if args.dry_run:
        return _dry_run(args, points, prompts, "mean")
    run, last = _extract(args, points, prompts, "mean", "float32")
    write_seed_csv(prompts, run.array(args.target_layer), Path(args.output))
    summary = _run_summary(run, last) | {"output": args.output}
    if args.json:
        _print_json(summary)
    else:
        print(args.output)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.get_run(args.run)
        output = Path(args.output or f"{run.run_id}{SUFFIXES[args.format]}")
        export_run(run.reader(), args.format, output, args.points)
    if args.json:
        _print_json(
            {
                "run_id": run.run_id,
                "format": args.format,
                "output": str(output),
                "bytes": output.stat().st_size,
            }
        )
    else:
        print(output)
    return 0


# -- analysis -------------------------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.statistics(
            args.run, args.layer, sparsity_threshold=args.sparsity_threshold, recompute=args.recompute
        )
    if args.json:
        _print_json(_stats_json(stats))
        return 0
    _print_stats(stats, args.top)
    return 0


def _stats_json(stats: Statistics) -> dict[str, Any]:
    return {
        "analysis_id": stats.analysis_id,
        "run_id": stats.run_id,
        "point": stats.point,
        "rows": stats.n_rows,
        "neurons": len(stats.neurons["mean"]),
        "cached": stats.cached,
        "uri": stats.uri,
        "layer": stats.layer,
        "per_neuron": {name: values.tolist() for name, values in stats.neurons.items()},
    }


def _print_stats(stats: Statistics, top: int) -> None:
    out.print(
        f"{stats.point} of {stats.run_id}: {stats.n_rows} rows x {len(stats.neurons['mean'])} neurons"
        + (" (stored result)" if stats.cached else "")
    )
    layer = Table(title="layer (every value)")
    for name in ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis"):
        layer.add_column(name, justify="right")
    layer.add_row(
        *(_fmt(stats.layer[n]) for n in ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis"))
    )
    out.print(layer)
    import numpy as np

    kurtosis = np.nan_to_num(stats.neurons["kurtosis"], nan=-np.inf)
    order = np.argsort(-kurtosis)[:top]
    neurons = Table(title=f"{len(order)} neurons with the heaviest tails (excess kurtosis)")
    neurons.add_column("neuron", justify="right")
    for name in ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis"):
        neurons.add_column(name, justify="right")
    for i in order:
        neurons.add_row(
            str(i),
            *(
                _fmt(float(stats.neurons[n][i]))
                for n in ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis")
            ),
        )
    out.print(neurons)


# -- runs and jobs ---------------------------------------------------------------------------------------
def cmd_runs_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        runs = client.runs(model=args.model, status=args.status, point=args.point, limit=args.limit)
    if args.json:
        _print_json(
            {"runs": [_run_summary(r, None) | {"created_at": r.info.created_at.ToJsonString()} for r in runs]}
        )
        return 0
    table = Table(title=f"{len(runs)} runs")
    for column in ("run id", "model", "status", "points", "prompts", "tokens", "created"):
        table.add_column(column)
    for r in runs:
        points = list(r.points)
        shown = ", ".join(points[:3]) + (f" (+{len(points) - 3})" if len(points) > 3 else "")
        table.add_row(
            r.run_id,
            r.info.model,
            f"{r.status} {r.info.committed_prompts}/{r.info.n_prompts}"
            if r.status != "complete"
            else r.status,
            shown,
            str(r.info.n_prompts),
            str(r.info.n_tokens),
            r.info.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.get_run(args.run)
        summary = _run_summary(run, None) | {"spec": run.spec, "error": run.info.error}
    _print_json(summary)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.cancel:
            event = client.cancel(args.cancel)
            out.print(f"{event.job_id}: {protos.job_state_from_proto(event.state)}")
            return 0
        if args.watch:
            with _ProgressBar(enabled=err.is_terminal and not args.json) as bar:
                run = client.watch(args.watch, on_event=bar)
            print(run.run_id)
            return 0
        jobs = client.jobs()
    if args.json:
        _print_json(
            {
                "jobs": [
                    {
                        "job_id": j.job_id,
                        "state": protos.job_state_from_proto(j.state),
                        "batches_done": j.progress.batches_done,
                        "batches_total": j.progress.batches_total,
                        "message": j.message,
                    }
                    for j in jobs
                ]
            }
        )
        return 0
    table = Table(title=f"{len(jobs)} jobs")
    for column in ("job (run) id", "state", "batches", "tok/s", "message"):
        table.add_column(column)
    for j in jobs:
        table.add_row(
            j.job_id,
            protos.job_state_from_proto(j.state),
            f"{j.progress.batches_done}/{j.progress.batches_total}",
            f"{j.progress.tokens_per_second:,.0f}",
            j.message,
        )
    out.print(table)
    return 0


# -- parser -------------------------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument(
        "--target", default="", help="HOST:PORT of NeuronMap (default $NEURONMAP_TARGET or 127.0.0.1:50051)"
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


DRY_RUN_HELP = "print tokens, bytes to write and an estimated time; extract nothing"


def _add_extraction_flags(parser: argparse.ArgumentParser, reduction: bool = True) -> None:
    parser.add_argument(
        "--model", default="default", help="registry key, local folder or hub id (default: distilgpt2)"
    )
    parser.add_argument(
        "--questions-file", required=True, help="JSONL with a 'question' field, or one question per line"
    )
    if reduction:
        parser.add_argument("--reduction", choices=["tokens", "mean", "last"], default="tokens")
    parser.add_argument("--dtype", default="float16", help="storage dtype: float16, bfloat16 or float32")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="prompts per forward pass (default: the model's)"
    )
    parser.add_argument(
        "--max-length", type=int, default=0, help="truncate prompts to this many tokens (default: context)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuronmap", description="Capture and analyse transformer activations."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run the embedded stack (catalog, extractor, analyzer) in the foreground"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=50051)
    up.add_argument(
        "--lake", default=None, help="lake URI (default ./neuronmap-data/lake or $NEURONMAP_LAKE)"
    )
    up.add_argument(
        "--catalog", default=None, help="catalog DuckDB file (default ./neuronmap-data/catalog.duckdb)"
    )
    up.add_argument("--services", default="", help="comma-separated subset: catalog,extractor,analyzer")
    up.set_defaults(handler=cmd_up)

    status = commands.add_parser("status", help="health of each service at the target")
    _add_common(status)
    status.add_argument("--wait", type=float, default=0.0, help="keep asking for up to this many seconds")
    status.set_defaults(handler=cmd_status)

    discover = commands.add_parser("discover", help="the model registry, or the hook points of one model")
    _add_common(discover)
    discover.add_argument("--test-availability", action="store_true", help="say which models load here")
    discover.add_argument("--model", default="", help="describe this model's points (key, folder or hub id)")
    discover.add_argument(
        "--modules", action="store_true", help="with --model: list every raw module path too"
    )
    discover.set_defaults(handler=cmd_discover)

    multi = commands.add_parser("multi-extract", help="extract many points in one pass into the lake")
    _add_common(multi)
    _add_extraction_flags(multi)
    multi.add_argument("--layers", nargs="+", help="points (blocks.3.resid_post) or raw module paths")
    multi.add_argument(
        "--layer-range", nargs=2, type=int, metavar=("START", "END"), help="blocks START..END-1"
    )
    multi.add_argument(
        "--kinds", nargs="+", choices=BLOCK_SITES, default=["resid_post"], help="with --layer-range"
    )
    multi.add_argument(
        "--stack", choices=["", "encoder", "decoder"], default="", help="with --layer-range, for T5"
    )
    multi.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    multi.set_defaults(handler=cmd_multi_extract)

    extract = commands.add_parser("extract", help="one point, mean over tokens, as the original's CSV")
    _add_common(extract)
    _add_extraction_flags(extract, reduction=False)
    extract.add_argument(
        "--target-layer", required=True, help="point or module path (transformer.h.5.mlp.c_proj)"
    )
    extract.add_argument("--output", default="activations.csv", help="CSV file: question,activation_vector")
    extract.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    extract.set_defaults(handler=cmd_extract)

    export = commands.add_parser("export", help="write a run as CSV, HDF5 or Parquet")
    _add_common(export)
    export.add_argument("--run", required=True, help="run id")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--output", default="", help="file to write (default <run_id>.<format>)")
    export.add_argument("--points", nargs="+", help="only these points (default: all)")
    export.set_defaults(handler=cmd_export)

    analyze = commands.add_parser("analyze", help="statistics of one point of a run")
    _add_common(analyze)
    analyze.add_argument("--run", required=True, help="run id")
    analyze.add_argument("--layer", required=True, help="point of the run, e.g. blocks.3.resid_post")
    analyze.add_argument("--sparsity-threshold", type=float, default=0.0, help="|x| <= this counts as sparse")
    analyze.add_argument("--recompute", action="store_true", help="ignore a stored result")
    analyze.add_argument("--top", type=int, default=10, help="neurons to show")
    analyze.set_defaults(handler=cmd_analyze)

    runs = commands.add_parser("runs", help="runs in the catalog")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True)
    runs_list = runs_commands.add_parser("list", help="list runs, newest first")
    _add_common(runs_list)
    runs_list.add_argument("--model", default="")
    runs_list.add_argument("--status", default="", choices=["", *protos.STATUS_TO_PROTO])
    runs_list.add_argument("--point", default="")
    runs_list.add_argument("--limit", type=int, default=50)
    runs_list.set_defaults(handler=cmd_runs_list)
    runs_show = runs_commands.add_parser("show", help="one run, as JSON")
    _add_common(runs_show)  # --json is accepted for symmetry: the output is always JSON
    runs_show.add_argument("run")
    runs_show.set_defaults(handler=cmd_runs_show)

    jobs = commands.add_parser("jobs", help="extraction jobs: list, watch or cancel")
    _add_common(jobs)
    jobs.add_argument("--watch", default="", metavar="JOB_ID", help="follow a job to its end")
    jobs.add_argument("--cancel", default="", metavar="JOB_ID", help="cancel a job")
    jobs.set_defaults(handler=cmd_jobs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except NeuronMapError as error:
        err.print(f"[red]error[/red] ({error.code}): {escape(str(error))}", markup=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted (a running extraction goes on; `neuronmap jobs` shows it)")
        return 130
    except BrokenPipeError:  # `neuronmap ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
