"""The server interceptor that sees every call from outside: request id in and
out, the call's log context, one log line per call, and its final status for
the metrics.

It runs outside the error mapping (start_server's interceptors), so the code
it sees is the one the caller gets. It wraps every call afresh rather than
caching per method, so interceptors inside it still run per call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from imagegen_runtime.telemetry.logs import bind, call_fields

log = logging.getLogger("imagegen.rpc")

REQUEST_ID_KEY = "x-request-id"
# What a caller's id may look like: anything else is replaced, so a log line
# cannot be forged or bloated through metadata.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Probes call these every few seconds: their lines are DEBUG, not INFO.
_QUIET_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


@dataclass(frozen=True)
class FinishedCall:
    service: str  # "imagegen.v1.ExecutorService"
    method: str  # "ExecutePlan"
    streaming: bool  # server streaming
    code: grpc.StatusCode
    seconds: float


class CallObserver(Protocol):
    def call_finished(self, call: FinishedCall) -> None: ...


def request_id_from(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The caller's x-request-id when it is a sane token, else a new uuid4."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return str(uuid.uuid4())


def message_ids(message: Any) -> dict[str, str]:
    """session_id and plan_id from a request or response, wherever the contract puts them
    (on the message, on its plan, on its result's plan)."""
    found: dict[str, str] = {}
    result = getattr(message, "result", None)
    for holder in (message, getattr(message, "plan", None), getattr(result, "plan", None)):
        for name in ("session_id", "plan_id"):
            value = getattr(holder, name, None)
            if isinstance(value, str) and value:
                found[name] = value
    return found


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self._observers = tuple(observers)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full = handler_call_details.method
        service, _, method = full.lstrip("/").rpartition("/")
        start = _Call(self, service, method, handler_call_details.invocation_metadata)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=start.unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=start.stream(handler.unary_stream))
        return handler  # no client-streaming methods are served

    def finished(self, call: FinishedCall, fields: dict[str, Any]) -> None:
        level = logging.DEBUG if call.service in _QUIET_SERVICES else logging.INFO
        log.log(
            level,
            "%s/%s %s in %.1f ms", call.service, call.method, call.code.name, call.seconds * 1000,
            extra={**fields, "code": call.code.name, "latency_ms": round(call.seconds * 1000, 3)},
        )
        for observer in self._observers:
            observer.call_finished(call)


class _Call:
    def __init__(
        self, interceptor: ObservingInterceptor, service: str, method: str, metadata: Sequence[tuple[str, Any]] | None
    ) -> None:
        self._interceptor = interceptor
        self._service = service
        self._method = method
        self._metadata = metadata

    def _enter(self, request: Any, context: grpc.aio.ServicerContext) -> float:
        request_id = request_id_from(self._metadata)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        call_fields.set({"request_id": request_id, "method": f"{self._service}/{self._method}"})
        bind(**message_ids(request))
        return time.perf_counter()

    def _exit(self, started: float, context: grpc.aio.ServicerContext, error: BaseException | None, streaming: bool) -> None:
        call = FinishedCall(
            self._service, self._method, streaming, _final_code(context, error), time.perf_counter() - started
        )
        self._interceptor.finished(call, call_fields.get())

    def unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._enter(request, context)
            error: BaseException | None = None
            try:
                response = await behavior(request, context)
                bind(**message_ids(response))
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._exit(started, context, error, streaming=False)

        return handler

    def stream(self, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._enter(request, context)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    bind(**message_ids(response))
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._exit(started, context, error, streaming=True)

        return handler


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if code is not None:
        return code  # set by abort (the error mapping) or set_code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what grpc sends for an exception nothing mapped
