"""The errors every part of NeuronMap raises, each tied to the gRPC status it travels as.

Core modules raise these and know nothing of gRPC; servicers turn them into statuses
(`neuronmap.grpc_errors`), and the client turns statuses back into the same classes.
"""

from __future__ import annotations


class NeuronMapError(Exception):
    """Base class. `code` is the name of a grpc.StatusCode."""

    code = "INTERNAL"


class InvalidArgument(NeuronMapError):
    code = "INVALID_ARGUMENT"


class NotFound(NeuronMapError):
    code = "NOT_FOUND"


class AlreadyExists(NeuronMapError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(NeuronMapError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(NeuronMapError):
    code = "RESOURCE_EXHAUSTED"


class Cancelled(NeuronMapError):
    code = "CANCELLED"


class Unavailable(NeuronMapError):
    code = "UNAVAILABLE"


ERRORS_BY_CODE: dict[str, type[NeuronMapError]] = {
    cls.code: cls
    for cls in (
        NeuronMapError,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Cancelled,
        Unavailable,
    )
}
