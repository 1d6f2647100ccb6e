from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatisticsRequest(_message.Message):
    __slots__ = ("run_id", "point", "sparsity_threshold", "recompute")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    point: str
    sparsity_threshold: float
    recompute: bool
    def __init__(self, run_id: _Optional[str] = ..., point: _Optional[str] = ..., sparsity_threshold: _Optional[float] = ..., recompute: _Optional[bool] = ...) -> None: ...

class NeuronStatistics(_message.Message):
    __slots__ = ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    SKEWNESS_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    sparsity: _containers.RepeatedScalarFieldContainer[float]
    skewness: _containers.RepeatedScalarFieldContainer[float]
    kurtosis: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., sparsity: _Optional[_Iterable[float]] = ..., skewness: _Optional[_Iterable[float]] = ..., kurtosis: _Optional[_Iterable[float]] = ...) -> None: ...

class LayerStatistics(_message.Message):
    __slots__ = ("mean", "std", "min", "max", "sparsity", "skewness", "kurtosis", "count")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    SKEWNESS_FIELD_NUMBER: _ClassVar[int]
    KURTOSIS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    min: float
    max: float
    sparsity: float
    skewness: float
    kurtosis: float
    count: int
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., sparsity: _Optional[float] = ..., skewness: _Optional[float] = ..., kurtosis: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class StatisticsResponse(_message.Message):
    __slots__ = ("analysis_id", "run_id", "point", "n_rows", "n_neurons", "layer", "neurons", "cached", "uri", "seconds")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    N_NEURONS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NEURONS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    run_id: str
    point: str
    n_rows: int
    n_neurons: int
    layer: LayerStatistics
    neurons: NeuronStatistics
    cached: bool
    uri: str
    seconds: float
    def __init__(self, analysis_id: _Optional[str] = ..., run_id: _Optional[str] = ..., point: _Optional[str] = ..., n_rows: _Optional[int] = ..., n_neurons: _Optional[int] = ..., layer: _Optional[_Union[LayerStatistics, _Mapping]] = ..., neurons: _Optional[_Union[NeuronStatistics, _Mapping]] = ..., cached: _Optional[bool] = ..., uri: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...
