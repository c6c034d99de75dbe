"""Health that follows a dependency: a background task asks check() every
interval and reports the server's services (and "") SERVING while it passes,
NOT_SERVING while it fails or does not answer within timeout.

A check that overruns is not started again until it has finished, so a hung
dependency never piles up checks (the store's own timeouts end it); meanwhile
health stays NOT_SERVING. Transitions are logged once, not every interval.
After enter_graceful_shutdown the health servicer ignores what this reports,
so a drain is never undone.

All waiting (the interval, the timeout) goes through the sleep it is given,
asyncio.sleep unless a test passes its own to drive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2

from imagegen_runtime.serving import RunningServer

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
Sleep = Callable[[float], Awaitable[object]]

# A health name that is SERVING while the process runs (NOT_SERVING once it
# drains), whatever its dependencies do: what a liveness probe should ask for.
LIVENESS = "liveness"


class DependencyWatch:
    def __init__(
        self,
        running: RunningServer,
        check: Check,
        *,
        what: str,
        interval: float,
        timeout: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._running = running
        self._check = check
        self._what = what
        self._interval = interval
        self._timeout = timeout
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.healthy = True  # the server starts SERVING: the dependency was usable at start

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(self._check())
                deadline = asyncio.ensure_future(self._sleep(self._timeout))
                try:
                    await asyncio.wait({pending, deadline}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    deadline.cancel()
                if pending.done():  # an answer in time (or as the time ran out) counts
                    error = pending.exception()
                    problem = None if error is None else (str(error) or type(error).__name__)
                    pending = None
                else:
                    problem = f"no answer within {self._timeout:g} s"
                await self._report(problem)
                await self._sleep(self._interval)
        finally:
            if pending is not None:
                pending.cancel()

    async def _report(self, problem: str | None) -> None:
        healthy = problem is None
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            log.info("%s is reachable again: reporting SERVING", self._what)
            status = health_pb2.HealthCheckResponse.SERVING
        else:
            log.warning("%s is not usable (%s): reporting NOT_SERVING", self._what, problem)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._running.service_names):
            await self._running.health.set(name, status)
