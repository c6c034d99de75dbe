"""The OpenAI Images provider: the real openai SDK against the scripted
OpenAI-compatible server on loopback, inside a real executor server called
through clients/. Each failure is checked as the caller sees it: status code,
ErrorInfo reason, retryability and the plan in the details."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.ports import ImageProvider, RenderInputs
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import ENVELOPE_BYTES, OpenAIImageProvider, base64_length
from executor_service.stores.local_store import LocalObjectStore
from imagegen.errors import ContentRejected, ProviderUnavailable
from imagegen.fingerprint import with_fingerprint
from tests.conftest import PUBLIC_BASE
from tests.support import fake_openai as fo
from tests.support.executor_server import running_executor
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration

API_KEY = "sk-test-executor-0123456789"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (1024, 1024)) -> bytes:
    """A whole image of the test plans' size (1024x1024), as a provider would send it."""
    out = io.BytesIO()
    Image.new("RGB", size, (120, 40, 200)).save(out, format=fmt)
    return out.getvalue()


make_plan = plan_maker(enhanced_prompt="A beholder floating over a treasure hoard", style="dark-fantasy", session_id="table-7")


def openai_provider(fake: fo.FakeOpenAI, **options: object) -> OpenAIImageProvider:
    """The provider alone, without the check every image gets in the service (verified_provider)."""
    settings: dict = dict(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=5.0)
    settings.update(options)
    return OpenAIImageProvider.connect(**settings)


def configured_provider(fake: fo.FakeOpenAI, providers: tuple[str, ...] = ("openai",), **overrides: object) -> ImageProvider:
    """The provider(s) as the service builds them from its settings: each image checked
    whole (providers/verify.py), in a fallback chain when there are several."""
    settings: dict = dict(providers=providers, openai_base_url=fake.base_url, openai_api_key=API_KEY,
                          openai_max_retries=0, openai_timeout_seconds=5.0)
    settings.update(overrides)
    return build_provider(ExecutorSettings(**settings))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_renders_through_the_sdk_and_records_who_rendered(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.images_b64(png, revised_prompt="A beholder, eyestalks writhing"))
    store = LocalObjectStore(tmp_path, bucket="images")
    plan = make_plan()
    async with running_executor(Executor(configured_provider(fake_openai), store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(plan)
    (request,) = fake_openai.image_requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert {k: request.body[k] for k in ("model", "prompt", "n", "size", "quality", "output_format", "moderation")} == {
        "model": "gpt-image-2", "prompt": plan.enhanced_prompt, "n": 1, "size": "1024x1024",
        "quality": "auto", "output_format": "png", "moderation": "auto",
    }
    assert "table-7" not in str(request.body)  # the session is identified only by a hash
    assert (result.provider.name, result.provider.model) == ("openai", "gpt-image-2")
    assert result.provider.revised_prompt == "A beholder, eyestalks writhing"
    assert (result.mime_type, result.width, result.height, result.byte_size) == ("image/png", 1024, 1024, len(png))
    key = f"table-7/creature/{with_fingerprint(plan).plan_id}.png"
    assert result.storage_path == f"images/{key}"
    assert (tmp_path / key).read_bytes() == png


async def test_plan_metadata_chooses_quality_format_and_moderation(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> None:
    webp = image_bytes("WEBP", (1536, 864))
    fake_openai.script_images(fo.images_b64(webp, output_format="webp"))
    plan = make_plan(size="1536x864", metadata={"quality": "high", "output_format": "webp", "moderation": "low"})
    provider = configured_provider(fake_openai, openai_quality="low")
    executor = Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)
    result = await executor.execute(plan)
    await executor.aclose()
    body = fake_openai.image_requests[0].body
    assert (body["quality"], body["output_format"], body["moderation"], body["size"]) == ("high", "webp", "low", "1536x864")
    assert result.mime_type == "image/webp" and result.storage_path.endswith(".webp")


# (scripted reply, settings, code, reason, retryable, retry_after)
FAILURES = {
    "429": (fo.error(429, "slow down", headers={"Retry-After": "7"}), {},
            grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED", True, 7.0),
    "429 quota": (fo.error(429, "no credit", code="insufficient_quota"), {},
                  grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_NOT_USABLE", False, None),
    "500": (fo.error(500, "boom"), {}, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True, None),
    "timeout": (fo.delay(5, fo.images_b64(image_bytes())), {"openai_timeout_seconds": 0.3},
                grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True, None),
    "disconnect": (fo.disconnect(), {}, grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True, None),
    "moderation_blocked": (
        fo.error(400, "Your request was rejected by the safety system.", type="image_generation_user_error",
                 code="moderation_blocked"), {},
        grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_REJECTED", False, None),
    "401": (fo.error(401, "Incorrect API key provided: sk-test..."), {},
            grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_NOT_USABLE", False, None),
    "not base64": (fo.Reply(200, {"created": 1, "data": [{"b64_json": "%%%"}]}), {},
                   grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True, None),
    "wrong format": (fo.images_b64(image_bytes("JPEG")), {},
                     grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True, None),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
async def test_provider_failures_reach_the_caller_with_the_plan(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, case: tuple
) -> None:
    reply, settings, code, reason, retryable, retry_after = case
    fake_openai.script_images(reply)
    plan = make_plan()
    executor = Executor(configured_provider(fake_openai, **settings), LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(plan)
    error = caught.value
    assert (error.code, error.reason, error.retryable, error.retry_after) == (code, reason, retryable, retry_after)
    assert error.plan == with_fingerprint(plan)  # from the status details, plan_id filled in
    assert error.metadata["model"] == "gpt-image-2"
    assert "sk-test" not in error.message  # the provider's own message is not passed on
    assert len(fake_openai.image_requests) == 1
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(("model", "size"), [("gpt-image-2", "512x512"), ("gpt-image-1.5", "1536x864")])
async def test_a_size_the_model_cannot_render_is_rejected_before_any_request(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, model: str, size: str
) -> None:
    executor = Executor(openai_provider(fake_openai, model=model), LocalObjectStore(tmp_path), PUBLIC_BASE)
    async with running_executor(executor) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(make_plan(size=size))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["plan.size"] and model in caught.value.violations[0].description
    assert fake_openai.requests == []


async def test_the_chain_falls_back_on_an_outage_but_never_on_rejected_content(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script_images(
        fo.error(503, "overloaded"),
        fo.error(400, "blocked", type="image_generation_user_error", code="moderation_blocked"),
    )
    chain = ProviderChain([openai_provider(fake_openai), OfflineRenderer()])
    executor = Executor(chain, LocalObjectStore(tmp_path), PUBLIC_BASE)
    fell_back = await executor.execute(make_plan())
    assert (fell_back.provider.name, fell_back.provider.model) == ("offline", "offline-renderer-1")
    with pytest.raises(ContentRejected) as caught:
        await executor.execute(make_plan(enhanced_prompt="Something else entirely"))
    await executor.aclose()
    assert caught.value.plan.enhanced_prompt == "Something else entirely"
    assert len(fake_openai.image_requests) == 2
    # The fallback's image and its plan (each with the local store's sidecar), nothing for the rejected plan.
    assert len(files_under(tmp_path)) == 4


async def test_previews_stream_partial_images_then_the_image(fake_openai: fo.FakeOpenAI) -> None:
    """With a preview listener the provider asks for a streamed generation (stream=True,
    partial_images) and tells the listener each partial image, in order."""
    png = image_bytes()
    partials = [image_bytes(size=(64, 64)), image_bytes(size=(128, 128))]
    fake_openai.script_images(fo.images_stream(png, partials))
    provider = openai_provider(fake_openai)
    heard: list[tuple[bytes, str]] = []
    try:
        image = await provider.render(make_plan(), RenderInputs(on_preview=lambda data, mime: heard.append((data, mime))))
    finally:
        await provider.aclose()
    assert image.data == png and heard == [(partials[0], "image/png"), (partials[1], "image/png")]
    body = fake_openai.image_requests[0].body
    assert body["stream"] is True and body["partial_images"] == 2


async def test_without_a_listener_no_stream_is_asked_for(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_images(fo.images_b64(image_bytes()))
    provider = openai_provider(fake_openai)
    try:
        await provider.render(make_plan())
    finally:
        await provider.aclose()
    assert "stream" not in fake_openai.image_requests[0].body


async def test_a_streamed_image_past_the_limit_is_refused_and_so_are_its_partials(fake_openai: fo.FakeOpenAI) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.images_stream(png, [png, png]))
    provider = openai_provider(fake_openai, max_image_bytes=len(png) // 2)
    heard: list[bytes] = []
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.render(make_plan(), RenderInputs(on_preview=lambda data, mime: heard.append(data)))
    finally:
        await provider.aclose()
    assert heard == []


async def test_a_stream_is_not_read_past_its_bound(fake_openai: fo.FakeOpenAI) -> None:
    """Partial images of 4 MB each against a 1 KB image limit: the stream's bound (the
    image and each partial at most the image's size, with their envelopes) ends the read."""
    big = bytes(4 * 1024 * 1024)
    fake_openai.script_images(fo.images_stream(image_bytes(), [big, big]))
    provider = openai_provider(fake_openai, max_image_bytes=1024)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.render(make_plan(), RenderInputs(on_preview=lambda data, mime: None))
    finally:
        await provider.aclose()
    bound = 3 * (base64_length(1024) + ENVELOPE_BYTES)  # read as it arrives: no length is declared
    assert caught.value.message.endswith(f"answered with more than {bound} bytes")
