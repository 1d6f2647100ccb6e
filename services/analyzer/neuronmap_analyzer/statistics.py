"""Statistics of one point of one run, in one streaming pass over its storage chunks.

Each chunk `[chunk_rows, d]` is read, upcast to float64, reduced to a `Moments` state and merged into the
running state, so memory is bounded by a chunk, not by the run. Per-neuron statistics come from the
merged state, layer statistics (every value of the point) from its exact pooling.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

from neuronmap.errors import InvalidArgument
from neuronmap.lake import PointArray
from neuronmap_analyzer.moments import Floats, Moments, merge

KIND = "statistics"


def check_threshold(threshold: float) -> float:
    """The sparsity threshold as a float >= 0; InvalidArgument for a negative or non-finite one."""
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"sparsity_threshold must be a finite number >= 0; got {threshold}")
    # -0.0 + 0.0 is 0.0: both zeros must name the same analysis.
    return value + 0.0


def analysis_id(run_id: str, point: str, threshold: float) -> str:
    """`stat_` + 20 hex digits of the sha256 of what determines the result (canonical JSON)."""
    key = {"kind": KIND, "point": point, "run_id": run_id, "threshold": check_threshold(threshold)}
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return "stat_" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True, eq=False)
class StatisticsResult:
    """Statistics of one point.

    neurons: name -> `[n_neurons]` float64, names as in `moments.STATISTICS`.
    layer: name -> float over all `n_rows * n_neurons` values.
    """

    neurons: dict[str, Floats]
    layer: dict[str, float]
    n_rows: int
    n_neurons: int
    seconds: float

    @property
    def count(self) -> int:
        """How many values the layer statistics cover."""
        return self.n_rows * self.n_neurons


def compute_statistics(array: PointArray, threshold: float = 0.0) -> StatisticsResult:
    """Per-neuron and layer statistics of `array` `[rows, d]`, reading one storage chunk at a time.

    A value counts as sparse when |x| <= threshold. Only committed rows are read (the PointArray's view).
    """
    threshold = check_threshold(threshold)
    start = time.perf_counter()
    state = Moments.empty(array.shape[1])
    for _, block in array.iter_blocks():
        state = merge(state, Moments.of(block, threshold))
    layer = {name: float(values[0]) for name, values in state.pooled().finalize().items()}
    return StatisticsResult(
        neurons=state.finalize(),
        layer=layer,
        n_rows=state.count,
        n_neurons=state.width,
        seconds=time.perf_counter() - start,
    )


def layer_to_json(layer: dict[str, float]) -> dict[str, float | None]:
    """Layer numbers for strict JSON (NaN has no JSON spelling: it becomes null)."""
    return {name: None if math.isnan(value) else value for name, value in layer.items()}


def layer_from_json(data: dict[str, float | None]) -> dict[str, float]:
    return {name: math.nan if value is None else float(value) for name, value in data.items()}
