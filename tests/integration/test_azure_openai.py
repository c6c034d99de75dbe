"""Azure OpenAI: the openai SDK's AsyncAzureOpenAI client against the scripted
OpenAI-compatible server on loopback, at Azure's deployment paths
(/openai/deployments/{deployment}/images/generations?api-version=...), built from the
executor's settings as the service builds it (each image checked whole)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.ports import ImageProvider, ReferenceInput, RenderInputs
from executor_service.providers.openai_images import OpenAIImageProvider
from imagegen.catalogue import MAX_REFERENCE_IMAGES
from imagegen.errors import ContentRejected, ProviderNotCapable, ProviderThrottled, ProviderUnavailable
from tests.support import fake_openai as fo
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration

DEPLOYMENT = "images-eu"
API_VERSION = "2025-04-01-preview"
KEY = "azure-key-0123456789"
PATH = fo.azure_images_path(DEPLOYMENT)

make_plan = plan_maker(enhanced_prompt="A lich on a throne of bones", session_id="table-9")


def png(size: tuple[int, int] = (1024, 1024)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 90, 160)).save(out, format="PNG")
    return out.getvalue()


def azure(fake: fo.FakeOpenAI, **overrides: object) -> ImageProvider:
    settings: dict = dict(
        providers=("azure",), azure_openai_endpoint=fake.url, azure_openai_deployment=DEPLOYMENT,
        azure_openai_api_version=API_VERSION, azure_openai_api_key=KEY,
        openai_max_retries=0, openai_timeout_seconds=5.0,
    )
    settings.update(overrides)
    return build_provider(ExecutorSettings(**settings))


async def test_renders_through_the_deployment_with_the_key_and_api_version(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(PATH, fo.images_b64(png()))
    provider = azure(fake_openai)
    image = await provider.render(make_plan())
    (request,) = fake_openai.requests_to(PATH)
    assert request.query == f"api-version={API_VERSION}"
    assert request.headers["api-key"] == KEY
    assert request.body["prompt"] == "A lich on a throne of bones"
    assert image.mime_type == "image/png" and image.data == png()
    assert provider.name == "azure" and image.model == "gpt-image-2"
    fake_openai.assert_all_consumed()


async def test_signs_in_with_an_entra_token_when_given_a_token_provider(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(PATH, fo.images_b64(png()))

    async def token() -> str:
        return "entra-token-abc"

    provider = OpenAIImageProvider.connect_azure(
        endpoint=fake_openai.url, deployment=DEPLOYMENT, api_version=API_VERSION,
        token_provider=token, max_retries=0, timeout=5.0,
    )
    await provider.render(make_plan())
    (request,) = fake_openai.requests_to(PATH)
    assert request.headers["authorization"] == "Bearer entra-token-abc"
    assert "api-key" not in request.headers
    await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (fo.error(429, "slow down", headers={"Retry-After": "7"}), ProviderThrottled, 7.0),
        (fo.error(503, "down"), ProviderUnavailable, None),
        (fo.error(400, "blocked", code="content_policy_violation"), ContentRejected, None),
    ],
    ids=["rate-limit", "5xx", "content-rejected"],
)
async def test_failures_fall_into_the_shared_families(
    fake_openai: fo.FakeOpenAI, reply: fo.Reply, error: type[Exception], retry_after: float | None
) -> None:
    fake_openai.script(PATH, reply)
    with pytest.raises(error) as caught:
        await azure(fake_openai).render(make_plan())
    assert caught.value.metadata["provider"] == "azure"  # type: ignore[attr-defined]
    assert caught.value.retry_after == retry_after  # type: ignore[attr-defined]
    assert "slow down" not in str(caught.value) and "blocked" not in str(caught.value)


async def test_a_silent_deployment_times_out_and_is_hung_up_on(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(PATH, fo.hang())
    with pytest.raises(ProviderUnavailable, match="did not answer"):
        await azure(fake_openai, openai_timeout_seconds=0.5).render(make_plan())
    assert await asyncio.to_thread(fake_openai.wait_for_hang_ups, 1)


async def test_cancelling_a_render_hangs_up_on_the_deployment(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script(PATH, fo.hang())
    render = asyncio.create_task(azure(fake_openai).render(make_plan()))
    await asyncio.to_thread(fake_openai.wait_for_requests, 1, path=PATH)
    render.cancel()
    with pytest.raises(asyncio.CancelledError):
        await render
    assert await asyncio.to_thread(fake_openai.wait_for_hang_ups, 1)


async def test_a_plan_beyond_the_deployment_is_refused_without_a_request(fake_openai: fo.FakeOpenAI) -> None:
    reference = ReferenceInput("subject", "images/a.png", png((8, 8)), "image/png")
    beyond = (reference,) * (MAX_REFERENCE_IMAGES + 1)
    with pytest.raises(ProviderNotCapable, match="reference_images"):
        await azure(fake_openai).render(make_plan(), RenderInputs(references=beyond))
    assert fake_openai.requests_to(PATH) == []


def test_settings_name_the_missing_deployment() -> None:
    from imagegen_runtime.settings import ConfigError

    with pytest.raises(ConfigError, match="EXECUTOR_AZURE_OPENAI_DEPLOYMENT"):
        ExecutorSettings.from_env({"EXECUTOR_PROVIDER": "azure", "EXECUTOR_AZURE_OPENAI_ENDPOINT": "https://x.example"})


def test_without_a_key_entra_sign_in_needs_the_azure_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from imagegen_runtime.settings import ConfigError

    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)  # as when azure-identity is not installed
    settings = ExecutorSettings(providers=("azure",), azure_openai_endpoint="https://t.openai.azure.com",
                                azure_openai_deployment=DEPLOYMENT)
    with pytest.raises(ConfigError, match=r"imagegen\[executor,azure\]"):
        build_provider(settings)
