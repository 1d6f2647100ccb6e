"""The activation lake: the only module that knows its Zarr v3 layout.

Layout (one group per run, one per analysis)::

    <lake>/runs/<run_id>/                 attrs: spec, status, committed_prompts, provenance, layout
        prompts          str   [P]          the input texts, in the order they were given
        tokens/ids       int32 [T]          every real token, prompts concatenated (no padding stored)
        tokens/offsets   int64 [P+1]        prompt p spans rows offsets[p]:offsets[p+1]
        decoder_tokens/ids, decoder_tokens/offsets   the same for the decoder input of an encoder-decoder
                                            model, present when decoder points were asked for
        points/<point>   f16 | bf16 | f32   [T, d] for reduction "tokens" (T of the point's token axis),
                                            [P, d] for "mean" / "last"
    <lake>/analyses/<analysis_id>/        attrs: report; one array per result; report.json beside

bfloat16 has no Zarr data type: such points are stored as uint16 bit patterns with the array attribute
`neuronmap_dtype = "bfloat16"`; `PointArray` decodes them to float32 (exactly).

Crash safety: prompts, token ids and offsets are written when the run is created, so every prompt's rows
are known from the start and point arrays are allocated at full size. Activations are written in windows
of whole prompts, in prompt order; `committed_prompts` advances only after a window's chunks are stored.
Chunk writes are atomic (a local store writes a temporary file and renames it; an S3 PUT is atomic), so a
crash leaves every chunk either as it was or as it was meant to be, and a restart rewrites from
`committed_prompts`. Readers see only committed rows.

The same code writes `file://` (or plain paths) and `s3://` lakes: local paths use zarr's LocalStore
(for its atomic writes), every other URL an fsspec store.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from neuronmap.errors import FailedPrecondition, InvalidArgument, NotFound

FORMAT_VERSION = 1
RUNS = "runs"
ANALYSES = "analyses"
REDUCTIONS = ("tokens", "mean", "last")
STORAGE_DTYPES = ("float16", "bfloat16", "float32")
# numpy dtype each storage dtype is written as
_STORED_AS: dict[str, np.dtype[Any]] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.uint16),
    "float32": np.dtype(np.float32),
}
# numpy dtype readers get back
_DECODED_AS: dict[str, np.dtype[Any]] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.float32),
    "float32": np.dtype(np.float32),
}

CHUNK_BYTES = 8 << 20  # large sequential objects: activations barely compress, S3 favours big PUTs
TOKEN_CHUNK_ROWS = 1 << 18
RunStatus = str  # "running" | "complete" | "failed" | "cancelled"
TERMINAL_STATUSES = ("complete", "failed", "cancelled")


def is_local(uri: str) -> bool:
    """True for plain paths and file:// URLs."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] == ":\\")


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def open_store(uri: str, storage_options: Mapping[str, Any] | None = None, read_only: bool = False) -> Store:
    """A zarr store rooted at `uri`."""
    if is_local(uri):
        return zarr.storage.LocalStore(local_path(uri), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        uri, storage_options=dict(storage_options or {}), read_only=read_only
    )


def chunk_rows(width: int, itemsize: int, target_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk: the largest power of two whose chunk stays under `target_bytes` (256 at least)."""
    rows = max(1, target_bytes // max(1, width * itemsize))
    return max(256, 1 << math.floor(math.log2(rows)))


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    """Converts float activations to their stored form. bfloat16 rounds to nearest even."""
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        rounding = ((bits >> 16) & 1) + 0x7FFF
        return ((bits + rounding) >> 16).astype(np.uint16)
    return np.asarray(values, dtype=_STORED_AS[dtype])


def decode(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored form -> numpy floats (bfloat16 -> float32, exactly)."""
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored


@dataclass(frozen=True)
class PointInfo:
    """A stored point: its name, width d, and where the extractor read it.

    `axis` names the token axis its rows follow: "tokens" (the input) or "decoder_tokens" (the decoder
    input of an encoder-decoder model). Reduced runs have one row per prompt whatever the axis.
    """

    name: str
    width: int
    module_path: str = ""
    kind: str = "output"
    axis: str = "tokens"


@dataclass(frozen=True)
class RunLayout:
    """What a run holds, fixed when it is created."""

    n_prompts: int
    n_tokens: int
    reduction: str
    dtype: str
    points: tuple[PointInfo, ...]
    chunk_rows: int
    n_decoder_tokens: int = 0

    def n_rows(self, point: PointInfo) -> int:
        if self.reduction != "tokens":
            return self.n_prompts
        return self.n_decoder_tokens if point.axis == "decoder_tokens" else self.n_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "n_prompts": self.n_prompts,
            "n_tokens": self.n_tokens,
            "n_decoder_tokens": self.n_decoder_tokens,
            "reduction": self.reduction,
            "dtype": self.dtype,
            "chunk_rows": self.chunk_rows,
            "points": [p.__dict__ for p in self.points],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> RunLayout:
        return RunLayout(
            n_prompts=int(data["n_prompts"]),
            n_tokens=int(data["n_tokens"]),
            n_decoder_tokens=int(data.get("n_decoder_tokens", 0)),
            reduction=str(data["reduction"]),
            dtype=str(data["dtype"]),
            chunk_rows=int(data["chunk_rows"]),
            points=tuple(PointInfo(**p) for p in data["points"]),
        )


class PointArray:
    """One point of a run, read lazily: slicing reads only the chunks it touches.

    Shape `[rows, d]` where rows are tokens (reduction "tokens") or prompts; only committed rows are
    visible. Values come back as float16 or float32 (bfloat16 is decoded to float32).
    """

    def __init__(self, array: zarr.Array, dtype: str, n_rows: int, offsets: np.ndarray | None) -> None:
        self.zarr = array
        self.storage_dtype = dtype
        self.shape: tuple[int, int] = (n_rows, int(array.shape[1]))
        self.dtype = _DECODED_AS[dtype]
        self._offsets = offsets

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            rows = slice(start, stop, step)
        elif isinstance(rows, int | np.integer):
            if not -self.shape[0] <= int(rows) < self.shape[0]:
                raise IndexError(f"row {rows} out of range for {self.shape[0]} committed rows")
            rows = int(rows) % self.shape[0]
        else:
            rows = np.asarray(rows)
            if rows.size and (rows.max() >= self.shape[0] or rows.min() < -self.shape[0]):
                raise IndexError(f"rows out of range for {self.shape[0]} committed rows")
            rows = rows % self.shape[0] if rows.size else rows
        key = (rows, *key[1:]) if isinstance(key, tuple) else rows
        return decode(np.asarray(self.zarr[key]), self.storage_dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)

    def prompt(self, p: int) -> np.ndarray:
        """The rows of prompt p: `[tokens_p, d]`, or `[d]` for a reduced run."""
        if self._offsets is None:
            return self[p]
        return self[int(self._offsets[p]) : int(self._offsets[p + 1])]

    def iter_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields `(first_row, block)` over committed rows, one storage chunk at a time: `[rows, d]`."""
        step = int(self.zarr.chunks[0])
        for start in range(0, self.shape[0], step):
            yield start, self[start : min(start + step, self.shape[0])]


class RunReader:
    """Read access to one run. Only committed prompts are visible while a run is being written."""

    def __init__(self, group: zarr.Group, run_id: str, uri: str) -> None:
        self.group = group
        self.run_id = run_id
        self.uri = uri
        attrs = group.attrs.asdict()
        if "layout" not in attrs:
            raise NotFound(f"run {run_id} has no layout (it was never fully created)")
        self.attrs: dict[str, Any] = attrs
        self.layout = RunLayout.from_json(attrs["layout"])
        self._offsets: dict[str, np.ndarray] = {}
        self._arrays: dict[str, zarr.Array] = {}

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.attrs["spec"])

    @property
    def status(self) -> RunStatus:
        return str(self.attrs["status"])

    @property
    def committed_prompts(self) -> int:
        return int(self.attrs["committed_prompts"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.attrs.get("provenance", {}))

    @property
    def points(self) -> dict[str, PointInfo]:
        return {p.name: p for p in self.layout.points}

    def prompts(self) -> list[str]:
        return [str(s) for s in self.group["prompts"][:]]

    def offsets(self, axis: str = "tokens") -> np.ndarray:
        """`[P+1]` int64: prompt p spans rows offsets[p]:offsets[p+1] of a token axis."""
        if axis not in self._offsets:
            self._offsets[axis] = np.asarray(self.group[f"{axis}/offsets"][:], dtype=np.int64)
        return self._offsets[axis]

    def token_ids(self, axis: str = "tokens") -> np.ndarray:
        """`[T]` int32, every real token of every prompt (of the input, or of the decoder input)."""
        return np.asarray(self.group[f"{axis}/ids"][:], dtype=np.int32)

    def rows_of(self, p0: int, p1: int, axis: str = "tokens") -> tuple[int, int]:
        """Row range of prompts [p0, p1) in the points of a token axis."""
        if self.layout.reduction == "tokens":
            offsets = self.offsets(axis)
            return int(offsets[p0]), int(offsets[p1])
        return p0, p1

    def array(self, point: str) -> PointArray:
        if point not in self.points:
            raise NotFound(f"run {self.run_id} has no point {point!r}; it has: {', '.join(self.points)}")
        axis = self.points[point].axis
        offsets = self.offsets(axis) if self.layout.reduction == "tokens" else None
        rows = self.rows_of(0, self.committed_prompts, axis)[1]
        return PointArray(self._array(point), self.layout.dtype, rows, offsets)

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = self.group[f"points/{name}"]
        return self._arrays[name]

    def read(self, point: str) -> np.ndarray:
        """Every committed row of a point, in memory: `[rows, d]`."""
        return self.array(point)[:]


class RunWriter(RunReader):
    """Write access to one run: windows of whole prompts, in order, then a commit."""

    def write(self, p0: int, p1: int, values: Mapping[str, np.ndarray]) -> None:
        """Stores the activations of prompts [p0, p1): one `[rows, d]` array per point, already encoded."""
        if p0 != self.committed_prompts:
            raise FailedPrecondition(f"write of prompts {p0}:{p1} but {self.committed_prompts} are committed")
        missing = set(self.points) - set(values)
        if missing:
            raise InvalidArgument(f"window {p0}:{p1} lacks points {sorted(missing)}")
        rows = {}
        for name, block in values.items():
            r0, r1 = self.rows_of(p0, p1, self.points[name].axis)
            if block.shape != (r1 - r0, self.points[name].width):
                raise InvalidArgument(f"{name}: block {block.shape} != {(r1 - r0, self.points[name].width)}")
            rows[name] = slice(r0, r1)

        # Every point's chunks at once: an object store answers each PUT after a round trip, and zarr
        # bounds the concurrency (its async.concurrency setting).
        arrays = {name: self._array(name)._async_array for name in values}  # opened outside the loop

        async def write_all() -> None:
            await asyncio.gather(*(arrays[name].setitem(rows[name], block) for name, block in values.items()))

        sync(write_all())

    def commit(self, p1: int) -> None:
        """Marks prompts [0, p1) durable. Call only after their `write` returned."""
        if p1 < self.committed_prompts or p1 > self.layout.n_prompts:
            raise FailedPrecondition(
                f"commit to {p1} from {self.committed_prompts} of {self.layout.n_prompts}"
            )
        self._set_attrs(committed_prompts=p1)

    def set_status(self, status: RunStatus, **extra: Any) -> None:
        if status == "complete" and self.committed_prompts != self.layout.n_prompts:
            raise FailedPrecondition(
                f"run {self.run_id} cannot complete with {self.committed_prompts}/{self.layout.n_prompts}"
            )
        self._set_attrs(status=status, **extra)

    def _set_attrs(self, **values: Any) -> None:
        self.group.attrs.update(values)
        self.attrs.update(values)


def _offsets(token_ids: Sequence[np.ndarray], n_prompts: int, axis: str) -> np.ndarray:
    """`[P+1]` row offsets of prompts whose ids are given; every prompt needs a token."""
    if len(token_ids) != n_prompts:
        raise InvalidArgument(f"{n_prompts} prompts but {len(token_ids)} token lists on axis {axis}")
    lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
    if (lengths == 0).any():
        raise InvalidArgument(f"prompt {int(np.argmin(lengths))} has no tokens on axis {axis}")
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


class Lake:
    """A lake rooted at a URI (a folder, `file://...` or `s3://bucket/prefix`)."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.uri = str(local_path(uri).resolve()) if is_local(uri) else uri.rstrip("/")
        self.storage_options = dict(storage_options or {})

    @staticmethod
    def open_run_at(run_uri: str, storage_options: Mapping[str, Any] | None = None) -> RunReader:
        """Opens a run by its full URI (`<lake>/runs/<run_id>`), as the catalog records it."""
        root, sep, run_id = run_uri.rstrip("/").rpartition(f"/{RUNS}/")
        if not sep or not run_id:
            raise InvalidArgument(f"{run_uri!r} is not a run URI (<lake>/{RUNS}/<run_id>)")
        return Lake(root, storage_options).open_run(run_id)

    def run_uri(self, run_id: str) -> str:
        return join_uri(self.uri, RUNS, run_id)

    def analysis_uri(self, analysis_id: str) -> str:
        return join_uri(self.uri, ANALYSES, analysis_id)

    def _open_group(self, uri: str, mode: str) -> zarr.Group | None:
        store = open_store(uri, self.storage_options, read_only=mode == "r")
        try:
            return zarr.open_group(store=store, mode=mode)  # type: ignore[arg-type]
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return None
        except PermissionError as error:
            raise FailedPrecondition(
                f"the lake at {self.uri} refused access ({error}); check the S3 credentials "
                "(NEURONMAP_S3_KEY, NEURONMAP_S3_SECRET) and endpoint (NEURONMAP_S3_ENDPOINT)"
            ) from None

    def has_run(self, run_id: str) -> bool:
        try:
            self.open_run(run_id)
        except NotFound:
            return False
        return True

    def open_run(self, run_id: str) -> RunReader:
        group = self._open_group(self.run_uri(run_id), "r")
        if group is None:
            raise NotFound(f"run {run_id} is not in the lake at {self.uri}")
        return RunReader(group, run_id, self.run_uri(run_id))

    def open_run_for_write(self, run_id: str) -> RunWriter:
        """Opens an existing run to resume it from its `committed_prompts`."""
        group = self._open_group(self.run_uri(run_id), "r+")
        if group is None:
            raise NotFound(f"run {run_id} is not in the lake at {self.uri}")
        return RunWriter(group, run_id, self.run_uri(run_id))

    def create_run(
        self,
        run_id: str,
        *,
        spec: Mapping[str, Any],
        prompts: Sequence[str],
        token_ids: Sequence[np.ndarray],
        points: Sequence[PointInfo],
        reduction: str,
        dtype: str,
        provenance: Mapping[str, Any] | None = None,
        decoder_token_ids: Sequence[np.ndarray] | None = None,
    ) -> RunWriter:
        """Creates a run (replacing any unfinished group of the same id) with its prompts and tokens.

        `token_ids[p]` holds the ids of prompt p after truncation: `[tokens_p]`; `decoder_token_ids[p]`
        the decoder input of prompt p, required when a point follows the "decoder_tokens" axis.
        """
        if reduction not in REDUCTIONS:
            raise InvalidArgument(f"reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
        if dtype not in STORAGE_DTYPES:
            raise InvalidArgument(f"dtype {dtype!r} is not one of {', '.join(STORAGE_DTYPES)}")
        if not prompts:
            raise InvalidArgument("a run needs at least one prompt")
        if not points:
            raise InvalidArgument("a run needs at least one point")
        axes = {"tokens": token_ids}
        if decoder_token_ids is not None:
            axes["decoder_tokens"] = decoder_token_ids
        elif any(p.axis == "decoder_tokens" for p in points):
            raise InvalidArgument("decoder points need the decoder input's token ids")
        offsets = {axis: _offsets(ids, len(prompts), axis) for axis, ids in axes.items()}
        layout = RunLayout(
            n_prompts=len(prompts),
            n_tokens=int(offsets["tokens"][-1]),
            n_decoder_tokens=int(offsets["decoder_tokens"][-1]) if "decoder_tokens" in offsets else 0,
            reduction=reduction,
            dtype=dtype,
            points=tuple(points),
            chunk_rows=chunk_rows(max(p.width for p in points), _STORED_AS[dtype].itemsize),
        )
        uri = self.run_uri(run_id)
        group = self._open_group(uri, "w")
        assert group is not None
        text = group.create_array("prompts", shape=(len(prompts),), dtype=str, chunks=(TOKEN_CHUNK_ROWS,))
        text[:] = np.array(list(prompts), dtype=object)
        for axis, ids in axes.items():
            flat = np.concatenate([np.asarray(t, dtype=np.int32) for t in ids])
            group.create_array(f"{axis}/ids", data=flat, chunks=(TOKEN_CHUNK_ROWS,))
            group.create_array(f"{axis}/offsets", data=offsets[axis], chunks=(TOKEN_CHUNK_ROWS,))
        for point in points:
            group.create_array(
                f"points/{point.name}",
                shape=(layout.n_rows(point), point.width),
                # Zarr stores an edge chunk at full size: a chunk longer than the array wastes its tail.
                chunks=(max(1, min(layout.chunk_rows, layout.n_rows(point))), point.width),
                dtype=_STORED_AS[dtype],
                fill_value=0,
                compressors=None,
                attributes={"point": point.name, "neuronmap_dtype": dtype},
            )
        # Written last: a group without "layout" is an unfinished creation and is replaced next time.
        group.attrs.update(
            {
                "format_version": FORMAT_VERSION,
                "spec": dict(spec),
                "status": "running",
                "committed_prompts": 0,
                "provenance": dict(provenance or {}),
                "layout": layout.to_json(),
            }
        )
        return RunWriter(group, run_id, uri)

    def write_analysis(
        self, analysis_id: str, arrays: Mapping[str, np.ndarray], report: Mapping[str, Any]
    ) -> str:
        """Stores an analysis: one array per result and report.json. Returns its URI."""
        uri = self.analysis_uri(analysis_id)
        group = self._open_group(uri, "w")
        assert group is not None
        for name, values in arrays.items():
            group.create_array(name, data=np.asarray(values))
        # Through the zarr store, not a second fsspec client: s3fs sessions are tied to one event loop.
        text = json.dumps(report, indent=2, sort_keys=True).encode()
        key = f"{group.path}/report.json".lstrip("/")
        sync(group.store.set(key, default_buffer_prototype().buffer.from_bytes(text)))
        # Written last: marks the analysis complete.
        group.attrs.update({"report": dict(report), "arrays": sorted(arrays)})
        return uri

    def read_analysis(self, analysis_id: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, report) of a stored analysis; NotFound if absent or unfinished."""
        group = self._open_group(self.analysis_uri(analysis_id), "r")
        if group is None or "report" not in group.attrs:
            raise NotFound(f"analysis {analysis_id} is not in the lake at {self.uri}")
        # Named in attrs rather than listed: listing would trip over report.json beside the arrays.
        arrays = {name: np.asarray(group[name][...]) for name in group.attrs["arrays"]}
        return arrays, dict(group.attrs["report"])
