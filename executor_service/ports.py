"""What the executor needs from an image provider and an object store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    model: str
    revised_prompt: str = ""


class ImageProvider(Protocol):
    name: str

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        """The media type render() will return for this plan, known before rendering
        so the object key (and so dedup) does not need a render."""
        ...

    async def render(self, plan: ImageGenerationPlan) -> RenderedImage: ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    create_time: dt.datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    def storage_path(self, key: str) -> str:
        """ "bucket/key" for the result's storage_path."""
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
        """A URL that opens the stored object directly."""
        ...
