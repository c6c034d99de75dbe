"""Benchmark 9: the memory one large OpenAI Images answer costs the executor.

The provider as the service builds it (build_provider: the bounded SDK client, the
base64 measured before it is decoded, the image checked whole) renders one plan
against the scripted OpenAI-compatible server on loopback (tests/support/fake_openai,
in this process; its reply is pre-encoded, so it adds next to nothing). Peak memory is
Python's allocations, traced with tracemalloc; Pillow's pixel buffer while the image is
checked is its own C allocation and not in the figure (width x height x 3 bytes).

- an accepted answer: a noisy PNG at the largest size gpt-image-2 renders
  (3840x2160, about 24 MB); its peak against the image's own size, measured in the
  same run (the bytes that must exist at the end);
- answers over the limit (EXECUTOR_MAX_IMAGE_BYTES 8 MiB, an answer four times that),
  refused on their Content-Length, or while read (a gzip body, which declares only its
  compressed length): their peak against the most that may be read (the base64 of the
  limit and the room for the JSON around it).

For context each row also has before_mb: the same answer read as the provider read it
before it was bounded (the plain SDK client, its JSON parse, base64.b64decode).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from PIL import Image

from bench.harness import Target, report
from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.providers.openai_images import ENVELOPE_BYTES, base64_length
from imagegen.errors import ProviderUnavailable
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.support import fake_openai as fo

MB = 1024 * 1024


def noisy_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def answer(data: bytes) -> fo.Reply:
    """An images response carrying data, encoded once, up front (raw bytes are sent as they are)."""
    body = {"created": 1, "data": [{"b64_json": base64.b64encode(data).decode()}], "output_format": "png"}
    return fo.raw(200, json.dumps(body).encode())


async def traced_peak(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """(peak MB of Python allocations during call, what it returned or raised)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        outcome: Any = await call()
    except Exception as exc:  # the refused answer: its error is the outcome
        outcome = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MB, outcome


async def run(quick: bool = False) -> dict:
    width, height = (1024, 1024) if quick else (3840, 2160)
    limit = 8 * MB
    png = noisy_png(width, height)
    oversized = os.urandom((2 if quick else 4) * limit)
    plan = ImageGenerationPlan(
        enhanced_prompt="A dragon's hoard", image_type=ImageType.IMAGE_TYPE_ITEM, style="painterly",
        size=f"{width}x{height}", session_id="bench",
    )
    readable = (base64_length(limit) + ENVELOPE_BYTES) / MB
    rows = []
    with fo.FakeOpenAI() as fake:
        settings = dict(providers=("openai",), openai_base_url=fake.base_url, openai_max_retries=0)

        async def render(reply: fo.Reply, **limits: int) -> tuple[float, Any]:
            provider = build_provider(ExecutorSettings(**settings, **limits))  # type: ignore[arg-type]
            fake.script_images(reply)
            try:
                return await traced_peak(lambda: provider.render(plan))
            finally:
                await provider.aclose()

        async def as_before(reply: fo.Reply) -> float:
            """What the provider held before this was bounded: the plain SDK client read the
            answer whole and parsed it, and the base64 was decoded with b64decode."""
            client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="bench", max_retries=0)
            fake.script_images(reply)

            async def call() -> bytes:
                response = await client.images.generate(model="gpt-image-2", prompt="x", size=plan.size)  # type: ignore[arg-type]
                return base64.b64decode(response.data[0].b64_json, validate=True)  # type: ignore[index, arg-type]

            try:
                return (await traced_peak(call))[0]
            finally:
                await client.close()

        peak, image = await render(answer(png))
        assert image.data == png, image
        before = await as_before(answer(png))
        rows.append({"answer": f"accepted: {len(png) / MB:.1f} MB PNG ({width}x{height})",
                     "baseline": "the image", "baseline_mb": len(png) / MB, "peak_mb": peak,
                     "ratio": peak / (len(png) / MB), "before_mb": before})

        peak, refused = await render(answer(oversized), max_image_bytes=limit)
        assert isinstance(refused, ProviderUnavailable), refused
        rows.append({"answer": f"refused on its length: {len(oversized) // MB} MiB over {limit // MB} MiB",
                     "baseline": "most read", "baseline_mb": readable, "peak_mb": peak, "ratio": peak / readable,
                     "before_mb": await as_before(answer(oversized))})

        bomb = fo.gzipped(answer(bytes(len(oversized))))  # zeros: a small body that decodes large
        peak, refused = await render(bomb, max_image_bytes=limit)
        assert isinstance(refused, ProviderUnavailable), refused
        rows.append({"answer": f"refused while read: gzip, {len(bomb.body) // 1024} KiB to {len(oversized) * 4 // 3 // MB} MiB",
                     "baseline": "most read", "baseline_mb": readable, "peak_mb": peak, "ratio": peak / readable,
                     "before_mb": await as_before(bomb)})
    accepted, on_length, while_read = rows
    return report(
        "provider_memory",
        rows,
        [
            Target("accepted answer: peak / image size", accepted["ratio"], 3.0, "<="),
            Target("refused on its length: peak / most that may be read", on_length["ratio"], 0.1, "<="),
            Target("refused while read: peak / most that may be read", while_read["ratio"], 1.5, "<="),
        ],
    )


if __name__ == "__main__":
    asyncio.run(run())
