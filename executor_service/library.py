"""A session's stored images: list them newest first, delete one or all, and sweep those
past the retention. The lifecycle side of the executor (docs/executor.md, "Image
lifecycle, quotas and cost"); the store and the coordination are its ports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

from executor_service import page_tokens
from executor_service.keys import PLAN_SIDECAR_KEY, STORED_KEY, key_from_storage_path, plan_sidecar_key
from executor_service.ports import ExecutionCoordination, ObjectStore, StoredObject
from imagegen.catalogue import (
    DEFAULT_LIST_PAGE_SIZE,
    IMAGE_TYPE_NAMES,
    MAX_LIST_PAGE_SIZE,
    MAX_LISTED_SESSION_IMAGES,
    image_type_name,
    image_type_spec,
)
from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationResult
from imagegen.validation import session_id_violations

# The store is read this many keys at a time when deleting a session or sweeping the bucket.
_BATCH = 1000
# Deletes (and a listed page's plan reads) in flight at once: the store's calls share one
# thread pool with GetImage and the rest.
_DELETES_AT_ONCE = 8
_DESCRIBED_AT_ONCE = 8
_IMAGE_TYPE_VALUES = frozenset(image_type_spec(name).value for name in IMAGE_TYPE_NAMES)

Describe = Callable[[StoredObject], Awaitable[ImageGenerationResult]]


class ImageLibrary:
    """describe: a stored image's result (the executor's, so a listed result reads like an
    executed one); page_token_key: what page tokens are signed with, the same on every
    replica (empty: random per process); now: the wall clock the sweep compares with."""

    def __init__(
        self,
        store: ObjectStore,
        coordination: ExecutionCoordination,
        describe: Describe,
        *,
        page_token_key: bytes = b"",
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self._store = store
        self._coordination = coordination
        self._describe = describe
        self._page_tokens = page_tokens.PageTokens(page_token_key)
        self._now = now

    async def list_images(
        self, session_id: str, image_type: int = 0, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ImageGenerationResult], str]:
        """(a page of session_id's stored images newest first, the next page's token or "").

        image_type 0 lists every type; page_size 0 means DEFAULT_LIST_PAGE_SIZE. Newest
        first needs the session's keys sorted by create time: the listing reads the keys of at
        most MAX_LISTED_SESSION_IMAGES images (in key order; plans beside them not counted)
        and sorts those. A listed result's
        plan is the one kept beside the image (_DESCRIBED_AT_ONCE read at a time); without
        a readable one, its identity only (plan_id, session_id, image_type). Plan sidecars
        are never listed as images. InvalidRequest for a
        bad session_id, image_type or page_size, or a page_token not issued for this listing."""
        violations = _session_violations(session_id)
        if image_type and image_type not in _IMAGE_TYPE_VALUES:
            violations.append(FieldViolation("image_type", "must be a known image type, or unset for every type"))
        if not 0 <= page_size <= MAX_LIST_PAGE_SIZE:
            violations.append(FieldViolation("page_size", f"must be 0 to {MAX_LIST_PAGE_SIZE}"))
        folder = image_type_name(image_type) if image_type in _IMAGE_TYPE_VALUES else ""
        listing = f"{session_id}/{folder + '/' if folder else ''}"
        after: tuple[int, str] | None = None
        if page_token:
            try:
                after = self._page_tokens.open(page_token, listing)
            except page_tokens.NotOurs:
                violations.append(
                    FieldViolation("page_token", "is not a token this server issued for this session and image_type")
                )
        if violations:
            raise InvalidRequest(violations)
        # Each image may have its plan beside it: twice the keys hold the limit's images.
        listed = await self._store.list(listing, 2 * MAX_LISTED_SESSION_IMAGES)
        objects = [o for o in listed if STORED_KEY.fullmatch(o.key)][:MAX_LISTED_SESSION_IMAGES]
        ordered = sorted(((_micros(o.create_time), o.key) for o in objects), reverse=True)
        if after is not None:
            ordered = [position for position in ordered if position < after]
        size = page_size or DEFAULT_LIST_PAGE_SIZE
        page, more = ordered[:size], len(ordered) > size
        stats = await asyncio.gather(*(self._store.stat(key) for _, key in page))
        slots = asyncio.Semaphore(_DESCRIBED_AT_ONCE)

        async def describe(stored: StoredObject) -> ImageGenerationResult:
            async with slots:
                return await self._describe(stored)

        results = list(await asyncio.gather(*(describe(stored) for stored in stats if stored is not None)))
        return results, (self._page_tokens.issue(page[-1], listing) if more and page else "")

    async def delete_image(self, storage_path: str) -> None:
        """Delete a stored image, then its plan and what the store keeps beside it; nothing
        there is no error. The next execution of its plan renders it again."""
        key = key_from_storage_path(storage_path, self._store.bucket)
        await self._store.delete(key)
        await self._store.delete(plan_sidecar_key(key))

    async def delete_session_images(self, session_id: str) -> int:
        """Delete every image of session_id, the plans kept beside them, and forget its
        request records; how many images this call deleted (0 when repeated). Other
        sessions' keys are never listed."""
        violations = _session_violations(session_id)
        if violations:
            raise InvalidRequest(violations)
        deleted = await self._delete_where(f"{session_id}/", lambda stored: True)
        await self._coordination.forget_session(session_id)
        return deleted

    async def sweep(self, retention: dt.timedelta) -> int:
        """Delete every image written more than retention ago (EXECUTOR_RETENTION_DAYS, when
        the store has no lifecycle rule doing it); how many. Plan sidecars go by their own
        age, which is never younger than their image's (they are written first), as a
        lifecycle rule over the same prefix does. A walk of the whole store, _BATCH keys at
        a time."""
        cutoff = self._now() - retention
        return await self._delete_where("", lambda stored: stored.create_time < cutoff)

    async def _delete_where(self, prefix: str, chosen: Callable[[StoredObject], bool]) -> int:
        deleted, after = 0, ""
        while batch := await self._store.list(prefix, _BATCH, after):
            after = batch[-1].key
            doomed = [o.key for o in batch if _ours(o.key) and chosen(o)]
            for start in range(0, len(doomed), _DELETES_AT_ONCE):
                await asyncio.gather(*(self._store.delete(key) for key in doomed[start : start + _DELETES_AT_ONCE]))
            deleted += sum(1 for key in doomed if STORED_KEY.fullmatch(key))
        return deleted


def _ours(key: str) -> bool:
    """An image the executor stored, or the plan it keeps beside one."""
    return bool(STORED_KEY.fullmatch(key) or PLAN_SIDECAR_KEY.fullmatch(key))


def _micros(when: dt.datetime) -> int:
    return round(when.timestamp() * 1_000_000)


def _session_violations(session_id: str) -> list[FieldViolation]:
    return session_id_violations("session_id", session_id)
