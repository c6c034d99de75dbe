"""Executions across replicas on Valkey: the ExecutionQueue port's cluster adapter.

- **Queue**: one Stream (``prefix:executions``), one consumer group (``workers``), one
  consumer name per process. StartExecution XADDs the execution's id; each replica's
  reader XREADGROUPs an entry whenever one of its workers is free (at most ``workers``
  at once; provider calls are capped cluster-wide by the coordination's provider slot)
  and XACKs (and XDELs) it when the execution has ended. While it runs, the worker
  XCLAIMs its entry (JUSTID) every third of the lease, which keeps the entry's idle time
  low; an entry a dead consumer left pending idles past the lease and is taken over by
  another replica's XAUTOCLAIM, which runs the execution again. The store's conditional
  write keeps that to one stored object, even if two replicas render.
- **Records**: each execution is a string (the serialized Execution) with the TTL, and an
  ``ended`` marker once it is terminal, checked by the save script, so nothing overwrites
  an ended execution; a sorted set per session (scored by create time) for listing
  newest first; a sorted set of the queued, for queue positions.
- **Announcements**: every save publishes the WatchExecutionResponse on
  ``prefix:events:{id}`` and ``prefix:session:{session_id}``, readable on any replica;
  a watcher that hears nothing for a while reads the record again (a lost message costs
  one idle interval, not a hang).
- **Cancel**: a flag with the TTL, published on ``prefix:cancel``; the replica running it
  (which subscribes) sets the worker's cancel event, and every worker also checks its
  flag at each XCLAIM. A cancel that finds the execution still queued ends it itself.
- **request_id**: a hash bound to session and plan (Stripe-style, like ExecutePlan's
  records, with check_binding), holding the execution it started.

Unlike the render coordination, executions need Valkey: while it does not answer,
every method raises ExecutionsUnavailable (StartExecution answers UNAVAILABLE; what runs
goes on, and its updates are lost until Valkey is back). ExecutePlan is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from google.protobuf.message import DecodeError
from redis.exceptions import ResponseError

from executor_service.coordination.request_records import check_binding
from executor_service.ports import TERMINAL_STATES, ExecutionEvent, PageCursor, RunExecution, end_cancelled
from imagegen.errors import ExecutionsUnavailable
from imagegen.v1.executor_service_pb2 import Execution, ExecutionState, WatchExecutionResponse
from imagegen_runtime.valkey import CoordinationUnavailable, Valkey

log = logging.getLogger(__name__)

_T = TypeVar("_T")
GROUP = "workers"
DEFAULT_LEASE_SECONDS = 15.0
WATCH_IDLE_SECONDS = 2.0  # a watcher that hears nothing this long reads the record again

# KEYS record, ended, session index; ARGV execution, ttl ms, create us, id, terminal (1/0), event, channels...
_CREATE = """
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] == '1' then redis.call('set', KEYS[2], '1', 'PX', ARGV[2]) end
redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
redis.call('pexpire', KEYS[3], ARGV[2])
for i = 7, #ARGV do redis.call('publish', ARGV[i], ARGV[6]) end
return 1
"""
# KEYS record, ended; ARGV execution, ttl ms, terminal (1/0), event, channels... 0: ended or gone.
_SAVE = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('exists', KEYS[2]) == 1 then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then redis.call('set', KEYS[2], '1', 'PX', ARGV[2]) end
for i = 5, #ARGV do redis.call('publish', ARGV[i], ARGV[4]) end
return 1
"""
# KEYS binding; ARGV session, plan, execution id, ttl ms. nil when bound now; else {session, plan, execution}.
_BIND = """
if redis.call('hsetnx', KEYS[1], 'session', ARGV[1]) == 1 then
  redis.call('hset', KEYS[1], 'plan', ARGV[2], 'execution', ARGV[3])
  redis.call('pexpire', KEYS[1], ARGV[4])
  return false
end
return redis.call('hmget', KEYS[1], 'session', 'plan', 'execution')
"""

# KEYS binding; ARGV execution id. Deletes the request_id binding only while it still names
# that execution (once expired, the request_id may have been bound again by another session).
_UNBIND = """
if redis.call('hget', KEYS[1], 'execution') == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# A session's index is read this many executions at a time when it is forgotten.
FORGET_BATCH = 100


class ExecutionQueueObserver(Protocol):
    """What the Valkey queue tells the wiring's metrics."""

    def execution_taken_over(self) -> None:
        """This replica took an execution left pending by a consumer gone quiet (XAUTOCLAIM)."""


class NoExecutionQueueObserver:
    def execution_taken_over(self) -> None:
        pass


def consumer_name() -> str:
    """This process's consumer name: unique per process, readable in XINFO."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ValkeyExecutionQueue:
    """The ExecutionQueue port across every replica sharing valkey (and its prefix).

    workers: executions this replica runs at once; ttl_seconds: how long a record is
    kept after its last change; lease_seconds: how long an entry may idle before another
    replica takes it over (a running one is kept fresh every third of it). valkey is
    the coordination's, closed by its owner; observer is told of takeovers (metrics)."""

    def __init__(
        self,
        valkey: Valkey,
        *,
        workers: int,
        ttl_seconds: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        consumer: str | None = None,
        block_seconds: float | None = None,
        observer: ExecutionQueueObserver | None = None,
    ) -> None:
        self._observer: ExecutionQueueObserver = observer or NoExecutionQueueObserver()
        self._valkey = valkey
        self._workers = max(1, workers)
        self._ttl_ms = max(1, round(ttl_seconds * 1000))
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._every = lease_seconds / 3
        self._consumer = consumer or consumer_name()
        # A blocking read must end well within the client's socket timeout.
        timeout = valkey.client.connection_pool.connection_kwargs.get("socket_timeout") or 1.0
        self._block_ms = max(1, round((block_seconds if block_seconds is not None else timeout / 2) * 1000))
        self._stream = valkey.key("executions")
        self._queued_key = valkey.key("executions", "queued")
        self._cancel_channel = valkey.key("cancel")
        client = valkey.client
        self._create_script = client.register_script(_CREATE)
        self._save_script = client.register_script(_SAVE)
        self._bind_script = client.register_script(_BIND)
        self._unbind_script = client.register_script(_UNBIND)
        self._running: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._group_ready = False

    # -- records ---------------------------------------------------------------------

    async def bind_request(self, request_id: str, session_id: str, plan_id: str, execution_id: str) -> str | None:
        key = self._binding(request_id)
        bound = await self._run(lambda _: self._bind_script(keys=[key], args=[session_id, plan_id, execution_id, self._ttl_ms]))
        if bound is None:
            return None
        session, plan, earlier = (_text(part) for part in bound)
        check_binding(session, plan, session_id, plan_id)
        return earlier

    async def create(self, execution: Execution) -> None:
        execution_id = _id(execution)
        terminal = execution.state in TERMINAL_STATES
        queued = execution.state == ExecutionState.EXECUTION_STATE_QUEUED
        keys = [self._record(execution_id), self._ended(execution_id), self._session_index(execution.session_id)]
        args = [
            execution.SerializeToString(), self._ttl_ms, execution.create_time.ToMicroseconds(), execution_id,
            "1" if terminal else "0", WatchExecutionResponse(execution=execution).SerializeToString(),
            *self._channels(execution),
        ]

        async def create(client):  # type: ignore[no-untyped-def]
            await self._ensure_group(client)
            await self._create_script(keys=keys, args=args)
            if queued:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zadd(self._queued_key, {execution_id: execution.create_time.ToMicroseconds()})
                    pipe.xadd(self._stream, {"execution": execution_id})
                    await pipe.execute()

        await self._run(create)

    async def get(self, execution_id: str) -> Execution | None:
        return (await self._get_many([execution_id]))[0]

    async def _get_many(self, ids: list[str]) -> list[Execution | None]:
        """The executions of ids, in one round trip (records and queue positions)."""
        if not ids:
            return []

        async def read(client):  # type: ignore[no-untyped-def]
            async with client.pipeline(transaction=False) as pipe:
                for execution_id in ids:
                    pipe.get(self._record(execution_id))
                    pipe.zrank(self._queued_key, execution_id)
                return await pipe.execute()

        answers = await self._run(read)
        found: list[Execution | None] = []
        for data, rank in zip(answers[::2], answers[1::2], strict=True):
            execution = _parse(data)
            if execution is not None and execution.state == ExecutionState.EXECUTION_STATE_QUEUED and rank is not None:
                execution.queue_position = int(rank)
            found.append(execution)
        return found

    async def page(self, session_id: str, limit: int, after: PageCursor | None) -> list[Execution]:
        """Reads on past index entries whose record has expired (and drops them), so a
        page is short only at the end of the list."""
        index = self._session_index(session_id)
        executions: list[Execution] = []
        while len(executions) < limit:
            want = limit - len(executions)
            entries = await self._index_page(index, want, after)
            if not entries:
                break
            ids = [execution_id for _, execution_id in entries]
            found = await self._get_many(ids)
            executions += [execution for execution in found if execution is not None]
            gone = [execution_id for execution_id, execution in zip(ids, found, strict=True) if execution is None]
            if gone:
                with contextlib.suppress(ExecutionsUnavailable):
                    await self._run(lambda client, gone=gone: client.zrem(index, *gone))
            after = PageCursor(*entries[-1])
            if len(entries) < want:
                break
        return executions

    async def _index_page(self, index: str, count: int, after: PageCursor | None) -> list[tuple[int, str]]:
        """Up to count (create us, id) of the session's index, newest first, after after."""
        top: int | str = "+inf" if after is None else after.create_us

        async def read(client):  # type: ignore[no-untyped-def]
            ties = 0 if after is None else await client.zcount(index, after.create_us, after.create_us)
            return await client.zrevrangebyscore(index, top, "-inf", start=0, num=count + ties, withscores=True)

        entries = [(int(score), _text(member)) for member, score in await self._run(read)]
        if after is not None:
            entries = [entry for entry in entries if entry < (after.create_us, after.execution_id)]
        return entries[:count]

    async def save(self, event: ExecutionEvent) -> bool:
        execution = event.execution
        execution_id = _id(execution)
        terminal = execution.state in TERMINAL_STATES
        stored = Execution()
        stored.CopyFrom(execution)
        message = WatchExecutionResponse(execution=execution, preview=event.preview).SerializeToString()
        keys = [self._record(execution_id), self._ended(execution_id)]
        args = [stored.SerializeToString(), self._ttl_ms, "1" if terminal else "0", message, *self._channels(execution)]
        saved = await self._run(lambda _: self._save_script(keys=keys, args=args))
        return bool(saved)

    async def request_cancel(self, execution_id: str) -> Execution | None:
        found = await self.get(execution_id)
        if found is None or found.state in TERMINAL_STATES:
            return found

        async def flag(client):  # type: ignore[no-untyped-def]
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._cancel_flag(execution_id), b"1", px=self._ttl_ms)
                pipe.publish(self._cancel_channel, execution_id)
                pipe.zrem(self._queued_key, execution_id)
                return await pipe.execute()

        *_, was_queued = await self._run(flag)
        local = self._running.get(execution_id)
        if local is not None:
            local.set()
        if was_queued:  # no worker has it: end it here
            end_cancelled(found)
            await self.save(ExecutionEvent(found))
        return await self.get(execution_id)

    async def forget_session(self, session_id: str) -> int:
        """FORGET_BATCH index entries at a time: cancel those not ended (as request_cancel
        does), then delete their records, ended markers, queue positions, request_id
        bindings and index entries; how many there were. The cancel flag of one still
        running is kept (it expires with the TTL): it is what stops a worker that missed
        the announcement, at its next lease renewal."""
        index = self._session_index(session_id)
        forgotten = 0
        while members := await self._run(lambda client: client.zrange(index, 0, FORGET_BATCH - 1)):
            ids = [_text(member) for member in members]
            found = await self._get_many(ids)
            running: set[str] = set()
            for execution_id, execution in zip(ids, found, strict=True):
                if execution is not None and execution.state not in TERMINAL_STATES:
                    after = await self.request_cancel(execution_id)
                    if after is not None and after.state not in TERMINAL_STATES:
                        running.add(execution_id)
            bindings = [(e.request_id, _id(e)) for e in found if e is not None and e.request_id]

            async def forget(client, ids=ids, running=running, bindings=bindings):  # type: ignore[no-untyped-def]
                async with client.pipeline(transaction=True) as pipe:
                    for execution_id in ids:
                        pipe.delete(self._record(execution_id), self._ended(execution_id))
                        if execution_id not in running:
                            pipe.delete(self._cancel_flag(execution_id))
                    pipe.zrem(self._queued_key, *ids)
                    pipe.zrem(index, *ids)
                    for request_id, execution_id in bindings:
                        await self._unbind_script(keys=[self._binding(request_id)], args=[execution_id], client=pipe)
                    await pipe.execute()

            await self._run(forget)
            forgotten += len(ids)
        return forgotten

    # -- watching --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, execution_id: str) -> AsyncIterator[AsyncIterator[ExecutionEvent]]:
        async with self._subscription(self._valkey.key("events", execution_id)) as next_message:

            async def events() -> AsyncIterator[ExecutionEvent]:
                while True:
                    message = await next_message(WATCH_IDLE_SECONDS)
                    if message is not None:
                        yield message
                        continue
                    current = await self.get(execution_id)  # heard nothing: look
                    if current is not None:
                        yield ExecutionEvent(current)

            yield events()

    @contextlib.asynccontextmanager
    async def watch_session(self, session_id: str) -> AsyncIterator[AsyncIterator[ExecutionEvent]]:
        async with self._subscription(self._valkey.key("session", session_id)) as next_message:

            async def events() -> AsyncIterator[ExecutionEvent]:
                while True:
                    message = await next_message(WATCH_IDLE_SECONDS)
                    if message is not None:
                        yield message

            yield events()

    @contextlib.asynccontextmanager
    async def _subscription(
        self, channel: str
    ) -> AsyncIterator[Callable[[float], Awaitable[ExecutionEvent | None]]]:
        pubsub = self._valkey.client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._run(lambda _: pubsub.subscribe(channel))

            async def next_message(timeout: float) -> ExecutionEvent | None:
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    # Each read within the socket timeout; the loop makes up the rest.
                    wait = min(left, self._block_ms / 1000)
                    message = await self._run(
                        lambda _: pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                    )
                    if message is not None and message.get("type") == "message":
                        try:
                            response = WatchExecutionResponse.FromString(message["data"])
                        except DecodeError:
                            continue
                        return ExecutionEvent(
                            response.execution, response.preview if response.HasField("preview") else None
                        )
                return None

            yield next_message
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- workers -----------------------------------------------------------------------

    def serve(self, run: RunExecution) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            for coroutine in (self._read(run), self._listen_for_cancels()):
                task = loop.create_task(coroutine)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, run: RunExecution) -> None:
        """Take entries while a worker is free: first any a dead consumer left (every
        third of the lease), else new ones; run each in its own task."""
        free = asyncio.Semaphore(self._workers)
        claimed_at = 0.0
        while True:
            await free.acquire()
            entry: tuple[str, str] | None = None
            try:
                if time.monotonic() - claimed_at >= self._every:
                    claimed_at = time.monotonic()
                    entry = await self._run(self._claim_abandoned)
                if entry is None:
                    entry = await self._run(self._read_new)
            except ExecutionsUnavailable:
                free.release()
                await asyncio.sleep(self._every)  # Valkey does not answer: try again later
                continue
            except BaseException:
                free.release()
                raise
            if entry is None:
                free.release()
                continue
            task = asyncio.ensure_future(self._work(run, *entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: free.release())

    async def _claim_abandoned(self, client: Any) -> tuple[str, str] | None:
        await self._ensure_group(client)
        answer = await client.xautoclaim(self._stream, GROUP, self._consumer, self._lease_ms, "0-0", count=1)
        entries = answer[1] if len(answer) > 1 else []
        for entry_id, fields in entries:
            if fields:
                log.info("executions: took over %s, left pending by a consumer gone quiet", _field(fields))
                self._observer.execution_taken_over()
                return _text(entry_id), _field(fields)
        return None

    async def _read_new(self, client: Any) -> tuple[str, str] | None:
        await self._ensure_group(client)
        answer = await client.xreadgroup(GROUP, self._consumer, {self._stream: ">"}, count=1, block=self._block_ms)
        for _, entries in answer or []:
            for entry_id, fields in entries:
                return _text(entry_id), _field(fields)
        return None

    async def _work(self, run: RunExecution, entry_id: str, execution_id: str) -> None:
        cancel = self._running[execution_id] = asyncio.Event()
        keeper = asyncio.ensure_future(self._keep_entry(entry_id, execution_id, cancel))
        try:
            with contextlib.suppress(ExecutionsUnavailable):
                await self._run(lambda client: client.zrem(self._queued_key, execution_id))
                if await self._run(lambda client: client.exists(self._cancel_flag(execution_id))):
                    cancel.set()
            await run(execution_id, cancel)
        except ExecutionsUnavailable:
            log.warning("executions: %s could not be recorded to its end (Valkey does not answer)", execution_id)
            return  # left pending: a replica takes it over once Valkey answers and the lease lapses
        except Exception:
            log.exception("executions: the worker of %s failed", execution_id)
        finally:
            keeper.cancel()
            self._running.pop(execution_id, None)
        with contextlib.suppress(ExecutionsUnavailable):
            await self._run(lambda client: self._ack(client, entry_id))

    async def _ack(self, client: Any, entry_id: str) -> None:
        async with client.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, GROUP, entry_id)
            pipe.xdel(self._stream, entry_id)
            await pipe.execute()

    async def _keep_entry(self, entry_id: str, execution_id: str, cancel: asyncio.Event) -> None:
        """Keep the entry's idle time low while it runs, and check its cancel flag."""
        while True:
            await asyncio.sleep(self._every)  # the lease's renewal period
            with contextlib.suppress(ExecutionsUnavailable):
                await self._run(
                    lambda client: client.xclaim(self._stream, GROUP, self._consumer, 0, [entry_id], justid=True)
                )
                if await self._run(lambda client: client.exists(self._cancel_flag(execution_id))):
                    cancel.set()

    async def _listen_for_cancels(self) -> None:
        """Set the cancel event of the executions this replica runs, as cancels are announced."""
        while True:
            try:
                pubsub = self._valkey.client.pubsub(ignore_subscribe_messages=True)
                try:
                    await self._run(lambda _: pubsub.subscribe(self._cancel_channel))
                    while True:
                        message = await self._run(
                            lambda _: pubsub.get_message(ignore_subscribe_messages=True, timeout=self._block_ms / 1000)
                        )
                        if message is not None and message.get("type") == "message":
                            running = self._running.get(_text(message["data"]))
                            if running is not None:
                                running.set()
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except ExecutionsUnavailable:
                await asyncio.sleep(self._every)  # the workers' own flag checks cover the gap

    # -- helpers -----------------------------------------------------------------------

    async def _ensure_group(self, client: Any) -> None:
        if self._group_ready:
            return
        try:
            await client.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _run(self, operation: Callable[[Any], Awaitable[_T]]) -> _T:
        try:
            return await self._valkey.run(operation)
        except CoordinationUnavailable as exc:
            if "NOGROUP" in str(exc):
                self._group_ready = False  # Valkey restarted empty: make the group again
            raise ExecutionsUnavailable("executions are unavailable: the coordination engine does not answer") from None

    def _channels(self, execution: Execution) -> list[str]:
        return [self._valkey.key("events", _id(execution)), self._valkey.key("session", execution.session_id)]

    def _record(self, execution_id: str) -> str:
        return self._valkey.key("execution", execution_id)

    def _ended(self, execution_id: str) -> str:
        return self._valkey.key("execution", execution_id, "ended")

    def _cancel_flag(self, execution_id: str) -> str:
        return self._valkey.key("execution", execution_id, "cancel")

    def _binding(self, request_id: str) -> str:
        return self._valkey.key("execution-request", request_id)

    def _session_index(self, session_id: str) -> str:
        return self._valkey.key("session-executions", session_id)


def _id(execution: Execution) -> str:
    return execution.name.removeprefix("executions/")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any]) -> str:
    value = fields.get(b"execution", fields.get("execution", b""))
    return _text(value)


def _parse(data: bytes | None) -> Execution | None:
    if data is None:
        return None
    try:
        return Execution.FromString(data)
    except DecodeError:
        log.warning("executions: a record does not parse; treated as gone")
        return None
