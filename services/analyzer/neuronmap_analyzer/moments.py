"""Streaming moments with mergeable state, in the style of baukit's `runningstats`.

A `Moments` is the sufficient state of the statistics of `d` columns seen so far, all in float64:

    count      int          rows seen (the same for every column)
    mean       float64 [d]  column means
    m2, m3, m4 float64 [d]  central moment sums: m_k = sum over rows of (x - mean)^k
    min, max   float64 [d]  column extremes
    n_sparse   int64   [d]  how many values had |x| <= threshold

Three operations make it a streaming, parallel reduction:

- `Moments.of(block, threshold)`: the state of one block `[rows, d]`, computed in float64 after centring
  the block on its own mean (sums of powers of centred values do not cancel, even with a large offset).
- `merge(a, b)`: the state of the union of two disjoint sets of rows, by the exact pairwise update of
  Chan, Golub & LeVeque (1979) for m2 and Pébay (2008) for m3 and m4. It is associative and
  commutative up to rounding, so blocks may be merged in any order or tree (one pass over chunks, or
  chunks spread over workers), and the empty state (count 0) is its identity.
- `Moments.pooled()`: the state of every value of the `d` columns taken together (one column of
  `count * d` values), by shifting each column's central sums to the pooled mean. Exact: it is the same
  state as `Moments.of` on the flattened values, not an average of per-column statistics.

`finalize()` turns a state into statistics, one `[d]` float64 array each:

    mean       m1
    std        sqrt(m2 / n)                 population standard deviation (ddof=0)
    min, max
    sparsity   n_sparse / n                 fraction of values with |x| <= threshold
    skewness   (m3 / n) / (m2 / n)^1.5      the moment estimator (scipy.stats.skew, bias=True)
    kurtosis   (m4 / n) / (m2 / n)^2 - 3    excess kurtosis (scipy.stats.kurtosis, bias=True)

Edge cases follow numpy's arithmetic: a constant column (min == max) has std 0 and skewness and kurtosis
NaN (0/0); it is detected by min == max rather than by m2 == 0, because the rounded mean of equal values
need not equal them. A state with count 0 finalizes to NaN everywhere. NaN inputs propagate to NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

STATISTICS = ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis")
"""The names `finalize()` returns, in the order of the contract's NeuronStatistics."""


@dataclass(frozen=True, eq=False)
class Moments:
    """Mergeable moments of `d` columns (see the module docstring); every array is `[d]`."""

    count: int
    mean: Floats
    m2: Floats
    m3: Floats
    m4: Floats
    min: Floats
    max: Floats
    n_sparse: Ints

    @property
    def width(self) -> int:
        return int(self.mean.shape[0])

    @staticmethod
    def empty(width: int) -> Moments:
        """The state of no rows: the identity of `merge`."""
        zeros = np.zeros(width, dtype=np.float64)
        return Moments(
            count=0,
            mean=zeros,
            m2=zeros,
            m3=zeros,
            m4=zeros,
            min=np.full(width, np.inf),
            max=np.full(width, -np.inf),
            n_sparse=np.zeros(width, dtype=np.int64),
        )

    @staticmethod
    def of(block: NDArray[np.floating], threshold: float = 0.0) -> Moments:
        """The state of one block `[rows, d]`, in float64. A value is sparse when |x| <= threshold.

        Memory: two float64 copies of the block at most (the upcast and its squares).
        """
        if block.ndim != 2:
            raise ValueError(f"a block is [rows, d]; got shape {block.shape}")
        rows, width = block.shape
        if rows == 0:
            return Moments.empty(width)
        x: Floats = np.array(block, dtype=np.float64)  # a copy: centred in place below
        minimum: Floats = x.min(axis=0)
        maximum: Floats = x.max(axis=0)
        scratch: Floats = np.abs(x)
        n_sparse: Ints = np.count_nonzero(scratch <= threshold, axis=0).astype(np.int64)
        mean: Floats = x.mean(axis=0)
        # The rounded mean of equal values may differ from them; pin it so a constant column has m2 == 0.
        constant = minimum == maximum
        mean[constant] = minimum[constant]
        x -= mean
        # Rounding leaves the mean several ulps off, and the merge formulas assume deviations that sum
        # to 0: one correction step (the corrected two-pass algorithm) brings it to about half an ulp.
        refined = mean + x.mean(axis=0)
        x -= refined - mean
        mean = refined
        np.multiply(x, x, out=scratch)
        m2: Floats = scratch.sum(axis=0)
        m3: Floats = np.einsum("ij,ij->j", scratch, x)
        m4: Floats = np.einsum("ij,ij->j", scratch, scratch)
        return Moments(rows, mean, m2, m3, m4, minimum, maximum, n_sparse)

    def pooled(self) -> Moments:
        """One state (width 1) for every value of the d columns together: `count * d` values.

        Each column's central sums are shifted exactly to the pooled mean (binomial expansion of
        (x - mean_j + delta_j)^k with sum (x - mean_j) = 0); all columns have the same count.
        """
        if self.count == 0 or self.width == 0:
            return Moments.empty(1)
        n = float(self.count)
        mean = float(self.mean.mean())
        delta = self.mean - mean
        delta2 = delta * delta
        m2 = self.m2.sum() + n * delta2.sum()
        m3 = self.m3.sum() + 3.0 * (delta * self.m2).sum() + n * (delta2 * delta).sum()
        m4 = (
            self.m4.sum()
            + 4.0 * (delta * self.m3).sum()
            + 6.0 * (delta2 * self.m2).sum()
            + n * (delta2 * delta2).sum()
        )
        return Moments(
            count=self.count * self.width,
            mean=np.array([mean]),
            m2=np.array([m2], dtype=np.float64),
            m3=np.array([m3], dtype=np.float64),
            m4=np.array([m4], dtype=np.float64),
            min=np.array([self.min.min()], dtype=np.float64),
            max=np.array([self.max.max()], dtype=np.float64),
            n_sparse=np.array([self.n_sparse.sum()], dtype=np.int64),
        )

    def finalize(self) -> dict[str, Floats]:
        """Statistics per column, each `[d]` float64, keyed by the names in `STATISTICS`."""
        width = self.width
        if self.count == 0:
            return {name: np.full(width, np.nan) for name in STATISTICS}
        n = float(self.count)
        constant = self.min == self.max
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = self.m2 / n
            std: Floats = np.sqrt(variance)
            skewness: Floats = (self.m3 / n) / variance**1.5
            kurtosis: Floats = (self.m4 / n) / (variance * variance) - 3.0
        std[constant] = 0.0
        skewness[constant] = np.nan
        kurtosis[constant] = np.nan
        return {
            "mean": self.mean.copy(),
            "std": std,
            "min": self.min.copy(),
            "max": self.max.copy(),
            "sparsity": self.n_sparse / n,
            "skewness": skewness,
            "kurtosis": kurtosis,
        }


def merge(a: Moments, b: Moments) -> Moments:
    """The state of the rows of `a` and `b` together (Chan et al. for m2, Pébay 2008 for m3, m4)."""
    if a.width != b.width:
        raise ValueError(f"cannot merge moments of {a.width} and {b.width} columns")
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    na, nb = float(a.count), float(b.count)
    n = na + nb
    delta = b.mean - a.mean
    delta2 = delta * delta
    # Products of counts are taken in ratios first so that huge counts cannot overflow.
    ab_n = na * nb / n
    mean = a.mean + delta * (nb / n)
    m2 = a.m2 + b.m2 + delta2 * ab_n
    m3 = a.m3 + b.m3 + delta2 * delta * ab_n * (na - nb) / n + 3.0 * delta * (na * b.m2 - nb * a.m2) / n
    m4 = (
        a.m4
        + b.m4
        + delta2 * delta2 * ab_n * (na * na - na * nb + nb * nb) / (n * n)
        + 6.0 * delta2 * (na * na * b.m2 + nb * nb * a.m2) / (n * n)
        + 4.0 * delta * (na * b.m3 - nb * a.m3) / n
    )
    return Moments(
        count=a.count + b.count,
        mean=mean,
        m2=m2,
        m3=m3,
        m4=m4,
        min=np.minimum(a.min, b.min),
        max=np.maximum(a.max, b.max),
        n_sparse=a.n_sparse + b.n_sparse,
    )
