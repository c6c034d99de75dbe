"""Every provider's image is checked whole before the executor may store it.

The store is content-addressed: what is stored under a plan's key is what every later
execution of the plan gets back (reused). A broken answer stored once would be broken
for ever, so bootstrap wraps every provider in VerifiedProvider, and the chain and the
executor only ever see images that passed check_image:

- bytes: at least one, at most limits.max_bytes (EXECUTOR_MAX_IMAGE_BYTES);
- format: the one the provider announced for the plan, which the object key's
  extension is made from. Pillow is asked to read that format and no other, so no
  other parser ever sees a provider's bytes;
- size: the header's width x height, before any pixel is decoded, at most
  limits.max_pixels (MAX_SIDE squared) and exactly the plan's size. An image of
  another size is refused, not stored with its real size: the size is part of the
  plan (and of its plan_id), so the stored image, its width and height metadata and
  the result all say what the plan says;
- whole: the structure checked (for PNG every chunk's CRC), every pixel decoded,
  and nothing after the image's end (PNG's IEND chunk, JPEG's end marker, WebP's
  RIFF length).

A decompression bomb (Pillow's DecompressionBombError, or its DecompressionBombWarning,
made an error here) is refused like any header that claims too many pixels.

A refused image is ProviderUnavailable (UNAVAILABLE, retryable): it is a failure of
that one answer, which the next may not repeat, and another provider can render the
plan, so the chain falls back to it. The provider's bytes are logged by nothing but
their size and what was wrong with them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import threading
import warnings
from dataclasses import dataclass

from PIL import Image

from executor_service.ports import NO_INPUTS, ImageProvider, RenderedImage, RenderInputs
from imagegen.catalogue import MAX_SIDE, ProviderCapabilities
from imagegen.errors import ProviderUnavailable
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024

_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_SIGNATURES = (  # only to say what an image of the wrong format was
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_JPEG_END = b"\xff\xd9"
# warnings.catch_warnings changes the process's filters: one open at a time under it.
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = MAX_SIDE * MAX_SIDE


class BrokenImage(Exception):
    """What is wrong with an image, in words safe to return to a caller."""


def check_image(data: bytes, mime_type: str, width: int, height: int, limits: ImageLimits) -> None:
    """Raise BrokenImage unless data is one whole image in mime_type's format of
    exactly width x height, within limits. Decodes every pixel: call it off the loop."""
    if not data:
        raise BrokenImage("no bytes")
    if len(data) > limits.max_bytes:
        raise BrokenImage(f"{len(data)} bytes, more than the limit of {limits.max_bytes}")
    fmt = _PIL_FORMATS.get(mime_type)
    if fmt is None:
        raise BrokenImage(f"an image in {mime_type}, which the executor does not store")
    actual = _sniff(data)
    if actual is not None and actual != fmt:
        raise BrokenImage(f"a {actual} image when {fmt} was asked for")
    try:
        with _open(data, fmt) as image:
            found_width, found_height = image.size
            if found_width * found_height > limits.max_pixels:
                raise BrokenImage(
                    f"a {fmt} header claiming {found_width}x{found_height} pixels, "
                    f"more than {limits.max_pixels} in all"
                )
            if (found_width, found_height) != (width, height):
                raise BrokenImage(f"a {found_width}x{found_height} image when {width}x{height} was asked for")
            image.verify()
        if not _ends_whole(data, fmt):
            raise BrokenImage(f"a {fmt} image that is cut short or has bytes after its end")
        with _open(data, fmt) as image:  # verify() leaves the image unusable: open it again to decode it
            image.load()
    except BrokenImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BrokenImage(f"a {fmt} header claiming more pixels than any image may have") from None
    except Exception as exc:  # Pillow reports broken input as OSError, SyntaxError, ValueError, EOFError...
        raise BrokenImage(f"bytes that are not a whole {fmt} image ({type(exc).__name__})") from None


class VerifiedProvider:
    """An ImageProvider whose every image has passed check_image; a broken one is
    ProviderUnavailable naming the provider and its model."""

    def __init__(self, inner: ImageProvider, limits: ImageLimits = ImageLimits()) -> None:
        self.name = inner.name
        self.inner = inner
        self._limits = limits

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self.inner.capabilities(plan)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self.inner.mime_type(plan)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        mime_type = self.inner.mime_type(plan)
        width, height = parse_size(plan.size)
        image = await self.inner.render(plan, inputs)
        try:
            # Off the loop: decoding a large image takes a while. A cancelled call leaves
            # the check to finish in its thread (bounded by the limits) and stores nothing.
            await asyncio.to_thread(check_image, image.data, mime_type, width, height, self._limits)
        except BrokenImage as broken:
            log.warning(
                "provider %s (%s) returned %s (%d bytes); refused, nothing stored",
                self.name, image.model, broken, len(image.data),
            )
            raise ProviderUnavailable(
                f"the image provider {self.name} ({image.model}) returned {broken}",
                metadata={"provider": self.name, "model": image.model},
            ) from None
        return dataclasses.replace(image, mime_type=mime_type, width=width, height=height)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def _open(data: bytes, fmt: str) -> Image.Image:
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[fmt])  # BytesIO shares the bytes: no copy


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)


def _ends_whole(data: bytes, fmt: str) -> bool:
    if fmt == "PNG":
        return data.endswith(_PNG_END)
    if fmt == "JPEG":
        return data.endswith(_JPEG_END)
    return int.from_bytes(data[4:8], "little") + 8 == len(data)  # WEBP: the RIFF chunk is the file
