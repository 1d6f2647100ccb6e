"""Carrying NeuronMapError across gRPC: servicer side (error -> status) and client side (status -> error)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from neuronmap.errors import ERRORS_BY_CODE, NeuronMapError, Unavailable

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, NeuronMapError):
        context.abort(getattr(grpc.StatusCode, error.code), str(error))
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def unary(method: F) -> F:
    """Servicer decorator for unary methods: NeuronMapError -> its status; anything else -> INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as error:
            if _already_aborted(context):
                raise
            _abort(context, error, method.__qualname__)

    return wrapper  # type: ignore[return-value]


def streaming(method: F) -> F:
    """Servicer decorator for server-streaming methods (the same mapping, raised mid-stream)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as error:
            if _already_aborted(context):
                raise
            _abort(context, error, method.__qualname__)

    return wrapper  # type: ignore[return-value]


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() sets the code, then raises a bare Exception: let that one through untouched.
    return context.code() is not None


def from_rpc_error(error: grpc.RpcError) -> NeuronMapError:
    """The NeuronMapError a failed call stands for (UNAVAILABLE says where the server was expected)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = ERRORS_BY_CODE.get(code.name, NeuronMapError)
    if cls is Unavailable:
        return Unavailable(f"server unavailable: {details}")
    err = cls(details)
    err.code = code.name
    return err
