"""DependencyWatch: health follows a dependency's check, bounded by a timeout."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
from grpc_health.v1 import health, health_pb2

from imagegen_runtime.health import DependencyWatch
from imagegen_runtime.serving import RunningServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("", "imagegen.v1.ExecutorService")


@dataclass
class Dependency:
    up: bool = True
    calls: int = 0
    hang: asyncio.Event | None = None

    async def check(self) -> None:
        self.calls += 1
        if self.hang is not None:
            await self.hang.wait()
        if not self.up:
            raise ConnectionError("store down")


async def statuses(servicer: health.aio.HealthServicer) -> set[int]:
    return {
        (await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)).status  # type: ignore[arg-type]
        for name in NAMES
    }


async def until(servicer: health.aio.HealthServicer, status: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await statuses(servicer) != {status}:
            await asyncio.sleep(0.01)


@pytest.fixture
async def servicer() -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    for name in NAMES:
        await servicer.set(name, SERVING)
    return servicer


def watch(servicer: health.aio.HealthServicer, dependency: Dependency, timeout: float = 1.0) -> DependencyWatch:
    running = RunningServer(server=None, port=0, health=servicer, service_names=NAMES[1:])  # type: ignore[arg-type]
    return DependencyWatch(running, dependency.check, what="the store", interval=0.01, timeout=timeout)


async def test_health_follows_the_check_down_and_up(servicer: health.aio.HealthServicer) -> None:
    dependency = Dependency()
    watcher = watch(servicer, dependency)
    watcher.start()
    try:
        dependency.up = False
        await until(servicer, NOT_SERVING)
        dependency.up = True
        await until(servicer, SERVING)
    finally:
        await watcher.aclose()


async def test_a_check_that_hangs_is_unhealthy_and_is_not_started_again(
    servicer: health.aio.HealthServicer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen_runtime.health")
    dependency = Dependency(hang=asyncio.Event())
    watcher = watch(servicer, dependency, timeout=0.05)
    watcher.start()
    try:
        await until(servicer, NOT_SERVING)
        await asyncio.sleep(0.2)  # several intervals pass while the first check still hangs
        assert dependency.calls == 1
        dependency.hang.set()
        await until(servicer, SERVING)
    finally:
        await watcher.aclose()
    assert "no answer within 0.05 s" in caplog.text
    # one line per change, not one per interval
    assert [r.levelname for r in caplog.records if r.name == "imagegen_runtime.health"] == ["WARNING", "INFO"]


async def test_a_drain_is_never_undone(servicer: health.aio.HealthServicer) -> None:
    dependency = Dependency(up=False)
    watcher = watch(servicer, dependency)
    watcher.start()
    try:
        await until(servicer, NOT_SERVING)
        await servicer.enter_graceful_shutdown()
        dependency.up = True
        calls = dependency.calls
        async with asyncio.timeout(5):
            while dependency.calls < calls + 3:
                await asyncio.sleep(0.01)
        assert await statuses(servicer) == {NOT_SERVING}
    finally:
        await watcher.aclose()


async def test_closing_stops_the_checks(servicer: health.aio.HealthServicer) -> None:
    dependency = Dependency()
    watcher = watch(servicer, dependency)
    watcher.start()
    async with asyncio.timeout(5):
        while dependency.calls < 2:
            await asyncio.sleep(0.01)
    await watcher.aclose()
    calls = dependency.calls
    await asyncio.sleep(0.05)
    assert dependency.calls == calls
