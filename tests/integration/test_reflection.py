"""Server reflection in its current version (grpc.reflection.v1) and the older one
(v1alpha), on both services' main ports and on the plaintext health port: the real
grpcurl, and a raw v1 client written here from the protocol."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from imagegen_runtime.serving import RunningServer
from tests.integration.test_metrics import scrape, value
from tests.support.calls import TOKEN, ClosingLines, running_service

pytestmark = pytest.mark.integration

GRPCURL = Path(sys.executable).parent / "grpcurl"
V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


async def grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def reflection_calls(samples: Any, service: str) -> float:
    labels = {"grpc_service": service, "grpc_method": "ServerReflectionInfo", "grpc_type": "bidi_stream"}
    return value(samples, "grpc_server_handled_total", grpc_code="OK", **labels)


@pytest.fixture(params=["planner", "executor"])
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_service(request.param, TOKEN, None, tmp_path) as server:
        yield server


async def test_grpcurl_lists_and_describes_through_reflection_on_both_ports(
    running: RunningServer, lines: ClosingLines
) -> None:
    main, health = f"127.0.0.1:{running.port}", f"127.0.0.1:{running.health_port}"
    name = running.service_names[0]
    token = ("-H", f"authorization: Bearer {TOKEN}")
    listed = set((await grpcurl(*token, main, "list")).split())
    assert {name, "grpc.health.v1.Health", V1, V1ALPHA} <= listed
    described = await grpcurl(*token, main, "describe", name)
    assert f"service {name.rpartition('.')[2]} {{" in described
    assert "rpc ServerReflectionInfo" in await grpcurl(*token, main, "describe", V1)  # v1 describes itself
    assert set((await grpcurl(health, "list")).split()) == {"grpc.health.v1.Health", V1, V1ALPHA}
    # grpcurl asks v1 first from 1.8.8 on, and v1alpha alone before (the wheel pins 1.8.6):
    # either way every call it made was answered (the raw client below covers v1 itself).
    reflection = [f"{V1}/ServerReflectionInfo", f"{V1ALPHA}/ServerReflectionInfo"]
    await lines.wait_for(lambda records: sum(len(lines.of(method)) for method in reflection) >= 4)
    assert {line.code for method in reflection for line in lines.of(method)} == {"OK"}  # type: ignore[attr-defined]
    samples = await scrape(running)
    assert reflection_calls(samples, V1) + reflection_calls(samples, V1ALPHA) >= 4


def _v1_messages() -> tuple[type, type]:
    """ServerReflectionRequest and ServerReflectionResponse as grpc/reflection/v1/reflection.proto
    defines them (the fields used here), in a pool of the test's own."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="test/reflection_v1.proto", package="grpc.reflection.v1", syntax="proto3"
    )
    string, message, repeated, optional = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    bytes_type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES

    def add(name: str, *fields: tuple[str, int, int, int, str], oneof: str = "") -> None:
        described = proto.message_type.add(name=name)
        if oneof:  # every field in it, so that an empty string is still sent (list_services="")
            described.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name in fields:
            field = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".grpc.reflection.v1.{type_name}"
            if oneof:
                field.oneof_index = 0

    add("ServerReflectionRequest", ("file_containing_symbol", 4, string, optional, ""),
        ("list_services", 7, string, optional, ""), oneof="message_request")  # fmt: skip
    add("ServiceResponse", ("name", 1, string, optional, ""))
    add("ListServiceResponse", ("service", 1, message, repeated, "ServiceResponse"))
    add("FileDescriptorResponse", ("file_descriptor_proto", 1, bytes_type, repeated, ""))
    add("ServerReflectionResponse", ("file_descriptor_response", 4, message, optional, "FileDescriptorResponse"),
        ("list_services_response", 6, message, optional, "ListServiceResponse"), oneof="message_response")  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
        for name in ("ServerReflectionRequest", "ServerReflectionResponse")
    )


async def never_sent() -> AsyncIterator[Any]:
    """Requests that never come: the refusal needs none, and a request written as the
    refusal arrives can make grpc.aio's client report INTERNAL instead of the status."""
    await asyncio.Event().wait()
    yield  # pragma: no cover


async def test_a_raw_v1_client_lists_services_and_gets_their_files(running: RunningServer) -> None:
    request_type, response_type = _v1_messages()
    name = running.service_names[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        info = channel.stream_stream(
            f"/{V1}/ServerReflectionInfo",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        requests = [request_type(list_services=""), request_type(file_containing_symbol=name)]
        listed, files = [
            answer async for answer in info(iter(requests), metadata=(("authorization", f"Bearer {TOKEN}"),))
        ]
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # v1 is no more open than the rest of the API
            [answer async for answer in info(never_sent())]
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert {V1, V1ALPHA, name} <= {service.name for service in listed.list_services_response.service}
    parsed = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in files.file_descriptor_response.file_descriptor_proto
    ]
    assert name.rpartition(".")[2] in {service.name for file in parsed for service in file.service}
