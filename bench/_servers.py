"""Serve what a benchmark measures from its own process, so the load generator
does not share the servers' GIL: `python -m bench._servers planner|echo`.
Prints the port, then serves until its stdin closes."""

from __future__ import annotations

import asyncio
import sys

import grpc

from imagegen.v1 import planner_service_pb2
from planner_service.config import PlannerSettings
from planner_service.server import build_planner
from planner_service.server import create_server as create_planner_server

ECHO_METHOD = "/bench.Echo/Echo"


def canned_request() -> planner_service_pb2.CreatePlanRequest:
    return planner_service_pb2.CreatePlanRequest(
        prompt="The party ambushes goblin raiders on a rope bridge, scene 0",
        session_id="bench",
        context={"location": "the Sword Coast", "mood": "tense"},
    )


async def start_echo() -> tuple[grpc.aio.Server, int]:
    """The baseline: a bare grpc.aio service (no interceptors, no health) that
    parses the same CreatePlanRequest and answers a canned CreatePlanResponse,
    so both sides do the same protobuf work and only the planning differs."""
    reply = planner_service_pb2.CreatePlanResponse(plan=await build_planner(PlannerSettings()).create_plan(canned_request()))

    async def echo(request: planner_service_pb2.CreatePlanRequest, context: grpc.aio.ServicerContext) -> planner_service_pb2.CreatePlanResponse:
        return reply

    server = grpc.aio.server()
    method = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=planner_service_pb2.CreatePlanRequest.FromString,
        response_serializer=planner_service_pb2.CreatePlanResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def main(kind: str) -> None:
    if kind == "echo":
        server, port = await start_echo()
        stop = lambda: server.stop(None)  # noqa: E731
    else:
        running = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
        port, stop = running.port, lambda: running.stop(None)  # noqa: E731
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
