import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_PENDING: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_COMPLETE: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELLED: _ClassVar[RunStatus]

class Reduction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REDUCTION_UNSPECIFIED: _ClassVar[Reduction]
    REDUCTION_TOKENS: _ClassVar[Reduction]
    REDUCTION_MEAN: _ClassVar[Reduction]
    REDUCTION_LAST: _ClassVar[Reduction]

class StorageDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_DTYPE_UNSPECIFIED: _ClassVar[StorageDtype]
    STORAGE_DTYPE_FLOAT16: _ClassVar[StorageDtype]
    STORAGE_DTYPE_BFLOAT16: _ClassVar[StorageDtype]
    STORAGE_DTYPE_FLOAT32: _ClassVar[StorageDtype]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_PENDING: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_COMPLETE: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELLED: RunStatus
REDUCTION_UNSPECIFIED: Reduction
REDUCTION_TOKENS: Reduction
REDUCTION_MEAN: Reduction
REDUCTION_LAST: Reduction
STORAGE_DTYPE_UNSPECIFIED: StorageDtype
STORAGE_DTYPE_FLOAT16: StorageDtype
STORAGE_DTYPE_BFLOAT16: StorageDtype
STORAGE_DTYPE_FLOAT32: StorageDtype

class PointShape(_message.Message):
    __slots__ = ("point", "shape", "module_path", "kind")
    POINT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    MODULE_PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    point: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    module_path: str
    kind: str
    def __init__(self, point: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., module_path: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "model", "model_id", "status", "points", "reduction", "dtype", "n_prompts", "n_tokens", "committed_prompts", "uri", "created_at", "updated_at", "error", "spec_json", "truncated_prompts", "max_length")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    N_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    N_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model: str
    model_id: str
    status: RunStatus
    points: _containers.RepeatedCompositeFieldContainer[PointShape]
    reduction: Reduction
    dtype: StorageDtype
    n_prompts: int
    n_tokens: int
    committed_prompts: int
    uri: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error: str
    spec_json: str
    truncated_prompts: int
    max_length: int
    def __init__(self, run_id: _Optional[str] = ..., model: _Optional[str] = ..., model_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., points: _Optional[_Iterable[_Union[PointShape, _Mapping]]] = ..., reduction: _Optional[_Union[Reduction, str]] = ..., dtype: _Optional[_Union[StorageDtype, str]] = ..., n_prompts: _Optional[int] = ..., n_tokens: _Optional[int] = ..., committed_prompts: _Optional[int] = ..., uri: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., spec_json: _Optional[str] = ..., truncated_prompts: _Optional[int] = ..., max_length: _Optional[int] = ...) -> None: ...

class Analysis(_message.Message):
    __slots__ = ("analysis_id", "run_id", "point", "kind", "params_json", "uri", "created_at", "summary_json")
    ANALYSIS_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    analysis_id: str
    run_id: str
    point: str
    kind: str
    params_json: str
    uri: str
    created_at: _timestamp_pb2.Timestamp
    summary_json: str
    def __init__(self, analysis_id: _Optional[str] = ..., run_id: _Optional[str] = ..., point: _Optional[str] = ..., kind: _Optional[str] = ..., params_json: _Optional[str] = ..., uri: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., summary_json: _Optional[str] = ...) -> None: ...
