"""Domain errors -> gRPC status with google.rpc details, in one place.

ErrorMappingInterceptor wraps every handler of a server: an ImagegenError
becomes its status code with ErrorInfo (always), BadRequest (invalid
requests), RetryInfo (when a retry delay is known) and the plan (when the
error carries one). Anything else becomes INTERNAL with a generic message and
the traceback in the log; the exception text never reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagegen import errors

log = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of wins.
_CODES: tuple[tuple[type[errors.ImagegenError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PlannerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PlannerThrottled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PlannerMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ProviderUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ProviderThrottled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ProviderMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ContentRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.StorageMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ImagegenError, grpc.StatusCode.INTERNAL),
)


# gRPC's retry pushback (gRFC A6): a negative value tells the client's retry policy not to retry.
NO_TRANSPARENT_RETRY = ("grpc-retry-pushback-ms", "-1")


def status_code_for(error: errors.ImagegenError) -> grpc.StatusCode:
    return next(code for cls, code in _CODES if isinstance(error, cls))


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.ImagegenError) -> grpc.Status:
    code = status_code_for(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=errors.ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, errors.InvalidRequest):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if error.plan is not None:
        details.append(_pack(error.plan))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=details))
    # The service answered for itself (and has already retried its LLM, provider or
    # store): the clients' channel retry policy, meant for UNAVAILABLE from the
    # transport (a pod going away), must not replay the call. The caller decides,
    # from the code, the reason and RetryInfo.
    return status._replace(trailing_metadata=(*status.trailing_metadata, NO_TRANSPARENT_RETRY))


_INTERNAL = rpc_status.to_status(
    status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error",
        details=[
            _pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=errors.ERROR_DOMAIN))
        ],
    )
)


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, errors.ImagegenError):
        log.info("%s failed: %s (%s)", method, exc.reason, status_code_for(exc).name)
        await abort_with_status(context, to_status(exc))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await abort_with_status(context, _INTERNAL)


async def abort_with_status(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """context.abort_with_status, keeping trailing metadata set earlier in the call."""
    # abort() replaces the trailing metadata: keep what an outer interceptor set
    # (the x-request-id) beside the status details.
    trailing = (*(context.trailing_metadata() or ()), *status.trailing_metadata)
    await context.abort(status.code, status.details, trailing)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            await _abort_for(exc, context, method)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort_for(exc, context, method)

    return handler


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # Wrapped once per method, not per call: handlers never change after start.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrap(await continuation(handler_call_details), method)
            if wrapped is not None:  # unknown methods are not cached: callers choose their names
                self._wrapped[method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(handler: Any, method: str) -> Any:
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_wrap_stream(handler.unary_stream, method))
        return handler
