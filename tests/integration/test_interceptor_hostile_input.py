"""Hostile input at both real services, before any handler code: bytes that are no
request at all, a megabyte where an id should be, oversized metadata. Each gets its
status, is counted and logged like any call, and no log line grows with the input."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clients import AsyncExecutorClient, AsyncPlannerClient, ChannelOptions, ExecutionFailed, PlanningFailed
from imagegen.v1 import executor_service_pb2, planner_service_pb2
from imagegen_runtime.serving import RunningServer
from tests.integration.test_interceptor import MALFORMED, held_open
from tests.integration.test_metrics import scrape, value
from tests.support.calls import AUTHORIZED, TOKEN, ClosingLines, codes, running_service
from tests.support.logs import captured_logs
from tests.support.plans import make_plan

pytestmark = pytest.mark.integration

MAX_LINE = 2048  # "a few KB" at most, whatever the input
MEGABYTE = 1024 * 1024
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION_V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
SERVICES = {
    "planner": planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"],
    "executor": executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"],
}


@pytest.fixture
async def planner(
    tracing: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> AsyncIterator[RunningServer]:
    async with running_service("planner", TOKEN, tracing[0], tmp_path) as running:
        yield running


def methods_of(kind: str) -> list[tuple[str, MethodDescriptor]]:
    """(path, method) of every RPC the service's main port serves."""
    found = []
    for described in (SERVICES[kind], HEALTH, REFLECTION_V1ALPHA):
        for method in described.methods:
            found.append((f"/{described.full_name}/{method.name}", method))
            if described is REFLECTION_V1ALPHA:  # the same, in v1
                found.append((f"/grpc.reflection.v1.ServerReflection/{method.name}", method))
    return found


def malformed_for(method: MethodDescriptor) -> list[bytes]:
    """Bytes that are not method's request: all of MALFORMED but a string that is not
    UTF-8, which is only wrong where field 1 is a string (elsewhere it is an unknown field)."""
    first = method.input_type.fields_by_number.get(1)
    return MALFORMED if first is not None and first.type == FieldDescriptor.TYPE_STRING else MALFORMED[:-1]


async def send_raw(
    channel: grpc.aio.Channel, path: str, method: MethodDescriptor, data: bytes, metadata: Any
) -> None:
    """Send data as the request's bytes, whatever the method's shape; raises its error."""
    identity: dict[str, Any] = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    if method.client_streaming:
        call = channel.stream_stream(path, **identity)(held_open([data]), metadata=metadata)
        [answer async for answer in call]
    elif method.server_streaming:
        call = channel.unary_stream(path, **identity)(data, metadata=metadata)
        [answer async for answer in call]
    else:
        await channel.unary_unary(path, **identity)(data, metadata=metadata)


@pytest.mark.parametrize("kind", ["planner", "executor"])
async def test_bytes_that_do_not_decode_are_invalid_argument_on_every_rpc_counted_and_logged(
    kind: str, tracing: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path, lines: ClosingLines
) -> None:
    methods = methods_of(kind)
    async with running_service(kind, TOKEN, tracing[0], tmp_path) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for path, method in methods:
                for garbage in malformed_for(method):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await send_raw(channel, path, method, garbage, AUTHORIZED)
                    error = refused.value
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, garbage, error)
                    status = rpc_status.from_call(error)  # type: ignore[arg-type]
                    bad = error_details_pb2.BadRequest()
                    (packed,) = [d for d in status.details if d.Is(bad.DESCRIPTOR)]  # type: ignore[union-attr]
                    packed.Unpack(bad)
                    package = path.strip("/").rpartition(".")[0]  # v1's requests are named for v1
                    expected = f"{package}.{method.input_type.name}"
                    assert [v.field for v in bad.field_violations] == [expected]
                    assert "parsing" not in error.details() and "Decode" not in error.details()
        total = sum(len(malformed_for(method)) for _, method in methods)
        await lines.wait_for(lambda records: len(records) >= total)
        samples = await scrape(running)
    for path, method in methods:
        service_name, _, name = path.strip("/").rpartition("/")
        kind_label = {(False, False): "unary", (False, True): "server_stream", (True, True): "bidi_stream"}[
            (method.client_streaming, method.server_streaming)
        ]
        labels = {"grpc_service": service_name, "grpc_method": name, "grpc_type": kind_label}
        sent = len(malformed_for(method))
        assert value(samples, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **labels) == sent
        assert codes(lines.of(f"{service_name}/{name}")) == ["INVALID_ARGUMENT"] * sent


async def test_bytes_that_do_not_decode_on_the_plaintext_health_port(planner: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{planner.health_port}") as channel:
        for method in HEALTH.methods:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await send_raw(channel, f"/{HEALTH.full_name}/{method.name}", method, MALFORMED[0], ())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def assert_bounded(lines: list[str], *secrets: str) -> list[dict[str, Any]]:
    assert lines and max(len(line) for line in lines) <= MAX_LINE, max(len(line) for line in lines)
    records = [json.loads(line) for line in lines]
    for secret in secrets:
        assert not [line for line in lines if secret in line]
    return records


@pytest.mark.parametrize("kind", ["planner", "executor"])
@pytest.mark.parametrize("authorized", [False, True], ids=["no token", "token"])
async def test_a_megabyte_session_id_makes_no_long_log_line(
    kind: str, authorized: bool, tracing: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    huge = "s" * MEGABYTE
    options = ChannelOptions(token=TOKEN if authorized else None)
    with captured_logs("DEBUG", "json") as stream:
        async with running_service(kind, TOKEN, tracing[0], tmp_path) as running:
            target = f"127.0.0.1:{running.port}"
            if kind == "planner":
                async with AsyncPlannerClient(target, options=options) as planner_client:
                    with pytest.raises(PlanningFailed) as refused:
                        await planner_client.create_plan("A lantern", session_id=huge)
            else:
                plan = make_plan(session_id=huge)
                async with AsyncExecutorClient(target, options=options) as executor_client:
                    with pytest.raises(ExecutionFailed) as refused:  # type: ignore[assignment]
                        await executor_client.execute_plan(plan)
                assert refused.value.plan == plan  # too large to send back: the client keeps the one it sent
    expected = (
        ("INVALID_ARGUMENT", "INVALID_REQUEST") if authorized else ("UNAUTHENTICATED", "MISSING_CREDENTIALS")
    )
    assert (refused.value.code.name, refused.value.reason) == expected
    records = assert_bounded(stream.getvalue().splitlines(), "s" * 200)
    (closing,) = [r for r in records if r["logger"] == "imagegen.rpc" and r["code"] == expected[0]]
    if authorized:  # bound after the token is checked, and cut
        assert closing["session_id"].startswith("sss") and len(closing["session_id"]) <= 128
    else:  # nothing of an unauthenticated request is logged
        assert "session_id" not in closing


async def test_a_megabyte_request_id_is_refused_by_the_transport_and_the_server_serves_on(
    planner: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{planner.port}") as channel:
        create = channel.unary_unary(
            "/imagegen.v1.PlannerService/CreatePlan",
            request_serializer=planner_service_pb2.CreatePlanRequest.SerializeToString,
            response_deserializer=planner_service_pb2.CreatePlanResponse.FromString,
        )
        request = planner_service_pb2.CreatePlanRequest(prompt="A lantern", session_id="t-1")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create(request, metadata=(*AUTHORIZED, ("x-request-id", "r" * MEGABYTE)))
        # gRPC's own limit on what a server reads of a call's metadata (16 KiB): the call
        # never reaches Python, and the connection stays usable.
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        answer = await create(request, metadata=(*AUTHORIZED, ("x-request-id", "after-1")))
    assert answer.plan.session_id == "t-1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("x-request-id", "OK"),  # too long a request id: replaced by a uuid4
        ("authorization", "UNAUTHENTICATED"),  # a long wrong token
        ("traceparent", "OK"),
        ("tracestate", "OK"),
        ("baggage", "OK"),
        ("x-anything-else", "OK"),
    ],
)
async def test_large_metadata_under_the_transports_limit_makes_no_long_log_line_or_span(
    planner: RunningServer, tracing: tuple[TracerProvider, InMemorySpanExporter], header: str, expected: str
) -> None:
    # gRPC refuses a call's metadata over 8 KiB in all, at random, and over 16 KiB always:
    # these stay under it, so that the call reaches the interceptor.
    large = "Bearer " + "t" * 3500 if header == "authorization" else "v" * 3500
    metadata = tuple(kv for kv in AUTHORIZED if header != "authorization") + ((header, large),)
    options = [("grpc.primary_user_agent", "agent/" + "u" * 3000)]  # a long user agent, always
    with captured_logs("DEBUG", "json") as stream:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{planner.port}", options=options) as channel:
            create = channel.unary_unary(
                "/imagegen.v1.PlannerService/CreatePlan",
                request_serializer=planner_service_pb2.CreatePlanRequest.SerializeToString,
                response_deserializer=planner_service_pb2.CreatePlanResponse.FromString,
            )
            call = create(
                planner_service_pb2.CreatePlanRequest(prompt="A lantern", session_id="t-2"), metadata=metadata
            )
            try:
                await call
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            request_id = dict(await call.trailing_metadata() or ())["x-request-id"]
    assert code == expected
    assert uuid.UUID(request_id).version == 4 and len(request_id) == 36  # the long one was not echoed
    records = assert_bounded(stream.getvalue().splitlines(), "v" * 200, "t" * 200, "u" * 200)
    assert [r["code"] for r in records if r["logger"] == "imagegen.rpc"] == [expected]
    spans = [s for s in tracing[1].get_finished_spans() if s.name.endswith("CreatePlan")]
    assert spans and all(len(str(v)) <= 128 for s in spans for v in (s.attributes or {}).values())


async def test_a_caller_leaving_a_stream_mid_write_is_cancelled_not_an_internal_error(tmp_path: Path) -> None:
    """A write into a call the client cancelled fails inside grpc before context.cancelled()
    says so; it must count and log as CANCELLED, with no ERROR and no traceback."""
    import asyncio
    import os

    from executor_service.bootstrap import create_server
    from executor_service.config import ExecutorSettings
    from executor_service.stores.local_store import LocalObjectStore
    from imagegen.v1 import executor_service_pb2_grpc

    store = LocalObjectStore(tmp_path, "imagegen")
    key = "s/item/" + "a" * 32 + ".png"
    await store.put(key, os.urandom(8 << 20), "image/png", {})
    running = await create_server(ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path))
    try:
        with captured_logs("INFO", "json") as stream:
            # BDP probing off: a fixed 64 KiB window, so the server blocks in its write.
            options = [("grpc.http2.bdp_probe", 0)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
                stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
                call = stub.GetImage(executor_service_pb2.GetImageRequest(storage_path=f"imagegen/{key}"))
                await call.read()
                call.cancel()
            for _ in range(500):  # the server ends its side on its own schedule
                if '"method": "imagegen.v1.ExecutorService/GetImage"' in stream.getvalue():
                    break
                await asyncio.sleep(0.01)
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        await running.stop(None)
    (closing,) = [r for r in records if r.get("method") == "imagegen.v1.ExecutorService/GetImage"]
    assert closing["code"] == "CANCELLED"
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
