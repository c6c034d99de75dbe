"""What the executor needs from an image provider and an object store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from google.rpc import code_pb2, status_pb2

from imagegen.catalogue import ProviderCapabilities
from imagegen.v1.executor_service_pb2 import Execution, ExecutionPreview, ExecutionState
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult


@dataclass(frozen=True)
class Usage:
    """What a provider reported using for one image, in tokens (the OpenAI images API's
    usage object: https://platform.openai.com/docs/api-reference/images/object)."""

    input_tokens: int = 0
    input_image_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    model: str
    revised_prompt: str = ""
    # The provider that rendered it, when a chain chose among several; empty
    # means the executor's provider itself.
    provider: str = ""
    # What the provider reported using; None when it reports nothing.
    usage: Usage | None = None
    # The seed it was rendered with, for providers that take one (None: no seed used).
    seed: int | None = None


@dataclass(frozen=True)
class QuotaLimit:
    """At most renders new renders per session within window_seconds (EXECUTOR_SESSION_QUOTA,
    e.g. "10/hour"). A reused image renders nothing and counts nothing."""

    renders: int
    window_seconds: int
    text: str  # as configured, for the QuotaFailure: "10/hour"


@dataclass(frozen=True)
class ReferenceInput:
    """A stored image a render uses, read from the store by the executor.

    role: what the provider is to take from it: "subject" (keep who or what it shows),
    "style" (follow its look), "edit" (the image to change) or "mask" (where to change it);
    storage_path: "bucket/key" where it is stored; data, mime_type: its bytes and type."""

    role: str
    storage_path: str
    data: bytes
    mime_type: str


# Told each partial image a provider reports while it renders: (image bytes, media type).
OnPreview = Callable[[bytes, str], None]
# Told how much of a render is done as the provider reports it: a fraction from 0 to 1,
# non-decreasing as the provider tells it (ComfyUI: its sampler's steps done / steps).
OnProgress = Callable[[float], None]


@dataclass(frozen=True)
class RenderInputs:
    """What a render takes besides its plan: the reference images the plan names, in the
    plan's order, the mask of an edit, who to tell about partial images (providers
    whose capabilities say previews; None: nobody listens) and who to tell how much of
    the render is done (providers that know it; None: nobody listens)."""

    references: tuple[ReferenceInput, ...] = ()
    mask: ReferenceInput | None = None
    on_preview: OnPreview | None = None
    on_progress: OnProgress | None = None


NO_INPUTS = RenderInputs()


class ImageProvider(Protocol):
    name: str

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        """What this provider can render for plan (its model may depend on the plan)."""
        ...

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        """The media type render() will return for this plan, known before rendering
        so the object key (and so dedup) does not need a render."""
        ...

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        """Render the plan's image with inputs. Cancelling the call must stop the work it
        waits on (for a remote provider: the request)."""
        ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    create_time: dt.datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


class AlreadyStored(Exception):
    """ObjectStore.put found its key taken: another writer stored it first."""

    def __init__(self, existing: StoredObject) -> None:
        super().__init__(f"{existing.key} is already stored")
        self.existing = existing


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expire_time: dt.datetime | None  # None: the URL does not expire


@dataclass
class ObjectReader:
    """A stored object's description and its bytes in chunks. The caller must
    aclose() it, read or not, so the store releases its file or connection."""

    stored: StoredObject
    chunks: AsyncIterator[bytes]
    release: Callable[[], None] = lambda: None  # idempotent

    async def aclose(self) -> None:
        try:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self.release()


class ObjectStore(Protocol):
    bucket: str

    def storage_path(self, key: str) -> str:
        """ "bucket/key" for the result's storage_path."""
        ...

    async def ping(self) -> None:
        """Return when the store is usable right now, else raise (StorageUnavailable,
        StorageMisconfigured). Cheap: the health check calls it every few seconds."""
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """The stored object, or None when there is none; cheap (no body)."""
        ...

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> StoredObject:
        """Create key with all of data, or nothing: never a partial object, and never
        over an object already there. AlreadyStored (with that object) when key exists:
        the write is the fence that keeps every result describing the stored bytes."""
        ...

    async def url(self, key: str) -> str:
        """A URL that opens the stored object directly (with the configured expiry)."""
        ...

    async def sign(self, key: str, expires_in: dt.timedelta | None) -> SignedUrl:
        """A fresh URL for a stored object, valid for expires_in (None: the
        configured expiry); NotFound when nothing is stored under key."""
        ...

    async def open(self, key: str, chunk_size: int) -> ObjectReader:
        """The object's bytes in chunks of at most chunk_size; NotFound when
        nothing is stored under key."""
        ...

    async def list(self, prefix: str, limit: int, start_after: str = "") -> list[StoredObject]:
        """At most limit stored objects whose key starts with prefix and sorts after
        start_after, in key order. Each has its key, size and create_time; its
        metadata is empty and its content_type may be unknown (stat() tells both)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under key and whatever the store keeps beside it; no error
        when nothing is stored there (deleting is safe to repeat)."""
        ...

    async def set_retention(self, days: int) -> bool:
        """Ask the store itself to expire objects days after they were written (an S3
        bucket lifecycle rule); False when the store has no such rule (the executor's
        sweep does it). Called once at start."""
        ...


# What the execution use case tells an observer (metrics, in the wiring): a port like the
# provider and the store, pointing outwards. The default does nothing.
# How an execution got its image without rendering it:
#   stored      the plan's image was already in the store
#   in_flight   it joined an identical execution already rendering
#   request_id  a retried call (same request_id) got the first call's result
ReuseKind = Literal["stored", "in_flight", "request_id"]


class ExecutionObserver(Protocol):
    def reused(self, kind: ReuseKind) -> None:
        """An execution was answered without a render of its own."""
        ...

    def stored(self, byte_size: int) -> None:
        """A rendered image of byte_size bytes was written to the store."""
        ...

    def cost(self, provider: str, model: str, cost_micros: int) -> None:
        """A rendered and stored image is estimated to have cost cost_micros USD micros."""
        ...


class NoExecutionObserver:
    def reused(self, kind: ReuseKind) -> None:
        pass

    def stored(self, byte_size: int) -> None:
        pass

    def cost(self, provider: str, model: str, cost_micros: int) -> None:
        pass


class ExecutionCoordination(Protocol):
    """What keeps every replica to one render per plan, one answer per request_id and the
    provider within its limits. The in-process adapter is the embedded default; the
    Valkey adapter makes the same promises across replicas (docs/deploy.md, "Running
    more than one replica"). Every method degrades to per-process behaviour rather than
    fail when the engine behind it is down: the store's conditional write keeps results
    true regardless."""

    def render_lease(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held while this caller renders and stores key. Entering waits while another
        holder renders it (until that one ends, or its lease expires because it died),
        so the caller must look in the store again once inside."""
        ...

    def provider_slot(self, on_queued: Callable[[], None]) -> AbstractAsyncContextManager[None]:
        """Held during one provider call. Entering waits while the cap on concurrent
        provider calls is reached or the provider asked to be left alone; on_queued is
        called once if it has to wait."""
        ...

    async def pause_provider(self, seconds: float) -> None:
        """The provider rate-limited us: hold new provider calls for seconds (bounded)."""
        ...

    async def claim_request(self, request_id: str, session_id: str, plan_id: str) -> ImageGenerationResult | None:
        """The first result for request_id, or None when this call is to produce it.
        InvalidRequest on request_id when it was first used in another session or for
        another plan."""
        ...

    async def complete_request(self, request_id: str, result: ImageGenerationResult) -> None:
        """Keep result as the answer for later calls with request_id."""
        ...

    async def release_request(self, request_id: str) -> None:
        """Forget a claim whose call failed, so a retry runs again."""
        ...

    async def take_render_quota(self, session_id: str, limits: tuple[QuotaLimit, ...]) -> str:
        """Count one new render against session_id's limits and return its token (to give it
        back with return_render_quota should the render fail). QuotaExceeded (with when the
        window frees a slot) when any limit is reached; nothing is counted then."""
        ...

    async def return_render_quota(self, session_id: str, token: str) -> None:
        """Uncount a render that failed or stored nothing of its own."""
        ...

    async def forget_session(self, session_id: str) -> None:
        """Forget every request_id record of session_id, so a retried request_id executes
        again (DeleteSessionImages). Its executions are forgotten by
        ExecutionQueue.forget_session, before this."""
        ...

    async def aclose(self) -> None:
        ...


# -- Executions that outlive the call (executor_service.executions) ----------------------


# The states an execution never leaves (docs/executions.md, the state machine).
TERMINAL_STATES = frozenset({
    ExecutionState.EXECUTION_STATE_SUCCEEDED,
    ExecutionState.EXECUTION_STATE_FAILED,
    ExecutionState.EXECUTION_STATE_CANCELLED,
})


def end_cancelled(execution: Execution) -> None:
    """Set execution to its CANCELLED end (nothing stored): the state, the CANCELLED status,
    no queue position, no progress, updated now."""
    execution.state = ExecutionState.EXECUTION_STATE_CANCELLED
    execution.queue_position = 0
    execution.progress_percent = 0
    execution.error.CopyFrom(status_pb2.Status(code=code_pb2.CANCELLED, message="the execution was cancelled"))
    execution.update_time.GetCurrentTime()


@dataclass(frozen=True)
class ExecutionEvent:
    """One change of an execution: the execution after it, and the preview when the
    change is one (execution.stage PREVIEW)."""

    execution: Execution
    preview: ExecutionPreview | None = None


@dataclass(frozen=True)
class PageCursor:
    """Where a page of a session's executions ends: the last execution's create time
    (microseconds since the epoch) and id; the next page starts strictly after it."""

    create_us: int
    execution_id: str


# How an execution a worker ran ended (its final ExecutionState, in lower case).
ExecutionEnd = Literal["succeeded", "failed", "cancelled"]


class DetachedRunObserver(Protocol):
    """What the executions use case tells an observer (metrics, in the wiring) about the
    executions this replica's workers run. Every execution_started is followed by exactly
    one execution_ended or execution_abandoned. The default does nothing."""

    def execution_started(self) -> None:
        """A worker of this replica took an execution and recorded it RUNNING."""
        ...

    def execution_ended(self, state: ExecutionEnd, reason: str, seconds: float) -> None:
        """The worker recorded the execution's end after seconds (monotonic, from RUNNING).
        reason: for "failed", the error's ErrorInfo reason (imagegen.errors: PROVIDER_UNAVAILABLE,
        CONTENT_REJECTED, ..., INTERNAL for an unexpected error); empty otherwise."""
        ...

    def execution_abandoned(self) -> None:
        """The worker stopped without recording an end (the replica is stopping, or the queue
        does not answer): another replica takes the execution over."""
        ...


class NoDetachedRunObserver:
    def execution_started(self) -> None:
        pass

    def execution_ended(self, state: ExecutionEnd, reason: str, seconds: float) -> None:
        pass

    def execution_abandoned(self) -> None:
        pass


# What a worker runs for one execution id; cancel is set when CancelExecution asks for it.
RunExecution = Callable[[str, asyncio.Event], Awaitable[None]]


class ExecutionQueue(Protocol):
    """Where executions are recorded, queued for a worker, announced and cancelled. The
    in-process adapter keeps them in this process (the embedded default); the Valkey
    adapter in a Stream with one consumer group across every replica, so any replica
    runs one and any replica reads, watches and cancels it. Methods raise
    ExecutionsUnavailable when the engine behind them does not answer."""

    async def bind_request(self, request_id: str, session_id: str, plan_id: str, execution_id: str) -> str | None:
        """None when request_id is now bound to execution_id; else the id of the execution
        it was first used for. InvalidRequest on request_id when that was for another
        session or plan (executor_service.coordination.request_records.check_binding)."""
        ...

    async def create(self, execution: Execution) -> None:
        """Record a new execution (kept for the configured TTL), announce it, and queue it
        for a worker when it is QUEUED."""
        ...

    async def get(self, execution_id: str) -> Execution | None:
        """The execution, with queue_position while QUEUED; None when unknown or expired."""
        ...

    async def page(self, session_id: str, limit: int, after: PageCursor | None) -> list[Execution]:
        """At most limit of a session's executions, newest first, starting after after."""
        ...

    async def save(self, event: ExecutionEvent) -> bool:
        """Record event.execution (over what is recorded) and announce the event to its
        watchers. False, and nothing changed, when the recorded execution has already
        ended (a cancel got there first) or is gone."""
        ...

    async def request_cancel(self, execution_id: str) -> Execution | None:
        """Cancel: a QUEUED execution ends CANCELLED at once; a RUNNING one's worker (on
        whichever replica) has its cancel event set. The execution as recorded after
        that; None when unknown."""
        ...

    async def forget_session(self, session_id: str) -> int:
        """Forget every execution of session_id (DeleteSessionImages): those not ended are
        cancelled first, as request_cancel does (a QUEUED one ends at once, a RUNNING one's
        worker is told and stores nothing), then their records, ended markers, cancel
        flags, request_id bindings and the session's index are removed, a bounded batch at
        a time; how many executions were forgotten (0 when repeated). Other sessions are
        untouched."""
        ...

    def watch(self, execution_id: str) -> AbstractAsyncContextManager[AsyncIterator[ExecutionEvent]]:
        """The events of one execution from the moment this is entered."""
        ...

    def watch_session(self, session_id: str) -> AbstractAsyncContextManager[AsyncIterator[ExecutionEvent]]:
        """The events of every execution of a session from the moment this is entered."""
        ...

    def serve(self, run: RunExecution) -> None:
        """Start the workers (a bounded number) that take queued executions and await
        run(execution_id, cancel) for each; needs a running event loop."""
        ...

    async def aclose(self) -> None:
        """Stop the workers and release connections."""
        ...
