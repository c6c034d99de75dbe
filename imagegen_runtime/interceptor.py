"""The one server interceptor: everything a call goes through before, around and
after its handler, in one layer.

For every call, in this order:

1. its request id (the caller's x-request-id when sane, else a uuid4), sent back in
   the trailing metadata, and its log context (imagegen_runtime.telemetry.logs);
2. with tracing on, a server span continuing the caller's trace (W3C traceparent),
   current while the call runs (health checks are not traced);
3. the bearer token (imagegen_runtime.security.TokenCheck), unless the method is
   exempt (health): a missing or wrong one is UNAUTHENTICATED before anything of the
   request is looked at;
4. the request's bytes: the request deserializers are wrapped, so bytes that do not
   decode as the request message make the call INVALID_ARGUMENT (a BadRequest naming
   the request type; no exception text) instead of gRPC's UNKNOWN;
5. the handler, whatever its shape: unary or streaming requests, and responses
   returned, yielded (async or not) or written with context.write by a coroutine
   that returns None (grpc_health's Watch does that);
6. its errors, mapped once (imagegen_runtime.error_mapping): a domain error becomes its
   status and bounded details, anything else INTERNAL with the traceback logged;
7. its final status code, as the caller got it: a call cancelled under it is
   DEADLINE_EXCEEDED when its deadline had passed, else CANCELLED;
8. one closing log line (logger imagegen.rpc; health and reflection at DEBUG) with
   bounded fields, and FinishedCall to each observer (the Prometheus metrics).

It wraps each method's handler once, the first time the method is called, and serves
that wrapped handler to every later call; it must therefore be the server's only
interceptor (start_server installs it so).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self
from urllib.parse import unquote

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from imagegen import errors
from imagegen_runtime.error_mapping import abort_with_status, status_for, to_status
from imagegen_runtime.security import TokenCheck, is_exempt
from imagegen_runtime.telemetry.calls import (
    CALL_KINDS,
    QUIET_SERVICES,
    REQUEST_ID_KEY,
    CallObserver,
    FinishedCall,
    final_code,
    id_reader,
    peer_gone,
    log,
    log_field,
    request_id_from,
)
from imagegen_runtime.telemetry.logs import bind, call_fields

_HEALTH_SERVICE = "grpc.health.v1.Health"
# Longer trace context metadata is ignored: a traceparent is 55 characters, W3C caps a
# tracestate at 32 short members; and the propagators log what they cannot parse, whole.
MAX_PROPAGATED_CHARS = 1024
# Codes that are the server's failure rather than the caller's: the span's status is ERROR.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _Malformed:
    """What a request deserializer gives for bytes that do not decode."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<malformed request>"


MALFORMED = _Malformed()


def _safe_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, or anything bad bytes make a parser raise
            return MALFORMED

    return deserialize


class CallInterceptor(grpc.aio.ServerInterceptor):
    """The module's interceptor. observers get each FinishedCall; token_check, when given,
    guards every method but health; tracer_provider, when given, traces every call but
    health checks."""

    def __init__(
        self,
        *,
        observers: Sequence[CallObserver] = (),
        token_check: TokenCheck | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.observers = tuple(observers)
        self.token_check = token_check
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer(__name__) if tracer_provider is not None else None
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._denials: dict[str, grpc.Status] = {}

    def without_token(self) -> CallInterceptor:
        """The same observers and tracing, no token (the plaintext health port's)."""
        return CallInterceptor(observers=self.observers, tracer_provider=self.tracer_provider)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            found = await continuation(handler_call_details)
            if found is None:  # UNIMPLEMENTED; not cached, since callers choose the names
                return None
            handler = self._handlers.setdefault(path, _Method(self, path, found).handler(found))
        return handler

    def denial(self, error: errors.Unauthenticated) -> grpc.Status:
        status = self._denials.get(error.reason)
        if status is None:
            status = self._denials[error.reason] = to_status(error)
        return status


def _message_types(path: str, handler: grpc.RpcMethodHandler) -> tuple[Descriptor | None, Descriptor | None]:
    """The method's request and response types, from the descriptor pool (every service
    served is in it), else from the request deserializer's class."""
    service, _, name = path.lstrip("/").rpartition("/")
    try:
        method = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
        return method.input_type, method.output_type
    except KeyError:
        owner = getattr(handler.request_deserializer, "__self__", None)
        return getattr(owner, "DESCRIPTOR", None), None


class _Method:
    """What the interceptor knows of one method, worked out once; handler() wraps its behavior."""

    def __init__(self, owner: CallInterceptor, path: str, handler: grpc.RpcMethodHandler) -> None:
        self.owner = owner
        self.service, _, self.name = path.lstrip("/").rpartition("/")
        self.path = path
        self.full = f"{self.service}/{self.name}"
        self.kind = CALL_KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))]
        self.level = logging.DEBUG if self.service in QUIET_SERVICES else logging.INFO
        self.token_check = None if is_exempt(path) else owner.token_check
        self.tracer = None if self.service == _HEALTH_SERVICE else owner.tracer
        self.observers = owner.observers
        request_type, response_type = _message_types(path, handler)
        self.request_ids = id_reader(request_type)
        self.response_ids = id_reader(response_type)
        self.request_type = request_type.full_name if request_type is not None else "the request message"
        self.malformed_status = to_status(self.malformed())

    def malformed(self) -> errors.InvalidRequest:
        return errors.InvalidRequest(
            [
                errors.FieldViolation(
                    self.request_type, f"the request's bytes do not decode as {self.request_type}"
                )
            ]
        )

    def handler(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """handler with its behavior wrapped and its request deserializer made safe, built
        anew (a handler need not be grpc's own namedtuple)."""
        deserializer = handler.request_deserializer
        kw = {
            "request_deserializer": _safe_deserializer(deserializer) if deserializer is not None else None,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary_unary(handler.unary_unary), **kw)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream, False), **kw)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._stream_unary(handler.stream_unary), **kw)
        return grpc.stream_stream_rpc_method_handler(self._streaming(handler.stream_stream, True), **kw)

    # ---- the four shapes ------------------------------------------------------------

    def _unary_unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        asynchronous = inspect.iscoroutinefunction(behavior)
        response_ids = self.response_ids

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _Call(self, context) as call:
                await call.admit(request)
                response = (
                    await behavior(request, context)
                    if asynchronous
                    else await _result(behavior(request, context))
                )
                if response_ids is not None and response is not None:
                    bind(**response_ids(response))
                return response

        return unary_unary

    def _stream_unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            async with _Call(self, context) as call:
                await call.admit(None)
                checked = _CheckedContext(context, self)
                return await _result(behavior(checked.requests(requests), checked))

        return stream_unary

    def _streaming(self, behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
        response_ids = self.response_ids

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> None:
            call = _Call(self, context)
            error: BaseException | None = None
            responses: Any = None
            try:
                if request_streaming:
                    await call.admit(None)
                    checked = _CheckedContext(context, self)
                    result = behavior(checked.requests(request), checked)
                else:
                    await call.admit(request)
                    result = behavior(request, context)
                if hasattr(result, "__aiter__"):  # an async generator
                    responses = result
                    async for response in result:
                        if response_ids is not None:
                            bind(**response_ids(response))
                        await context.write(response)
                elif inspect.isawaitable(result):  # a coroutine that writes with context.write
                    await result
                elif result is not None:  # a plain generator or iterable
                    for response in result:
                        if response_ids is not None:
                            bind(**response_ids(response))
                        await context.write(response)
            except BaseException as exc:
                error = exc
                if isinstance(exc, Exception) and peer_gone(exc, context):
                    return  # a write into a call the caller left: nothing to answer, nothing to log
                await call.map(exc)
                raise
            finally:
                try:
                    if responses is not None:
                        await _close(responses, self.full)
                finally:  # even when cancelled again meanwhile
                    call.finish(error)

        return streaming


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _close(responses: Any, method: str) -> None:
    """Finish a response generator the call left early (cancelled, or a write failed), so
    its own cleanup (a `finally` closing a stored object's reader) runs now."""
    aclose = getattr(responses, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # noqa: BLE001 - the call has ended already; say what went wrong
        log.warning("%s: closing its response stream failed", method, exc_info=True)


class _CheckedContext:
    """The context a streaming-request handler gets: the call's own, whose read() and
    request iterator turn a message that does not decode into InvalidRequest."""

    def __init__(self, context: grpc.aio.ServicerContext, method: _Method) -> None:
        self._context = context
        self._method = method

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        message = await self._context.read()
        if message is MALFORMED:
            raise self._method.malformed()
        return message

    async def requests(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for message in requests:
            if message is MALFORMED:
                raise self._method.malformed()
            yield message


class _Call:
    """One call's state, from its start to its closing line."""

    __slots__ = ("context", "metadata", "method", "reason", "span", "span_token", "started")

    def __init__(self, method: _Method, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.metadata = metadata = context.invocation_metadata() or ()
        request_id = request_id_from(metadata)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        call_fields.set({"request_id": request_id, "method": method.full})
        self.reason = ""
        self.span: trace.Span | None = None
        self.span_token: object = None
        if method.tracer is not None:
            self._start_span(method.tracer)
        self.started = time.perf_counter()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        """The end of a call with one answer: an error the handler raised answered with
        its status (map), then the closing line whatever happens."""
        try:
            if error is not None:
                await self.map(error)
        finally:
            self.finish(error)

    async def admit(self, request: Any) -> None:
        """Before the handler: the token, then the request's bytes; aborts the call
        (raising grpc.aio.AbortError) if either is wrong, else binds the request's ids."""
        method = self.method
        if method.token_check is not None:
            denied = method.token_check.check(self.metadata)
            if denied is not None:
                self.reason = denied.reason
                await abort_with_status(self.context, method.owner.denial(denied))
        if request is MALFORMED:
            self.reason = errors.InvalidRequest.reason
            await abort_with_status(self.context, method.malformed_status)
        if method.request_ids is not None and request is not None:
            bind(**method.request_ids(request))

    async def map(self, exc: BaseException) -> None:
        """Answer a call whose handler raised exc with its status (raises AbortError),
        unless exc ended the call already (an abort, a cancellation)."""
        if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
            return
        if peer_gone(exc, self.context):
            return  # nothing to answer: the caller went away
        status, self.reason = status_for(exc, self.method.full, self.context.code())
        if self.span is not None and self.reason == "INTERNAL":
            self.span.record_exception(exc)
        await abort_with_status(self.context, status)

    def finish(self, error: BaseException | None) -> None:
        method = self.method
        seconds = time.perf_counter() - self.started
        code = final_code(self.context, error)
        try:
            if log.isEnabledFor(method.level):
                fields = {**call_fields.get(), "code": code.name, "latency_ms": round(seconds * 1000, 3)}
                if self.reason:
                    fields["reason"] = self.reason
                log.log(
                    method.level, "%s %s%s in %.1f ms", method.full, code.name,
                    f" ({self.reason})" if self.reason else "", seconds * 1000, extra=fields,
                )  # fmt: skip
            if method.observers:
                finished = FinishedCall(method.service, method.name, method.kind, code, seconds)
                for observer in method.observers:
                    observer.call_finished(finished)
        finally:
            if self.span is not None:
                self._end_span(code)

    # ---- tracing ----------------------------------------------------------------------

    def _start_span(self, tracer: trace.Tracer) -> None:
        fields = propagate.get_global_textmap().fields  # traceparent, tracestate, baggage
        carrier = {
            key: value
            for key, value in self.metadata
            if key in fields and isinstance(value, str) and len(value) <= MAX_PROPAGATED_CHARS
        }
        parent = propagate.extract(carrier)
        method = self.method
        attributes: dict[str, Any] = {
            "rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.name,
            "rpc.grpc.status_code": grpc.StatusCode.OK.value[0],
        }  # fmt: skip
        for key, value in self.metadata:
            if key == "user-agent" and isinstance(value, str):
                attributes["rpc.user_agent"] = log_field(value)
                break
        attributes.update(_peer_attributes(self.context))
        self.span = tracer.start_span(
            method.path, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self.span_token = otel_context.attach(trace.set_span_in_context(self.span, parent))

    def _end_span(self, code: grpc.StatusCode) -> None:
        span = self.span
        assert span is not None
        try:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
        finally:
            otel_context.detach(self.span_token)  # type: ignore[arg-type]


def _peer_attributes(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """net.peer.ip and net.peer.port from "ipv4:10.2.1.1:57284" or "ipv6:[::1]:57284"."""
    peer = context.peer() or ""
    _, _, address = peer.split(",")[0].partition(":")
    host, _, port = address.rpartition(":")
    if not host or peer.startswith("unix:"):
        return {}
    host = unquote(host)
    attributes = {"net.peer.ip": host, "net.peer.port": port}
    if host in ("[::1]", "127.0.0.1"):
        attributes["net.peer.name"] = "localhost"
    return attributes
