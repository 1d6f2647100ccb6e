from neuronmap.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_LOADING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_COMPLETE: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_LOADING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_COMPLETE: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class ListModelsRequest(_message.Message):
    __slots__ = ("test_availability",)
    TEST_AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    test_availability: bool
    def __init__(self, test_availability: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("key", "hf_id", "family", "n_blocks", "d_model", "kind", "source", "available", "availability_note", "default_batch_size", "max_length", "note")
    KEY_FIELD_NUMBER: _ClassVar[int]
    HF_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    N_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    D_MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_NOTE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    key: str
    hf_id: str
    family: str
    n_blocks: int
    d_model: int
    kind: str
    source: str
    available: bool
    availability_note: str
    default_batch_size: int
    max_length: int
    note: str
    def __init__(self, key: _Optional[str] = ..., hf_id: _Optional[str] = ..., family: _Optional[str] = ..., n_blocks: _Optional[int] = ..., d_model: _Optional[int] = ..., kind: _Optional[str] = ..., source: _Optional[str] = ..., available: _Optional[bool] = ..., availability_note: _Optional[str] = ..., default_batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "loaded")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    loaded: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., loaded: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ...) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("model", "model_id", "bytes", "device")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_id: str
    bytes: int
    device: str
    def __init__(self, model: _Optional[str] = ..., model_id: _Optional[str] = ..., bytes: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("model", "include_modules")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MODULES_FIELD_NUMBER: _ClassVar[int]
    model: str
    include_modules: bool
    def __init__(self, model: _Optional[str] = ..., include_modules: _Optional[bool] = ...) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("info", "points", "modules", "source")
    INFO_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    info: ModelInfo
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.PointShape]
    modules: _containers.RepeatedCompositeFieldContainer[_common_pb2.PointShape]
    source: str
    def __init__(self, info: _Optional[_Union[ModelInfo, _Mapping]] = ..., points: _Optional[_Iterable[_Union[_common_pb2.PointShape, _Mapping]]] = ..., modules: _Optional[_Iterable[_Union[_common_pb2.PointShape, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class ExtractRequest(_message.Message):
    __slots__ = ("model", "prompts", "points", "reduction", "dtype", "batch_size", "max_length", "dry_run", "decoder_targets")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DECODER_TARGETS_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    points: _containers.RepeatedScalarFieldContainer[str]
    reduction: _common_pb2.Reduction
    dtype: _common_pb2.StorageDtype
    batch_size: int
    max_length: int
    dry_run: bool
    decoder_targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., points: _Optional[_Iterable[str]] = ..., reduction: _Optional[_Union[_common_pb2.Reduction, str]] = ..., dtype: _Optional[_Union[_common_pb2.StorageDtype, str]] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., dry_run: _Optional[bool] = ..., decoder_targets: _Optional[_Iterable[str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("batches_done", "batches_total", "prompts_done", "prompts_total", "tokens_done", "tokens_total", "tokens_per_second", "eta_seconds", "elapsed_seconds")
    BATCHES_DONE_FIELD_NUMBER: _ClassVar[int]
    BATCHES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_DONE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_DONE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    batches_done: int
    batches_total: int
    prompts_done: int
    prompts_total: int
    tokens_done: int
    tokens_total: int
    tokens_per_second: float
    eta_seconds: float
    elapsed_seconds: float
    def __init__(self, batches_done: _Optional[int] = ..., batches_total: _Optional[int] = ..., prompts_done: _Optional[int] = ..., prompts_total: _Optional[int] = ..., tokens_done: _Optional[int] = ..., tokens_total: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class DryRunReport(_message.Message):
    __slots__ = ("prompts", "tokens", "bytes_to_write", "estimated_seconds", "truncated_prompts", "estimate_basis", "already_in_lake")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_WRITE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_BASIS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_IN_LAKE_FIELD_NUMBER: _ClassVar[int]
    prompts: int
    tokens: int
    bytes_to_write: int
    estimated_seconds: float
    truncated_prompts: int
    estimate_basis: str
    already_in_lake: bool
    def __init__(self, prompts: _Optional[int] = ..., tokens: _Optional[int] = ..., bytes_to_write: _Optional[int] = ..., estimated_seconds: _Optional[float] = ..., truncated_prompts: _Optional[int] = ..., estimate_basis: _Optional[str] = ..., already_in_lake: _Optional[bool] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "run_id", "state", "progress", "points", "message", "warnings", "cached", "uri", "error_code", "dry_run", "resumed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    run_id: str
    state: JobState
    progress: Progress
    points: _containers.RepeatedCompositeFieldContainer[_common_pb2.PointShape]
    message: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    cached: bool
    uri: str
    error_code: str
    dry_run: DryRunReport
    resumed: bool
    def __init__(self, job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., points: _Optional[_Iterable[_Union[_common_pb2.PointShape, _Mapping]]] = ..., message: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., cached: _Optional[bool] = ..., uri: _Optional[str] = ..., error_code: _Optional[str] = ..., dry_run: _Optional[_Union[DryRunReport, _Mapping]] = ..., resumed: _Optional[bool] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...
