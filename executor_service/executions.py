"""Executions that outlive the call: start, get, list, watch and cancel.

In the style of a long-running operation (Google AIP-151): StartExecution records an
Execution ("executions/{id}") and returns it at once; a worker takes it from the queue
(executor_service.ports.ExecutionQueue: in-process, or a Valkey Stream shared by every
replica) and runs it through Executor.execute, detached from any caller, so it runs to
its end whether or not anyone watches. Every change is recorded and announced:

    QUEUED --worker takes it--> RUNNING --> SUCCEEDED | FAILED
       \\                          |
        +------- cancel ----------+--> CANCELLED

A plan whose image is already stored starts SUCCEEDED. request_id makes a retried
start return the first start's Execution (bound to the session and plan, like
ExecutePlan's). Previews a provider reports are downsized (executor_service.previews)
and announced as PREVIEW events; they are not recorded. The render's progress a provider
reports becomes RENDERING events with progress_percent set, in steps of at least
PROGRESS_STEP_PERCENT and never 100 while rendering (so at most 19 of them a render);
progress_percent is 0 again once the stage leaves RENDERING.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable

from google.rpc import code_pb2, status_pb2

from executor_service.executor import Executor, accepted_plan
from executor_service.page_tokens import NotOurs, PageTokens
from executor_service.ports import (
    TERMINAL_STATES,
    DetachedRunObserver,
    ExecutionEnd,
    ExecutionEvent,
    ExecutionQueue,
    NoDetachedRunObserver,
    PageCursor,
    end_cancelled,
)
from executor_service.previews import downsize
from imagegen.catalogue import (
    DEFAULT_EXECUTIONS_PAGE_SIZE,
    EXECUTION_NAME,
    MAX_EXECUTIONS_PAGE_SIZE,
    PROGRESS_STEP_PERCENT,
    SESSION_ID,
)
from imagegen.errors import FieldViolation, ImagegenError, InvalidRequest, NotFound
from imagegen.v1.executor_service_pb2 import Execution, ExecutionPreview, ExecutionStage, ExecutionState
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import session_id_violations

log = logging.getLogger(__name__)

# CancelExecution waits this long for the worker to end a RUNNING execution before it
# answers with the execution as it then is.
DEFAULT_CANCEL_WAIT_SECONDS = 10.0

# An error as the google.rpc.Status a call would have ended with (the wiring gives
# imagegen_runtime.error_mapping.status_message; the default keeps the message alone).
DescribeError = Callable[[BaseException], status_pb2.Status]


def _plain_status(error: BaseException) -> status_pb2.Status:
    if isinstance(error, ImagegenError):
        return status_pb2.Status(code=code_pb2.UNKNOWN, message=error.message)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


_END: dict[int, ExecutionEnd] = {
    ExecutionState.EXECUTION_STATE_SUCCEEDED: "succeeded",
    ExecutionState.EXECUTION_STATE_FAILED: "failed",
    ExecutionState.EXECUTION_STATE_CANCELLED: "cancelled",
}


def is_terminal(execution: Execution) -> bool:
    return execution.state in TERMINAL_STATES


def execution_id(name: str) -> str:
    """The id in "executions/{id}"; InvalidRequest on name when it is not one."""
    match = EXECUTION_NAME.fullmatch(name)
    if match is None:
        problem = "is required" if not name else 'must be "executions/{id}" as in an Execution\'s name'
        raise InvalidRequest([FieldViolation("name", problem)])
    return match.group(1)


def _check_session(session_id: str) -> None:
    if not SESSION_ID.fullmatch(session_id):
        problem = "is required" if not session_id else "must be a session id as in a plan's session_id"
        raise InvalidRequest([FieldViolation("session_id", problem)])


class Executions:
    """The executions use case over executor (which renders and stores) and queue (which
    records, queues, announces and cancels). describe_error turns a failure into the
    Execution's error; clock gives the wall-clock time of create_time and update_time;
    page_token_key signs ListExecutions page tokens (executor_service.page_tokens: the
    same on every replica, or empty for a random key that only this process knows);
    observer is told what the workers run (metrics, in the wiring)."""

    def __init__(
        self,
        executor: Executor,
        queue: ExecutionQueue,
        *,
        describe_error: DescribeError = _plain_status,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        cancel_wait_seconds: float = DEFAULT_CANCEL_WAIT_SECONDS,
        page_token_key: bytes = b"",
        observer: DetachedRunObserver | None = None,
    ) -> None:
        self._observer: DetachedRunObserver = observer or NoDetachedRunObserver()
        self._page_tokens = PageTokens(page_token_key)
        self._executor = executor
        self._queue = queue
        self._describe_error = describe_error
        self._clock = clock
        self._cancel_wait = cancel_wait_seconds

    def start_workers(self) -> None:
        """Start taking queued executions (needs a running event loop)."""
        self._queue.serve(self.run)

    async def aclose(self) -> None:
        await self._queue.aclose()

    # -- the calls ---------------------------------------------------------------------

    async def start(self, plan: ImageGenerationPlan | None, *, request_id: str = "") -> Execution:
        """A new execution of plan, QUEUED (or SUCCEEDED when its image is stored); the
        first start's execution for a request_id seen before. InvalidRequest for a bad
        plan or request_id; ExecutionsUnavailable when it cannot be recorded."""
        accepted = accepted_plan(plan, request_id)
        new_id = uuid.uuid4().hex
        if request_id:
            earlier = await self._queue.bind_request(request_id, accepted.session_id, accepted.plan_id, new_id)
            if earlier is not None:
                found = await self._queue.get(earlier)
                if found is not None:
                    return found
        execution = Execution(
            name=f"executions/{new_id}",
            state=ExecutionState.EXECUTION_STATE_QUEUED,
            stage=ExecutionStage.EXECUTION_STAGE_ACCEPTED,
            plan=accepted,
            session_id=accepted.session_id,
            request_id=request_id,
        )
        now = self._clock()
        execution.create_time.FromDatetime(now)
        execution.update_time.FromDatetime(now)
        try:
            stored = await self._executor.stored_result(accepted)
        except ImagegenError:
            stored = None  # the store does not answer now: the worker will find out
        if stored is not None:
            execution.state = ExecutionState.EXECUTION_STATE_SUCCEEDED
            execution.stage = ExecutionStage.EXECUTION_STAGE_COMPLETED
            execution.result.CopyFrom(stored)
        await self._queue.create(execution)
        return (await self._queue.get(new_id)) or execution

    async def get(self, name: str) -> Execution:
        """The execution named name; InvalidRequest when name is malformed, NotFound when unknown."""
        found = await self._queue.get(execution_id(name))
        if found is None:
            raise NotFound(f"no execution {name} (unknown, or its record has expired)")
        return found

    async def list(self, session_id: str, page_size: int = 0, page_token: str = "") -> tuple[list[Execution], str]:
        """A page of session_id's executions, newest first, and the next page's token ("" at the end)."""
        _check_session(session_id)
        if not 0 <= page_size <= MAX_EXECUTIONS_PAGE_SIZE:
            raise InvalidRequest(
                [FieldViolation("page_size", f"must be 1 to {MAX_EXECUTIONS_PAGE_SIZE}, or 0 for {DEFAULT_EXECUTIONS_PAGE_SIZE}")]
            )
        limit = page_size or DEFAULT_EXECUTIONS_PAGE_SIZE
        after = self._open_token(page_token, session_id) if page_token else None
        page = await self._queue.page(session_id, limit + 1, after)
        if len(page) <= limit:
            return page, ""
        page = page[:limit]
        last = page[-1]
        cursor = PageCursor(_micros(last), execution_id(last.name))
        return page, self._page_tokens.issue((cursor.create_us, cursor.execution_id), _listing(session_id))

    async def watch(self, name: str) -> AsyncIterator[ExecutionEvent]:
        """The execution as it is, then every change until it ends."""
        wanted = execution_id(name)
        async with self._queue.watch(wanted) as events:
            current = await self._queue.get(wanted)
            if current is None:
                raise NotFound(f"no execution {name} (unknown, or its record has expired)")
            yield ExecutionEvent(current)
            if is_terminal(current):
                return
            seen = _micros_update(current)
            async for event in events:
                if _micros_update(event.execution) <= seen and event.preview is None:
                    continue  # recorded before the snapshot above, or read again while idle
                seen = _micros_update(event.execution)
                yield event
                if is_terminal(event.execution):
                    return

    async def watch_session(self, session_id: str) -> AsyncIterator[ExecutionEvent]:
        """Every change of every execution of session_id from now on, until the caller leaves."""
        _check_session(session_id)
        async with self._queue.watch_session(session_id) as events:
            async for event in events:
                yield event

    async def cancel(self, name: str) -> Execution:
        """Cancel the execution named name (a no-op once it has ended); it as it is then.
        A RUNNING one is waited for, up to the cancel wait, so the answer says CANCELLED."""
        wanted = execution_id(name)
        async with self._queue.watch(wanted) as events:
            current = await self._queue.request_cancel(wanted)
            if current is None:
                raise NotFound(f"no execution {name} (unknown, or its record has expired)")
            if is_terminal(current):
                return current
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cancel_wait):
                    async for event in events:
                        if is_terminal(event.execution):
                            return event.execution
        return (await self._queue.get(wanted)) or current

    async def delete_session(self, session_id: str) -> int:
        """DeleteSessionImages: cancel session_id's executions that have not ended and wait
        (up to the cancel wait) for the running ones to end, forget all its executions
        (records, request_id bindings), then delete its images and request records
        (Executor.delete_session_images); how many images were deleted (0 when repeated).
        Executions first, so a render cancelled here stores nothing after its session's
        images are gone; one already writing its image when cancelled may still store it
        (docs/executions.md, "Deleting a session"). InvalidRequest for a bad session_id
        (nothing deleted); ExecutionsUnavailable when executions cannot be reached
        (nothing deleted yet: call again)."""
        violations = session_id_violations("session_id", session_id)
        if violations:
            raise InvalidRequest(violations)
        async with self._queue.watch_session(session_id) as events:
            running = await self._cancel_session(session_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cancel_wait):
                    while running:
                        event = await anext(events)
                        if is_terminal(event.execution):
                            running.discard(execution_id(event.execution.name))
        await self._queue.forget_session(session_id)
        return await self._executor.delete_session_images(session_id)

    async def _cancel_session(self, session_id: str) -> set[str]:
        """Cancel every execution of session_id not yet ended, a page at a time; the ids of
        those still running after (their workers have been told)."""
        running: set[str] = set()
        after: PageCursor | None = None
        while page := await self._queue.page(session_id, MAX_EXECUTIONS_PAGE_SIZE, after):
            for execution in page:
                if not is_terminal(execution):
                    now = await self._queue.request_cancel(execution_id(execution.name))
                    if now is not None and not is_terminal(now):
                        running.add(execution_id(now.name))
            after = PageCursor(_micros(page[-1]), execution_id(page[-1].name))
            if len(page) < MAX_EXECUTIONS_PAGE_SIZE:
                break
        return running

    def _open_token(self, token: str, session_id: str) -> PageCursor:
        """Where the page a token continues starts (AIP-158: opaque to callers, and signed, so a
        changed or forged token, or one of another session's listing, is INVALID_ARGUMENT)."""
        try:
            create_us, wanted = self._page_tokens.open(token, _listing(session_id))
        except NotOurs:
            wanted = ""
        if not EXECUTION_NAME.fullmatch(f"executions/{wanted}"):
            raise InvalidRequest([FieldViolation("page_token", "is not a next_page_token of this session's listing")])
        return PageCursor(create_us, wanted)

    # -- the worker --------------------------------------------------------------------

    async def run(self, wanted: str, cancel: asyncio.Event) -> None:
        """Run one queued execution to its end (a worker's body): RUNNING, the stages and
        previews as they come, then SUCCEEDED, FAILED or CANCELLED."""
        execution = await self._queue.get(wanted)
        if execution is None or is_terminal(execution) or cancel.is_set():
            return
        execution.state = ExecutionState.EXECUTION_STATE_RUNNING
        execution.queue_position = 0
        if not await self._save(execution):
            return  # cancelled while it was being taken
        self._observer.execution_started()
        began = time.monotonic()
        ended = False
        try:
            final, reason = await self._render(wanted, execution, cancel)
            if await self._save(final):
                ended = True
                self._observer.execution_ended(_END[final.state], reason, time.monotonic() - began)
        finally:
            if not ended:
                self._observer.execution_abandoned()

    async def _render(self, wanted: str, execution: Execution, cancel: asyncio.Event) -> tuple[Execution, str]:
        """Render execution's plan until it ends or cancel is set: the execution as it ended,
        and for a failure the error's ErrorInfo reason, else ""."""
        reason = ""
        # (stage, preview bytes, preview media type, progress percent): a stage, a preview
        # (stage PREVIEW) or a progress step (stage RENDERING, percent > 0).
        updates: asyncio.Queue[tuple[int, bytes, str, int]] = asyncio.Queue()
        announcer = asyncio.ensure_future(self._announce(execution, updates))
        task = asyncio.ensure_future(
            self._executor.execute(
                execution.plan,
                on_stage=lambda stage: updates.put_nowait((stage, b"", "", 0)),
                on_preview=lambda data, mime: updates.put_nowait((ExecutionStage.EXECUTION_STAGE_PREVIEW, data, mime, 0)),
                on_progress=ProgressSteps(
                    lambda percent: updates.put_nowait((ExecutionStage.EXECUTION_STAGE_RENDERING, b"", "", percent))
                ),
            )
        )
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait((task, cancelled), return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not task.done():
                task.cancel()  # the provider call is hung up; nothing is stored
            with contextlib.suppress(BaseException):
                await task
            updates.put_nowait((-1, b"", "", 0))
            await announcer
        final = Execution()
        final.CopyFrom(execution)
        final.progress_percent = 0
        if task.cancelled():
            end_cancelled(final)
        elif (error := task.exception()) is not None:
            if not isinstance(error, ImagegenError):
                log.error("execution %s failed unexpectedly", wanted, exc_info=error)
            final.state = ExecutionState.EXECUTION_STATE_FAILED
            final.error.CopyFrom(self._describe_error(error))
            reason = error.reason if isinstance(error, ImagegenError) else "INTERNAL"
        else:
            final.state = ExecutionState.EXECUTION_STATE_SUCCEEDED
            final.stage = ExecutionStage.EXECUTION_STAGE_COMPLETED
            final.result.CopyFrom(task.result())
        return final, reason

    async def _announce(self, execution: Execution, updates: asyncio.Queue[tuple[int, bytes, str, int]]) -> None:
        """Record and announce stages, previews and progress steps in the order they came,
        until told to stop (-1). A preview keeps the progress reached; a stage other than
        RENDERING sets it back to 0, and a progress step after the render is dropped."""
        while (update := await updates.get())[0] != -1:
            stage, data, mime_type, percent = update
            try:
                if percent:
                    if execution.stage not in _RENDERING_STAGES:
                        continue
                    execution.stage = stage
                    execution.progress_percent = percent
                    await self._save(execution)
                elif stage == ExecutionStage.EXECUTION_STAGE_PREVIEW:
                    preview = await asyncio.to_thread(downsize, data, mime_type)
                    if preview is None:
                        continue
                    execution.stage = stage
                    await self._save(execution, preview)
                else:
                    execution.stage = stage
                    if stage != ExecutionStage.EXECUTION_STAGE_RENDERING:
                        execution.progress_percent = 0
                    await self._save(execution)
            except ImagegenError:
                log.info("execution %s: a progress update was not recorded", execution.name)
            except Exception:  # noqa: BLE001 - progress must never stop the execution's end being recorded
                log.exception("execution %s: a progress update failed", execution.name)

    async def _save(self, execution: Execution, preview: ExecutionPreview | None = None) -> bool:
        execution.update_time.FromDatetime(self._clock())
        snapshot = Execution()
        snapshot.CopyFrom(execution)
        return await self._queue.save(ExecutionEvent(snapshot, preview))


# The stages during which a render's progress means something (a preview comes mid-render).
_RENDERING_STAGES = frozenset({ExecutionStage.EXECUTION_STAGE_RENDERING, ExecutionStage.EXECUTION_STAGE_PREVIEW})


class ProgressSteps:
    """Turns a provider's progress (a fraction 0..1, as often as it tells it: ComfyUI once
    a sampler step) into the whole percents worth recording: called with percent only when
    it rose by at least PROGRESS_STEP_PERCENT since the last call, never with 100 (the
    render is done when the stage says STORING). A value that is not finite is ignored;
    one outside 0..1 is clamped. At most 100 // PROGRESS_STEP_PERCENT - 1 calls."""

    def __init__(self, record: Callable[[int], None]) -> None:
        self._record = record
        self._last = 0

    def __call__(self, fraction: float) -> None:
        if not math.isfinite(fraction):
            return
        percent = math.floor(min(max(fraction, 0.0), 1.0) * 100 + 1e-9)
        if percent >= 100 or percent - self._last < PROGRESS_STEP_PERCENT:
            return
        self._last = percent
        self._record(percent)


def _micros(execution: Execution) -> int:
    return execution.create_time.ToMicroseconds()


def _micros_update(execution: Execution) -> int:
    return execution.update_time.ToMicroseconds()


def _listing(session_id: str) -> str:
    """What a ListExecutions page token is issued for: never a ListImages listing."""
    return f"executions\0{session_id}"
