"""The one server interceptor (imagegen_runtime.interceptor) on real servers: every
handler shape (responses returned, yielded, or written with context.write), every
failure before the handler (no token, bytes that do not decode), health's Watch on
both services' ports with tokens, metrics and tracing on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from imagegen import errors
from imagegen_runtime.interceptor import CallInterceptor
from imagegen_runtime.security import TokenCheck
from imagegen_runtime.serving import RunningServer, ServiceBinding, start_server
from imagegen_runtime.telemetry.metrics import RpcMetrics, new_registry
from tests.integration.test_metrics import scrape, value
from tests.support.calls import AUTHORIZED, TOKEN, ClosingLines, codes, in_memory_tracing, running_service

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ---- a service with every handler shape ------------------------------------------------------

SHAPES = "test.Shapes"
Text = wrappers_pb2.StringValue


def _outcome(text: str) -> None:
    """What a request's text asks the handler to do besides answering."""
    if "reject" in text.split():
        raise errors.ContentRejected("refused", plan=None)
    if "boom" in text.split():
        raise ValueError("secret internal detail")


async def unary(request: Text, context: grpc.aio.ServicerContext) -> Text:
    _outcome(request.value)
    return Text(value=request.value.upper())


async def server_yields(request: Text, context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
    for part in request.value.split():
        _outcome(part)
        yield Text(value=part)


async def server_writes(request: Text, context: grpc.aio.ServicerContext) -> None:
    for part in request.value.split():  # the reader/writer API: writes, returns None (as health's Watch)
        _outcome(part)
        await context.write(Text(value=part))


def server_sync_generator(request: Text, context: grpc.aio.ServicerContext) -> Iterator[Text]:
    for part in request.value.split():
        _outcome(part)
        yield Text(value=part)


async def client_iterates(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> Text:
    parts = []
    async for request in requests:
        _outcome(request.value)
        parts.append(request.value)
    return Text(value=" ".join(parts))


async def client_reads(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> Text:
    parts = []
    while (request := await context.read()) is not grpc.aio.EOF:  # the reader API
        _outcome(request.value)
        parts.append(request.value)
    return Text(value=" ".join(parts))


async def bidi_yields(
    requests: AsyncIterator[Text], context: grpc.aio.ServicerContext
) -> AsyncIterator[Text]:
    async for request in requests:
        _outcome(request.value)
        yield Text(value=request.value.upper())


async def bidi_writes(requests: AsyncIterator[Text], context: grpc.aio.ServicerContext) -> None:
    while (request := await context.read()) is not grpc.aio.EOF:
        _outcome(request.value)
        await context.write(Text(value=request.value.upper()))


@dataclass(frozen=True)
class Shape:
    name: str
    kind: str  # the grpc_type label
    make: Callable[..., grpc.RpcMethodHandler]
    behavior: Callable[..., Any]


def _handler(
    make: Callable[..., grpc.RpcMethodHandler], behavior: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    return make(behavior, request_deserializer=Text.FromString, response_serializer=Text.SerializeToString)


SHAPE_LIST = [
    Shape("Unary", "unary", grpc.unary_unary_rpc_method_handler, unary),
    Shape("ServerYields", "server_stream", grpc.unary_stream_rpc_method_handler, server_yields),
    Shape("ServerWrites", "server_stream", grpc.unary_stream_rpc_method_handler, server_writes),
    Shape(
        "ServerSyncGenerator", "server_stream", grpc.unary_stream_rpc_method_handler, server_sync_generator
    ),
    Shape("ClientIterates", "client_stream", grpc.stream_unary_rpc_method_handler, client_iterates),
    Shape("ClientReads", "client_stream", grpc.stream_unary_rpc_method_handler, client_reads),
    Shape("BidiYields", "bidi_stream", grpc.stream_stream_rpc_method_handler, bidi_yields),
    Shape("BidiWrites", "bidi_stream", grpc.stream_stream_rpc_method_handler, bidi_writes),
]


def _register(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {shape.name: _handler(shape.make, shape.behavior) for shape in SHAPE_LIST}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SHAPES, handlers),))


@dataclass
class ShapesServer:
    running: RunningServer
    metrics: RpcMetrics
    registry: Any
    spans: InMemorySpanExporter

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def handled(self, shape: Shape, code: str) -> float:
        labels = {
            "grpc_service": SHAPES,
            "grpc_method": shape.name,
            "grpc_type": shape.kind,
            "grpc_code": code,
        }
        return self.registry.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.fixture
async def shapes() -> AsyncIterator[ShapesServer]:
    """The shapes served with a token, metrics and tracing."""
    registry = new_registry()
    metrics = RpcMetrics(registry)
    with in_memory_tracing() as (provider, exporter):
        running = await start_server(
            "127.0.0.1:0",
            [ServiceBinding(SHAPES, None, _register)],
            enable_reflection=False,
            interceptor=CallInterceptor(
                observers=[metrics], token_check=TokenCheck(TOKEN), tracer_provider=provider
            ),
        )
        yield ShapesServer(running, metrics, registry, exporter)
        await running.stop(None)


async def call_shape(
    channel: grpc.aio.Channel,
    shape: Shape,
    texts: list[str],
    metadata: tuple = AUTHORIZED,
    raw: bool = False,
    refused: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """Call shape with texts (each a message of a streaming request; else joined into one);
    its answers' texts and the trailing metadata. raw: texts are bytes sent as they are.
    refused: the server ends the call before the request ends, so a streaming request is
    never closed (a message or close sent as the status arrives can make grpc.aio's client
    report INTERNAL instead of it)."""
    serialize = (lambda b: b) if raw else Text.SerializeToString
    method = f"/{SHAPES}/{shape.name}"
    requests = [t if raw else Text(value=t) for t in texts]
    single = requests[0] if raw else Text(value=" ".join(texts))
    stream: Any = held_open(requests) if refused else iter(requests)
    kw: dict[str, Any] = {"request_serializer": serialize, "response_deserializer": Text.FromString}
    if shape.kind == "unary":
        call = channel.unary_unary(method, **kw)(single, metadata=metadata)
        answers = [await call]
    elif shape.kind == "server_stream":
        call = channel.unary_stream(method, **kw)(single, metadata=metadata)
        answers = [a async for a in call]
    elif shape.kind == "client_stream":
        call = channel.stream_unary(method, **kw)(stream, metadata=metadata)
        answers = [await call]
    else:
        call = channel.stream_stream(method, **kw)(stream, metadata=metadata)
        answers = [a async for a in call]
    return [a.value for a in answers], dict(await call.trailing_metadata() or ())


async def held_open(requests: list[Any]) -> AsyncIterator[Any]:
    """requests, then nothing more and no end: the call ends when the server ends it."""
    for request in requests:
        yield request
    await asyncio.Event().wait()


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_every_shape_is_served_with_a_request_id_a_log_line_and_a_count(
    shapes: ShapesServer, shape: Shape, lines: ClosingLines
) -> None:
    async with grpc.aio.insecure_channel(shapes.target) as channel:
        answers, trailing = await call_shape(
            channel, shape, ["a", "b"], (*AUTHORIZED, ("x-request-id", "shape-1"))
        )
    assert answers in (["A B"], ["a", "b"], ["A", "B"], ["a b"])
    assert trailing["x-request-id"] == "shape-1"
    await lines.wait_for(lambda records: bool(lines.of(f"{SHAPES}/{shape.name}")))
    (line,) = lines.of(f"{SHAPES}/{shape.name}")
    assert (line.code, line.request_id, line.levelno) == ("OK", "shape-1", logging.INFO)  # type: ignore[attr-defined]
    assert shapes.handled(shape, "OK") == 1
    (span,) = shapes.spans.get_finished_spans()  # traced, whatever the shape
    assert (span.name, span.kind, (span.attributes or {})["rpc.grpc.status_code"]) == (
        f"/{SHAPES}/{shape.name}", SpanKind.SERVER, 0,
    )  # fmt: skip


def _status_of(
    error: grpc.aio.AioRpcError,
) -> tuple[grpc.StatusCode, str, list[error_details_pb2.BadRequest]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    infos, bad = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad.append(error_details_pb2.BadRequest())
            detail.Unpack(bad[-1])
    (info,) = infos
    return error.code(), info.reason, bad


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_every_shape_refuses_a_missing_or_wrong_token_before_its_handler(
    shapes: ShapesServer, shape: Shape, lines: ClosingLines
) -> None:
    async with grpc.aio.insecure_channel(shapes.target) as channel:
        for metadata, reason in (
            ((), "MISSING_CREDENTIALS"),
            ((("authorization", "Bearer nope"),), "INVALID_CREDENTIALS"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call_shape(
                    channel, shape, ["boom"], metadata, refused=True
                )  # "boom": INTERNAL, had it run
            assert _status_of(refused.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert shapes.handled(shape, "UNAUTHENTICATED") == 2
    await lines.wait_for(lambda records: len(lines.of(f"{SHAPES}/{shape.name}")) == 2)
    assert [line.reason for line in lines.of(f"{SHAPES}/{shape.name}")] == [  # type: ignore[attr-defined]
        "MISSING_CREDENTIALS", "INVALID_CREDENTIALS",
    ]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_every_shape_maps_domain_errors_and_hides_unexpected_ones(
    shapes: ShapesServer, shape: Shape, lines: ClosingLines
) -> None:
    async with grpc.aio.insecure_channel(shapes.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await call_shape(channel, shape, ["fine", "reject"], refused=True)
        with pytest.raises(grpc.aio.AioRpcError) as crashed:
            await call_shape(channel, shape, ["fine", "boom"], refused=True)
    assert _status_of(rejected.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_REJECTED")
    assert _status_of(crashed.value)[:2] == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert crashed.value.details() == "internal error" and "secret" not in str(
        crashed.value.debug_error_string()
    )
    assert (shapes.handled(shape, "FAILED_PRECONDITION"), shapes.handled(shape, "INTERNAL")) == (1, 1)


# Bytes that are no StringValue (nor any message): a truncated varint, a length past the
# end, field number 0, a group never closed, a string that is not UTF-8.
MALFORMED = [b"\xff", b"\x0a\x05ab", b"\x00", b"\x0b", b"\x0a\x02\xc3\x28"]


@pytest.mark.parametrize("shape", SHAPE_LIST, ids=lambda s: s.name)
async def test_every_shape_answers_bytes_that_do_not_decode_with_invalid_argument(
    shapes: ShapesServer, shape: Shape, lines: ClosingLines
) -> None:
    async with grpc.aio.insecure_channel(shapes.target) as channel:
        for garbage in MALFORMED:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call_shape(channel, shape, [garbage], raw=True, refused=True)  # type: ignore[list-item]
            code, reason, (bad,) = _status_of(refused.value)
            assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
            (violation,) = bad.field_violations
            assert violation.field == "google.protobuf.StringValue"
            assert "Error" not in refused.value.details() and "parsing" not in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:  # the token is checked first
            await call_shape(channel, shape, [MALFORMED[0]], metadata=(), raw=True, refused=True)  # type: ignore[list-item]
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert shapes.handled(shape, "INVALID_ARGUMENT") == len(MALFORMED)
    await lines.wait_for(lambda records: len(lines.of(f"{SHAPES}/{shape.name}")) == len(MALFORMED) + 1)
    assert codes(lines.of(f"{SHAPES}/{shape.name}")) == ["INVALID_ARGUMENT"] * len(MALFORMED) + [
        "UNAUTHENTICATED"
    ]


# ---- health's Watch on both services, every port ---------------------------------------------


@pytest.mark.parametrize("token", ["", TOKEN], ids=["no token", "token"])
@pytest.mark.parametrize("kind", ["planner", "executor"])
async def test_health_watch_streams_serving_then_not_serving_on_drain_on_every_port(
    kind: str, token: str, tracing: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path,
    lines: ClosingLines,
) -> None:  # fmt: skip
    provider, exporter = tracing
    async with running_service(kind, token, provider, tmp_path) as running:
        name = running.service_names[0]
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in (running.port, running.health_port)
        ]
        try:
            watches = [
                health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service_name))
                for channel in channels
                for service_name in ("", name)
            ]
            assert [(await watch.read()).status for watch in watches] == [SERVING] * 4  # no token needed
            for channel in channels:  # List, health's newest method, on both ports too
                listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
                assert {"", name} <= set(listed.statuses)
                assert {listed.statuses[key].status for key in ("", name)} == {SERVING}
            await running.health.enter_graceful_shutdown()  # the drain's first step
            assert [(await watch.read()).status for watch in watches] == [NOT_SERVING] * 4
            for watch in watches:
                watch.cancel()
        finally:
            for channel in channels:
                await channel.close()
        await lines.wait_for(lambda records: len(lines.of("grpc.health.v1.Health/Watch")) == 4)
        samples = await scrape(running)
    lines = lines.of("grpc.health.v1.Health/Watch")
    assert codes(lines) == ["CANCELLED"] * 4 and {line.levelno for line in lines} == {logging.DEBUG}
    labels = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Watch", "grpc_type": "server_stream"}
    assert value(samples, "grpc_server_handled_total", grpc_code="CANCELLED", **labels) == 4
    assert value(samples, "grpc_server_handled_total", grpc_code="INTERNAL", **labels) == 0
    assert not [
        span for span in exporter.get_finished_spans() if "Health" in span.name
    ]  # health is not traced
