"""Streaming moments against numpy in float64: one block, many uneven blocks, pooling, edge cases."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from numpy.typing import NDArray

from neuronmap_analyzer.moments import STATISTICS, Moments, merge

RTOL = 1e-6


def reference(x: NDArray[np.float64], threshold: float = 0.0) -> dict[str, NDArray[np.float64]]:
    """Textbook statistics per column of `x` `[rows, d]`, in float64 with numpy."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    c = x - mean
    m2 = (c**2).mean(axis=0)
    m3 = (c**3).mean(axis=0)
    m4 = (c**4).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skewness = m3 / m2**1.5
        kurtosis = m4 / m2**2 - 3.0
    return {
        "mean": mean,
        "std": x.std(axis=0, ddof=0),
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "sparsity": (np.abs(x) <= threshold).mean(axis=0),
        "skewness": skewness,
        "kurtosis": kurtosis,
    }


def assert_matches(got: dict[str, NDArray[np.float64]], want: dict[str, NDArray[np.float64]]) -> None:
    assert set(got) == set(STATISTICS)
    for name in STATISTICS:
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=0, err_msg=name)


def uneven_blocks(x: NDArray[np.float64], rng: np.random.Generator) -> list[NDArray[np.float64]]:
    """Splits rows into blocks of random sizes, including 1-row and empty blocks."""
    cuts = np.sort(rng.integers(0, len(x), size=12))
    cuts = np.concatenate([[0, 0, 1], cuts, [len(x) - 1, len(x), len(x)]])
    return [x[a:b] for a, b in itertools.pairwise(cuts)]


def streamed(blocks: list[NDArray[np.float64]], threshold: float = 0.0) -> Moments:
    state = Moments.empty(blocks[0].shape[1])
    for block in blocks:
        state = merge(state, Moments.of(block, threshold))
    return state


RNG = np.random.default_rng(1234)
DATASETS = {
    # A large offset: naive sums of powers would lose every digit of the variance.
    "normal_offset": RNG.normal(loc=1e3, scale=[0.5, 1.0, 2.0, 3.0], size=(5000, 4)),
    "heavy_tailed": RNG.standard_t(df=3, size=(5000, 4)) * [1.0, 10.0, 0.1, 100.0],
    "lognormal": RNG.lognormal(mean=0.0, sigma=1.0, size=(5000, 4)) + np.array([0.0, 1e2, -1e2, 5.0]),
    "with_zeros": np.where(RNG.random((5000, 4)) < [0.1, 0.5, 0.9, 0.0], 0.0, RNG.normal(size=(5000, 4))),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_one_block_matches_numpy(name: str) -> None:
    x = DATASETS[name]
    assert_matches(Moments.of(x).finalize(), reference(x))


def test_sparsity_counts_exact_zeros() -> None:
    x = DATASETS["with_zeros"]
    got = Moments.of(x).finalize()["sparsity"]
    np.testing.assert_array_equal(got, (x == 0).mean(axis=0))
    assert 0.85 < got[2] < 0.95 and got[3] == 0.0


def test_positive_threshold() -> None:
    x = DATASETS["heavy_tailed"]
    got = streamed(uneven_blocks(x, np.random.default_rng(0)), threshold=0.5).finalize()
    want = reference(x, threshold=0.5)
    assert_matches(got, want)
    # Column 2 has scale 0.1: most of its values are under the threshold, unlike column 3 (scale 100).
    assert want["sparsity"][2] > 0.9 and want["sparsity"][3] < 0.01


def test_low_precision_block_is_upcast() -> None:
    x16 = DATASETS["normal_offset"].astype(np.float16)
    assert_matches(Moments.of(x16).finalize(), reference(x16.astype(np.float64)))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_uneven_blocks_equal_one_block(name: str) -> None:
    x = DATASETS[name]
    blocks = uneven_blocks(x, np.random.default_rng(7))
    assert any(len(b) == 0 for b in blocks) and any(len(b) == 1 for b in blocks)
    state = streamed(blocks)
    assert state.count == len(x)
    assert_matches(state.finalize(), Moments.of(x).finalize())
    assert_matches(state.finalize(), reference(x))


STATE_FIELDS = ("mean", "m2", "m3", "m4", "min", "max")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_merge_is_associative(name: str) -> None:
    x = DATASETS[name]
    a, b, c = Moments.of(x[:100]), Moments.of(x[100:3000]), Moments.of(x[3000:])
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    assert left.count == right.count == len(x)
    for field in STATE_FIELDS:
        np.testing.assert_allclose(getattr(right, field), getattr(left, field), rtol=1e-12, err_msg=field)
    np.testing.assert_array_equal(right.n_sparse, left.n_sparse)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_any_merge_tree_gives_the_same_state(name: str) -> None:
    x = DATASETS[name]
    blocks = [Moments.of(x[i : i + 250]) for i in range(0, len(x), 250)]
    fold = functools.reduce(merge, blocks)
    # Pairwise, as Dask workers would combine chunks.
    while len(blocks) > 1:
        pairs = [
            merge(*blocks[i : i + 2]) if i + 1 < len(blocks) else blocks[i] for i in range(0, len(blocks), 2)
        ]
        blocks = pairs
    tree = blocks[0]
    # m3 of symmetric data is a small difference of large terms, and every stored mean is only known to
    # half an ulp of the offset (1e3 here): compare m3 against its natural scale, sum |x - mean|^3.
    m3_scale = (np.abs(x - x.mean(axis=0)) ** 3).sum(axis=0)
    for other in (tree, Moments.of(x)):
        assert other.count == fold.count
        for field in STATE_FIELDS:
            got, want = getattr(other, field), getattr(fold, field)
            scale = m3_scale if field == "m3" else np.abs(want)
            assert (np.abs(got - want) <= 1e-12 * scale).all(), (field, got, want)


def test_merge_is_commutative() -> None:
    x = DATASETS["lognormal"]
    a, b = Moments.of(x[:1234]), Moments.of(x[1234:])
    assert_matches(merge(a, b).finalize(), merge(b, a).finalize())


def test_empty_state_is_identity() -> None:
    x = DATASETS["heavy_tailed"]
    state = Moments.of(x)
    for merged in (
        merge(Moments.empty(4), state),
        merge(state, Moments.empty(4)),
        merge(state, Moments.of(x[:0])),
    ):
        assert merged.count == state.count
        for field in ("mean", "m2", "m3", "m4", "min", "max", "n_sparse"):
            np.testing.assert_array_equal(getattr(merged, field), getattr(state, field))


def test_empty_state_finalizes_to_nan() -> None:
    got = Moments.empty(3).finalize()
    for name in STATISTICS:
        assert got[name].shape == (3,) and np.isnan(got[name]).all(), name
    assert Moments.empty(3).pooled().count == 0


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_pooled_equals_numpy_over_every_value(name: str) -> None:
    x = DATASETS[name]
    pooled = streamed(uneven_blocks(x, np.random.default_rng(3)), threshold=0.25).pooled()
    assert pooled.count == x.size
    assert_matches(pooled.finalize(), reference(x.reshape(-1, 1), threshold=0.25))


def test_pooled_is_not_an_average_of_averages() -> None:
    # Columns with different means and spreads: the layer std includes the spread of the means.
    x = np.random.default_rng(5).normal(loc=[0.0, 10.0], scale=[1.0, 3.0], size=(4000, 2))
    layer = Moments.of(x).pooled().finalize()
    assert layer["std"][0] == pytest.approx(x.std(), rel=1e-12)
    assert layer["std"][0] > 5.0 > Moments.of(x).finalize()["std"].mean()


def test_constant_column() -> None:
    # 0.1 is not a float: the rounded mean of 0.1s is not 0.1, yet the column is still constant.
    x = np.column_stack([np.full(3001, 0.1), np.full(3001, 2.0), DATASETS["normal_offset"][:3001, 0]])
    for state in (Moments.of(x), streamed(uneven_blocks(x, np.random.default_rng(9)))):
        got = state.finalize()
        np.testing.assert_array_equal(got["std"][:2], [0.0, 0.0])
        np.testing.assert_array_equal(got["mean"][:2], [0.1, 2.0])
        assert np.isnan(got["skewness"][:2]).all() and np.isnan(got["kurtosis"][:2]).all()
        assert np.isfinite(got["skewness"][2]) and np.isfinite(got["kurtosis"][2])
        np.testing.assert_allclose(got["std"][2], x[:, 2].std(), rtol=RTOL)


def test_constant_layer_pools_to_nan_shape_statistics() -> None:
    x = np.full((100, 3), -0.7)
    layer = Moments.of(x).pooled().finalize()
    assert layer["std"][0] == 0.0 and layer["mean"][0] == pytest.approx(-0.7, rel=1e-15)
    assert np.isnan(layer["skewness"][0]) and np.isnan(layer["kurtosis"][0])
    assert layer["sparsity"][0] == 0.0 and layer["min"][0] == layer["max"][0] == -0.7


def test_known_values() -> None:
    # x = [0, 0, 0, 4]: mean 1, deviations [-1, -1, -1, 3]: m2/n = 12/4, m3/n = 24/4, m4/n = 84/4.
    got = Moments.of(np.array([[0.0], [0.0], [0.0], [4.0]])).finalize()
    assert got["mean"][0] == 1.0 and got["std"][0] == pytest.approx(np.sqrt(3.0), rel=1e-15)
    assert got["sparsity"][0] == 0.75
    assert got["skewness"][0] == pytest.approx(6 / 3**1.5, rel=1e-14)
    assert got["kurtosis"][0] == pytest.approx(21 / 9 - 3, rel=1e-14)


def test_rejects_a_block_that_is_not_2d() -> None:
    with pytest.raises(ValueError, match="rows, d"):
        Moments.of(np.zeros(5))
    with pytest.raises(ValueError, match="cannot merge"):
        merge(Moments.empty(2), Moments.empty(3))
