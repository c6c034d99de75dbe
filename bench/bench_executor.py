"""3. Concurrency: 64 distinct plans against a provider with a fixed 1 s latency,
   wall time against the ideal 1 s.
4. Dedup: a repeated plan's latency against its first execution (1 s provider),
   and 32 concurrent identical plans: provider calls made.

The executor runs as a real gRPC server on loopback, called through clients/."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.harness import Target, report
from bench.providers import FixedProvider, png_bytes
from clients import AsyncExecutorClient
from executor_service.bootstrap import create_server
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.stores.local_store import LocalObjectStore
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType

LATENCY = 1.0


def plan(i: int, session: str) -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt=f"A bustling goblin market at dusk, stall {i}",
        image_type=ImageType.IMAGE_TYPE_SCENE, style="painterly", size="1536x1024", session_id=session,
    )


async def _with_executor(provider: FixedProvider, body):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as store_dir:
        executor = Executor(provider, LocalObjectStore(Path(store_dir)), "http://bench.test/images")
        running = await create_server(ExecutorSettings(address="127.0.0.1:0"), executor)
        try:
            async with AsyncExecutorClient(f"127.0.0.1:{running.port}") as client:
                return await body(client)
        finally:
            await running.stop(None)


async def concurrency(quick: bool) -> dict:
    count = 8 if quick else 64
    provider = FixedProvider(png_bytes(), latency=LATENCY)

    async def body(client: AsyncExecutorClient) -> float:
        await client.execute_plan(plan(-1, "warmup"))
        started = time.perf_counter()
        await asyncio.gather(*(client.execute_plan(plan(i, "concurrency")) for i in range(count)))
        return time.perf_counter() - started

    wall = await _with_executor(provider, body)
    rows = [{"plans": count, "provider_latency_s": LATENCY, "wall_s": wall, "ideal_s": LATENCY, "provider_calls": provider.calls - 1}]
    return report("executor_concurrency", rows, [Target(f"wall time for {count} concurrent plans", wall, 1.3, "<=", " s")])


async def dedup(quick: bool) -> dict:
    concurrent = 8 if quick else 32
    provider = FixedProvider(png_bytes(), latency=LATENCY)

    async def body(client: AsyncExecutorClient) -> tuple[float, float, int]:
        started = time.perf_counter()
        await client.execute_plan(plan(0, "dedup"))
        first = time.perf_counter() - started
        repeats = []
        for _ in range(5 if quick else 50):
            started = time.perf_counter()
            result = await client.execute_plan(plan(0, "dedup"))
            repeats.append(time.perf_counter() - started)
            assert result.reused
        calls_before = provider.calls
        await asyncio.gather(*(client.execute_plan(plan(1, "dedup")) for _ in range(concurrent)))
        return first, sorted(repeats)[len(repeats) // 2], provider.calls - calls_before

    first, repeat, calls = await _with_executor(provider, body)
    rows = [{"first_ms": first * 1000, "repeat_p50_ms": repeat * 1000, "ratio": repeat / first,
             "concurrent_identical": concurrent, "provider_calls": calls}]
    return report(
        "executor_dedup",
        rows,
        [Target("repeat latency / first latency", repeat / first, 0.05, "<="),
         Target(f"provider calls for {concurrent} concurrent identical plans", calls, 1, "<=")],
    )


async def run(quick: bool = False) -> list[dict]:
    return [await concurrency(quick), await dedup(quick)]
