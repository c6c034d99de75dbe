"""Coordination within one process: the embedded default, and what the Valkey adapter
falls back to while Valkey is down.

A provider pause (after a 429) short enough is waited out; a longer one refuses new
provider calls at once with its remaining time, so callers are told when to come back
instead of being held to their deadline. One render per plan needs no lease here: the executor's own single flight already
shares one render among every caller of this process. The provider cap is a
semaphore, the rate-limit pause a deadline, and the request records live in memory
(executor_service.coordination.request_records). Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from executor_service.coordination.quotas import SessionQuotas
from executor_service.coordination.request_records import RequestRecords
from executor_service.ports import QuotaLimit
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.errors import ProviderThrottled
from imagegen.v1.image_plan_pb2 import ImageGenerationResult


# A caller waits out a provider pause this short; a longer one is refused at once with
# its remaining time (RESOURCE_EXHAUSTED and RetryInfo), rather than held to its deadline.
PAUSE_WAIT_SECONDS = 5.0


def check_pause(remaining: float) -> None:
    """ProviderThrottled when a pause of remaining seconds is too long to wait out."""
    if remaining > PAUSE_WAIT_SECONDS:
        raise ProviderThrottled(
            f"the image provider asked to be left alone for {remaining:.0f} s more", retry_after=remaining
        )


def once(callback: Callable[[], None]) -> Callable[[], None]:
    """callback, called the first time only: a provider call that waits more than once
    (a pause, then the cap) is counted as queued once."""
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            callback()

    return call


class InProcessCoordination:
    """provider_concurrency: at most this many provider calls at once (0: no cap)."""

    def __init__(
        self,
        provider_concurrency: int = 0,
        requests: RequestRecords | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._slots = asyncio.Semaphore(provider_concurrency) if provider_concurrency > 0 else None
        self._requests = requests if requests is not None else RequestRecords()
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self._quotas = SessionQuotas(clock)

    @contextlib.asynccontextmanager
    async def render_lease(self, key: str) -> AsyncIterator[None]:
        yield

    @contextlib.asynccontextmanager
    async def provider_slot(self, on_queued: Callable[[], None]) -> AsyncIterator[None]:
        queue = once(on_queued)
        while (wait := self._paused_until - self._clock()) > 0:
            check_pause(wait)
            queue()
            await self._sleep(wait)  # the provider's own Retry-After
        if self._slots is None:
            yield
            return
        if self._slots.locked():
            queue()
        async with self._slots:
            yield

    async def pause_provider(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + min(max(seconds, 0.0), MAX_RETRY_AFTER.total_seconds()))

    async def claim_request(self, request_id: str, session_id: str, plan_id: str) -> ImageGenerationResult | None:
        return self._requests.claim(request_id, session_id, plan_id)

    async def complete_request(self, request_id: str, result: ImageGenerationResult) -> None:
        self._requests.complete(request_id, result)

    async def release_request(self, request_id: str) -> None:
        self._requests.release(request_id)

    async def take_render_quota(self, session_id: str, limits: tuple[QuotaLimit, ...]) -> str:
        return self._quotas.take(session_id, limits)

    async def return_render_quota(self, session_id: str, token: str) -> None:
        self._quotas.give_back(session_id, token)

    async def forget_session(self, session_id: str) -> None:
        self._requests.forget_session(session_id)

    async def aclose(self) -> None:
        pass
