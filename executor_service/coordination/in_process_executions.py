"""Executions within one process: the ExecutionQueue port's embedded adapter.

Records live in memory for the TTL (and at most max_records, oldest first out); the
queue is an asyncio.Queue taken by a bounded number of worker tasks; watchers get
events through bounded queues (a watcher that falls behind loses its oldest events,
never the newest). The same semantics as the Valkey adapter, within one process: what
runs here ends when the process does. Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable


from executor_service.coordination.request_records import check_binding
from executor_service.ports import TERMINAL_STATES, ExecutionEvent, PageCursor, RunExecution, end_cancelled
from imagegen.v1.executor_service_pb2 import Execution, ExecutionState

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 32
DEFAULT_TTL_SECONDS = 86_400
DEFAULT_MAX_RECORDS = 10_000
WATCHER_BACKLOG = 256  # events a watcher may fall behind by



class _Watchers:
    def __init__(self) -> None:
        self._by_key: dict[str, set[asyncio.Queue[ExecutionEvent]]] = {}

    @contextlib.asynccontextmanager
    async def watch(self, key: str) -> AsyncIterator[AsyncIterator[ExecutionEvent]]:
        queue: asyncio.Queue[ExecutionEvent] = asyncio.Queue(WATCHER_BACKLOG)
        self._by_key.setdefault(key, set()).add(queue)

        async def events() -> AsyncIterator[ExecutionEvent]:
            while True:
                yield await queue.get()

        try:
            yield events()
        finally:
            watchers = self._by_key.get(key, set())
            watchers.discard(queue)
            if not watchers:
                self._by_key.pop(key, None)

    def tell(self, key: str, event: ExecutionEvent) -> None:
        for queue in self._by_key.get(key, ()):
            if queue.full():
                queue.get_nowait()  # the oldest goes: the newest says where it is now
            queue.put_nowait(event)


class InProcessExecutionQueue:
    """workers: executions run at once by this process (the provider cap still applies
    within them); ttl_seconds: how long a record is kept after its last change."""

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_records: int = DEFAULT_MAX_RECORDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._workers = max(1, workers)
        self._ttl = ttl_seconds
        self._max_records = max_records
        self._clock = clock
        self._records: OrderedDict[str, tuple[Execution, float]] = OrderedDict()  # id -> (execution, expiry)
        self._requests: dict[str, tuple[str, str, str]] = {}  # request_id -> (session, plan, execution id)
        self._queued: OrderedDict[str, None] = OrderedDict()  # ids waiting, in order
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._running: dict[str, asyncio.Event] = {}
        self._by_execution = _Watchers()
        self._by_session = _Watchers()
        self._tasks: list[asyncio.Task[None]] = []

    async def bind_request(self, request_id: str, session_id: str, plan_id: str, execution_id: str) -> str | None:
        self._expire()
        bound = self._requests.get(request_id)
        if bound is not None and bound[2] in self._records:
            check_binding(bound[0], bound[1], session_id, plan_id)
            return bound[2]
        self._requests[request_id] = (session_id, plan_id, execution_id)
        return None

    async def create(self, execution: Execution) -> None:
        execution_id = _id(execution)
        self._keep(execution_id, execution)
        if execution.state == ExecutionState.EXECUTION_STATE_QUEUED:
            self._queued[execution_id] = None
            self._pending.put_nowait(execution_id)
        self._tell(ExecutionEvent(_copy(execution)))

    async def get(self, execution_id: str) -> Execution | None:
        self._expire()
        found = self._records.get(execution_id)
        if found is None:
            return None
        execution = _copy(found[0])
        if execution.state == ExecutionState.EXECUTION_STATE_QUEUED and execution_id in self._queued:
            execution.queue_position = list(self._queued).index(execution_id)
        return execution

    async def page(self, session_id: str, limit: int, after: PageCursor | None) -> list[Execution]:
        self._expire()
        mine = [
            (execution.create_time.ToMicroseconds(), execution_id)
            for execution_id, (execution, _) in self._records.items()
            if execution.session_id == session_id
        ]
        mine.sort(reverse=True)
        if after is not None:
            mine = [item for item in mine if item < (after.create_us, after.execution_id)]
        found = [await self.get(execution_id) for _, execution_id in mine[:limit]]
        return [execution for execution in found if execution is not None]

    async def save(self, event: ExecutionEvent) -> bool:
        execution_id = _id(event.execution)
        found = self._records.get(execution_id)
        if found is None or found[0].state in TERMINAL_STATES:
            return False
        self._keep(execution_id, event.execution)
        self._tell(ExecutionEvent(_copy(event.execution), event.preview))
        return True

    async def request_cancel(self, execution_id: str) -> Execution | None:
        found = await self.get(execution_id)
        if found is None or found.state in TERMINAL_STATES:
            return found
        running = self._running.get(execution_id)
        if running is not None:
            running.set()  # its worker cancels the render and records CANCELLED
            return found
        self._queued.pop(execution_id, None)
        end_cancelled(found)
        await self.save(ExecutionEvent(found))
        return await self.get(execution_id)

    async def forget_session(self, session_id: str) -> int:
        """Cancel the session's executions that have not ended (as request_cancel does),
        then forget every one of its records and its request_id bindings; how many
        records there were. A walk of the records: at most max_records."""
        self._expire()
        mine = [
            execution_id for execution_id, (execution, _) in self._records.items() if execution.session_id == session_id
        ]
        for execution_id in mine:
            await self.request_cancel(execution_id)
        for execution_id in mine:
            self._records.pop(execution_id, None)
            self._queued.pop(execution_id, None)  # a worker taking it finds nothing to run
        self._requests = {k: v for k, v in self._requests.items() if v[0] != session_id}
        return len(mine)

    def watch(self, execution_id: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[ExecutionEvent]]:
        return self._by_execution.watch(execution_id)

    def watch_session(self, session_id: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[ExecutionEvent]]:
        return self._by_session.watch(session_id)

    def serve(self, run: RunExecution) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._work(run), name=f"execution-worker-{n}") for n in range(self._workers)]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, run: RunExecution) -> None:
        while True:
            execution_id = await self._pending.get()
            if self._queued.pop(execution_id, False) is False:
                continue  # cancelled while it waited
            cancel = self._running[execution_id] = asyncio.Event()
            try:
                await run(execution_id, cancel)
            except Exception:  # noqa: BLE001 - one execution must not stop the worker
                log.exception("execution %s: the worker failed", execution_id)
            finally:
                self._running.pop(execution_id, None)

    def _keep(self, execution_id: str, execution: Execution) -> None:
        self._records[execution_id] = (_copy(execution), self._clock() + self._ttl)
        self._records.move_to_end(execution_id)
        while len(self._records) > self._max_records:
            self._records.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        while self._records:
            execution_id, (_, expiry) = next(iter(self._records.items()))
            if expiry > now:
                break
            del self._records[execution_id]
        if len(self._requests) > 2 * self._max_records:
            self._requests = {k: v for k, v in self._requests.items() if v[2] in self._records}

    def _tell(self, event: ExecutionEvent) -> None:
        self._by_execution.tell(_id(event.execution), event)
        self._by_session.tell(event.execution.session_id, event)


def _id(execution: Execution) -> str:
    return execution.name.removeprefix("executions/")


def _copy(execution: Execution) -> Execution:
    copy = Execution()
    copy.CopyFrom(execution)
    return copy
