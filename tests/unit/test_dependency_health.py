"""DependencyWatch: health follows a dependency's check, bounded by a timeout.

Time is the test's: the watch is given a fake sleep that records each wait it asks
for and returns only when the test releases it, so an interval or a timeout passes
exactly when the test says so (and never on its own)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest
from grpc_health.v1 import health, health_pb2

from imagegen_runtime.health import DependencyWatch
from imagegen_runtime.serving import RunningServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("", "imagegen.v1.ExecutorService")
INTERVAL = 10.0
TIMEOUT = 2.0  # distinct from INTERVAL: the fake sleep tells the two waits apart by their length
WAIT = 5.0  # a bound on how long the test waits for the watch to get somewhere: a bug fails, not hangs


@dataclass(eq=False)
class Nap:
    seconds: float
    released: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False


class FakeSleep:
    """A sleep whose every call waits until the test releases it."""

    def __init__(self) -> None:
        self.pending: list[Nap] = []
        self.cancelled: list[Nap] = []
        self._changed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        nap = Nap(seconds)
        self.pending.append(nap)
        self._poke()
        try:
            await nap.released.wait()
        except asyncio.CancelledError:
            nap.cancelled = True
            self.cancelled.append(nap)
            raise
        finally:
            nap.ended.set()
            if nap in self.pending:
                self.pending.remove(nap)
                self._poke()

    def _poke(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def asked(self, seconds: float) -> Nap:
        """Wait until the watch is sleeping for seconds (it has done everything before that wait)."""
        async with asyncio.timeout(WAIT):
            while not (naps := [nap for nap in self.pending if nap.seconds == seconds]):
                await self._changed.wait()
        assert len(naps) == 1, f"{len(naps)} concurrent sleeps of {seconds} s"
        return naps[0]

    async def release(self, seconds: float) -> None:
        """Let a sleep of seconds end: wait until the watch asks for it, then return from it."""
        nap = await self.asked(seconds)
        self.pending.remove(nap)
        nap.released.set()


@dataclass
class Dependency:
    up: bool = True
    calls: int = 0
    running: int = 0
    most_running: int = 0
    cancelled: int = 0
    hang: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def check(self) -> None:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            if self.hang is not None:
                await self.hang.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
            self.ended.set()
        if not self.up:
            raise ConnectionError("store down")


async def statuses(servicer: health.aio.HealthServicer) -> set[int]:
    return {
        (await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)).status  # type: ignore[arg-type]
        for name in NAMES
    }


@pytest.fixture
async def servicer() -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    for name in NAMES:
        await servicer.set(name, SERVING)
    return servicer


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


def watch(servicer: health.aio.HealthServicer, dependency: Dependency, sleep: FakeSleep) -> DependencyWatch:
    running = RunningServer(server=None, port=0, health=servicer, service_names=NAMES[1:])  # type: ignore[arg-type]
    return DependencyWatch(
        running, dependency.check, what="the store", interval=INTERVAL, timeout=TIMEOUT, sleep=sleep
    )


async def test_health_follows_the_check_down_and_up(
    servicer: health.aio.HealthServicer, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen_runtime.health")
    dependency = Dependency()
    watcher = watch(servicer, dependency, sleep)
    watcher.start()
    try:
        await sleep.asked(INTERVAL)  # the first check passed and was reported
        assert (dependency.calls, await statuses(servicer)) == (1, {SERVING})
        dependency.up = False
        await sleep.release(INTERVAL)
        await sleep.asked(INTERVAL)
        assert (dependency.calls, await statuses(servicer)) == (2, {NOT_SERVING})
        await sleep.release(INTERVAL)
        await sleep.asked(INTERVAL)  # still down: no new transition
        assert (dependency.calls, await statuses(servicer)) == (3, {NOT_SERVING})
        dependency.up = True
        await sleep.release(INTERVAL)
        await sleep.asked(INTERVAL)
        assert (dependency.calls, await statuses(servicer)) == (4, {SERVING})
    finally:
        await watcher.aclose()
    assert "the store is not usable (store down): reporting NOT_SERVING" in caplog.text
    assert [r.levelname for r in caplog.records if r.name == "imagegen_runtime.health"] == ["WARNING", "INFO"]


async def test_a_check_that_hangs_is_unhealthy_and_is_not_started_again(
    servicer: health.aio.HealthServicer, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen_runtime.health")
    dependency = Dependency(hang=asyncio.Event())
    watcher = watch(servicer, dependency, sleep)
    watcher.start()
    try:
        await sleep.asked(TIMEOUT)  # the check is under way, its time not yet up
        assert dependency.started.is_set()
        assert await statuses(servicer) == {SERVING}
        await sleep.release(TIMEOUT)  # the check overruns its timeout
        await sleep.asked(INTERVAL)
        assert await statuses(servicer) == {NOT_SERVING}
        for _ in range(3):  # several intervals pass while the first check still hangs
            await sleep.release(INTERVAL)
            await sleep.release(TIMEOUT)  # each interval waits on the same check again...
            await sleep.asked(INTERVAL)
            assert await statuses(servicer) == {NOT_SERVING}
        assert (dependency.calls, dependency.most_running) == (1, 1)  # ...rather than starting another
        await sleep.release(INTERVAL)
        await sleep.asked(TIMEOUT)
        dependency.hang.set()  # it answers (well) before this timeout is up
        await sleep.asked(INTERVAL)
        assert await statuses(servicer) == {SERVING}
        assert dependency.calls == 1
        await sleep.release(INTERVAL)  # and the next interval starts a new check
        await sleep.asked(INTERVAL)
        assert (dependency.calls, dependency.most_running) == (2, 1)
    finally:
        await watcher.aclose()
    assert "the store is not usable (no answer within 2 s): reporting NOT_SERVING" in caplog.text
    # one line per change, not one per interval
    assert [r.levelname for r in caplog.records if r.name == "imagegen_runtime.health"] == ["WARNING", "INFO"]


async def test_a_drain_is_never_undone(servicer: health.aio.HealthServicer, sleep: FakeSleep) -> None:
    dependency = Dependency(up=False)
    watcher = watch(servicer, dependency, sleep)
    watcher.start()
    try:
        await sleep.asked(INTERVAL)
        assert await statuses(servicer) == {NOT_SERVING}
        await servicer.enter_graceful_shutdown()
        dependency.up = True
        for _ in range(3):
            await sleep.release(INTERVAL)
            await sleep.asked(INTERVAL)
        assert dependency.calls == 4
        assert watcher.healthy  # the watch saw the store come back and reported it...
        assert await statuses(servicer) == {NOT_SERVING}  # ...and the drain held
    finally:
        await watcher.aclose()


async def test_closing_stops_the_checks(servicer: health.aio.HealthServicer, sleep: FakeSleep) -> None:
    dependency = Dependency()
    watcher = watch(servicer, dependency, sleep)
    watcher.start()
    await sleep.release(INTERVAL)
    interval = await sleep.asked(INTERVAL)
    assert dependency.calls == 2
    await watcher.aclose()
    assert interval.cancelled  # the wait for the next check ended with the watch
    assert dependency.calls == 2


async def test_closing_cancels_a_check_in_flight(
    servicer: health.aio.HealthServicer, sleep: FakeSleep
) -> None:
    dependency = Dependency(hang=asyncio.Event())
    watcher = watch(servicer, dependency, sleep)
    watcher.start()
    timeout = await sleep.asked(TIMEOUT)
    await watcher.aclose()
    async with asyncio.timeout(WAIT):  # the cancellations land on the loop's next turns
        await timeout.ended.wait()
        await dependency.ended.wait()
    assert timeout.cancelled
    assert (dependency.calls, dependency.cancelled, dependency.running) == (1, 1, 0)
