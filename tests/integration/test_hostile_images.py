"""A hostile or broken images endpoint, as the executor's callers see it: the real
openai SDK against the scripted server on loopback, the providers built from settings
as the service builds them, a real executor server called through clients/.

- Nothing broken is ever stored: a provider answer that is not one whole image of the
  asked format and size is PROVIDER_UNAVAILABLE, and the chain falls back.
- An unexpected answer (HTML, JSON of another shape, a redirect, a proxy's 404) is an
  upstream failure, PROVIDER_UNAVAILABLE, and the chain falls back.
- A timeout is a total timeout: an endpoint that drips its answer is given up on.
- Numbers and sizes from the endpoint are bounded before they are used.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.executor import Executor
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.fingerprint import with_fingerprint
from tests.conftest import PUBLIC_BASE
from tests.integration.test_openai_images import configured_provider, files_under, image_bytes, make_plan, openai_provider
from tests.support import fake_openai as fo
from tests.support.executor_server import running_executor
from tests.support.images import png_claiming

pytestmark = pytest.mark.integration

BOTH = ("openai", "offline")


def noisy(fmt: str, size: tuple[int, int] = (1024, 1024)) -> bytes:
    """An image that does not compress, so a cut lands inside its pixels."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, format=fmt)
    return out.getvalue()


def images_json(body: object) -> fo.Reply:
    return fo.Reply(200, body)


PNG, JPEG, WEBP = noisy("PNG"), noisy("JPEG"), noisy("WEBP")

# Answers that are not one whole image of the asked format and size (kind 3), and
# answers that are not the API's (kind 4). (reply, output format the plan asks for)
BROKEN = {
    "truncated png": (fo.images_b64(PNG[:120]), "png"),
    "png cut in half": (fo.images_b64(PNG[: len(PNG) // 2]), "png"),
    "png less its last byte": (fo.images_b64(PNG[:-1]), "png"),
    "truncated jpeg": (fo.images_b64(JPEG[: len(JPEG) // 2], output_format="jpeg"), "jpeg"),
    "truncated webp": (fo.images_b64(WEBP[: len(WEBP) - 100], output_format="webp"), "webp"),
    "zero bytes": (images_json({"created": 1, "data": [{"b64_json": ""}]}), "png"),
    "not an image": (fo.images_b64(b"<html><body>Service Unavailable</body></html>"), "png"),
    "gif for png": (fo.images_b64(image_bytes("GIF")), "png"),
    "1x1 for 1024x1024": (fo.images_b64(image_bytes(size=(1, 1))), "png"),
    "100000x100000 header": (fo.images_b64(png_claiming(100_000, 100_000)), "png"),
    "trailing bytes": (fo.images_b64(image_bytes() + b"<script>alert(1)</script>"), "png"),
    "not base64": (images_json({"created": 1, "data": [{"b64_json": "%%% not base64 %%%"}]}), "png"),
    "b64_json missing": (images_json({"created": 1, "data": [{"revised_prompt": "a beholder"}]}), "png"),
    "b64_json null": (images_json({"created": 1, "data": [{"b64_json": None}]}), "png"),
    "b64_json a number": (images_json({"created": 1, "data": [{"b64_json": 12345}]}), "png"),
    "data empty": (images_json({"created": 1, "data": []}), "png"),
    "data a string": (images_json({"data": "x"}), "png"),
    "data a list of strings": (images_json({"data": ["x"]}), "png"),
    "a list": (images_json([]), "png"),
    "null": (fo.raw(200, "null"), "png"),
    "html with 200": (fo.raw(200, "<html><body>Sign in to the Wi-Fi</body></html>", content_type="text/html"), "png"),
    "invalid json": (fo.raw(200, '{"data": [{"b64_json": "iVBOR'), "png"),
    "json nested past the parser's depth": (fo.raw(200, '{"data": ' + "[" * 10_000 + "]" * 10_000 + "}"), "png"),
    "not utf-8": (fo.raw(200, b"\xff\xfe\xfd garbage"), "png"),
    "404 html": (fo.raw(404, "<html><body>404 Not Found</body></html>", content_type="text/html"), "png"),
    "502 html": (fo.raw(502, "<html><body>Bad Gateway</body></html>", content_type="text/html"), "png"),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
async def test_a_broken_or_unexpected_answer_is_provider_unavailable_and_nothing_is_stored(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, case: tuple[fo.Reply, str]
) -> None:
    reply, output_format = case
    fake_openai.script_images(reply)
    plan = make_plan(metadata={"output_format": output_format})
    executor = Executor(configured_provider(fake_openai), LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(plan)
            fake_openai.script_images(fo.images_b64(image_bytes(output_format.upper())))
            retried = await client.execute_plan(plan)  # nothing was stored: the retry renders afresh
    error = caught.value
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True)
    assert error.plan == with_fingerprint(plan) and error.metadata["model"] == "gpt-image-2"
    assert not retried.reused and (retried.width, retried.height) == (1024, 1024)
    assert len(fake_openai.image_requests) == 2


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
async def test_a_broken_or_unexpected_answer_makes_the_chain_fall_back(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, case: tuple[fo.Reply, str]
) -> None:
    reply, output_format = case
    fake_openai.script_images(reply)
    plan = make_plan(metadata={"output_format": output_format})
    executor = Executor(configured_provider(fake_openai, BOTH), LocalObjectStore(tmp_path), PUBLIC_BASE)
    result = await executor.execute(plan)
    await executor.aclose()
    assert (result.provider.name, result.width, result.height) == ("offline", 1024, 1024)
    stored = tmp_path / result.storage_path.partition("/")[2]
    with Image.open(stored) as image:
        image.load()  # whole
        assert (image.format.lower(), image.size) == (output_format, (1024, 1024))


async def test_a_redirect_is_not_followed_and_the_chain_falls_back(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    # Followed, it would take the request (prompt included) wherever it points.
    fake_openai.script_images(fo.redirect(f"{fake_openai.url}/elsewhere/v1/images/generations", status=307))
    fake_openai.script("/elsewhere/v1/images/generations", fo.images_b64(image_bytes()))
    executor = Executor(configured_provider(fake_openai, BOTH), LocalObjectStore(tmp_path), PUBLIC_BASE)
    result = await executor.execute(make_plan())
    await executor.aclose()
    assert result.provider.name == "offline"
    assert [r.path for r in fake_openai.requests] == ["/v1/images/generations"]


async def test_an_image_stored_after_a_refused_one_is_the_fallbacks_and_is_reused_whole(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    """The issue's example: a PNG cut to its first 120 bytes used to be stored as OK and then
    returned as reused for ever."""
    fake_openai.script_images(fo.images_b64(PNG[:120]))
    executor = Executor(configured_provider(fake_openai, BOTH), LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            first = await client.execute_plan(make_plan())
            again = await client.execute_plan(make_plan())
            stored = await client.get_image(again.storage_path)
    assert (first.provider.name, again.reused, again.content_sha256) == ("offline", True, first.content_sha256)
    with Image.open(io.BytesIO(stored.data)) as image:
        image.load()
    assert PNG[:120] not in [p.read_bytes() for p in files_under(tmp_path)]


# ------------------------------------------------------------------ kind 5: a total timeout
async def test_an_answer_dripped_a_byte_at_a_time_times_out_and_the_chain_falls_back(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    # Never idle for a whole second, so a per-read timeout of 1 s never fires; the
    # body would take an hour. Only a total timeout per attempt gets the fallback's
    # image to the caller within its deadline.
    fake_openai.script_images(*[fo.drip(fo.images_b64(image_bytes()), interval=0.2)] * 2)
    provider = configured_provider(fake_openai, BOTH, openai_timeout_seconds=1.0, openai_max_retries=1)
    executor = Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan(), timeout=15)
    assert result.provider.name == "offline"
    assert len(fake_openai.image_requests) == 2  # the attempt and its one retry, each given up after 1 s


async def test_a_drip_with_no_fallback_is_provider_unavailable_before_the_callers_deadline(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script_images(fo.drip(fo.images_b64(image_bytes()), interval=0.2))
    provider = configured_provider(fake_openai, openai_timeout_seconds=1.0)
    async with running_executor(Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(make_plan(), timeout=15)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert "did not answer in time" in caught.value.message


async def test_the_whole_call_is_bounded_too(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    # Each attempt may take 60 s, but the whole call only 1 s: the call's own bound ends it.
    fake_openai.script_images(fo.drip(fo.images_b64(image_bytes()), interval=0.2))
    chain = ProviderChain([openai_provider(fake_openai, timeout=60, call_timeout=1.0), OfflineRenderer()])
    executor = Executor(chain, LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan(), timeout=15)
    assert result.provider.name == "offline"


# ------------------------------------------------------------------ kinds 6 and 15: bounded numbers and sizes
LIMIT = 256 * 1024  # EXECUTOR_MAX_IMAGE_BYTES in the tests below (the offline image is below it)


def b64_answer(size: int) -> fo.Reply:
    """An answer whose base64 text decodes to size bytes (not an image: nothing should decode it)."""
    return images_json({"created": 1, "data": [{"b64_json": base64.b64encode(os.urandom(size)).decode()}]})


OVERSIZED = {
    # The body fits the response limit (the base64 of LIMIT bytes and 1 MiB of room),
    # its base64 text does not: measured and refused before decoding.
    "base64 over the limit": (b64_answer(LIMIT + 3), "returned an image of more than 262144 bytes"),
    # The body itself is over the response limit: not read past it.
    "body over the limit": (b64_answer(2 * 1024 * 1024), "answered with more than"),
    # 16 MiB of JSON in a 16 KiB gzip body: the decoded bytes are what count.
    "gzip bomb": (fo.gzipped(fo.raw(200, b'{"data": [{"b64_json": "' + b"A" * (16 * 1024 * 1024) + b'"}]}')),
                  "answered with more than"),
    # Refused on its header, before any body is read.
    "content-length over the limit": (fo.Reply(200, {"data": []}, declared_length=str(10**12)), "answered with more than"),
}


@pytest.mark.parametrize("case", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_an_answer_over_the_size_limit_is_refused_unread_and_not_retried(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, case: tuple[fo.Reply, str]
) -> None:
    reply, message = case
    fake_openai.script_images(reply)
    provider = configured_provider(fake_openai, max_image_bytes=LIMIT, openai_max_retries=2)
    async with running_executor(Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(make_plan())
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    assert message in caught.value.message
    assert len(fake_openai.image_requests) == 1  # the same request would get the same answer
    assert files_under(tmp_path) == []


async def test_a_content_length_of_400_digits_is_a_broken_answer(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    # The HTTP client refuses a Content-Length of more than 20 digits as a protocol error,
    # which the SDK retries like a dropped connection: unavailable, nothing read.
    fake_openai.script_images(*[fo.Reply(200, {"data": []}, declared_length="9" * 400)] * 2)
    provider = configured_provider(fake_openai, openai_max_retries=1)
    async with running_executor(Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(make_plan())
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
    fake_openai.assert_all_consumed()


async def test_an_oversized_answer_makes_the_chain_fall_back(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.script_images(b64_answer(2 * 1024 * 1024))
    provider = configured_provider(fake_openai, BOTH, max_image_bytes=LIMIT)
    executor = Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)
    result = await executor.execute(make_plan())
    await executor.aclose()
    assert result.provider.name == "offline"


MAX = MAX_RETRY_AFTER.total_seconds()


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("9" * 400, MAX), ("1e308", MAX), ("inf", MAX), ("-30", 0.0), ("nan", None),
     ("Fri, 31 Dec 9999 23:59:59 GMT", MAX), ("Mon, 01 Jan 1900 00:00:00 GMT", 0.0)],
    ids=["400 digits", "1e308", "inf", "negative", "nan", "far future", "far past"],
)
async def test_a_rate_limit_with_any_retry_after_is_resource_exhausted_with_a_bounded_wait(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, retry_after: str, seconds: float | None
) -> None:
    fake_openai.script_images(fo.error(429, "slow down", headers={"Retry-After": retry_after}))
    provider = configured_provider(fake_openai)
    async with running_executor(Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(make_plan())
    error = caught.value
    assert (error.code, error.reason, error.retry_after) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED", seconds,
    )
