"""1. The planner (offline planner) over gRPC against a bare grpc.aio echo service,
at concurrency 1, 16 and 64; each server in its own process, the load from this one.

The echo service takes the same CreatePlanRequest and answers a canned
CreatePlanResponse (see bench._servers), so the client does identical work in
both runs and the ratio isolates what planning adds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from bench._servers import ECHO_METHOD
from bench.harness import Target, report, run_load
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc


@contextmanager
def server_process(kind: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield f"127.0.0.1:{int(process.stdout.readline())}"  # type: ignore[union-attr]
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=30)


def _request(i: int) -> planner_service_pb2.CreatePlanRequest:
    return planner_service_pb2.CreatePlanRequest(
        prompt=f"The party ambushes goblin raiders on a rope bridge, scene {i}",
        session_id="bench",
        context={"location": "the Sword Coast", "mood": "tense"},
    )


async def run(quick: bool = False) -> dict:
    counts = {1: 100, 16: 200, 64: 200} if quick else {1: 1500, 16: 5000, 64: 5000}
    rows, by_concurrency = [], {}
    with server_process("echo") as echo_target, server_process("planner") as planner_target, server_process(
        "planner-bare"
    ) as bare_target:
        async with grpc.aio.insecure_channel(echo_target) as echo_channel, grpc.aio.insecure_channel(
            planner_target
        ) as planner_channel, grpc.aio.insecure_channel(bare_target) as bare_channel:
            echo = echo_channel.unary_unary(
                ECHO_METHOD,
                request_serializer=planner_service_pb2.CreatePlanRequest.SerializeToString,
                response_deserializer=planner_service_pb2.CreatePlanResponse.FromString,
            )
            planner = planner_service_pb2_grpc.PlannerServiceStub(planner_channel)
            bare = planner_service_pb2_grpc.PlannerServiceStub(bare_channel)
            requests_made = [_request(i) for i in range(max(counts.values()))]

            async def call_echo(i: int) -> None:
                await echo(requests_made[i])

            async def call_planner(i: int) -> None:
                await planner.CreatePlan(requests_made[i])

            async def call_bare(i: int) -> None:  # diagnostic: the same servicer, no interceptors
                await bare.CreatePlan(requests_made[i])

            await run_load(call_echo, requests=200, concurrency=8)  # warm up both
            await run_load(call_planner, requests=200, concurrency=8)
            await run_load(call_bare, requests=200, concurrency=8)
            for concurrency, requests in counts.items():
                # Interleaved, so drift on a noisy machine hits both alike.
                baseline = await run_load(call_echo, requests=requests, concurrency=concurrency)
                measured = await run_load(call_planner, requests=requests, concurrency=concurrency)
                diagnostic = await run_load(call_bare, requests=requests, concurrency=concurrency)
                by_concurrency[concurrency] = measured.throughput / baseline.throughput
                for name, stats in (("echo", baseline), ("planner", measured), ("planner, no interceptors", diagnostic)):
                    rows.append(
                        {"service": name, "concurrency": concurrency, "requests": requests,
                         "req_per_s": stats.throughput, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms}
                    )
    targets = [Target("planner/echo throughput at concurrency 16", by_concurrency[16], 0.8, ">=")]
    return report("planner_vs_echo", rows, targets, {"ratios": by_concurrency})
