"""What the executor needs from an image provider and an object store."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan


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


class ImageProvider(Protocol):
    name: str

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        """The media type render() will return for this plan, known before rendering
        so the object key (and so dedup) does not need a render."""
        ...

    async def render(self, plan: ImageGenerationPlan) -> RenderedImage:
        """Render the plan's image. Cancelling the call must stop the work it
        waits on (for a remote provider: the request)."""
        ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    create_time: dt.datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


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
        """Store all of data under key, or nothing: never a partial object."""
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


class NoExecutionObserver:
    def reused(self, kind: ReuseKind) -> None:
        pass

    def stored(self, byte_size: int) -> None:
        pass
