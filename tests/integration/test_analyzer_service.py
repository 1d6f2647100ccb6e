"""The Analyzer service through a real gRPC server (with the catalog) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from neuronmap.client import Client, Statistics
from neuronmap.errors import InvalidArgument, NeuronMapError, NotFound
from neuronmap.lake import Lake, PointInfo, RunWriter, chunk_rows, encode
from neuronmap.server import RunningServer
from neuronmap.settings import Settings
from neuronmap.v1 import catalog_pb2, common_pb2
from tests.numpy_reference import numpy_statistics

StartServer = Callable[..., RunningServer]
POINTS = {"blocks.0.resid_post": 512, "embed": 96}
POINT = "blocks.0.resid_post"
NAMES = ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis")
RTOL = 1e-6


@pytest.fixture
def client(start_server: StartServer, settings: Settings) -> Iterator[Client]:
    running = start_server(services=("catalog", "analyzer"))
    with Client(dataclasses.replace(settings, target=running.target)) as connected:
        yield connected


def assert_statistics(stats: Statistics, x: NDArray[np.float64], threshold: float = 0.0) -> None:
    """Per-neuron and layer statistics of `stats` equal numpy's on `x` (NaN where numpy has NaN)."""
    want = numpy_statistics(x, threshold)
    layer = numpy_statistics(x.reshape(-1, 1), threshold)
    assert stats.n_rows == len(x)
    for name in NAMES:
        np.testing.assert_allclose(stats.neurons[name], want[name], rtol=RTOL, atol=0, err_msg=name)
        assert stats.layer[name] == pytest.approx(float(layer[name][0]), rel=RTOL), name
    assert stats.layer["count"] == x.size


def write_run(settings: Settings, run_id: str, n_prompts: int, complete: bool = True) -> RunWriter:
    """A float16 tokens run of prompts of 100 tokens in the server's lake.

    Values are +-gamma(2) or exactly 0 (a third each); column 0 of POINT is constant. With
    `complete=False` only the first half of the prompts is committed.
    """
    rng = np.random.default_rng(int.from_bytes(run_id.encode(), "little"))
    lake = Lake(settings.lake_uri)
    n_rows = n_prompts * 100
    writer = lake.create_run(
        run_id,
        spec={"model": "test"},
        prompts=[f"prompt {i}" for i in range(n_prompts)],
        token_ids=[np.arange(100, dtype=np.int32)] * n_prompts,
        points=[PointInfo(name, width) for name, width in POINTS.items()],
        reduction="tokens",
        dtype="float16",
    )
    values = {
        name: rng.standard_gamma(2.0, size=(n_rows, width))
        * rng.choice([-1.0, 0.0, 1.0], size=(n_rows, width))
        for name, width in POINTS.items()
    }
    values[POINT][:, 0] = -1.5
    last = n_prompts if complete else n_prompts // 2
    writer.write(0, last, {name: encode(v[: last * 100], "float16") for name, v in values.items()})
    writer.commit(last)
    if complete:
        writer.set_status("complete")
    return writer


def register_run(client: Client, writer: RunWriter, complete: bool = True) -> None:
    layout = writer.layout
    run = common_pb2.Run(
        run_id=writer.run_id,
        model="test",
        model_id="test",
        status=common_pb2.RUN_STATUS_COMPLETE if complete else common_pb2.RUN_STATUS_RUNNING,
        points=[common_pb2.PointShape(point=p.name, shape=[-1, p.width]) for p in layout.points],
        reduction=common_pb2.REDUCTION_TOKENS,
        dtype=common_pb2.STORAGE_DTYPE_FLOAT16,
        n_prompts=layout.n_prompts,
        n_tokens=layout.n_tokens,
        committed_prompts=writer.committed_prompts,
        uri=writer.uri,
        spec_json=json.dumps(writer.spec),
    )
    client.catalog.RegisterRun(catalog_pb2.RegisterRunRequest(run=run))


def stored_values(writer: RunWriter, point: str) -> NDArray[np.float64]:
    return Lake.open_run_at(writer.uri).read(point).astype(np.float64)


def test_statistics_are_computed_stored_and_read_back(client: Client, settings: Settings) -> None:
    n_prompts = chunk_rows(POINTS[POINT], 2) * 3 // 200  # a chunk and a half
    writer = write_run(settings, "r1", n_prompts)
    assert writer.uri == Lake(settings.lake_uri).run_uri("r1")
    register_run(client, writer)
    x = stored_values(writer, POINT)

    first = client.statistics("r1", POINT)
    assert not first.cached and first.analysis_id.startswith("stat_")
    assert first.uri == Lake(settings.lake_uri).analysis_uri(first.analysis_id)
    assert (Path(first.uri) / "report.json").exists()
    assert_statistics(first, x)
    # The constant neuron: std 0 and NaN shape statistics, carried as NaN through the proto.
    assert first.neurons["std"][0] == 0.0 and first.neurons["mean"][0] == -1.5
    assert math.isnan(first.neurons["skewness"][0]) and math.isnan(first.neurons["kurtosis"][0])
    assert 0.3 < first.layer["sparsity"] < 0.37  # a third of the values were multiplied by 0

    second = client.statistics("r1", POINT)
    assert second.cached and second.analysis_id == first.analysis_id and second.uri == first.uri
    for name in NAMES:
        np.testing.assert_array_equal(second.neurons[name], first.neurons[name], err_msg=name)
    assert second.layer == first.layer and second.n_rows == first.n_rows

    listed = client.analyses(run_id="r1")
    assert [a.analysis_id for a in listed] == [first.analysis_id]
    assert listed[0].kind == "statistics" and listed[0].point == POINT and listed[0].uri == first.uri
    assert json.loads(listed[0].params_json) == {"threshold": 0.0}
    summary = json.loads(listed[0].summary_json)
    assert summary["count"] == x.size and summary["mean"] == pytest.approx(first.layer["mean"], rel=1e-15)

    again = client.statistics("r1", POINT, recompute=True)
    assert not again.cached and again.analysis_id == first.analysis_id
    for name in NAMES:
        np.testing.assert_allclose(again.neurons[name], first.neurons[name], rtol=1e-15, err_msg=name)
    assert len(client.analyses(run_id="r1")) == 1


def test_a_threshold_is_its_own_analysis(client: Client, settings: Settings) -> None:
    writer = write_run(settings, "r2", 10)
    register_run(client, writer)
    plain = client.statistics("r2", "embed")
    sparse = client.statistics("r2", "embed", sparsity_threshold=0.5)
    assert sparse.analysis_id != plain.analysis_id and not sparse.cached
    assert_statistics(sparse, stored_values(writer, "embed"), threshold=0.5)
    assert sparse.layer["sparsity"] > plain.layer["sparsity"] > 0.3
    assert {a.analysis_id for a in client.analyses(run_id="r2")} == {plain.analysis_id, sparse.analysis_id}
    assert len(client.analyses(run_id="r2", point="embed", kind="statistics")) == 2


def test_a_running_run_is_analysed_over_committed_rows_and_not_stored(
    client: Client, settings: Settings
) -> None:
    writer = write_run(settings, "r3", 20, complete=False)
    register_run(client, writer, complete=False)
    x = stored_values(writer, POINT)
    assert len(x) == 1000

    for _ in range(2):
        stats = client.statistics("r3", POINT)
        assert not stats.cached and stats.uri == ""
        assert_statistics(stats, x)
    assert client.analyses(run_id="r3") == []
    with pytest.raises(NotFound):
        Lake(settings.lake_uri).read_analysis(stats.analysis_id)


def test_errors_carry_their_status_and_the_server_keeps_answering(client: Client, settings: Settings) -> None:
    writer = write_run(settings, "r4", 5)
    register_run(client, writer)

    def still_serving() -> None:
        assert client.statistics("r4", "embed").n_rows == 500

    with pytest.raises(NotFound, match="nope") as unknown_run:
        client.statistics("nope", POINT)
    assert unknown_run.value.code == "NOT_FOUND"
    still_serving()

    with pytest.raises(NotFound, match=r"it has: blocks\.0\.resid_post, embed") as unknown_point:
        client.statistics("r4", "blocks.9.mlp_out")
    assert unknown_point.value.code == "NOT_FOUND"
    still_serving()

    bad: list[tuple[str, str, float]] = [
        ("r4", "", 0.0),
        ("", POINT, 0.0),
        ("r4", POINT, -0.5),
        ("r4", POINT, math.nan),
    ]
    for run_id, point, threshold in bad:
        with pytest.raises(InvalidArgument) as invalid:
            client.statistics(run_id, point, sparsity_threshold=threshold)
        assert invalid.value.code == "INVALID_ARGUMENT"
        still_serving()
    assert client.analyses(run_id="r4")[0].point == "embed"


def test_a_run_missing_from_the_lake_is_not_found(client: Client, settings: Settings) -> None:
    writer = write_run(settings, "r5", 5)
    register_run(client, writer)
    gone = settings.lake_uri + "/elsewhere"
    run = common_pb2.Run(
        run_id="r6",
        model="test",
        status=common_pb2.RUN_STATUS_COMPLETE,
        n_prompts=5,
        uri=Lake(gone).run_uri("r6"),
    )
    client.catalog.RegisterRun(catalog_pb2.RegisterRunRequest(run=run))
    with pytest.raises(NeuronMapError) as error:
        client.statistics("r6", POINT)
    assert error.value.code == "NOT_FOUND"
    assert client.statistics("r5", POINT).n_rows == 500


def test_identical_concurrent_requests_compute_once(client: Client, settings: Settings) -> None:
    writer = write_run(settings, "r7", 50)
    register_run(client, writer)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: client.statistics("r7", POINT), range(4)))
    assert sorted(r.cached for r in results) == [False, True, True, True]
    for r in results[1:]:
        np.testing.assert_array_equal(r.neurons["kurtosis"], results[0].neurons["kurtosis"])
    assert len(client.analyses(run_id="r7")) == 1
