"""The lake on real S3 (SeaweedFS on loopback): the same bytes as a local lake, and the whole stack over it.

A local lake and an S3 lake are written by the same code (`neuronmap.lake`), so the same run must give
the same objects, byte for byte, whichever store holds them; plain zarr must open an S3 run; readers must
see only committed rows. Then the services run with an S3 lake: an extraction equals the same extraction
into a local lake (same run id, same values), statistics read the S3 lake, and a wrong credential fails
the job with a storage error while the server keeps serving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
import zarr

from neuronmap.client import Client
from neuronmap.errors import FailedPrecondition, NeuronMapError
from neuronmap.lake import Lake, PointInfo, RunWriter, decode, encode
from tests.conftest import StartServer, make_settings
from tests.s3 import S3Server

pytestmark = pytest.mark.s3

POINTS = ("blocks.0.resid_post", "embed")
WIDTHS = {"blocks.0.resid_post": 6, "embed": 3}
LENGTHS = (3, 1, 5, 2)  # tokens per prompt: a ragged run
EXTRACT_POINTS = ["blocks.0.resid_post", "blocks.2.resid_post"]
EXTRACT_PROMPTS = [
    "The capital of France is Paris.",
    "Hi",
    "Neurons in transformer models respond to features of their input tokens, and some respond to many.",
    "def add(a, b): return a + b",
]


def _fresh_fs(server: S3Server) -> Any:
    """A synchronous s3fs client of its own (no shared instance, no stale listing cache)."""
    return s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)


def _values(seed: int) -> dict[str, np.ndarray]:
    """Activations `[T, d]` per point, float32 spread over six decades (exercises the rounding)."""
    rng = np.random.default_rng(seed)
    rows = sum(LENGTHS)
    return {
        p: (rng.normal(size=(rows, w)) * 10.0 ** rng.integers(-3, 3, size=(rows, w))).astype(np.float32)
        for p, w in WIDTHS.items()
    }


def _create(lake: Lake, run_id: str, dtype: str) -> RunWriter:
    return lake.create_run(
        run_id,
        spec={"model": "test", "dtype": dtype},
        prompts=[f"prompt {i}: {'x' * n}" for i, n in enumerate(LENGTHS)],
        token_ids=[np.arange(n, dtype=np.int32) + 100 * i for i, n in enumerate(LENGTHS)],
        points=[PointInfo(name, WIDTHS[name], module_path=f"m.{name}") for name in POINTS],
        reduction="tokens",
        dtype=dtype,
        provenance={"writer": "test_s3_lake"},
    )


def _window(values: Mapping[str, np.ndarray], writer: RunWriter, p0: int, p1: int) -> dict[str, np.ndarray]:
    """The encoded rows of prompts [p0, p1) of every point."""
    r0, r1 = writer.rows_of(p0, p1)
    return {name: encode(v[r0:r1], writer.layout.dtype) for name, v in values.items()}


def _write_all(lake: Lake, run_id: str, dtype: str, values: Mapping[str, np.ndarray]) -> None:
    """Writes a run in two windows (prompts 0:2, then 2:4), committing after each, and completes it."""
    writer = _create(lake, run_id, dtype)
    for p0, p1 in ((0, 2), (2, len(LENGTHS))):
        writer.write(p0, p1, _window(values, writer, p0, p1))
        writer.commit(p1)
    writer.set_status("complete")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_run_round_trip_matches_a_local_lake_byte_for_byte(
    s3_server: S3Server, tmp_path: Path, dtype: str
) -> None:
    run_id = f"round-trip-{dtype}"
    values = _values(seed=0)
    local = Lake(str(tmp_path / "lake"))
    remote = Lake(s3_server.lake_uri("t1"), s3_server.storage_options())
    _write_all(local, run_id, dtype, values)
    _write_all(remote, run_id, dtype, values)

    # Every object the run consists of, compared with the local files: same keys, same bytes.
    local_root = Path(local.run_uri(run_id))
    local_files = {
        str(path.relative_to(local_root)): path.read_bytes()
        for path in sorted(local_root.rglob("*"))
        if path.is_file()
    }
    fs = _fresh_fs(s3_server)
    prefix = remote.run_uri(run_id).removeprefix("s3://")
    remote_keys = sorted(fs.find(prefix))
    remote_files = {key.removeprefix(prefix + "/"): fs.cat_file(key) for key in remote_keys}
    assert sorted(remote_files) == sorted(local_files)
    assert "points/blocks.0.resid_post/c/0/0" in remote_files
    for key, data in local_files.items():
        assert remote_files[key] == data, f"{key} differs between the local and the S3 lake"

    # Read back through the lake: the values written, decoded exactly.
    run = remote.open_run(run_id)
    assert run.status == "complete"
    assert run.committed_prompts == len(LENGTHS)
    assert run.prompts() == local.open_run(run_id).prompts()
    np.testing.assert_array_equal(run.offsets(), np.concatenate([[0], np.cumsum(LENGTHS)]))
    np.testing.assert_array_equal(run.token_ids(), local.open_run(run_id).token_ids())
    for name, full in values.items():
        got = run.read(name)
        assert got.dtype == (np.float16 if dtype == "float16" else np.float32)
        np.testing.assert_array_equal(got, decode(encode(full, dtype), dtype))
        np.testing.assert_array_equal(got, local.open_run(run_id).read(name))
        np.testing.assert_array_equal(run.array(name).prompt(2), got[4:9])


def test_plain_zarr_opens_an_s3_run(s3_server: S3Server) -> None:
    lake = Lake(s3_server.lake_uri("t1"), s3_server.storage_options())
    values = _values(seed=1)
    _write_all(lake, "plain-zarr", "float16", values)

    group = zarr.open_group(lake.run_uri("plain-zarr"), mode="r", storage_options=s3_server.storage_options())
    assert group.attrs["committed_prompts"] == len(LENGTHS)
    assert group.attrs["status"] == "complete"
    assert group["tokens/offsets"][:].tolist() == [0, 3, 4, 9, 11]
    assert group["tokens/ids"][:].tolist()[:4] == [0, 1, 2, 100]
    point = group["points/blocks.0.resid_post"]
    assert point.shape == (sum(LENGTHS), WIDTHS["blocks.0.resid_post"])
    assert point.attrs["neuronmap_dtype"] == "float16"
    np.testing.assert_array_equal(point[:], values["blocks.0.resid_post"].astype(np.float16))


def test_readers_see_only_committed_rows_over_s3(s3_server: S3Server) -> None:
    uri = s3_server.lake_uri("t1")
    writer = _create(Lake(uri, s3_server.storage_options()), "committed", "float16")
    values = _values(seed=2)

    def visible_rows() -> int:
        """Rows a new reader (its own Lake) sees of a point."""
        return Lake(uri, s3_server.storage_options()).open_run("committed").array("embed").shape[0]

    assert visible_rows() == 0
    writer.write(0, 2, _window(values, writer, 0, 2))
    assert visible_rows() == 0  # stored, not committed
    writer.commit(2)
    assert visible_rows() == 4
    writer.write(2, 4, _window(values, writer, 2, 4))
    assert visible_rows() == 4  # the second window's chunks are in S3, but uncommitted
    reader = Lake(uri, s3_server.storage_options()).open_run("committed")
    np.testing.assert_array_equal(reader.read("embed"), values["embed"][:4].astype(np.float16))
    with pytest.raises(IndexError):
        reader.array("embed")[4]
    writer.commit(4)
    assert visible_rows() == sum(LENGTHS)
    assert Lake(uri, s3_server.storage_options()).open_run("committed").status == "running"


def _s3_settings_overrides(server: S3Server, prefix: str, secret: str | None = None) -> dict[str, str]:
    return {
        "lake_uri": server.lake_uri(prefix),
        "s3_endpoint_url": server.endpoint_url,
        "s3_key": server.key,
        "s3_secret": server.secret if secret is None else secret,
    }


def test_extraction_into_an_s3_lake_matches_a_local_lake(
    s3_server: S3Server,
    start_server: StartServer,
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    model = str(tiny_model("gpt2"))
    s3_settings = make_settings(tmp_path / "s3", **_s3_settings_overrides(s3_server, "lake"))
    assert s3_settings.storage_options() == s3_server.storage_options()
    on_s3 = start_server(settings=s3_settings)
    on_disk = start_server(settings=make_settings(tmp_path / "local"))

    with Client(dataclasses.replace(on_s3.settings)) as client, Client(on_disk.settings) as local_client:
        run = client.extract(model, EXTRACT_PROMPTS, EXTRACT_POINTS)
        expected = local_client.extract(model, EXTRACT_PROMPTS, EXTRACT_POINTS)

        assert run.info.uri.startswith("s3://")
        assert run.info.uri == f"{s3_server.lake_uri('lake')}/runs/{run.run_id}"
        assert run.status == "complete"
        assert run.run_id == expected.run_id  # a content hash: where the lake is does not enter it
        lengths = np.diff(run.offsets())
        assert len(set(lengths.tolist())) == len(EXTRACT_PROMPTS)  # ragged: every prompt its own length
        np.testing.assert_array_equal(run.offsets(), expected.offsets())
        assert run.prompts() == EXTRACT_PROMPTS
        for point in EXTRACT_POINTS:
            values = np.asarray(run.array(point))
            assert values.dtype == np.float16
            assert values.shape == (int(lengths.sum()), 32)
            assert np.isfinite(values).all() and np.abs(values).max() > 0
            np.testing.assert_array_equal(values, np.asarray(expected.array(point)))

        # The objects are in the bucket, where any S3 client finds them.
        fs = _fresh_fs(s3_server)
        run_key = run.info.uri.removeprefix("s3://")
        assert fs.exists(f"{run_key}/zarr.json")
        assert fs.exists(f"{run_key}/points/blocks.2.resid_post/zarr.json")

        point = EXTRACT_POINTS[1]
        stats = client.statistics(run.run_id, point)
        as_float64 = np.asarray(run.array(point)).astype(np.float64)
        assert stats.uri.startswith(s3_server.lake_uri("lake") + "/analyses/")
        assert stats.n_rows == as_float64.shape[0]
        np.testing.assert_allclose(stats.neurons["mean"], as_float64.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats.neurons["std"], as_float64.std(axis=0), rtol=1e-6)
        np.testing.assert_array_equal(stats.neurons["min"], as_float64.min(axis=0))
        np.testing.assert_array_equal(stats.neurons["max"], as_float64.max(axis=0))
        assert stats.layer["mean"] == pytest.approx(as_float64.mean(), rel=1e-6)
        assert stats.layer["std"] == pytest.approx(as_float64.std(), rel=1e-6)
        assert not stats.cached
        assert client.statistics(run.run_id, point).cached  # read back from the S3 lake


def test_a_wrong_s3_secret_fails_the_extraction_and_the_server_keeps_serving(
    s3_server: S3Server,
    start_server: StartServer,
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    overrides = _s3_settings_overrides(s3_server, "bad-lake", secret="not-" + s3_server.secret)
    running = start_server(settings=make_settings(tmp_path, **overrides))
    with Client(dataclasses.replace(running.settings)) as client:
        with pytest.raises(FailedPrecondition) as failure:
            client.extract(str(tiny_model("gpt2")), EXTRACT_PROMPTS[:2], EXTRACT_POINTS)
        message = str(failure.value)
        assert "refused access" in message and "check the S3 credentials" in message, message

        # The server is still there: other calls answer, and the same failure comes again, not a hang.
        keys = {model.key for model in client.models()}
        assert "gpt2_small" in keys
        with pytest.raises(NeuronMapError):
            client.extract(str(tiny_model("gpt2")), EXTRACT_PROMPTS[:1], EXTRACT_POINTS[:1])
    # Nothing was written with the wrong secret.
    assert not _fresh_fs(s3_server).exists(s3_server.lake_uri("bad-lake").removeprefix("s3://"))
