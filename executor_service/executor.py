"""The execution use case: a plan in, a stored image and its result out.

The same plan always maps to the same object key, so an image that is already
stored is returned with reused=True and nothing is rendered; concurrent
executions of one plan share a single render; a request_id makes a retried
call return the first call's result. A render runs as long as one caller
still waits for it: when the last one goes away (cancelled, deadline passed)
the render is cancelled and nothing is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from executor_service.coordination.in_process import InProcessCoordination
from executor_service.capabilities import capability_problems
from executor_service.keys import key_from_storage_path, object_key
from executor_service.library import ImageLibrary
from executor_service.plan_sidecars import read_plan_sidecar, write_plan_sidecar
from executor_service.references import (
    read_inputs,
    recorded_references,
    reference_metadata,
    shape_inputs,
    stored_references,
)
from executor_service.ports import (
    AlreadyStored,
    ExecutionCoordination,
    ExecutionObserver,
    ImageProvider,
    NoExecutionObserver,
    ObjectReader,
    ObjectStore,
    OnPreview,
    OnProgress,
    QuotaLimit,
    RenderedImage,
    RenderInputs,
    SignedUrl,
    StoredObject,
    Usage,
)
from executor_service.pricing import PriceTable
from imagegen.catalogue import IMAGE_CHUNK_BYTES, MAX_URL_EXPIRY, MIN_URL_EXPIRY, image_type_spec
from imagegen.errors import FieldViolation, ImagegenError, InvalidRequest, ProviderThrottled
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.executor_service_pb2 import ExecutionStage
from imagegen.v1.image_plan_pb2 import (
    ImageGenerationPlan,
    ImageGenerationResult,
    ProviderInfo,
    ProviderUsage,
    ReferenceImage,
)
from imagegen.validation import validate_execution

# User metadata written beside every image, so a reused result is as complete
# as a fresh one without reading the image back.
_META_KEYS = ("plan-id", "provider", "model", "width", "height", "sha256", "latency-ms", "cost-micros", "seed")
# Beside them when the provider reported its usage.
_USAGE_KEYS = ("input-tokens", "input-image-tokens", "output-tokens", "total-tokens")

OnStage = Callable[["ExecutionStage.ValueType"], None]


class _Flight:
    """One shared render: its task, how many callers wait on it, and the stage
    it has reached (replayed to callers who join late)."""

    def __init__(self) -> None:
        self.task: asyncio.Future[ImageGenerationResult] | None = None
        self.waiters = 0
        self.stage: ExecutionStage.ValueType | None = None
        self.listeners: list[OnStage] = []
        self.preview_listeners: list[OnPreview] = []
        self.progress_listeners: list[OnProgress] = []

    def report(self, stage: ExecutionStage.ValueType) -> None:
        self.stage = stage
        for listener in list(self.listeners):
            listener(stage)

    def wants_previews(self) -> bool:
        """Whether anyone listens for previews (then a provider that can is asked for them)."""
        return bool(self.preview_listeners)

    def preview(self, data: bytes, mime_type: str) -> None:
        for listener in list(self.preview_listeners):
            listener(data, mime_type)

    def wants_progress(self) -> bool:
        """Whether anyone listens for the render's progress (then the provider is told to report it)."""
        return bool(self.progress_listeners)

    def progress(self, fraction: float) -> None:
        for listener in list(self.progress_listeners):
            listener(fraction)

    def join(
        self, on_stage: OnStage | None, on_preview: OnPreview | None = None, on_progress: OnProgress | None = None
    ) -> None:
        self.waiters += 1
        if on_preview is not None:
            self.preview_listeners.append(on_preview)
        if on_progress is not None:
            self.progress_listeners.append(on_progress)
        if on_stage is not None:
            self.listeners.append(on_stage)
            if self.stage is not None:
                on_stage(self.stage)

    def leave(
        self, on_stage: OnStage | None, on_preview: OnPreview | None = None, on_progress: OnProgress | None = None
    ) -> int:
        self.waiters -= 1
        if on_preview is not None:
            self.preview_listeners.remove(on_preview)
        if on_progress is not None:
            self.progress_listeners.remove(on_progress)
        if on_stage is not None:
            self.listeners.remove(on_stage)
        return self.waiters


class Executor:
    def __init__(
        self,
        provider: ImageProvider,
        store: ObjectStore,
        public_base_url: str,
        *,
        coordination: ExecutionCoordination | None = None,
        clock: Callable[[], float] = time.perf_counter,
        observer: ExecutionObserver | None = None,
        quotas: tuple[QuotaLimit, ...] = (),
        prices: PriceTable | None = None,
        page_token_key: bytes = b"",
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        """quotas: the render limits per session (none: unlimited); prices: what an image
        costs (none: every estimate 0); page_token_key: the key ListImages page tokens are
        signed with, the same on every replica (empty: a random key of this process's);
        now: the wall clock the retention sweep compares create times with."""
        self._provider = provider
        self._observer: ExecutionObserver = observer or NoExecutionObserver()
        self._store = store
        self._public_base_url = public_base_url.rstrip("/")
        self._clock = clock
        self._in_flight: dict[str, _Flight] = {}
        self._coordination: ExecutionCoordination = coordination or InProcessCoordination()
        self._quotas = quotas
        self._prices = prices or PriceTable()
        self._library = ImageLibrary(
            store, self._coordination, self._listed, page_token_key=page_token_key, now=now
        )

    @property
    def coordination(self) -> ExecutionCoordination:
        """What this executor coordinates with (the executions' queue shares its engine)."""
        return self._coordination

    async def execute(
        self,
        plan: ImageGenerationPlan | None,
        *,
        request_id: str = "",
        on_stage: OnStage | None = None,
        on_preview: OnPreview | None = None,
        on_progress: OnProgress | None = None,
    ) -> ImageGenerationResult:
        """Render and store plan (None: absent, refused), or return what is stored for it.

        request_id (optional, at most MAX_REQUEST_ID_CHARS) makes a retry return the
        first call's result; on_stage hears RENDERING and STORING when this call (or
        the shared render it joins) gets there; on_preview hears each partial image the
        provider reports (bytes, media type; as the provider sent it, not downsized);
        on_progress hears how much of the render is done, a fraction 0..1, where the
        provider reports it (as told, not throttled).
        Raises InvalidRequest, the execution errors of imagegen.errors, each carrying the plan."""
        accepted = accepted_plan(plan, request_id)
        return await self._run(request_id, accepted, on_stage, on_preview, on_progress)

    async def stored_result(self, plan: ImageGenerationPlan) -> ImageGenerationResult | None:
        """The result for an accepted plan's image when it is already stored (reused), else None.
        InvalidRequest when its references are not images of its session this executor stored,
        as for execute()."""
        await stored_references(plan, self._store, key_from_storage_path)
        key = object_key(plan, self._provider.mime_type(plan))
        existing = await self._store.stat(key)
        if existing is None:
            return None
        self._observer.reused("stored")
        return await self._result(plan, existing, reused=True)

    async def execute_stream(
        self, plan: ImageGenerationPlan | None, *, request_id: str = ""
    ) -> AsyncIterator[tuple[ExecutionStage.ValueType, ImageGenerationResult | None]]:
        """(stage, result) events: ACCEPTED, then RENDERING and STORING when this
        call renders, then COMPLETED with the result. Errors are raised, as by
        execute(); closing the iterator early leaves the execution like a cancel."""
        accepted = accepted_plan(plan, request_id)
        yield ExecutionStage.EXECUTION_STAGE_ACCEPTED, None
        stages: asyncio.Queue[ExecutionStage.ValueType | None] = asyncio.Queue()
        run = asyncio.ensure_future(self._run(request_id, accepted, stages.put_nowait))
        run.add_done_callback(lambda _: stages.put_nowait(None))
        try:
            while (stage := await stages.get()) is not None:
                yield stage, None
            yield ExecutionStage.EXECUTION_STAGE_COMPLETED, run.result()
        finally:
            if not run.done():
                run.cancel()
            elif not run.cancelled():
                run.exception()  # retrieved here or re-raised above; never "never retrieved"

    async def open_image(self, storage_path: str, chunk_size: int = IMAGE_CHUNK_BYTES) -> ObjectReader:
        """A stored image's bytes in chunks of at most chunk_size (at most IMAGE_CHUNK_BYTES)."""
        key = key_from_storage_path(storage_path, self._store.bucket)
        return await self._store.open(key, min(chunk_size, IMAGE_CHUNK_BYTES))

    def recorded_references(self, stored: StoredObject) -> list[ReferenceImage]:
        """The reference images a stored image was rendered with (none: an empty list)."""
        return recorded_references(stored.metadata, stored.key, self._store.storage_path)

    async def sign_image_url(self, storage_path: str, expires_in: dt.timedelta | None) -> SignedUrl:
        """A fresh URL for a stored image; expires_in None means the configured expiry."""
        if expires_in is not None and not MIN_URL_EXPIRY <= expires_in <= MAX_URL_EXPIRY:
            raise InvalidRequest(
                [FieldViolation("expires_in", f"must be {_seconds(MIN_URL_EXPIRY)} to {_seconds(MAX_URL_EXPIRY)} seconds")]
            )
        key = key_from_storage_path(storage_path, self._store.bucket)
        return await self._store.sign(key, expires_in)

    async def list_images(
        self, session_id: str, image_type: int = 0, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ImageGenerationResult], str]:
        """ImageLibrary.list_images: a page of the session's images, newest first."""
        return await self._library.list_images(session_id, image_type, page_size, page_token)

    async def delete_image(self, storage_path: str) -> None:
        """ImageLibrary.delete_image."""
        await self._library.delete_image(storage_path)

    async def delete_session_images(self, session_id: str) -> int:
        """ImageLibrary.delete_session_images: how many images were deleted."""
        return await self._library.delete_session_images(session_id)

    async def sweep(self, retention: dt.timedelta) -> int:
        """ImageLibrary.sweep: how many images older than retention were deleted."""
        return await self._library.sweep(retention)

    async def set_store_retention(self, days: int) -> bool:
        """Whether the store expires images itself (a lifecycle rule); else sweep()."""
        return await self._store.set_retention(days)

    async def check_store(self) -> None:
        """Raise unless the store is usable right now (for health checks)."""
        await self._store.ping()

    async def aclose(self) -> None:
        """Release the provider's connections (the store holds only a connection pool)."""
        close = getattr(self._provider, "aclose", None)
        if close is not None:
            await close()

    async def _run(
        self,
        request_id: str,
        plan: ImageGenerationPlan,
        on_stage: OnStage | None,
        on_preview: OnPreview | None = None,
        on_progress: OnProgress | None = None,
    ) -> ImageGenerationResult:
        try:
            if request_id:
                earlier = await self._coordination.claim_request(request_id, plan.session_id, plan.plan_id)
                if earlier is not None:
                    self._observer.reused("request_id")
                    return earlier
            try:
                result = await self._execute_once(plan, on_stage, on_preview, on_progress)
            except BaseException:
                if request_id:
                    await asyncio.shield(self._coordination.release_request(request_id))
                raise
            if request_id:
                await self._coordination.complete_request(request_id, result)
            return result
        except ImagegenError as error:
            error.plan = error.plan or plan
            raise

    async def _execute_once(
        self,
        plan: ImageGenerationPlan,
        on_stage: OnStage | None,
        on_preview: OnPreview | None = None,
        on_progress: OnProgress | None = None,
    ) -> ImageGenerationResult:
        # Checked on every call, even when the image is stored already: a plan that names
        # an image this executor did not store (or one of another session) is refused alike.
        references = await stored_references(plan, self._store, key_from_storage_path)
        mime_type = self._provider.mime_type(plan)
        key = object_key(plan, mime_type)
        flight = self._in_flight.get(key)
        joined = flight is not None
        if flight is None:
            flight = self._in_flight[key] = _Flight()
            task = flight.task = asyncio.ensure_future(
                self._stored_or_render(plan, key, mime_type, flight, references)
            )
            task.add_done_callback(lambda _: self._land(key, task))
        task = flight.task
        assert task is not None
        flight.join(on_stage, on_preview, on_progress)
        try:
            # Shielded: one caller going away must not cancel the others' render.
            result = await asyncio.shield(task)
            if joined:  # counted once answered: a caller that gave up or failed was not
                self._observer.reused("in_flight")
            return result
        finally:
            if flight.leave(on_stage, on_preview, on_progress) == 0 and not task.done():
                # The last caller is gone: stop the render (nothing gets stored),
                # and let the next caller of this plan start afresh.
                task.cancel()
                self._land(key, task)

    def _land(self, key: str, task: asyncio.Future[ImageGenerationResult]) -> None:
        flight = self._in_flight.get(key)
        if flight is not None and flight.task is task:
            del self._in_flight[key]

    async def _stored_or_render(
        self,
        plan: ImageGenerationPlan,
        key: str,
        mime_type: str,
        flight: _Flight,
        references: Mapping[str, StoredObject],
    ) -> ImageGenerationResult:
        report = flight.report
        existing = await self._store.stat(key)
        if existing is not None:
            self._observer.reused("stored")
            return await self._result(plan, existing, reused=True)
        async with self._coordination.render_lease(key):
            # Another replica may have stored it while this one waited for the lease.
            existing = await self._store.stat(key)
            if existing is not None:
                self._observer.reused("stored")
                return await self._result(plan, existing, reused=True)
            # Only a render that stores its own image keeps its quota slot.
            quota = await self._coordination.take_render_quota(plan.session_id, self._quotas) if self._quotas else ""
            try:
                image, latency_ms = await self._render(
                    plan,
                    report,
                    references,
                    flight.preview if flight.wants_previews() else None,
                    flight.progress if flight.wants_progress() else None,
                )
                if image.mime_type != mime_type:
                    raise RuntimeError(f"provider returned {image.mime_type}, announced {mime_type}")
                report(ExecutionStage.EXECUTION_STAGE_STORING)
                provider = image.provider or self._provider.name
                cost = self._prices.estimate_micros(provider, image.model, image.usage)
                metadata = {**_metadata(plan, provider, image, latency_ms, cost), **reference_metadata(plan)}
                # The plan first: a writer stopped between the two writes leaves a plan
                # without an image (harmless, rewritten alike), never an image without a plan.
                await write_plan_sidecar(self._store, key, plan)
                try:
                    stored = await self._store.put(key, image.data, image.mime_type, metadata)
                except AlreadyStored as taken:
                    # Another writer (a replica without the lease, or one whose lease lapsed)
                    # stored this plan first: describe the bytes that are stored, not ours.
                    if quota:
                        await self._coordination.return_render_quota(plan.session_id, quota)
                    self._observer.reused("stored")
                    return await self._result(plan, taken.existing, reused=True)
            except BaseException:
                if quota:
                    await asyncio.shield(self._coordination.return_render_quota(plan.session_id, quota))
                raise
        self._observer.stored(stored.size)
        self._observer.cost(provider, image.model, cost)
        return await self._result(plan, stored, reused=False, revised_prompt=image.revised_prompt)

    async def _render(
        self,
        plan: ImageGenerationPlan,
        report: OnStage,
        references: Mapping[str, StoredObject],
        preview: OnPreview | None,
        progress: OnProgress | None = None,
    ) -> tuple[RenderedImage, int]:
        """The provider's image and its latency in ms, within the provider slot; a rate
        limit pauses every caller's provider calls (on every replica with Valkey). The
        plan's references are read from the store once the provider can take them, inside
        the slot: only renders holding a slot hold reference bytes (each at most
        MAX_REFERENCE_IMAGES x MAX_REFERENCE_IMAGE_BYTES), not the callers queued behind.
        preview, when someone listens and the provider can, hears its partial images;
        progress, when someone listens, how much of the render is done (0..1)."""
        problems = capability_problems(self._provider.capabilities(plan), plan, shape_inputs(plan))
        if problems:  # refused before any call: no provider slot, nothing read or sent
            raise InvalidRequest(problems)
        async with self._coordination.provider_slot(lambda: report(ExecutionStage.EXECUTION_STAGE_QUEUED)):
            inputs: RenderInputs = await read_inputs(plan, self._store, references)
            if preview is not None and self._provider.capabilities(plan).previews:
                inputs = dataclasses.replace(inputs, on_preview=preview)
            if progress is not None:
                inputs = dataclasses.replace(inputs, on_progress=progress)
            report(ExecutionStage.EXECUTION_STAGE_RENDERING)
            started = self._clock()
            try:
                image = await self._provider.render(plan, inputs)
            except ProviderThrottled as throttled:
                if throttled.retry_after:
                    await self._coordination.pause_provider(throttled.retry_after)
                raise
            return image, round((self._clock() - started) * 1000)

    async def _result(
        self, plan: ImageGenerationPlan, stored: StoredObject, *, reused: bool, revised_prompt: str = ""
    ) -> ImageGenerationResult:
        meta = stored.metadata
        result = ImageGenerationResult(
            image_url=await self._store.url(stored.key),
            proxy_url=f"{self._public_base_url}/{stored.key}",
            storage_path=self._store.storage_path(stored.key),
            mime_type=stored.content_type,
            byte_size=stored.size,
            width=_count(meta.get("width")),
            height=_count(meta.get("height")),
            content_sha256=meta.get("sha256", ""),
            provider=ProviderInfo(
                name=meta.get("provider", ""),
                model=meta.get("model", ""),
                revised_prompt=revised_prompt,
                estimated_cost_micros=_count(meta.get("cost-micros")),
            ),
            reused=reused,
            plan=plan,
            reference_images=recorded_references(meta, stored.key, self._store.storage_path),
        )
        if "total-tokens" in meta:
            result.provider.usage.CopyFrom(
                ProviderUsage(**{k.replace("-", "_"): _count(meta.get(k)) for k in _USAGE_KEYS})
            )
        result.provider.latency.FromMilliseconds(_count(meta.get("latency-ms")))
        seed = meta.get("seed", "")
        if seed.isascii() and seed.isdigit():
            result.provider.seed = int(seed)
        result.create_time.FromDatetime(stored.create_time.astimezone(dt.UTC))
        return result

    async def _listed(self, stored: StoredObject) -> ImageGenerationResult:
        """A listed image's result: the plan kept beside it, or (none readable) the plan's
        identity from its key and metadata."""
        session_id, folder, name = stored.key.split("/")
        identity = ImageGenerationPlan(
            plan_id=stored.metadata.get("plan-id") or name.partition(".")[0],
            session_id=session_id,
            image_type=image_type_spec(folder).value,
        )
        plan = await read_plan_sidecar(self._store, stored, identity) or identity
        return await self._result(plan, stored, reused=False)


def accepted_plan(plan: ImageGenerationPlan | None, request_id: str) -> ImageGenerationPlan:
    """plan as the executor executes it (fingerprinted, provenance cleared); InvalidRequest
    when it or request_id breaks a rule."""
    validate_execution(plan, request_id)
    assert plan is not None
    accepted = with_fingerprint(plan)
    accepted.ClearField("provenance")
    return accepted


def _metadata(
    plan: ImageGenerationPlan, provider: str, image: RenderedImage, latency_ms: int, cost_micros: int
) -> dict[str, Any]:
    values = (
        plan.plan_id,
        provider,
        image.model,
        str(image.width),
        str(image.height),
        hashlib.sha256(image.data).hexdigest(),
        str(latency_ms),
        str(cost_micros),
        "" if image.seed is None else str(image.seed),
    )
    # A key with no value is left out (stores differ on empty values): no seed was used.
    metadata = {key: value for key, value in zip(_META_KEYS, values, strict=True) if value}
    if image.usage is not None:
        metadata.update(zip(_USAGE_KEYS, map(str, _usage_values(image.usage)), strict=True))
    return metadata


def _usage_values(usage: Usage) -> tuple[int, int, int, int]:
    return usage.input_tokens, usage.input_image_tokens, usage.output_tokens, usage.total_tokens


def _count(value: str | None) -> int:
    """A metadata number: what the store keeps is read back bounded, junk as 0."""
    try:
        number = int(value or 0)
    except ValueError:
        return 0
    return number if 0 <= number < 2**62 else 0


def _seconds(duration: dt.timedelta) -> str:
    return f"{duration.total_seconds():g}"
