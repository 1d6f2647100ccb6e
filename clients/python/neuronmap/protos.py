"""Conversions between the contract's enums and the plain strings the core modules use."""

from __future__ import annotations

from collections.abc import Mapping

from neuronmap.errors import InvalidArgument
from neuronmap.v1 import common_pb2, extractor_pb2

REDUCTION_TO_PROTO = {
    "tokens": common_pb2.REDUCTION_TOKENS,
    "mean": common_pb2.REDUCTION_MEAN,
    "last": common_pb2.REDUCTION_LAST,
}
DTYPE_TO_PROTO = {
    "float16": common_pb2.STORAGE_DTYPE_FLOAT16,
    "bfloat16": common_pb2.STORAGE_DTYPE_BFLOAT16,
    "float32": common_pb2.STORAGE_DTYPE_FLOAT32,
}
# Accepted spellings on the command line and in the Python client.
DTYPE_ALIASES = {"fp16": "float16", "f16": "float16", "bf16": "bfloat16", "fp32": "float32", "f32": "float32"}
STATUS_TO_PROTO = {
    "pending": common_pb2.RUN_STATUS_PENDING,
    "running": common_pb2.RUN_STATUS_RUNNING,
    "complete": common_pb2.RUN_STATUS_COMPLETE,
    "failed": common_pb2.RUN_STATUS_FAILED,
    "cancelled": common_pb2.RUN_STATUS_CANCELLED,
}
JOB_STATE_TO_PROTO = {
    "queued": extractor_pb2.JOB_STATE_QUEUED,
    "loading": extractor_pb2.JOB_STATE_LOADING,
    "running": extractor_pb2.JOB_STATE_RUNNING,
    "complete": extractor_pb2.JOB_STATE_COMPLETE,
    "failed": extractor_pb2.JOB_STATE_FAILED,
    "cancelled": extractor_pb2.JOB_STATE_CANCELLED,
}


def _invert(table: Mapping[str, int]) -> dict[int, str]:
    return {v: k for k, v in table.items()}


_REDUCTION_FROM_PROTO = _invert(REDUCTION_TO_PROTO)
_DTYPE_FROM_PROTO = _invert(DTYPE_TO_PROTO)
_STATUS_FROM_PROTO = _invert(STATUS_TO_PROTO)
_JOB_STATE_FROM_PROTO = _invert(JOB_STATE_TO_PROTO)


def reduction_from_proto(value: int) -> str:
    return _REDUCTION_FROM_PROTO.get(value, "tokens")


def dtype_from_proto(value: int) -> str:
    return _DTYPE_FROM_PROTO.get(value, "float16")


def status_from_proto(value: int) -> str:
    """Run status name; "" for UNSPECIFIED."""
    return _STATUS_FROM_PROTO.get(value, "")


def job_state_from_proto(value: int) -> str:
    return _JOB_STATE_FROM_PROTO.get(value, "")


def normalize_dtype(name: str) -> str:
    name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPE_TO_PROTO:
        raise InvalidArgument(f"dtype {name!r} is not one of float16, bfloat16, float32")
    return name


def normalize_reduction(name: str) -> str:
    if name not in REDUCTION_TO_PROTO:
        raise InvalidArgument(f"reduction {name!r} is not one of tokens, mean, last")
    return name
