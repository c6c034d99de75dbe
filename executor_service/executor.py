"""The execution use case: a plan in, a stored image and its result out.

The same plan always maps to the same object key, so an image that is already
stored is returned with reused=True and nothing is rendered; concurrent
executions of one plan share a single render; a request_id makes a retried
call return the first call's result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from executor_service.ports import ImageProvider, ObjectStore, RenderedImage, StoredObject
from imagegen.contract import image_type_name, with_fingerprint
from imagegen.errors import FieldViolation, ImagegenError, InvalidRequest
from imagegen.v1.executor_service_pb2 import ExecutePlanRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult, ProviderInfo
from imagegen.validation import validate_execute_plan_request

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# User metadata written beside every image, so a reused result is as complete
# as a fresh one without reading the image back.
_META_KEYS = ("plan-id", "provider", "model", "width", "height", "sha256", "latency-ms")


def object_key(plan: ImageGenerationPlan, mime_type: str) -> str:
    """{session_id}/{image_type}/{plan_id}.{ext}; session_id is validated as a
    safe path segment before this is called."""
    return f"{plan.session_id}/{image_type_name(plan.image_type)}/{plan.plan_id}.{_EXTENSIONS[mime_type]}"


class Executor:
    def __init__(
        self,
        provider: ImageProvider,
        store: ObjectStore,
        public_base_url: str,
        *,
        remembered_requests: int = 10_000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._provider = provider
        self._store = store
        self._public_base_url = public_base_url.rstrip("/")
        self._clock = clock
        self._in_flight: dict[str, asyncio.Future[ImageGenerationResult]] = {}
        self._by_request_id: OrderedDict[str, ImageGenerationResult] = OrderedDict()
        self._remembered_requests = remembered_requests

    async def execute(self, request: ExecutePlanRequest) -> ImageGenerationResult:
        validate_execute_plan_request(request)
        plan = with_fingerprint(request.plan)
        plan.ClearField("provenance")
        try:
            if request.request_id:
                earlier = self._by_request_id.get(request.request_id)
                if earlier is not None:
                    return self._replay(request.request_id, earlier, plan)
            result = await self._execute_once(plan)
            if request.request_id:
                self._remember(request.request_id, result)
            return result
        except ImagegenError as error:
            error.plan = error.plan or plan
            raise

    async def _execute_once(self, plan: ImageGenerationPlan) -> ImageGenerationResult:
        key = object_key(plan, self._provider.mime_type(plan))
        running = self._in_flight.get(key)
        if running is None:
            running = asyncio.ensure_future(self._stored_or_render(plan, key))
            self._in_flight[key] = running
            running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded so one caller going away does not cancel the others' render.
        return await asyncio.shield(running)

    async def _stored_or_render(self, plan: ImageGenerationPlan, key: str) -> ImageGenerationResult:
        existing = await self._store.stat(key)
        if existing is not None:
            return await self._result(plan, existing, reused=True)
        started = self._clock()
        image = await self._provider.render(plan)
        latency_ms = round((self._clock() - started) * 1000)
        stored = await self._store.put(key, image.data, image.mime_type, _metadata(plan, self._provider.name, image, latency_ms))
        return await self._result(plan, stored, reused=False, revised_prompt=image.revised_prompt)

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
            width=int(meta.get("width", 0)),
            height=int(meta.get("height", 0)),
            content_sha256=meta.get("sha256", ""),
            provider=ProviderInfo(
                name=meta.get("provider", ""), model=meta.get("model", ""), revised_prompt=revised_prompt
            ),
            reused=reused,
            plan=plan,
        )
        result.provider.latency.FromMilliseconds(int(meta.get("latency-ms", 0)))
        result.create_time.FromDatetime(stored.create_time.astimezone(dt.timezone.utc))
        return result

    def _replay(self, request_id: str, earlier: ImageGenerationResult, plan: ImageGenerationPlan) -> ImageGenerationResult:
        if earlier.plan.plan_id != plan.plan_id:
            raise InvalidRequest(
                [FieldViolation("request_id", "was already used for a different plan")]
            )
        self._by_request_id.move_to_end(request_id)
        return earlier

    def _remember(self, request_id: str, result: ImageGenerationResult) -> None:
        self._by_request_id[request_id] = result
        while len(self._by_request_id) > self._remembered_requests:
            self._by_request_id.popitem(last=False)


def _metadata(plan: ImageGenerationPlan, provider: str, image: RenderedImage, latency_ms: int) -> dict[str, Any]:
    values = (
        plan.plan_id,
        provider,
        image.model,
        str(image.width),
        str(image.height),
        hashlib.sha256(image.data).hexdigest(),
        str(latency_ms),
    )
    return dict(zip(_META_KEYS, values, strict=True))
