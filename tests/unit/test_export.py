"""Exports (CSV, HDF5, Parquet) hold exactly the run's committed rows."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from neuronmap.errors import InvalidArgument
from neuronmap.export import export_run, write_seed_csv
from neuronmap.lake import Lake, PointInfo, RunWriter, encode

POINTS = [PointInfo("blocks.0.resid_post", 4, "h.0"), PointInfo("embed", 3, "h.0", "input")]


def _run(
    tmp_path: Path, reduction: str, dtype: str, lengths: list[int]
) -> tuple[RunWriter, dict[str, np.ndarray]]:
    lake = Lake(str(tmp_path / "lake"))
    writer = lake.create_run(
        "r",
        spec={"model": "m"},
        prompts=[f"question {i}, with a comma" for i in range(len(lengths))],
        token_ids=[np.arange(n, dtype=np.int32) + 100 * i for i, n in enumerate(lengths)],
        points=POINTS,
        reduction=reduction,
        dtype=dtype,
    )
    rows = sum(lengths) if reduction == "tokens" else len(lengths)
    rng = np.random.default_rng(0)
    values = {p.name: rng.normal(size=(rows, p.width)).astype(np.float32) for p in POINTS}
    writer.write(0, len(lengths), {k: encode(v, dtype) for k, v in values.items()})
    writer.commit(len(lengths))
    return writer, {k: lake.open_run("r").read(k).astype(np.float32) for k in values}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_csv_of_a_tokens_run(tmp_path: Path, dtype: str) -> None:
    run, stored = _run(tmp_path, "tokens", dtype, [3, 1, 2])
    out = export_run(run, "csv", tmp_path / "out.csv")
    rows = list(csv.DictReader(out.open()))
    assert [r["prompt_index"] for r in rows] == ["0", "0", "0", "1", "2", "2"]
    assert [r["token_index"] for r in rows] == ["0", "1", "2", "0", "0", "1"]
    assert [int(r["token_id"]) for r in rows] == [
        100 * p + t for p, t in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
    ]
    for name, values in stored.items():
        got = np.array([ast.literal_eval(r[name]) for r in rows], dtype=np.float32)
        np.testing.assert_array_equal(got, values)


def test_csv_of_a_reduced_run_names_the_questions(tmp_path: Path) -> None:
    run, stored = _run(tmp_path, "mean", "float32", [3, 1])
    rows = list(csv.DictReader(export_run(run, "csv", tmp_path / "out.csv", ["embed"]).open()))
    assert [r["question"] for r in rows] == ["question 0, with a comma", "question 1, with a comma"]
    assert "blocks.0.resid_post" not in rows[0]
    np.testing.assert_array_equal(
        np.array([ast.literal_eval(r["embed"]) for r in rows], np.float32), stored["embed"]
    )


def test_hdf5_mirrors_the_lake(tmp_path: Path) -> None:
    run, stored = _run(tmp_path, "tokens", "bfloat16", [2, 5])
    with h5py.File(export_run(run, "hdf5", tmp_path / "out.h5"), "r") as f:
        assert [p.decode() for p in f["prompts"][:]] == run.prompts()
        np.testing.assert_array_equal(f["tokens/offsets"][:], [0, 2, 7])
        for name, values in stored.items():
            np.testing.assert_array_equal(f[f"points/{name}"][:], values)
        assert json.loads(f.attrs["spec"]) == {"model": "m"}


def test_parquet_has_a_fixed_size_list_per_point(tmp_path: Path) -> None:
    run, stored = _run(tmp_path, "tokens", "float16", [4, 4, 1])
    table = pq.read_table(export_run(run, "parquet", tmp_path / "out.parquet"))
    assert table.column("prompt_index").to_pylist() == [0] * 4 + [1] * 4 + [2]
    for name, values in stored.items():
        np.testing.assert_array_equal(np.array(table.column(name).to_pylist(), dtype=np.float32), values)


def test_unknown_points_and_formats(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, "tokens", "float16", [1])
    with pytest.raises(InvalidArgument, match="has no point"):
        export_run(run, "csv", tmp_path / "x.csv", ["nope"])
    with pytest.raises(InvalidArgument, match="not one of"):
        export_run(run, "xlsx", tmp_path / "x.xlsx")


def test_seed_csv_is_the_original_format(tmp_path: Path) -> None:
    write_seed_csv(["What is 2+2?", 'Quote "this"'], np.array([[0.5, -1.0], [2.0, 0.25]]), tmp_path / "a.csv")
    rows = list(csv.reader((tmp_path / "a.csv").open()))
    assert rows[0] == ["question", "activation_vector"]
    assert rows[1] == ["What is 2+2?", "[0.5, -1.0]"]
    assert ast.literal_eval(rows[2][1]) == [2.0, 0.25] and rows[2][0] == 'Quote "this"'
