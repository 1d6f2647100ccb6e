"""Exporting a run for tools that want CSV, HDF5 or Parquet files.

Every format is written chunk by chunk, so memory stays bounded by one storage chunk per point whatever
the run's size. Rows are the run's rows: one per token (reduction "tokens") or one per prompt.

    csv      prompt_index, token_index, token_id (tokens runs) or question (reduced runs), then one
             column per point holding the vector as a list literal: "[0.125, -1.5, ...]"
    hdf5     the lake's layout: prompts, tokens/ids, tokens/offsets, points/<point> [rows, d]; the spec
             and provenance as JSON attributes
    parquet  the csv columns, each point a fixed-size list of floats
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuronmap.errors import FailedPrecondition, InvalidArgument
from neuronmap.lake import RunReader

FORMATS = ("csv", "hdf5", "parquet")
SUFFIXES = {"csv": ".csv", "hdf5": ".h5", "parquet": ".parquet"}


def _vector_text(row: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(v)) for v in row) + "]"


def _blocks(run: RunReader, points: Sequence[str]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first row, {point: [rows, d]}) over the committed rows, one storage chunk of rows at a time."""
    arrays = {p: run.array(p) for p in points}
    first = arrays[points[0]]
    step = int(first.zarr.chunks[0])
    for start in range(0, len(first), step):
        stop = min(start + step, len(first))
        yield start, {p: a[start:stop] for p, a in arrays.items()}


def _row_labels(run: RunReader) -> dict[str, np.ndarray]:
    """Per stored row: prompt_index, and token_index / token_id for tokens runs."""
    n_prompts = run.committed_prompts
    if run.layout.reduction != "tokens":
        return {"prompt_index": np.arange(n_prompts, dtype=np.int64)}
    offsets = run.offsets()[: n_prompts + 1]
    lengths = np.diff(offsets)
    prompt_index = np.repeat(np.arange(n_prompts, dtype=np.int64), lengths)
    token_index = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    return {
        "prompt_index": prompt_index,
        "token_index": token_index.astype(np.int32),
        "token_id": run.token_ids()[: int(offsets[-1])],
    }


def _check_points(run: RunReader, points: Sequence[str] | None) -> list[str]:
    chosen = list(points) if points else list(run.points)
    for point in chosen:
        if point not in run.points:
            raise InvalidArgument(f"run {run.run_id} has no point {point!r}; it has: {', '.join(run.points)}")
    if any(run.points[p].axis != run.points[chosen[0]].axis for p in chosen):
        raise InvalidArgument("encoder and decoder token points have different rows: export them separately")
    return chosen


def export_run(run: RunReader, fmt: str, output: Path, points: Sequence[str] | None = None) -> Path:
    """Writes the run's committed rows of `points` (default: all) to `output` in format `fmt`."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    chosen = _check_points(run, points)
    output.parent.mkdir(parents=True, exist_ok=True)
    {"csv": _csv, "hdf5": _hdf5, "parquet": _parquet}[fmt](run, chosen, output)
    return output


def _csv(run: RunReader, points: list[str], output: Path) -> None:
    labels = _row_labels(run)
    questions = run.prompts() if run.layout.reduction != "tokens" else None
    with output.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*labels, *(["question"] if questions else []), *points])
        for start, block in _blocks(run, points):
            for i in range(len(block[points[0]])):
                row: list[Any] = [int(values[start + i]) for values in labels.values()]
                if questions is not None:
                    row.append(questions[start + i])
                row.extend(_vector_text(block[p][i]) for p in points)
                writer.writerow(row)


def write_seed_csv(questions: Sequence[str], vectors: np.ndarray, output: Path) -> None:
    """The original NeuronMap's `extract` file: question,activation_vector (one row per question)."""
    with output.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "activation_vector"])
        for question, vector in zip(questions, vectors, strict=True):
            writer.writerow([question, _vector_text(vector)])


def _hdf5(run: RunReader, points: list[str], output: Path) -> None:
    try:
        import h5py
    except ImportError:
        raise FailedPrecondition("HDF5 export needs h5py: pip install 'neuronmap[export]'") from None
    with h5py.File(output, "w") as f:
        f.attrs["run_id"] = run.run_id
        f.attrs["reduction"] = run.layout.reduction
        f.attrs["spec"] = json.dumps(run.spec, sort_keys=True)
        f.attrs["provenance"] = json.dumps(run.provenance, sort_keys=True)
        n_prompts = run.committed_prompts
        f.create_dataset(
            "prompts", data=np.array(run.prompts()[:n_prompts], dtype=object), dtype=h5py.string_dtype()
        )
        axis = run.points[points[0]].axis
        offsets = run.offsets(axis)[: n_prompts + 1]
        f.create_dataset("tokens/offsets", data=offsets)
        f.create_dataset("tokens/ids", data=run.token_ids(axis)[: int(offsets[-1])])
        datasets = {}
        for point in points:
            array = run.array(point)
            datasets[point] = f.create_dataset(
                f"points/{point}",
                shape=array.shape,
                dtype=array.dtype,
                chunks=(max(1, min(int(array.zarr.chunks[0]), array.shape[0])), array.shape[1]),
            )
            datasets[point].attrs["module_path"] = run.points[point].module_path
        for start, block in _blocks(run, points):
            for point, values in block.items():
                datasets[point][start : start + len(values)] = values


def _parquet(run: RunReader, points: list[str], output: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise FailedPrecondition("Parquet export needs pyarrow: pip install 'neuronmap[export]'") from None
    labels = _row_labels(run)
    questions = run.prompts() if run.layout.reduction != "tokens" else None
    widths = {p: run.points[p].width for p in points}
    fields = [pa.field(name, pa.from_numpy_dtype(values.dtype)) for name, values in labels.items()]
    if questions is not None:
        fields.append(pa.field("question", pa.string()))
    # float32: parquet's float16 is too new for many readers.
    fields += [pa.field(p, pa.list_(pa.float32(), widths[p])) for p in points]
    schema = pa.schema(fields, metadata={"neuronmap.spec": json.dumps(run.spec, sort_keys=True)})
    with pq.ParquetWriter(output, schema) as writer:
        for start, block in _blocks(run, points):
            n = len(block[points[0]])
            columns: list[Any] = [pa.array(values[start : start + n]) for values in labels.values()]
            if questions is not None:
                columns.append(pa.array(questions[start : start + n]))
            for p in points:
                flat = pa.array(block[p].astype(np.float32).reshape(-1))
                columns.append(pa.FixedSizeListArray.from_arrays(flat, widths[p]))
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
