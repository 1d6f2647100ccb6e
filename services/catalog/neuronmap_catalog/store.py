"""The catalog's core: an index of runs and analyses in one DuckDB file, knowing nothing of gRPC.

Only the catalog service opens this file (DuckDB allows one writing process, and a second process cannot
even open it read-only); everyone else asks the service. The service calls arrive from a thread pool, so
one connection is opened at construction and every statement runs under one lock.

Statuses, reductions and dtypes are plain strings here (`neuronmap.protos` converts them to and from the
contract's enums); timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound

STATUSES = ("pending", "running", "complete", "failed", "cancelled")
REDUCTIONS = ("tokens", "mean", "last")
DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A run registered again with an active status while it is stopped is being resumed.
_STOPPED = ("failed", "cancelled")
_ACTIVE = ("pending", "running")

# Timestamps are stored as UTC in plain TIMESTAMP columns, so nothing depends on the session's time zone.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        model VARCHAR NOT NULL,
        model_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        reduction VARCHAR NOT NULL,
        dtype VARCHAR NOT NULL,
        n_prompts BIGINT NOT NULL,
        n_tokens BIGINT NOT NULL,
        committed_prompts BIGINT NOT NULL,
        uri VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        error VARCHAR NOT NULL,
        spec_json VARCHAR NOT NULL,
        truncated_prompts BIGINT NOT NULL,
        max_length BIGINT NOT NULL
    )
    """,
    # One row per point of a run, so "runs holding point X" is a join; position keeps the run's order.
    """
    CREATE TABLE IF NOT EXISTS run_points (
        run_id VARCHAR NOT NULL,
        position INTEGER NOT NULL,
        point VARCHAR NOT NULL,
        shape BIGINT[] NOT NULL,
        module_path VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        PRIMARY KEY (run_id, point)
    )
    """,
    "CREATE INDEX IF NOT EXISTS run_points_by_point ON run_points (point)",
    """
    CREATE TABLE IF NOT EXISTS analyses (
        analysis_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        point VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        params_json VARCHAR NOT NULL,
        uri VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        summary_json VARCHAR NOT NULL
    )
    """,
)
_RUN_COLUMNS = (
    "run_id, model, model_id, status, reduction, dtype, n_prompts, n_tokens, committed_prompts, uri, "
    "created_at, updated_at, error, spec_json, truncated_prompts, max_length"
)
_ANALYSIS_COLUMNS = "analysis_id, run_id, point, kind, params_json, uri, created_at, summary_json"


@dataclass(frozen=True)
class PointRecord:
    """One hook point of a run; a dimension of -1 varies (tokens)."""

    point: str
    shape: tuple[int, ...]
    module_path: str = ""
    kind: str = ""


@dataclass(frozen=True)
class RunRecord:
    """A run as the catalog indexes it (mirrors the contract's `Run`).

    created_at and updated_at are set by the store; whatever a caller puts there is ignored.
    """

    run_id: str
    model: str
    model_id: str = ""
    status: str = "pending"
    points: tuple[PointRecord, ...] = ()
    reduction: str = "tokens"
    dtype: str = "float16"
    n_prompts: int = 0
    n_tokens: int = 0
    committed_prompts: int = 0
    uri: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    error: str = ""
    spec_json: str = ""
    truncated_prompts: int = 0
    max_length: int = 0


@dataclass(frozen=True)
class AnalysisRecord:
    """An analysis result as the catalog indexes it (mirrors the contract's `Analysis`).

    created_at is set by the store; whatever a caller puts there is ignored.
    """

    analysis_id: str
    run_id: str
    point: str = ""
    kind: str = ""
    params_json: str = ""
    uri: str = ""
    created_at: dt.datetime | None = None
    summary_json: str = ""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CatalogStore:
    """Runs and analyses in one DuckDB file (created with its folders and tables when missing).

    `clock` gives the time stamps of registrations and updates; tests pass a fake one.
    """

    def __init__(self, path: str, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(path)
        except duckdb.Error as error:
            # Typically another process holds the file: only one catalog may own it.
            raise FailedPrecondition(f"cannot open the catalog file {path}: {error}") from error
        with self._transaction():
            for statement in _SCHEMA:
                self._con.execute(statement)

    def close(self) -> None:
        """Closes the connection; later calls raise FailedPrecondition. Closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------
    def register_run(self, record: RunRecord) -> RunRecord:
        """Registers a run, or returns the stored one with the same run_id (idempotent).

        Registering a stopped (failed or cancelled) run again as pending or running resumes it: the
        stored run takes the new status and loses its error. Nothing else of the stored run changes.
        """
        _check_run(record)
        with self._transaction():
            stored = self._find_run(record.run_id)
            if stored is not None:
                if stored.status in _STOPPED and record.status in _ACTIVE:
                    return self._set_run_state(stored, record.status, stored.committed_prompts, "")
                return stored
            now = self._now()
            self._con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                [
                    record.run_id,
                    record.model,
                    record.model_id,
                    record.status,
                    record.reduction,
                    record.dtype,
                    record.n_prompts,
                    record.n_tokens,
                    record.committed_prompts,
                    record.uri,
                    _to_db(now),
                    _to_db(now),
                    record.error,
                    record.spec_json,
                    record.truncated_prompts,
                    record.max_length,
                ],
            )
            if record.points:  # executemany refuses an empty list
                self._con.executemany(
                    "INSERT INTO run_points (run_id, position, point, shape, module_path, kind) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        [record.run_id, i, p.point, list(p.shape), p.module_path, p.kind]
                        for i, p in enumerate(record.points)
                    ],
                )
            return replace(record, created_at=now, updated_at=now)

    def update_run(
        self,
        run_id: str,
        status: str | None = None,
        committed_prompts: int | None = None,
        error: str | None = None,
    ) -> RunRecord:
        """Records progress and status; None leaves a field as it is.

        committed_prompts never moves backwards (the larger of the stored and the new value is kept), so
        late or repeated progress reports are harmless. Moving a stopped run back to pending or running
        clears its error unless a new one is given. A complete run is immutable: an update that would
        change it is FailedPrecondition, one that changes nothing (re-setting complete) is a no-op.
        """
        if status is not None:
            _check_choice("status", status, STATUSES)
        with self._transaction():
            current = self._get_run(run_id)
            new_status = current.status if status is None else status
            new_committed = current.committed_prompts
            if committed_prompts is not None:
                if not 0 <= committed_prompts <= current.n_prompts:
                    raise InvalidArgument(
                        f"committed_prompts {committed_prompts} of run {run_id} is outside "
                        f"0..{current.n_prompts}"
                    )
                new_committed = max(current.committed_prompts, committed_prompts)
            new_error = current.error if error is None else error
            if error is None and current.status in _STOPPED and new_status in _ACTIVE:
                new_error = ""
            if (new_status, new_committed, new_error) == (
                current.status,
                current.committed_prompts,
                current.error,
            ):
                return current
            if current.status == "complete":
                raise FailedPrecondition(
                    f"run {run_id} is complete and cannot change (asked: status={status!r}, "
                    f"committed_prompts={committed_prompts!r}, error={error!r})"
                )
            return self._set_run_state(current, new_status, new_committed, new_error)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id; NotFound if there is none."""
        with self._locked():
            return self._get_run(run_id)

    def list_runs(
        self,
        model: str = "",
        status: str = "",
        point: str = "",
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> tuple[list[RunRecord], int]:
        """Runs matching every filter given, newest first, and how many match ignoring limit and offset.

        `model` matches the asked model or the loaded model id exactly; `point` matches runs holding that
        point; created_after (inclusive) and created_before (exclusive) bound the registration time, a
        naive datetime being read as UTC. limit 0 means the default (100); at most 1000.
        """
        limit = _check_page(limit, offset)
        if status:
            _check_choice("status", status, STATUSES)
        clauses: list[str] = []
        params: list[Any] = []
        if model:
            clauses.append("(model = ? OR model_id = ?)")
            params += [model, model]
        if status:
            clauses.append("status = ?")
            params.append(status)
        if point:
            clauses.append("run_id IN (SELECT run_id FROM run_points WHERE point = ?)")
            params.append(point)
        if created_after is not None:
            clauses.append("created_at >= ?")
            params.append(_to_db(created_after))
        if created_before is not None:
            clauses.append("created_at < ?")
            params.append(_to_db(created_before))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._locked():
            total = self._count(f"SELECT count(*) FROM runs{where}", params)
            rows = self._con.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, run_id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            points = self._points([row[0] for row in rows])
        return [_run_from_row(row, points.get(row[0], ())) for row in rows], total

    # -- analyses -------------------------------------------------------------------------------
    def register_analysis(self, record: AnalysisRecord) -> AnalysisRecord:
        """Registers an analysis of a known run, or returns the stored one with the same id (idempotent)."""
        if not record.analysis_id:
            raise InvalidArgument("analysis_id is empty")
        if not record.run_id:
            raise InvalidArgument(f"analysis {record.analysis_id} has no run_id")
        _check_json("params_json", record.params_json)
        _check_json("summary_json", record.summary_json)
        with self._transaction():
            stored = self._find_analysis(record.analysis_id)
            if stored is not None:
                return stored
            self._get_run(record.run_id)
            now = self._now()
            self._con.execute(
                f"INSERT INTO analyses ({_ANALYSIS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    record.analysis_id,
                    record.run_id,
                    record.point,
                    record.kind,
                    record.params_json,
                    record.uri,
                    _to_db(now),
                    record.summary_json,
                ],
            )
            return replace(record, created_at=now)

    def get_analysis(self, analysis_id: str) -> AnalysisRecord:
        """The analysis with this id; NotFound if there is none."""
        with self._locked():
            found = self._find_analysis(analysis_id)
        if found is None:
            raise NotFound(f"analysis {analysis_id!r} is not in the catalog")
        return found

    def list_analyses(
        self, run_id: str = "", point: str = "", kind: str = "", limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> tuple[list[AnalysisRecord], int]:
        """Analyses matching every filter given (exact match), newest first, and the total ignoring paging."""
        limit = _check_page(limit, offset)
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("run_id", run_id), ("point", point), ("kind", kind)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._locked():
            total = self._count(f"SELECT count(*) FROM analyses{where}", params)
            rows = self._con.execute(
                f"SELECT {_ANALYSIS_COLUMNS} FROM analyses{where} "
                "ORDER BY created_at DESC, analysis_id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [_analysis_from_row(row) for row in rows], total

    # -- internals (callers hold the lock) ------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise FailedPrecondition(f"the catalog store {self.path} is closed")
            yield

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._locked():
            self._con.begin()
            try:
                yield
            except BaseException:
                self._con.rollback()
                raise
            self._con.commit()

    def _now(self) -> dt.datetime:
        # Normalised to aware UTC, as read back from the file, so returned records equal re-read ones.
        return _from_db(_to_db(self._clock()))

    def _count(self, sql: str, params: Sequence[Any]) -> int:
        row = self._con.execute(sql, list(params)).fetchone()
        return int(row[0]) if row else 0

    def _find_run(self, run_id: str) -> RunRecord | None:
        row = self._con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            return None
        return _run_from_row(row, self._points([run_id]).get(run_id, ()))

    def _get_run(self, run_id: str) -> RunRecord:
        found = self._find_run(run_id)
        if found is None:
            raise NotFound(f"run {run_id!r} is not in the catalog")
        return found

    def _find_analysis(self, analysis_id: str) -> AnalysisRecord | None:
        row = self._con.execute(
            f"SELECT {_ANALYSIS_COLUMNS} FROM analyses WHERE analysis_id = ?", [analysis_id]
        ).fetchone()
        return None if row is None else _analysis_from_row(row)

    def _points(self, run_ids: Sequence[str]) -> dict[str, tuple[PointRecord, ...]]:
        if not run_ids:
            return {}
        rows = self._con.execute(
            "SELECT run_id, point, shape, module_path, kind FROM run_points "
            f"WHERE run_id IN ({', '.join('?' * len(run_ids))}) ORDER BY run_id, position",
            list(run_ids),
        ).fetchall()
        points: dict[str, list[PointRecord]] = {}
        for run_id, point, shape, module_path, kind in rows:
            points.setdefault(run_id, []).append(PointRecord(point, tuple(shape), module_path, kind))
        return {run_id: tuple(found) for run_id, found in points.items()}

    def _set_run_state(self, current: RunRecord, status: str, committed: int, error: str) -> RunRecord:
        now = self._now()
        self._con.execute(
            "UPDATE runs SET status = ?, committed_prompts = ?, error = ?, updated_at = ? WHERE run_id = ?",
            [status, committed, error, _to_db(now), current.run_id],
        )
        return replace(current, status=status, committed_prompts=committed, error=error, updated_at=now)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidArgument(f"{name} {value!r} is not one of {', '.join(choices)}")


def _check_json(name: str, text: str) -> None:
    """Empty means "none"; anything else must parse as JSON."""
    if not text:
        return
    try:
        json.loads(text)
    except ValueError as error:
        raise InvalidArgument(f"{name} is not JSON: {error}") from None


def _check_page(limit: int, offset: int) -> int:
    """The limit to use (0 means the default); InvalidArgument for a limit or offset out of range."""
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidArgument(f"limit {limit} is outside 0..{MAX_LIMIT} (0 means {DEFAULT_LIMIT})")
    if offset < 0:
        raise InvalidArgument(f"offset {offset} is negative")
    return limit or DEFAULT_LIMIT


def _check_run(record: RunRecord) -> None:
    if not record.run_id:
        raise InvalidArgument("run_id is empty")
    _check_choice("status", record.status, STATUSES)
    _check_choice("reduction", record.reduction, REDUCTIONS)
    _check_choice("dtype", record.dtype, DTYPES)
    for name in ("n_prompts", "n_tokens", "truncated_prompts", "max_length"):
        if getattr(record, name) < 0:
            raise InvalidArgument(f"{name} of run {record.run_id} is negative")
    if not 0 <= record.committed_prompts <= record.n_prompts:
        raise InvalidArgument(
            f"committed_prompts {record.committed_prompts} of run {record.run_id} is outside "
            f"0..{record.n_prompts}"
        )
    names = [p.point for p in record.points]
    if "" in names:
        raise InvalidArgument(f"run {record.run_id} has a point without a name")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"run {record.run_id} names a point twice: {names}")
    _check_json("spec_json", record.spec_json)


def _to_db(when: dt.datetime) -> dt.datetime:
    """Naive UTC for a TIMESTAMP column; a naive input is taken to be UTC already."""
    if when.tzinfo is None:
        return when
    return when.astimezone(dt.UTC).replace(tzinfo=None)


def _from_db(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC)


def _run_from_row(row: tuple[Any, ...], points: tuple[PointRecord, ...]) -> RunRecord:
    (
        run_id,
        model,
        model_id,
        status,
        reduction,
        dtype,
        n_prompts,
        n_tokens,
        committed_prompts,
        uri,
        created_at,
        updated_at,
        error,
        spec_json,
        truncated_prompts,
        max_length,
    ) = row
    return RunRecord(
        run_id=run_id,
        model=model,
        model_id=model_id,
        status=status,
        points=points,
        reduction=reduction,
        dtype=dtype,
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        committed_prompts=committed_prompts,
        uri=uri,
        created_at=_from_db(created_at),
        updated_at=_from_db(updated_at),
        error=error,
        spec_json=spec_json,
        truncated_prompts=truncated_prompts,
        max_length=max_length,
    )


def _analysis_from_row(row: tuple[Any, ...]) -> AnalysisRecord:
    analysis_id, run_id, point, kind, params_json, uri, created_at, summary_json = row
    return AnalysisRecord(
        analysis_id=analysis_id,
        run_id=run_id,
        point=point,
        kind=kind,
        params_json=params_json,
        uri=uri,
        created_at=_from_db(created_at),
        summary_json=summary_json,
    )
