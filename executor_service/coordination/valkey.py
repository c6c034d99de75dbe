"""Coordination across replicas on Valkey: the ExecutionCoordination port's cluster adapter.

- **One render per plan**: a lease per object key, redis-py's asyncio ``Lock`` (SET NX
  with an expiry, a random token; ``reacquire`` in Lua), renewed every third of its life
  while held. At the end, one script does the Lock's token-checked delete and publishes
  on ``prefix:done:{key}`` (one round trip instead of two). A caller that finds the lease
  held waits for that message, polling every third of the lease besides, then enters
  and looks in the store again. A holder that dies stops renewing: its lease expires and a
  waiter takes over. The lease is advisory (a paused holder can outlive it); the store's
  conditional write is the fence that keeps every result true.
- **request_id records**, Stripe-style: a hash ``{session, plan, owner, result}`` made by
  one atomic claim with a TTL, bound to the session and plan of the first call (a
  mismatch is InvalidRequest, as in-process); the first result is kept when it is small
  enough; a failed call deletes its claim only if it is still pending and its own.
- **Render quotas** per session: a sorted set of the session's counted renders scored by
  Valkey's clock, trimmed and checked against every limit and added to in one script (a
  sliding-window log); a failed render removes its entry. The session's request_ids are
  kept in a set beside their records, so DeleteSessionImages can forget them.
- **Provider calls**: a sorted set of holders scored by expiry (Valkey's clock), taken in
  Lua when fewer than the cap hold it, renewed while held, freed with a publish on
  ``prefix:slots:free``; a provider's Retry-After is a key with that expiry, which every
  replica's next provider call waits out.

Valkey is never a correctness dependency: any call made while it does not answer
(``CoordinationUnavailable``) is answered by the in-process adapter this one holds, so
the service keeps serving, and the next call that reaches Valkey coordinates again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from google.protobuf.message import DecodeError
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from executor_service.coordination.in_process import InProcessCoordination, check_pause, once
from executor_service.coordination.request_records import check_binding
from executor_service.coordination.wakeups import Wakeups
from executor_service.ports import QuotaLimit
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.errors import QuotaExceeded
from imagegen.v1.image_plan_pb2 import ImageGenerationResult
from imagegen_runtime.valkey import CoordinationUnavailable, Valkey

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
DEFAULT_REQUEST_TTL_SECONDS = 86_400
# A result is a few KB (its plan included, tens of KB at most); anything larger keeps
# only its binding, and a retry finds the image in the store instead.
MAX_RESULT_BYTES = 256 * 1024

# KEYS[1] the lease; ARGV[1] the holder's token, ARGV[2] the channel that announces its end.
# Lock's own token-checked release, and the announcement, in one round trip.
_END_LEASE = """
local released = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
  released = redis.call('del', KEYS[1])
end
redis.call('publish', ARGV[2], '1')
return released
"""
# KEYS[1] the record, KEYS[2] the session's set of request_ids; ARGV session, plan, owner
# token, TTL in ms, request_id. nil when this call claimed it; else {session, plan, result or nil}.
_CLAIM = """
if redis.call('hsetnx', KEYS[1], 'session', ARGV[1]) == 1 then
  redis.call('hset', KEYS[1], 'plan', ARGV[2], 'owner', ARGV[3])
  redis.call('pexpire', KEYS[1], ARGV[4])
  redis.call('sadd', KEYS[2], ARGV[5])
  if redis.call('pttl', KEYS[2]) < tonumber(ARGV[4]) then redis.call('pexpire', KEYS[2], ARGV[4]) end
  return false
end
return redis.call('hmget', KEYS[1], 'session', 'plan', 'result')
"""
# KEYS[1] the record; ARGV[1] the serialized result. The first result stays.
_COMPLETE = """
if redis.call('exists', KEYS[1]) == 1 and redis.call('hexists', KEYS[1], 'result') == 0 then
  redis.call('hset', KEYS[1], 'result', ARGV[1])
  return 1
end
return 0
"""
# KEYS[1] the record; ARGV[1] the owner token. Only a pending claim of this owner goes.
_RELEASE = """
if redis.call('hget', KEYS[1], 'owner') == ARGV[1] and redis.call('hexists', KEYS[1], 'result') == 0 then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS[1] the holders (member: holder id, score: expiry in ms), KEYS[2] the pause;
# ARGV holder id, expiry in ms, cap (0: none). 0: go ahead; -1: full; n > 0: paused n ms more.
_TAKE_SLOT = """
local paused = redis.call('pttl', KEYS[2])
if paused > 0 then return paused end
local cap = tonumber(ARGV[3])
if cap == 0 then return 0 end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
if redis.call('zcard', KEYS[1]) < cap then
  redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 0
end
return -1
"""
# KEYS[1] the holders; ARGV holder id, expiry in ms. 1 when still held and renewed.
_RENEW_SLOT = """
if not redis.call('zscore', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zadd', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
# KEYS[1] the pause; ARGV[1] ms. A pause only ever grows.
_PAUSE = """
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

# KEYS[1] the session's renders (member: token, score: time in ms, Valkey's clock);
# ARGV token, the longest window in ms, then (renders, window ms) per limit.
# 0: counted; else {index of the limit reached (1-based), ms until a slot frees}.
_TAKE_QUOTA = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local i = 3
while i < #ARGV do
  local renders, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local within = redis.call('zrangebyscore', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES')
  local count = #within / 2
  if count >= renders then
    local oldest = tonumber(within[(count - renders) * 2 + 2])
    return {(i - 1) / 2, math.max(oldest + window - now, 1)}
  end
  i = i + 2
end
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
return 0
"""
# KEYS[1] the session's set of request_ids; ARGV[1] the prefix of a record key.
# Deletes the records and the set; returns how many records there were.
_FORGET_SESSION = """
local ids = redis.call('smembers', KEYS[1])
for _, id in ipairs(ids) do redis.call('del', ARGV[1] .. id) end
redis.call('del', KEYS[1])
return #ids
"""

_FULL = -1


class CoordinationObserver(Protocol):
    """What the adapter tells the wiring's metrics."""

    def lease_waited(self) -> None:
        """A render waited for another replica's lease on the same key."""

    def lease_taken_over(self) -> None:
        """A lease was taken after its holder's expired, with no end announced (the holder died)."""

    def fell_back(self, operation: str) -> None:
        """operation was answered per process because Valkey did not answer."""


class NoCoordinationObserver:
    def lease_waited(self) -> None:
        pass

    def lease_taken_over(self) -> None:
        pass

    def fell_back(self, operation: str) -> None:
        pass


class ValkeyCoordination:
    """The ExecutionCoordination port across every replica sharing valkey (and its prefix).

    provider_concurrency: provider calls at once across the cluster (0: no cap; also
    the per-process cap while Valkey is down). lease_seconds: a render lease's and a
    provider slot's life without renewal, so how long a dead holder blocks others;
    waiters also poll every third of it. request_ttl_seconds: how long a request_id
    is remembered. Owns valkey: aclose() closes it.
    """

    def __init__(
        self,
        valkey: Valkey,
        *,
        provider_concurrency: int = 0,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        request_ttl_seconds: float = DEFAULT_REQUEST_TTL_SECONDS,
        fallback: InProcessCoordination | None = None,
        observer: CoordinationObserver | None = None,
        resubscribe_interval: float = 1.0,
    ) -> None:
        self._valkey = valkey
        self._cap = max(provider_concurrency, 0)
        self._lease_seconds = lease_seconds
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._every = lease_seconds / 3  # renewal period, and the waiters' poll
        self._request_ttl_ms = max(1, round(request_ttl_seconds * 1000))
        self._fallback = fallback if fallback is not None else InProcessCoordination(provider_concurrency)
        self._observer: CoordinationObserver = observer or NoCoordinationObserver()
        client = valkey.client
        self._end_lease_script = client.register_script(_END_LEASE)
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)
        self._take_slot_script = client.register_script(_TAKE_SLOT)
        self._renew_slot = client.register_script(_RENEW_SLOT)
        self._pause = client.register_script(_PAUSE)
        self._take_quota = client.register_script(_TAKE_QUOTA)
        self._forget_session = client.register_script(_FORGET_SESSION)
        self._slots_key = valkey.key("slots")
        self._slots_free = valkey.key("slots", "free")
        self._pause_key = valkey.key("provider", "pause")
        self.wakeups = Wakeups(
            valkey, (valkey.key("done", "*"), self._slots_free), retry_interval=resubscribe_interval
        )
        self._owned: dict[str, str] = {}  # request_id -> owner token of the claims this process made
        self._background: set[asyncio.Task[object]] = set()

    @property
    def valkey(self) -> Valkey:
        """The connection this adapter owns (and closes), for the executions' queue to share."""
        return self._valkey

    def start(self) -> None:
        """Subscribe to the wake-ups now rather than at the first wait (needs a running loop)."""
        self.wakeups.start()

    # -- one render per plan -------------------------------------------------------

    @contextlib.asynccontextmanager
    async def render_lease(self, key: str) -> AsyncIterator[None]:
        lock = await self._take_lease(key)
        if lock is None:  # Valkey does not answer: this process's single flight is all there is
            yield
            return
        renewal = asyncio.ensure_future(self._keep_lease(lock, key))
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.shield(self._end_lease(lock, key))

    async def _take_lease(self, key: str) -> Lock | None:
        lock = Lock(self._valkey.client, self._valkey.key("lease", key), timeout=self._lease_seconds, thread_local=False)
        token = uuid.uuid4().hex.encode()
        waited = heard_end = False
        while True:
            with self.wakeups.watch(self._valkey.key("done", key)) as ended:
                try:
                    taken = await self._undone_if_cancelled(
                        self._valkey.run(lambda _: lock.acquire(blocking=False, token=token)),
                        lambda: lock.do_release(token),
                    )
                except CoordinationUnavailable:
                    self._observer.fell_back("render_lease")
                    return None
                if taken:
                    break
                if not waited:
                    waited = True
                    self._observer.lease_waited()
                    log.info("coordination: %s is being rendered by another replica; waiting for it", key)
                heard_end = await _woken(ended, self._every)
        if waited and not heard_end:
            self._observer.lease_taken_over()
            log.warning("coordination: took over the render of %s after its holder's lease expired", key)
        return lock

    async def _keep_lease(self, lock: Lock, key: str) -> None:
        while True:
            await asyncio.sleep(self._every)  # the renewal period
            try:
                await self._valkey.run(lambda _: lock.reacquire())
            except CoordinationUnavailable:
                continue  # renewed again once Valkey answers
            except LockError:
                # Expired (this process stalled past it) or gone (Valkey restarted empty):
                # take it back if nobody else has; the store's conditional write fences anyway.
                token = lock.local.token
                try:
                    retaken = token is not None and await self._valkey.run(lambda _, token=token: lock.do_acquire(token))
                except CoordinationUnavailable:
                    continue
                if not retaken:
                    log.warning("coordination: lost the render lease of %s to another replica", key)
                    return

    async def _end_lease(self, lock: Lock, key: str) -> None:
        """Delete the lease if it is still ours (not if it expired and another took it),
        and wake whoever waits for it, on every replica."""
        keys, args = [lock.name], [lock.local.token, self._valkey.key("done", key)]
        with contextlib.suppress(CoordinationUnavailable):
            await self._valkey.run(lambda _: self._end_lease_script(keys=keys, args=args))

    # -- provider calls ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def provider_slot(self, on_queued: Callable[[], None]) -> AsyncIterator[None]:
        queue = once(on_queued)
        holder = await self._take_slot(queue)
        if holder is None:  # Valkey does not answer: this process's own cap and pause
            async with self._fallback.provider_slot(queue):
                yield
            return
        if not self._cap:
            yield
            return
        renewal = asyncio.ensure_future(self._keep_slot(holder))
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.shield(self._free_slot(holder))

    async def _take_slot(self, queue: Callable[[], None]) -> str | None:
        """The holder id once this call may go ahead (within the cap, no pause); None
        when Valkey does not answer."""
        holder = uuid.uuid4().hex
        keys, args = [self._slots_key, self._pause_key], [holder, self._lease_ms, self._cap]
        while True:
            with self.wakeups.watch(self._slots_free) as freed:
                try:
                    answer = await self._undone_if_cancelled(
                        self._valkey.run(lambda _: self._take_slot_script(keys=keys, args=args)),
                        lambda: self._valkey.client.zrem(self._slots_key, holder),
                    )
                except CoordinationUnavailable:
                    self._observer.fell_back("provider_slot")
                    return None
                if answer == 0:
                    return holder
                if answer != _FULL:
                    check_pause(answer / 1000)
                queue()
                if answer == _FULL:
                    await _woken(freed, self._every)
                else:
                    await asyncio.sleep(answer / 1000)  # the provider's own Retry-After, set by any replica

    async def _keep_slot(self, holder: str) -> None:
        args = [holder, self._lease_ms]
        while True:
            await asyncio.sleep(self._every)  # the renewal period
            with contextlib.suppress(CoordinationUnavailable):
                if not await self._valkey.run(lambda _: self._renew_slot(keys=[self._slots_key], args=args)):
                    return  # expired or Valkey restarted empty: the call in flight finishes regardless

    async def _free_slot(self, holder: str) -> None:
        async def free(client):  # type: ignore[no-untyped-def]
            async with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self._slots_key, holder)
                pipe.publish(self._slots_free, b"1")
                return await pipe.execute()

        with contextlib.suppress(CoordinationUnavailable):
            await self._valkey.run(free)

    async def pause_provider(self, seconds: float) -> None:
        await self._fallback.pause_provider(seconds)  # kept here too, for a Valkey that goes away
        ms = math.ceil(min(seconds, MAX_RETRY_AFTER.total_seconds()) * 1000) if seconds > 0 else 0
        if ms > 0:
            try:
                await self._valkey.run(lambda _: self._pause(keys=[self._pause_key], args=[ms]))
            except CoordinationUnavailable:
                self._observer.fell_back("pause_provider")

    # -- request_id records --------------------------------------------------------

    async def claim_request(self, request_id: str, session_id: str, plan_id: str) -> ImageGenerationResult | None:
        owner = uuid.uuid4().hex
        args = [session_id, plan_id, owner, self._request_ttl_ms, request_id]
        keys = [self._record_key(request_id), self._valkey.key("session-requests", session_id)]
        try:
            record = await self._valkey.run(lambda _: self._claim(keys=keys, args=args))
        except CoordinationUnavailable:
            self._observer.fell_back("request_record")
            return await self._fallback.claim_request(request_id, session_id, plan_id)
        if record is None:
            self._owned[request_id] = owner
            return None
        bound_session, bound_plan, result = record
        check_binding(_text(bound_session), _text(bound_plan), session_id, plan_id)
        if result is None:
            return None  # the first call is still running: join it through the render lease
        try:
            return ImageGenerationResult.FromString(result)
        except DecodeError:
            log.warning("coordination: the stored result of a request_id does not parse; executing again")
            return None

    async def complete_request(self, request_id: str, result: ImageGenerationResult) -> None:
        self._owned.pop(request_id, None)
        await self._fallback.complete_request(request_id, result)  # when the claim was made there
        data = result.SerializeToString()
        if len(data) > MAX_RESULT_BYTES:
            log.info("coordination: a result of %d bytes is not kept for its request_id; a retry reuses the image", len(data))
            return
        try:
            await self._valkey.run(lambda _: self._complete(keys=[self._record_key(request_id)], args=[data]))
        except CoordinationUnavailable:
            self._observer.fell_back("request_record")

    async def release_request(self, request_id: str) -> None:
        await self._fallback.release_request(request_id)
        owner = self._owned.pop(request_id, None)
        if owner is not None:
            try:
                await self._valkey.run(lambda _: self._release(keys=[self._record_key(request_id)], args=[owner]))
            except CoordinationUnavailable:
                self._observer.fell_back("request_record")  # the claim expires with its TTL

    def _record_key(self, request_id: str) -> str:
        return self._valkey.key("request", request_id)

    async def forget_session(self, session_id: str) -> None:
        """The session's request records, found through its set of request_ids (kept as
        long as its newest record); the in-process fallback's too."""
        await self._fallback.forget_session(session_id)
        keys, args = [self._valkey.key("session-requests", session_id)], [self._record_key("")]
        try:
            await self._valkey.run(lambda _: self._forget_session(keys=keys, args=args))
        except CoordinationUnavailable:
            self._observer.fell_back("request_record")  # the records expire with their TTL

    # -- per-session render quotas ---------------------------------------------------

    async def take_render_quota(self, session_id: str, limits: tuple[QuotaLimit, ...]) -> str:
        """One sorted set per session, on Valkey's clock, shared by every replica."""
        token = uuid.uuid4().hex
        longest = max(limit.window_seconds for limit in limits) * 1000
        args: list[object] = [token, longest]
        for limit in limits:
            args += [limit.renders, limit.window_seconds * 1000]
        keys = [self._valkey.key("quota", session_id)]
        try:
            answer = await self._valkey.run(lambda _: self._take_quota(keys=keys, args=args))
        except CoordinationUnavailable:
            self._observer.fell_back("render_quota")
            return await self._fallback.take_render_quota(session_id, limits)
        if answer == 0:
            return token
        index, wait_ms = answer
        raise QuotaExceeded(session_id, limits[int(index) - 1].text, retry_after=int(wait_ms) / 1000)

    async def return_render_quota(self, session_id: str, token: str) -> None:
        await self._fallback.return_render_quota(session_id, token)  # when it was counted there
        try:
            await self._valkey.run(lambda client: client.zrem(self._valkey.key("quota", session_id), token))
        except CoordinationUnavailable:
            self._observer.fell_back("render_quota")

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        await self.wakeups.aclose()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._fallback.aclose()
        await self._valkey.aclose()

    async def _undone_if_cancelled(self, attempt: Awaitable[object], undo: Callable[[], Awaitable[object]]):  # type: ignore[no-untyped-def]
        """attempt's answer; if the caller goes away while it is under way, Valkey may
        have done it anyway, so undo it in the background rather than leave a lease or
        slot held until it expires."""
        try:
            return await attempt
        except asyncio.CancelledError:
            task = asyncio.ensure_future(self._quietly(undo))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise

    async def _quietly(self, undo: Callable[[], Awaitable[object]]) -> None:
        with contextlib.suppress(CoordinationUnavailable, LockError):
            await self._valkey.run(lambda _: undo())


async def _woken(event: asyncio.Event, timeout: float) -> bool:
    """Whether event was set within timeout (the bounded poll behind every wake-up)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
