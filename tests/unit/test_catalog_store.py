"""The catalog store on a real DuckDB file: registration, resume, progress, filters, persistence."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound
from neuronmap_catalog.store import AnalysisRecord, CatalogStore, PointRecord, RunRecord

START = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    """A fake clock: every reading is one second after the previous one, starting at START."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> dt.datetime:
        self.ticks += 1
        return START + dt.timedelta(seconds=self.ticks - 1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    with CatalogStore(str(tmp_path / "catalog.duckdb"), clock=Clock()) as catalog:
        yield catalog


def _run(run_id: str, **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "model": "gpt2",
        "model_id": "openai-community/gpt2",
        "points": (
            PointRecord("blocks.0.resid_post", (-1, 768), "transformer.h.0", "output"),
            PointRecord("embed", (-1, 768), "transformer.wte", "output"),
        ),
        "n_prompts": 10,
        "n_tokens": 70,
        "uri": f"file:///lake/runs/{run_id}",
        "spec_json": '{"model": "gpt2"}',
    }
    values.update(fields)
    return RunRecord(run_id=run_id, **values)  # type: ignore[arg-type]


def _ids(runs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


def test_register_run_stores_every_field_and_sets_timestamps(store: CatalogStore) -> None:
    asked = _run(
        "r1",
        reduction="mean",
        dtype="bfloat16",
        committed_prompts=2,
        truncated_prompts=1,
        max_length=128,
        error="",
        created_at=dt.datetime(1999, 1, 1, tzinfo=dt.UTC),  # ignored: the store sets it
    )
    registered = store.register_run(asked)
    assert registered.created_at == START
    assert registered.updated_at == START
    assert registered.created_at.tzinfo is dt.UTC
    got = store.get_run("r1")
    assert got == registered
    assert got.points == asked.points
    assert (got.reduction, got.dtype, got.n_prompts, got.n_tokens) == ("mean", "bfloat16", 10, 70)
    assert (got.committed_prompts, got.truncated_prompts, got.max_length) == (2, 1, 128)
    assert got.spec_json == '{"model": "gpt2"}'
    assert got.uri == "file:///lake/runs/r1"


def test_register_run_is_idempotent_by_run_id(store: CatalogStore) -> None:
    first = store.register_run(_run("r1"))
    again = store.register_run(_run("r1", model="other", n_prompts=3, points=()))
    assert again == first
    assert store.get_run("r1").model == "gpt2"
    assert store.list_runs()[1] == 1


def test_a_run_without_points_round_trips(store: CatalogStore) -> None:
    store.register_run(_run("r1", points=()))
    assert store.get_run("r1").points == ()


@pytest.mark.parametrize("stopped", ["failed", "cancelled"])
@pytest.mark.parametrize("resumed", ["pending", "running"])
def test_registering_a_stopped_run_again_resumes_it(store: CatalogStore, stopped: str, resumed: str) -> None:
    created = store.register_run(_run("r1"))
    store.update_run("r1", status=stopped, committed_prompts=4, error="out of memory")
    again = store.register_run(_run("r1", status=resumed, model="ignored"))
    assert again.status == resumed
    assert again.error == ""
    assert again.committed_prompts == 4  # the committed prefix stays: the extractor resumes from it
    assert again.model == "gpt2"
    assert again.created_at == created.created_at
    assert again.updated_at is not None and created.updated_at is not None
    assert again.updated_at > created.updated_at
    assert store.get_run("r1") == again


def test_registering_again_does_not_touch_an_active_or_complete_run(store: CatalogStore) -> None:
    store.register_run(_run("pending-run"))
    assert store.register_run(_run("pending-run", status="running")).status == "pending"
    store.register_run(_run("done", status="complete", committed_prompts=10))
    assert store.register_run(_run("done", status="pending")).status == "complete"
    store.register_run(_run("stopped", status="failed", error="boom"))
    # A stopped run registered as stopped again is not a resume.
    assert store.register_run(_run("stopped", status="cancelled")).error == "boom"


def test_progress_never_moves_backwards(store: CatalogStore) -> None:
    store.register_run(_run("r1", status="running"))
    assert store.update_run("r1", committed_prompts=5).committed_prompts == 5
    late = store.update_run("r1", committed_prompts=3)
    assert late.committed_prompts == 5
    assert store.update_run("r1", committed_prompts=10).committed_prompts == 10
    assert store.get_run("r1").committed_prompts == 10


@pytest.mark.parametrize("committed", [-1, 11])
def test_progress_outside_the_prompts_is_invalid(store: CatalogStore, committed: int) -> None:
    store.register_run(_run("r1"))
    with pytest.raises(InvalidArgument, match=r"outside 0\.\.10"):
        store.update_run("r1", committed_prompts=committed)
    assert store.get_run("r1").committed_prompts == 0


def test_update_changes_status_and_error_and_keeps_the_rest(store: CatalogStore) -> None:
    created = store.register_run(_run("r1"))
    running = store.update_run("r1", status="running", committed_prompts=0)
    assert running.status == "running"
    assert running.updated_at is not None and created.updated_at is not None
    assert running.updated_at > created.updated_at
    failed = store.update_run("r1", status="failed", error="CUDA out of memory")
    assert (failed.status, failed.error) == ("failed", "CUDA out of memory")
    # Moving a stopped run back to running clears the old error.
    resumed = store.update_run("r1", status="running")
    assert (resumed.status, resumed.error) == ("running", "")
    assert resumed.points == created.points
    assert store.get_run("r1") == resumed


def test_an_update_that_changes_nothing_keeps_updated_at(store: CatalogStore) -> None:
    created = store.register_run(_run("r1", status="running", committed_prompts=4))
    same = store.update_run("r1", status="running", committed_prompts=2)
    assert same == created


def test_a_complete_run_is_final(store: CatalogStore) -> None:
    store.register_run(_run("r1", status="running"))
    done = store.update_run("r1", status="complete", committed_prompts=10)
    # Re-setting complete (a retried report) is a no-op.
    assert store.update_run("r1", status="complete") == done
    assert store.update_run("r1", status="complete", committed_prompts=7) == done
    with pytest.raises(FailedPrecondition, match="r1 is complete"):
        store.update_run("r1", status="running")
    with pytest.raises(FailedPrecondition):
        store.update_run("r1", status="failed", error="late failure")
    with pytest.raises(FailedPrecondition):
        store.update_run("r1", error="late failure")
    assert store.get_run("r1") == done


def test_unknown_runs_are_not_found(store: CatalogStore) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        store.get_run("nope")
    with pytest.raises(NotFound, match="'nope'"):
        store.update_run("nope", status="running")


def test_update_rejects_an_unknown_status(store: CatalogStore) -> None:
    store.register_run(_run("r1"))
    with pytest.raises(InvalidArgument, match="'done'"):
        store.update_run("r1", status="done")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"run_id": ""}, "run_id is empty"),
        ({"status": "done"}, "status 'done'"),
        ({"reduction": "max"}, "reduction 'max'"),
        ({"dtype": "int8"}, "dtype 'int8'"),
        ({"spec_json": "{not json"}, "spec_json is not JSON"),
        ({"committed_prompts": 11}, r"outside 0\.\.10"),
        ({"n_tokens": -1}, "n_tokens of run r1 is negative"),
        ({"points": (PointRecord("embed", (-1, 4)), PointRecord("embed", (-1, 4)))}, "names a point twice"),
        ({"points": (PointRecord("", (-1, 4)),)}, "without a name"),
    ],
)
def test_register_run_rejects_invalid_records(
    store: CatalogStore, fields: dict[str, object], message: str
) -> None:
    fields = {"run_id": "r1", **fields}
    run_id = str(fields.pop("run_id"))
    with pytest.raises(InvalidArgument, match=message):
        store.register_run(_run(run_id, **fields))
    assert store.list_runs() == ([], 0)


@pytest.fixture
def four_runs(store: CatalogStore) -> list[RunRecord]:
    """Four runs registered one second apart (r1 oldest), with different models, statuses and points."""
    return [
        store.register_run(_run("r1")),
        store.register_run(_run("r2", status="running", points=(PointRecord("embed", (-1, 768)),))),
        store.register_run(
            _run(
                "r3",
                model="smollm2_135m",
                model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                status="complete",
                points=(PointRecord("blocks.3.resid_post", (-1, 576), "model.layers.3", "output"),),
            )
        ),
        store.register_run(
            _run("r4", model="/models/gpt2", model_id="openai-community/gpt2", status="failed")
        ),
    ]


def test_list_runs_newest_first_with_totals(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    runs, total = store.list_runs()
    assert _ids(runs) == ["r4", "r3", "r2", "r1"]
    assert total == 4
    assert runs[1] == four_runs[2]


def test_list_runs_by_model_matches_asked_model_or_model_id(
    store: CatalogStore, four_runs: list[RunRecord]
) -> None:
    assert _ids(store.list_runs(model="gpt2")[0]) == ["r2", "r1"]
    assert _ids(store.list_runs(model="openai-community/gpt2")[0]) == ["r4", "r2", "r1"]
    assert _ids(store.list_runs(model="/models/gpt2")[0]) == ["r4"]
    assert _ids(store.list_runs(model="HuggingFaceTB/SmolLM2-135M-Instruct")[0]) == ["r3"]
    assert store.list_runs(model="gpt") == ([], 0)  # exact, not a prefix


def test_list_runs_by_status(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    assert _ids(store.list_runs(status="pending")[0]) == ["r1"]
    assert _ids(store.list_runs(status="complete")[0]) == ["r3"]
    assert store.list_runs(status="cancelled") == ([], 0)
    with pytest.raises(InvalidArgument, match="status 'finished'"):
        store.list_runs(status="finished")


def test_list_runs_by_point(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    assert _ids(store.list_runs(point="embed")[0]) == ["r4", "r2", "r1"]
    assert _ids(store.list_runs(point="blocks.0.resid_post")[0]) == ["r4", "r1"]
    assert _ids(store.list_runs(point="blocks.3.resid_post")[0]) == ["r3"]
    assert store.list_runs(point="blocks") == ([], 0)  # exact, not a LIKE
    # Points come back whole and in order, not only the one matched.
    assert store.list_runs(point="embed")[0][2].points == four_runs[0].points


def test_list_runs_by_creation_time(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    r2_created = four_runs[1].created_at
    assert r2_created == START + dt.timedelta(seconds=1)
    # created_after is inclusive, created_before exclusive.
    assert _ids(store.list_runs(created_after=r2_created)[0]) == ["r4", "r3", "r2"]
    assert _ids(store.list_runs(created_before=r2_created)[0]) == ["r1"]
    window = store.list_runs(created_after=r2_created, created_before=r2_created + dt.timedelta(seconds=2))
    assert _ids(window[0]) == ["r3", "r2"]
    assert window[1] == 2
    # Other time zones and naive (read as UTC) datetimes name the same instant.
    paris = dt.timezone(dt.timedelta(hours=1))
    assert _ids(store.list_runs(created_after=r2_created.astimezone(paris))[0]) == ["r4", "r3", "r2"]
    assert _ids(store.list_runs(created_before=r2_created.replace(tzinfo=None))[0]) == ["r1"]


def test_list_runs_combines_filters(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    runs, total = store.list_runs(model="gpt2", point="embed", status="running")
    assert (_ids(runs), total) == (["r2"], 1)
    assert store.list_runs(model="gpt2", status="complete") == ([], 0)


def test_list_runs_pages_with_the_total(store: CatalogStore, four_runs: list[RunRecord]) -> None:
    assert store.list_runs(limit=2) == (store.list_runs()[0][:2], 4)
    assert _ids(store.list_runs(limit=2, offset=2)[0]) == ["r2", "r1"]
    assert store.list_runs(limit=2, offset=4) == ([], 4)
    runs, total = store.list_runs(point="embed", limit=1, offset=1)
    assert (_ids(runs), total) == (["r2"], 3)


def test_list_limit_zero_means_one_hundred(store: CatalogStore) -> None:
    for i in range(101):
        store.register_run(_run(f"r{i:03d}", points=()))
    runs, total = store.list_runs(limit=0)
    assert (len(runs), total) == (100, 101)
    assert runs[0].run_id == "r100"
    assert len(store.list_runs(limit=1000)[0]) == 101


@pytest.mark.parametrize(("limit", "offset"), [(1001, 0), (-1, 0), (10, -1)])
def test_list_rejects_bad_paging(store: CatalogStore, limit: int, offset: int) -> None:
    with pytest.raises(InvalidArgument):
        store.list_runs(limit=limit, offset=offset)
    with pytest.raises(InvalidArgument):
        store.list_analyses(limit=limit, offset=offset)


def _analysis(
    analysis_id: str,
    run_id: str = "r1",
    point: str = "embed",
    kind: str = "statistics",
    params_json: str = '{"sparsity_threshold": 0.0}',
    summary_json: str = '{"mean": 0.5}',
) -> AnalysisRecord:
    return AnalysisRecord(
        analysis_id=analysis_id,
        run_id=run_id,
        point=point,
        kind=kind,
        params_json=params_json,
        uri=f"file:///lake/analyses/{analysis_id}",
        summary_json=summary_json,
    )


def test_register_and_get_an_analysis(store: CatalogStore) -> None:
    store.register_run(_run("r1"))
    registered = store.register_analysis(_analysis("a1"))
    assert registered.created_at == START + dt.timedelta(seconds=1)
    got = store.get_analysis("a1")
    assert got == registered
    assert (got.run_id, got.point, got.kind) == ("r1", "embed", "statistics")
    assert (got.params_json, got.summary_json) == ('{"sparsity_threshold": 0.0}', '{"mean": 0.5}')
    # Idempotent: the same id returns what is stored.
    assert store.register_analysis(_analysis("a1", summary_json='{"mean": 9}')) == registered


def test_analyses_need_a_known_run_and_valid_json(store: CatalogStore) -> None:
    with pytest.raises(NotFound, match="'r9'"):
        store.register_analysis(_analysis("a1", run_id="r9"))
    store.register_run(_run("r1"))
    with pytest.raises(InvalidArgument, match="params_json is not JSON"):
        store.register_analysis(_analysis("a1", params_json="{"))
    with pytest.raises(InvalidArgument, match="summary_json is not JSON"):
        store.register_analysis(_analysis("a1", summary_json="nan?"))
    with pytest.raises(InvalidArgument, match="analysis_id is empty"):
        store.register_analysis(_analysis(""))
    with pytest.raises(NotFound, match="'a1'"):
        store.get_analysis("a1")
    assert store.list_analyses() == ([], 0)


def test_list_analyses_filters_and_pages(store: CatalogStore) -> None:
    store.register_run(_run("r1"))
    store.register_run(_run("r2"))
    store.register_analysis(_analysis("a1"))
    store.register_analysis(_analysis("a2", point="blocks.0.resid_post"))
    store.register_analysis(_analysis("a3", run_id="r2", kind="pca"))
    store.register_analysis(_analysis("a4", run_id="r2"))

    def ids(**filters: object) -> tuple[list[str], int]:
        found, total = store.list_analyses(**filters)  # type: ignore[arg-type]
        return [a.analysis_id for a in found], total

    assert ids() == (["a4", "a3", "a2", "a1"], 4)
    assert ids(run_id="r1") == (["a2", "a1"], 2)
    assert ids(point="embed") == (["a4", "a3", "a1"], 3)
    assert ids(kind="pca") == (["a3"], 1)
    assert ids(run_id="r2", kind="statistics") == (["a4"], 1)
    assert ids(limit=2, offset=1) == (["a3", "a2"], 4)
    assert ids(run_id="r3") == ([], 0)


def test_reopening_the_file_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "folders" / "catalog.duckdb"
    with CatalogStore(str(path), clock=Clock()) as first:
        run = first.register_run(_run("r1"))
        run = first.update_run("r1", status="running", committed_prompts=6)
        analysis = first.register_analysis(_analysis("a1"))
    assert path.exists()
    with CatalogStore(str(path)) as second:
        assert second.get_run("r1") == run
        assert second.get_analysis("a1") == analysis
        assert second.list_runs(point="embed") == ([run], 1)
        # Registration stays idempotent across restarts.
        assert second.register_run(_run("r1")) == run


def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = CatalogStore(str(tmp_path / "catalog.duckdb"))
    store.close()
    store.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        store.get_run("r1")


def test_a_second_process_cannot_open_the_file(store: CatalogStore) -> None:
    code = "import sys; from neuronmap_catalog.store import CatalogStore; CatalogStore(sys.argv[1])"
    other = subprocess.run(
        [sys.executable, "-c", code, store.path], capture_output=True, text=True, timeout=60, check=False
    )
    assert other.returncode != 0
    assert "FailedPrecondition: cannot open the catalog file" in other.stderr


def test_concurrent_progress_reports_keep_the_maximum(store: CatalogStore) -> None:
    store.register_run(_run("r1", n_prompts=200, status="running"))
    errors: list[BaseException] = []

    def report(start: int) -> None:
        try:
            for committed in range(start, 201, 8):
                store.update_run("r1", committed_prompts=committed)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_run("r1").committed_prompts == 200
