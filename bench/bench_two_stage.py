"""5. Two-stage overhead: clients.generate over both gRPC services against the same
planner and executor called in-process: the p50 difference in ms.

Both paths use the offline planner and a provider that returns fixed bytes at
once, with the local store, so the difference is what the two gRPC hops add."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.harness import Target, percentile, report
from bench.providers import FixedProvider, png_bytes
from clients import AsyncImagegenClient
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.stores.local_store import LocalObjectStore
from planner_service.bootstrap import build_planner
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from planner_service.ports import PlanRequest


def prompt(i: int, path: str) -> str:
    return f"A portrait of Thora Ironbrow, dwarf cleric, take {i} via {path}"


async def run(quick: bool = False) -> dict:
    rounds = 30 if quick else 400
    with tempfile.TemporaryDirectory() as store_dir:
        planner = build_planner(PlannerSettings())
        executor = Executor(FixedProvider(png_bytes()), LocalObjectStore(Path(store_dir)), "http://bench.test/images")
        running_planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"), planner)
        running_executor = await create_executor_server(ExecutorSettings(address="127.0.0.1:0"), executor)
        in_process, over_grpc = [], []
        try:
            async with AsyncImagegenClient(
                f"127.0.0.1:{running_planner.port}", f"127.0.0.1:{running_executor.port}"
            ) as client:
                for i in range(-20, rounds):  # the first 20 warm up both paths
                    started = time.perf_counter()
                    plan = await planner.create_plan(PlanRequest(prompt=prompt(i, "direct"), session_id="bench"))
                    await executor.execute(plan)
                    direct = time.perf_counter() - started
                    started = time.perf_counter()
                    await client.generate(prompt(i, "grpc"), session_id="bench")
                    remote = time.perf_counter() - started
                    if i >= 0:
                        in_process.append(direct)
                        over_grpc.append(remote)
        finally:
            await running_planner.stop(None)
            await running_executor.stop(None)
    direct_p50, remote_p50 = percentile(in_process, 0.5) * 1000, percentile(over_grpc, 0.5) * 1000
    rows = [{"rounds": rounds, "in_process_p50_ms": direct_p50, "generate_p50_ms": remote_p50,
             "overhead_ms": remote_p50 - direct_p50}]
    return report("two_stage_overhead", rows, [Target("generate p50 - in-process p50", remote_p50 - direct_p50, 3.0, "<=", " ms")])
