"""Serve what a benchmark measures from its own process, so the load generator
does not share the servers' GIL: `python -m bench._servers KIND`, KIND one of

  planner   the real planner server (offline planner)
  planner-bare  the same PlannerServicer on a bare grpc.aio server (no interceptors,
            health or reflection): shows what the interceptors cost
  echo      the planner's baseline: a bare service with a canned reply
  executor  the real executor server with the configured store (EXECUTOR_* env),
            its provider replaced by one returning BENCH_IMAGE_BYTES of fresh bytes at once
  stream    GetImage's context: a bare server-streaming service sending BENCH_IMAGE_BYTES
            from memory in 1 MiB chunks
  s3stream  GetImage's baseline: the same bare service, reading the object named in the
            request from the S3 store (EXECUTOR_MINIO_* env) with the raw minio SDK

Prints the port, then serves until its stdin closes."""

from __future__ import annotations

import asyncio
import os
import sys

import grpc

from imagegen.v1 import planner_service_pb2
from planner_service.bootstrap import build_planner
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from planner_service.ports import PlanRequest

ECHO_METHOD = "/bench.Echo/Echo"


def canned_request() -> planner_service_pb2.CreatePlanRequest:
    return planner_service_pb2.CreatePlanRequest(
        prompt="The party ambushes goblin raiders on a rope bridge, scene 0",
        session_id="bench",
        context={"location": "the Sword Coast", "mood": "tense"},
    )


async def started(
    server: grpc.aio.Server, handler: grpc.GenericRpcHandler | None = None
) -> tuple[grpc.aio.Server, int]:
    """server (with handler, if any) started on a free loopback port; and the port."""
    if handler is not None:
        server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def start_echo() -> tuple[grpc.aio.Server, int]:
    """The baseline: a bare grpc.aio service (no interceptors, no health) that
    parses the same CreatePlanRequest and answers a canned CreatePlanResponse,
    so both sides do the same protobuf work and only the planning differs."""
    reply = planner_service_pb2.CreatePlanResponse(plan=await build_planner(PlannerSettings()).create_plan(PlanRequest.from_proto(canned_request())))

    async def echo(request: planner_service_pb2.CreatePlanRequest, context: grpc.aio.ServicerContext) -> planner_service_pb2.CreatePlanResponse:
        return reply

    method = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=planner_service_pb2.CreatePlanRequest.FromString,
        response_serializer=planner_service_pb2.CreatePlanResponse.SerializeToString,
    )
    return await started(grpc.aio.server(), grpc.method_handlers_generic_handler("bench.Echo", {"Echo": method}))


async def start_bare_planner() -> tuple[grpc.aio.Server, int]:
    from imagegen.v1 import planner_service_pb2_grpc
    from planner_service.servicer import PlannerServicer

    server = grpc.aio.server()
    planner_service_pb2_grpc.add_PlannerServiceServicer_to_server(PlannerServicer(build_planner(PlannerSettings())), server)
    return await started(server)


STREAM_METHOD = "/bench.Stream/Stream"


async def start_stream(size: int, from_s3: bool) -> tuple[grpc.aio.Server, int]:
    from minio import Minio

    from imagegen.v1 import executor_service_pb2

    data = bytes(size)
    chunk = 1024 * 1024
    env = os.environ
    client = (
        Minio(env["EXECUTOR_MINIO_ENDPOINT"], access_key=env["EXECUTOR_MINIO_ACCESS_KEY"],
              secret_key=env["EXECUTOR_MINIO_SECRET_KEY"], region=env["EXECUTOR_MINIO_REGION"], secure=False)
        if from_s3 else None
    )

    async def stream(request: executor_service_pb2.GetImageRequest, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        if client is None:
            view = memoryview(data)
            for start in range(0, size, chunk):
                yield executor_service_pb2.GetImageResponse(chunk_data=bytes(view[start : start + chunk]))
            return
        bucket, _, key = request.storage_path.partition("/")
        response = await asyncio.to_thread(client.get_object, bucket, key)
        try:
            while piece := await asyncio.to_thread(response.read, chunk):
                yield executor_service_pb2.GetImageResponse(chunk_data=piece)
        finally:
            response.close()
            response.release_conn()

    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    method = grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=executor_service_pb2.GetImageRequest.FromString,
        response_serializer=executor_service_pb2.GetImageResponse.SerializeToString,
    )
    return await started(server, grpc.method_handlers_generic_handler("bench.Stream", {"Stream": method}))


async def start_executor(size: int):  # type: ignore[no-untyped-def]
    from bench.providers import FreshBytesProvider
    from executor_service.bootstrap import build_store
    from executor_service.bootstrap import create_server as create_executor_server
    from executor_service.config import ExecutorSettings
    from executor_service.executor import Executor

    settings = ExecutorSettings.from_env()
    executor = Executor(FreshBytesProvider(size), build_store(settings), settings.public_base_url)
    return await create_executor_server(settings, executor)


async def main(kind: str) -> None:
    size = int(os.environ.get("BENCH_IMAGE_BYTES", "0"))
    if kind in ("echo", "stream", "s3stream"):
        server, port = await (start_echo() if kind == "echo" else start_stream(size, from_s3=kind == "s3stream"))
        stop = lambda: server.stop(None)  # noqa: E731
    elif kind == "planner-bare":
        server, port = await start_bare_planner()
        stop = lambda: server.stop(None)  # noqa: E731
    elif kind == "executor":
        running = await start_executor(size)
        port, stop = running.port, lambda: running.stop(None)  # noqa: E731
    else:
        running = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
        port, stop = running.port, lambda: running.stop(None)  # noqa: E731
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
