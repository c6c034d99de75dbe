"""Gemini and Imagen: the google-genai SDK pointed (http_options base_url) at a loopback
server that speaks Google's REST API, built from the executor's settings as the service
builds it (each image checked whole)."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator

import pytest
from google.oauth2.credentials import Credentials
from PIL import Image

from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.ports import ImageProvider, ReferenceInput, RenderInputs
from executor_service.providers.google_images import IMAGEN, GoogleImageProvider
from executor_service.providers.verify import ImageLimits, VerifiedProvider
from imagegen.errors import (
    ContentRejected,
    InvalidRequest,
    ProviderMisconfigured,
    ProviderNotCapable,
    ProviderThrottled,
    ProviderUnavailable,
)
from tests.support import fake_google as fg
from tests.support import fake_openai as fo
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration

GEMINI_MODEL = "gemini-2.5-flash-image"
IMAGEN_MODEL = "imagen-4.0-generate-001"
KEY = "google-key-0123456789"
GEMINI = fg.gemini_path(GEMINI_MODEL)
IMAGEN_PATH = fg.vertex_path("table-top", "europe-west4", IMAGEN_MODEL)

make_plan = plan_maker(enhanced_prompt="A bard serenading a dragon", session_id="table-2", size="1344x768")


def png(size: tuple[int, int] = (1344, 768)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 10)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def fake() -> Iterator[fg.FakeGoogle]:
    with fg.FakeGoogle() as server:
        yield server


def gemini(fake: fg.FakeGoogle, **overrides: object) -> ImageProvider:
    settings: dict = dict(providers=("gemini",), google_api_key=KEY, google_base_url=fake.url,
                          google_max_retries=0, google_timeout_seconds=5.0)
    settings.update(overrides)
    return build_provider(ExecutorSettings(**settings))


def imagen(fake: fg.FakeGoogle, timeout: float = 5.0) -> ImageProvider:
    """Imagen on Vertex AI, signed in with a fixed OAuth token (what Application Default
    Credentials would provide)."""
    provider = GoogleImageProvider.connect(
        kind=IMAGEN, model=IMAGEN_MODEL, vertex_project="table-top", vertex_location="europe-west4",
        credentials=Credentials(token="ya29.test-token"), base_url=fake.url, timeout=timeout, max_retries=0,
    )
    return VerifiedProvider(provider, ImageLimits())


async def test_gemini_renders_with_the_references_as_image_parts_and_the_plans_seed(fake: fg.FakeGoogle) -> None:
    image = png()
    fake.script(GEMINI, fg.gemini_image(image))
    reference = ReferenceInput("subject", "images/t/hero.png", png((16, 16)), "image/png")
    rendered = await gemini(fake).render(make_plan(metadata={"seed": "77"}), RenderInputs(references=(reference,)))
    (request,) = fake.requests_to(GEMINI)
    assert request.headers["x-goog-api-key"] == KEY
    (content,) = request.body["contents"]
    inline = content["parts"][0]["inlineData"]
    assert inline["data"] == base64.b64encode(reference.data).decode()
    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"
    assert content["parts"][1]["text"] == "A bard serenading a dragon"
    config = request.body["generationConfig"]
    assert config["seed"] == 77 and config["responseModalities"] == ["IMAGE"]
    assert config["imageConfig"]["aspectRatio"] == "16:9"
    assert rendered.data == image and rendered.seed == 77 and rendered.model == GEMINI_MODEL


async def test_imagen_renders_on_vertex_with_the_aspect_ratio_and_seed(fake: fg.FakeGoogle) -> None:
    image = png((1408, 768))
    fake.script(IMAGEN_PATH, fg.imagen_image(image))
    rendered = await imagen(fake).render(make_plan(size="1408x768", metadata={"seed": "5"}))
    (request,) = fake.requests_to(IMAGEN_PATH)
    assert request.headers["authorization"] == "Bearer ya29.test-token"
    assert request.body["instances"] == [{"prompt": "A bard serenading a dragon"}]
    parameters = request.body["parameters"]
    assert (parameters["aspectRatio"], parameters["seed"], parameters["sampleCount"]) == ("16:9", 5, 1)
    assert parameters["addWatermark"] is False
    assert rendered.data == image and rendered.seed == 5


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (fg.google_error(429, "RESOURCE_EXHAUSTED", headers={"Retry-After": "11"}), ProviderThrottled, "rate limiting"),
        (fg.google_error(503, "UNAVAILABLE"), ProviderUnavailable, "HTTP 503"),
        (fg.google_error(403, "PERMISSION_DENIED"), ProviderMisconfigured, "credentials"),
        (fg.gemini_blocked("PROHIBITED_CONTENT"), ContentRejected, "PROHIBITED_CONTENT"),
        (fg.gemini_finished("IMAGE_SAFETY"), ContentRejected, "IMAGE_SAFETY"),
        (fo.raw(200, "<html>captive portal</html>", content_type="text/html"), ProviderUnavailable, "not an API answer"),
        (fo.raw(200, "[" * 10_000 + "]" * 10_000), ProviderUnavailable, "not an API answer"),
    ],
    ids=["rate-limit", "5xx", "bad-key", "prompt-blocked", "image-filtered", "not-json", "json-nested-past-the-parsers-depth"],
)
async def test_gemini_failures_fall_into_the_shared_families(
    fake: fg.FakeGoogle, reply: fo.Reply, error: type[Exception], words: str
) -> None:
    fake.script(GEMINI, reply)
    with pytest.raises(error, match=words) as caught:
        await gemini(fake).render(make_plan())
    assert caught.value.metadata["provider"] == "gemini"  # type: ignore[attr-defined]
    assert "fake Google error" not in str(caught.value)
    if error is ProviderThrottled:
        assert caught.value.retry_after == 11.0  # type: ignore[attr-defined]


async def test_imagen_filtered_image_is_rejected_content(fake: fg.FakeGoogle) -> None:
    fake.script(IMAGEN_PATH, fg.imagen_filtered())
    with pytest.raises(ContentRejected, match="filtered"):
        await imagen(fake).render(make_plan(size="1408x768"))


async def test_an_answer_larger_than_an_image_may_be_is_not_read(fake: fg.FakeGoogle) -> None:
    fake.script(GEMINI, fg.gemini_image(png(), text="padding " * 300_000))  # over the image's base64 and 1 MiB
    with pytest.raises(ProviderUnavailable, match="larger than"):
        await gemini(fake, max_image_bytes=1000).render(make_plan())


async def test_a_silent_server_times_out_and_is_hung_up_on(fake: fg.FakeGoogle) -> None:
    fake.script(GEMINI, fo.hang())
    with pytest.raises(ProviderUnavailable, match="in time"):
        await gemini(fake, google_timeout_seconds=0.5).render(make_plan())
    assert await asyncio.to_thread(fake.wait_for_hang_ups, 1)


async def test_cancelling_a_render_hangs_up_on_the_server(fake: fg.FakeGoogle) -> None:
    fake.script(IMAGEN_PATH, fo.hang())
    render = asyncio.create_task(imagen(fake).render(make_plan(size="1408x768")))
    await asyncio.to_thread(fake.wait_for_requests, 1, path=IMAGEN_PATH)
    render.cancel()
    with pytest.raises(asyncio.CancelledError):
        await render
    assert await asyncio.to_thread(fake.wait_for_hang_ups, 1)


async def test_plans_beyond_the_model_are_refused_without_a_request(fake: fg.FakeGoogle) -> None:
    with pytest.raises(ProviderNotCapable, match="plan.size"):
        await gemini(fake).render(make_plan(size="1000x1000"))
    reference = ReferenceInput("subject", "images/a.png", png((8, 8)), "image/png")
    with pytest.raises(ProviderNotCapable, match="reference_images"):
        await imagen(fake).render(make_plan(size="1408x768"), RenderInputs(references=(reference,)))
    with pytest.raises(ProviderNotCapable, match="at most 3"):
        await gemini(fake).render(make_plan(), RenderInputs(references=(reference,) * 4))
    assert fake.requests == []


async def test_a_chain_passes_a_size_gemini_does_not_render_to_the_next_provider(
    fake: fg.FakeGoogle, fake_openai: fo.FakeOpenAI
) -> None:
    image = png((1536, 1024))
    fake_openai.script_images(fo.images_b64(image))
    chain = gemini(fake, providers=("gemini", "openai"), openai_base_url=fake_openai.base_url,
                   openai_api_key="sk-test", openai_max_retries=0)
    rendered = await chain.render(make_plan(size="1536x1024"))
    assert rendered.provider == "openai" and rendered.data == image
    assert fake.requests == []  # Gemini was never asked
    with pytest.raises(InvalidRequest) as caught:  # no provider of a Gemini-only chain renders it
        await gemini(fake, providers=("gemini", "imagen"), google_vertex_project="p").render(
            make_plan(size="1536x1024")
        )
    assert [v.field for v in caught.value.violations] == ["plan.size"]  # type: ignore[attr-defined]


async def test_closing_the_provider_closes_its_http_client(fake: fg.FakeGoogle) -> None:
    provider = GoogleImageProvider.connect(kind="gemini", model=GEMINI_MODEL, api_key=KEY, base_url=fake.url)
    await provider.aclose()
    fake.script(GEMINI, fg.gemini_image(png()))
    with pytest.raises(RuntimeError, match="client has been closed"):  # httpx2's word for it
        await provider.render(make_plan())
    assert fake.requests == []
