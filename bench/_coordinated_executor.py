"""Serve an executor for bench.bench_coordination from its own process:
`python -m bench._coordinated_executor`.

The real executor server, configured by the environment (EXECUTOR_*: the store, and
Valkey when EXECUTOR_COORDINATION_URL is set), its provider replaced by one that
returns a fixed PNG after BENCH_PROVIDER_LATENCY seconds (default 0: at once). Prints
the port, serves until its stdin closes, then prints how many renders it made."""

from __future__ import annotations

import asyncio
import os
import sys

from bench.providers import FixedProvider, png_bytes
from executor_service.bootstrap import build_coordination, build_store, create_server
from executor_service.config import ExecutorSettings
from executor_service.coordination.valkey import ValkeyCoordination
from executor_service.executor import Executor


async def main() -> None:
    settings = ExecutorSettings.from_env()
    provider = FixedProvider(png_bytes(), latency=float(os.environ.get("BENCH_PROVIDER_LATENCY", "0")))
    coordination = build_coordination(settings)
    executor = Executor(provider, build_store(settings), settings.public_base_url, coordination=coordination)
    running = await create_server(settings, executor)
    if isinstance(coordination, ValkeyCoordination):
        coordination.start()
    print(running.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await running.stop(None)
    await executor.aclose()
    await coordination.aclose()
    print(provider.calls, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
