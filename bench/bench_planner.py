"""1. The planner (offline planner) over gRPC against a bare grpc.aio echo service,
at concurrency 1, 16 and 64; each server in its own process, the load from this one.

The echo service takes the same CreatePlanRequest and answers a canned
CreatePlanResponse (see bench._servers), so the client does identical work in
both runs and the ratio isolates what planning adds.

Each concurrency is measured in rounds (echo, planner, bare planner, interleaved, so
drift on a noisy machine hits all three alike) and the median of the rounds' ratios
is reported. Beside throughput, each server process's CPU time per call (user +
system, all its threads, from /proc) is reported: it does not move with what else
the machine runs, so it shows what the interceptor costs even when throughput is noisy."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from bench._servers import ECHO_METHOD
from bench.harness import LoadStats, Target, report, run_load
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc


@dataclass(frozen=True)
class ServerProcess:
    target: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the whole process so far; None where /proc is missing."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextmanager
def server_process(kind: str) -> Iterator[ServerProcess]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield ServerProcess(f"127.0.0.1:{int(process.stdout.readline())}", process.pid)  # type: ignore[union-attr]
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
    rounds = 1 if quick else 5
    rows, by_concurrency, cpu_ratios = [], {}, {}
    with (
        server_process("echo") as echo_server,
        server_process("planner") as planner_server,
        server_process("planner-bare") as bare_server,
    ):
        async with (
            grpc.aio.insecure_channel(echo_server.target) as echo_channel,
            grpc.aio.insecure_channel(planner_server.target) as planner_channel,
            grpc.aio.insecure_channel(bare_server.target) as bare_channel,
        ):
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

            services = (("echo", call_echo, echo_server), ("planner", call_planner, planner_server),
                        ("planner, no interceptors", call_bare, bare_server))  # fmt: skip
            for _, call, _ in services:  # warm up all three
                await run_load(call, requests=200, concurrency=8)
            for concurrency, requests in counts.items():
                runs: dict[str, list[tuple[LoadStats, float | None]]] = {name: [] for name, _, _ in services}
                for _ in range(rounds):
                    for name, call, server in services:
                        before = server.cpu_seconds()
                        stats = await run_load(call, requests=requests, concurrency=concurrency)
                        after = server.cpu_seconds()
                        cpu = None if before is None or after is None else (after - before) / requests * 1e6
                        runs[name].append((stats, cpu))
                ratios = [
                    p.throughput / e.throughput for (e, _), (p, _) in zip(runs["echo"], runs["planner"])
                ]
                by_concurrency[concurrency] = statistics.median(ratios)
                cpu_by_name = {}
                for name, results in runs.items():
                    cpus = [cpu for _, cpu in results if cpu is not None]
                    cpu_by_name[name] = statistics.median(cpus) if cpus else None
                    rows.append(
                        {"service": name, "concurrency": concurrency, "requests": requests, "rounds": rounds,
                         "req_per_s": statistics.median(s.throughput for s, _ in results),
                         "p50_ms": statistics.median(s.p50_ms for s, _ in results),
                         "p99_ms": statistics.median(s.p99_ms for s, _ in results),
                         "server_cpu_us_per_call": cpu_by_name[name] if cpus else float("nan")}
                    )  # fmt: skip
                if cpu_by_name["echo"] and cpu_by_name["planner"]:
                    cpu_ratios[concurrency] = cpu_by_name["echo"] / cpu_by_name["planner"]
    targets = [
        Target("planner/echo throughput at concurrency 16 (median of rounds)", by_concurrency[16], 0.8, ">=")
    ]
    return report(
        "planner_vs_echo", rows, targets,
        {"ratios": by_concurrency, "rounds": rounds, "cpu_per_call_ratios_echo_over_planner": cpu_ratios},
    )  # fmt: skip
