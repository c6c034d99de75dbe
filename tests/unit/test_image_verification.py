"""Nothing broken is ever stored: every provider's image is checked whole
(providers/verify.py) before the executor may store it, and a broken one makes the
provider chain fall back."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.verify import BrokenImage, ImageLimits, VerifiedProvider, check_image
from imagegen.catalogue import ProviderCapabilities
from imagegen.errors import ProviderUnavailable
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen_runtime.settings import ConfigError
from tests.support.images import png_claiming

LIMITS = ImageLimits()
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def encoded(fmt: str = "PNG", size: tuple[int, int] = (96, 64), *, noise: bool = True) -> bytes:
    """An image that does not compress to nothing, so a cut lands inside its pixels."""
    pixels = os.urandom(size[0] * size[1] * 3) if noise else bytes(size[0] * size[1] * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, format=fmt)
    return out.getvalue()


def check(data: bytes, fmt: str = "PNG", size: tuple[int, int] = (96, 64), limits: ImageLimits = LIMITS) -> None:
    check_image(data, MIME[fmt], *size, limits)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_whole_images_of_the_asked_format_and_size_pass(fmt: str) -> None:
    check(encoded(fmt), fmt)
    check(encoded(fmt, noise=False), fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("keep", [120, 0.5, -13, -1], ids=["first 120 bytes", "half", "less 13 bytes", "less 1 byte"])
def test_a_cut_image_is_refused(fmt: str, keep: float) -> None:
    data = encoded(fmt)
    cut = data[: int(keep * len(data)) if isinstance(keep, float) else keep]
    with pytest.raises(BrokenImage):
        check(cut, fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_bytes_after_the_images_end_are_refused(fmt: str) -> None:
    with pytest.raises(BrokenImage, match="cut short or has bytes after its end"):
        check(encoded(fmt) + b"<script>alert(1)</script>", fmt)


def test_a_png_whose_chunks_are_sound_but_whose_pixels_are_missing_is_refused() -> None:
    # Every CRC right and IEND in place, so only decoding every pixel finds it out.
    with pytest.raises(BrokenImage, match="not a whole PNG image"):
        check(png_claiming(96, 64))


def test_a_png_with_a_corrupted_chunk_is_refused() -> None:
    data = bytearray(encoded("PNG"))
    data[len(data) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches
    with pytest.raises(BrokenImage):
        check(bytes(data))


@pytest.mark.parametrize(
    ("data", "fmt", "problem"),
    [
        (b"", "PNG", "no bytes"),
        (b"<html><body>502 Bad Gateway</body></html>", "PNG", "not a whole PNG image"),
        (encoded("GIF"), "PNG", "a GIF image when PNG was asked for"),
        (encoded("JPEG"), "PNG", "a JPEG image when PNG was asked for"),
        (encoded("PNG"), "WEBP", "a PNG image when WEBP was asked for"),
        (encoded("BMP"), "JPEG", "a BMP image when JPEG was asked for"),
        (encoded("PNG", (1, 1)), "PNG", "a 1x1 image when 96x64 was asked for"),
        (encoded("PNG", (64, 96)), "PNG", "a 64x96 image when 96x64 was asked for"),
        (png_claiming(5000, 5000), "PNG", "header claiming 5000x5000 pixels"),
        (png_claiming(100_000, 100_000), "PNG", "more pixels than any image may have"),  # Pillow's bomb error
    ],
    ids=["empty", "html", "gif", "jpeg for png", "png for webp", "bmp", "1x1", "transposed", "5000x5000",
         "100000x100000"],
)
def test_what_is_not_the_asked_image_is_refused_saying_why(data: bytes, fmt: str, problem: str) -> None:
    with pytest.raises(BrokenImage, match=problem):
        check(data, fmt)


def test_a_header_claiming_the_asked_size_beyond_the_pixel_limit_is_refused_before_decoding() -> None:
    with pytest.raises(BrokenImage, match="header claiming 8000x8000 pixels"):
        check(png_claiming(8000, 8000), size=(8000, 8000), limits=ImageLimits(max_pixels=4096 * 4096))


def test_pillows_decompression_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # 96x64 = 6144 pixels: over a limit of 4000 (the warning), under twice it (the error).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(BrokenImage, match="more pixels than any image may have"):
        check(encoded("PNG"))


def test_more_bytes_than_the_limit_are_refused_before_any_decoding() -> None:
    data = encoded("PNG")
    check(data, limits=ImageLimits(max_bytes=len(data)))
    with pytest.raises(BrokenImage, match=f"{len(data)} bytes, more than the limit of {len(data) - 1}"):
        check(data, limits=ImageLimits(max_bytes=len(data) - 1))


# ------------------------------------------------------------------ the wrapper, in the chain
def plan(size: str = "96x64") -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt="A lantern", image_type=ImageType.IMAGE_TYPE_ITEM, style="painterly", size=size, session_id="s",
    )


class Returning:
    """A provider that returns data as a PNG, claiming whatever size it is told."""

    name = "scripted"

    def __init__(self, data: bytes, claimed: tuple[int, int] = (96, 64)) -> None:
        self.data, self.claimed, self.calls = data, claimed, 0

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        return RenderedImage(self.data, "image/png", *self.claimed, model="scripted-1")


async def test_a_broken_image_is_provider_unavailable_and_the_chain_falls_back() -> None:
    broken = Returning(encoded("PNG")[:120])
    chain = ProviderChain([VerifiedProvider(broken), VerifiedProvider(OfflineRenderer())])
    image = await chain.render(plan())
    assert broken.calls == 1 and image.provider == "offline"
    check(image.data)  # the fallback's image is whole

    with pytest.raises(ProviderUnavailable) as caught:
        await VerifiedProvider(broken).render(plan())
    assert caught.value.retryable and caught.value.reason == "PROVIDER_UNAVAILABLE"
    assert caught.value.metadata == {"provider": "scripted", "model": "scripted-1"}
    assert "not a whole PNG image" in caught.value.message


async def test_the_image_passed_on_says_the_real_format_and_size() -> None:
    whole = encoded("PNG")
    image = await VerifiedProvider(Returning(whole, claimed=(1, 1))).render(plan())
    assert (image.data, image.mime_type, image.width, image.height) == (whole, "image/png", 96, 64)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_the_offline_renderers_images_pass(fmt: str) -> None:
    image = await VerifiedProvider(OfflineRenderer(fmt)).render(plan("1024x1024"))
    assert (image.width, image.height, image.provider) == (1024, 1024, "")


# ------------------------------------------------------------------ the setting
def test_the_image_limit_is_configured_and_reaches_every_provider() -> None:
    assert ExecutorSettings.from_env({}).max_image_bytes == 50 * 1024 * 1024
    settings = ExecutorSettings.from_env({"EXECUTOR_MAX_IMAGE_BYTES": "1000", "EXECUTOR_PROVIDER": "openai,offline",
                                          "EXECUTOR_OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    chain = build_provider(settings)
    assert isinstance(chain, ProviderChain)
    assert [p._limits.max_bytes for p in chain.providers] == [1000, 1000]  # type: ignore[attr-defined]
    assert chain.providers[0].inner._max_image_bytes == 1000  # type: ignore[attr-defined]
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ConfigError, match="EXECUTOR_MAX_IMAGE_BYTES"):
            ExecutorSettings.from_env({"EXECUTOR_MAX_IMAGE_BYTES": bad})
