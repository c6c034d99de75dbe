"""The same plan for the same request on every replica: the LLM plan cache and the single
flight of identical requests, shared through Valkey (imagegen_runtime.valkey).

In front, the process's own single flight (InProcessPlans, without a cache of its own):
identical callers in one process make one trip to Valkey. Behind it, for each request key
(the request's fingerprint):

- ``prefix:plan:KEY``: the plan, ``SerializeToString(deterministic=True)``, for the TTL
  (PLANNER_CACHE_TTL_SECONDS). Written with ``SET NX GET``: the first plan stored wins,
  and a replica that planned too (its lock had expired under it) returns the winner's.
  A plan over ``max_plan_bytes`` is not shared.
- ``prefix:plan-lock:KEY``: redis-py's asyncio Lock, the cross-replica single flight. Its
  holder makes the plan (renewing the lock while it does), stores it, publishes on
  ``prefix:plan-made:KEY`` and releases. The other replicas wait: woken by that message,
  and reading the cache every ``poll_seconds`` anyway (a message can be lost). A holder
  that dies stops renewing; its lock expires and a waiter takes over. A waiter that has
  waited ``wait_seconds`` (by default the lock's lifetime, enough for one planning with
  its retries and repair) plans by itself.
- A plan that fell back to the offline planner (provenance.fell_back) is shared like any
  other, as the in-process cache keeps it: a retry, on whichever replica, gets the same plan.

Valkey is an optimisation, never a dependency: whatever it does (no answer, an error
reply), the caller gets a plan made the per-process way, never an error because of
Valkey. Every plan this process returns is also kept in its own memory (a PlanCache of
PLANNER_CACHE_SIZE plans), for as long as Valkey keeps it. That memory answers while
Valkey is down, and a replica that holds the lock after Valkey lost its data (a restart)
shares the plan it remembers, for a TTL again, rather than asking the LLM for another:
the same request keeps its plan across an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as redis
from google.protobuf.message import DecodeError
from redis.asyncio.client import PubSub
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen_runtime.valkey import CoordinationUnavailable, Valkey
from planner_service.coordination.in_process import InProcessPlans, MakePlan
from planner_service.plan_cache import PlanCache

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Shared = tuple[ImageGenerationPlan, float]  # a plan and the seconds it stays shared

MAX_PLAN_BYTES = 256 * 1024
DEFAULT_POLL_SECONDS = 0.5


class ValkeyPlans:
    """PlanCoordination on Valkey; valkey is this adapter's to close.

    ttl_seconds: how long a plan is shared (and remembered here). lock_seconds: the
    lifetime of a holder's lock, renewed every third of it while the holder plans.
    memory: this process's own copy of the plans (PlanCache(0, 0): none).
    """

    def __init__(
        self,
        valkey: Valkey,
        *,
        ttl_seconds: float,
        lock_seconds: float,
        memory: PlanCache | None = None,
        max_plan_bytes: int = MAX_PLAN_BYTES,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        wait_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or lock_seconds <= 0:
            raise ValueError("ttl_seconds and lock_seconds must be positive")
        self.valkey = valkey
        self._ttl_seconds = ttl_seconds
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._lock_seconds = lock_seconds
        self._memory = memory if memory is not None else PlanCache(0, 0)
        self._max_plan_bytes = max_plan_bytes
        self._poll_seconds = poll_seconds
        self._wait_seconds = lock_seconds if wait_seconds is None else wait_seconds
        self._clock = clock
        self._flights = InProcessPlans()  # single flight only: the cache is Valkey's

    async def plan_once(self, key: str, make: MakePlan) -> ImageGenerationPlan:
        return await self._flights.plan_once(key, partial(self._plan, key, make))

    async def ping(self) -> bool:
        """Whether Valkey answers now; a change is logged and reported (on_change)."""
        return await self.valkey.ping()

    async def aclose(self) -> None:
        await self.valkey.aclose()

    # One trip per key and process, behind the local single flight.
    async def _plan(self, key: str, make: MakePlan) -> ImageGenerationPlan:
        try:
            plan, ttl_seconds = await self._shared(key, make)
        except CoordinationUnavailable:
            plan = self._memory.get(key)
            if plan is not None:
                log.debug("planning: Valkey unavailable, plan %s from this process's memory", plan.plan_id)
                return plan
            plan, ttl_seconds = await make(), self._ttl_seconds
        # Remembered for as long as Valkey keeps it, so no replica outlives the shared copy.
        self._memory.put(key, plan, ttl_seconds)
        return plan

    async def _shared(self, key: str, make: MakePlan) -> Shared:
        """The shared plan, or the one this replica makes and shares, with the seconds
        it has left. Raises CoordinationUnavailable only before make() was called."""
        shared = await self._read(key)
        if shared is not None:
            log.debug("planning: shared cache hit for plan %s", shared[0].plan_id)
            return shared
        lock = await self._try_lock(key)
        if lock is not None:
            return await self._make_holding(key, make, lock)
        return await self._wait_for_holder(key, make)

    async def _wait_for_holder(self, key: str, make: MakePlan) -> Shared:
        """Another replica holds the lock: wait for its plan (a message wakes this, the
        cache is read every poll_seconds in any case), take over if its lock expires."""
        deadline = self._clock() + self._wait_seconds
        pubsub = self.valkey.client.pubsub()
        try:
            await self._run(lambda client: pubsub.subscribe(self._channel(key)))
            while True:
                # After subscribing, so a plan published meanwhile is read here.
                shared = await self._read(key)
                if shared is not None:
                    log.debug("planning: plan %s made by another replica", shared[0].plan_id)
                    return shared
                lock = await self._try_lock(key)
                if lock is not None:
                    log.info("planning: the replica planning this request let go without a plan "
                             "(it failed, or died and its lock lapsed); planning here")
                    return await self._make_holding(key, make, lock)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                await self._run(partial(self._message, pubsub, min(self._poll_seconds, remaining)))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        log.warning("planning: another replica has held the planning lock for %.0f s; planning here too",
                    self._wait_seconds)
        return await self._store(key, await make())

    async def _make_holding(self, key: str, make: MakePlan, lock: Lock) -> Shared:
        renewal = asyncio.ensure_future(self._renew(lock))
        try:
            # Read again: the previous holder may have stored the plan since the first read.
            shared = await self._read(key)
            if shared is not None:
                return shared
            # Valkey lost it (a restart) while this process still has it: share that one.
            plan = self._memory.get(key)
            return await self._store(key, plan if plan is not None else await make())
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(CoordinationUnavailable):
                await self._run(lambda client: lock.release())

    @staticmethod
    async def _message(pubsub: PubSub, timeout: float, client: redis.Redis) -> object:
        return await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)

    async def _renew(self, lock: Lock) -> None:
        while True:
            await asyncio.sleep(self._lock_seconds / 3)
            with contextlib.suppress(CoordinationUnavailable):  # the lock lapses; the plan is made anyway
                await self._run(lambda client: lock.reacquire())

    async def _store(self, key: str, plan: ImageGenerationPlan) -> Shared:
        """Share plan, unless one was stored first: that one is returned instead. The
        waiters are woken either way. Valkey failing here costs only the sharing."""
        data = plan.SerializeToString(deterministic=True)
        if len(data) > self._max_plan_bytes:
            log.warning("planning: plan %s is %d bytes, over the %d shared at most; not shared",
                        plan.plan_id, len(data), self._max_plan_bytes)
            return plan, self._ttl_seconds
        try:
            earlier = await self._run(
                lambda client: client.set(self._plan_key(key), data, nx=True, px=self._ttl_ms, get=True)
            )
            await self._run(lambda client: client.publish(self._channel(key), b"1"))
            if earlier is not None:
                winner = await self._read(key)  # for the time it has left
                if winner is not None:
                    return winner
        except CoordinationUnavailable:
            pass
        return plan, self._ttl_seconds

    async def _read(self, key: str) -> Shared | None:
        """The shared plan and the seconds it has left, or None."""

        async def get_with_ttl(client: redis.Redis) -> list[Any]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(self._plan_key(key))
                pipe.pttl(self._plan_key(key))
                return await pipe.execute()

        data, ttl_ms = await self._run(get_with_ttl)
        plan = self._parsed(data)
        if plan is None or ttl_ms <= 0:  # -2: gone; -1: no expiry, which this adapter never sets
            return None
        return plan, ttl_ms / 1000

    async def _try_lock(self, key: str) -> Lock | None:
        lock = self.valkey.client.lock(self._lock_key(key), timeout=self._lock_seconds, blocking=False)
        acquired = await self._run(lambda client: lock.acquire(blocking=False))
        return lock if acquired else None

    async def _run(self, operation: Callable[[redis.Redis], Awaitable[_T]]) -> _T:
        """valkey.run (which already turns a down Valkey and its error answers into
        CoordinationUnavailable), and a lost lock as unavailable too: per-process
        behaviour for this call rather than an error for the caller."""
        try:
            return await self.valkey.run(operation)
        except LockError as exc:
            log.debug("planning: planning lock lost: %s", exc)
            raise CoordinationUnavailable(str(exc)) from None

    def _parsed(self, data: bytes | None) -> ImageGenerationPlan | None:
        if data is None:
            return None
        try:
            plan = ImageGenerationPlan.FromString(data)
        except DecodeError:
            plan = ImageGenerationPlan()
        if not plan.plan_id:
            log.warning("planning: the shared plan cache holds something that is not a plan; ignored")
            return None
        return plan

    def _plan_key(self, key: str) -> str:
        return self.valkey.key("plan", key)

    def _lock_key(self, key: str) -> str:
        return self.valkey.key("plan-lock", key)

    def _channel(self, key: str) -> str:
        return self.valkey.key("plan-made", key)
