"""Image providers for benchmarks: fixed bytes, after a fixed latency, counted.

They stand in for a paid image API, whose seconds of latency are what the
executor must overlap rather than queue behind.
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from imagegen.catalogue import ProviderCapabilities
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan


def png_bytes(size: int = 512, *, at_least: int = 0) -> bytes:
    """A valid PNG; with at_least, noise-filled so it does not compress below that many bytes."""
    if at_least:
        side = int((at_least / 3) ** 0.5) + 1
        image = Image.frombytes("RGB", (side, side), bytes((i * 7919) % 251 for i in range(side * side * 3)))
    else:
        image = Image.new("RGB", (size, size), (90, 60, 30))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class FixedProvider:
    """Returns the same bytes after `latency` seconds; counts its calls."""

    name = "bench"

    def __init__(self, data: bytes, latency: float = 0.0) -> None:
        self.data = data
        self.latency = latency
        self.calls = 0

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)  # the provider's own latency, not synchronisation
        return RenderedImage(self.data, "image/png", 512, 512, model="fixed")


class FreshBytesProvider:
    """Returns `size` bytes at once, a new buffer per render, as a real provider's
    decoded response would be; PNG-signed so nothing downstream mistakes it."""

    name = "bench"

    def __init__(self, size: int) -> None:
        self.size = size

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        data = b"\x89PNG\r\n\x1a\n" + bytes(max(0, self.size - 8))
        return RenderedImage(data, "image/png", 2048, 2048, model="fresh")
