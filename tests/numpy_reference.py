"""Statistics computed the textbook way, the independent reference the analyzer is checked against."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def numpy_statistics(x: NDArray[np.float64], threshold: float) -> dict[str, NDArray[np.float64]]:
    """Textbook statistics per column of `x` `[rows, d]`, in float64 with numpy."""
    mean = x.mean(axis=0)
    c = x - mean
    c2 = c * c
    m2 = c2.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skewness = (c2 * c).mean(axis=0) / m2**1.5
        kurtosis = (c2 * c2).mean(axis=0) / m2**2 - 3.0
    return {
        "mean": mean,
        "std": x.std(axis=0),
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "sparsity": (np.abs(x) <= threshold).mean(axis=0),
        "skewness": skewness,
        "kurtosis": kurtosis,
    }
