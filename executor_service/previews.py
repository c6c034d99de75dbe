"""Previews on the wire: a provider's partial image downsized to a bounded preview.

A partial image can be as large as the final one; watchers get at most
MAX_PREVIEW_SIDE pixels on the long side and MAX_PREVIEW_BYTES, as WebP (Pillow).
A partial image that does not decode, or that would not fit even small, is dropped:
a preview is a courtesy, never a reason to fail an execution."""

from __future__ import annotations

import io
import logging

from PIL import Image

from imagegen.catalogue import MAX_PREVIEW_BYTES, MAX_PREVIEW_SIDE
from imagegen.v1.executor_service_pb2 import ExecutionPreview

log = logging.getLogger(__name__)

# The largest partial image looked at, and its pixels (Pillow refuses a decompression
# bomb past its own limit; this is far lower: a partial image is at most a render's size).
MAX_PARTIAL_BYTES = 50 * 1024 * 1024
MAX_PARTIAL_PIXELS = 4096 * 4096
_QUALITIES = (80, 60, 40, 20)


def downsize(data: bytes, mime_type: str) -> ExecutionPreview | None:
    """data (an image of mime_type) as a preview within the limits, or None. CPU-bound:
    call it in a worker thread."""
    if len(data) > MAX_PARTIAL_BYTES:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PARTIAL_PIXELS:
                return None
            image.draft("RGB", (MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
            small = image.convert("RGB")
    except Exception:  # noqa: BLE001 - Pillow's plugins raise more than OSError on a bad image (SyntaxError, ...)
        log.info("a partial image (%s, %d bytes) does not decode; no preview", mime_type, len(data))
        return None
    small.thumbnail((MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
    while True:
        for quality in _QUALITIES:
            out = io.BytesIO()
            small.save(out, format="WEBP", quality=quality)
            if out.tell() <= MAX_PREVIEW_BYTES:
                return ExecutionPreview(
                    image_data=out.getvalue(), mime_type="image/webp", width=small.width, height=small.height
                )
        if max(small.size) <= 16:
            return None
        small = small.resize((max(1, small.width // 2), max(1, small.height // 2)))
