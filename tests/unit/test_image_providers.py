"""Model-family size rules, plan rendering options, the provider chain's fallback rules,
and how the OpenAI provider reads an images answer."""

from __future__ import annotations

import base64
import binascii
import json

import pytest

from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs, Usage
from executor_service.providers.chain import ProviderChain
from executor_service.providers.image_options import output_mime_type, plan_option, size_problem
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import _base64_image
from imagegen.catalogue import MAX_PROMPT_CHARS, ProviderCapabilities
from imagegen.errors import (
    ContentRejected,
    ImagegenError,
    InvalidRequest,
    ProviderThrottled,
    ProviderUnavailable,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen_runtime.openai_errors import AnswerUnreadable


def plan(**metadata: str) -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt="A lantern", image_type=ImageType.IMAGE_TYPE_ITEM, style="painterly",
        size="1024x1024", session_id="s", metadata=metadata,
    )


@pytest.mark.parametrize(
    ("model", "width", "height", "problem"),
    [
        ("gpt-image-2", 1024, 1024, ""),
        ("gpt-image-2", 1536, 864, ""),
        ("gpt-image-2", 3840, 2160, ""),
        ("gpt-image-2.5-flare", 2048, 2048, ""),
        ("gpt-image-2", 1000, 1000, "multiples of 16"),
        ("gpt-image-2", 4096, 2048, "at most 3840"),
        ("gpt-image-2", 3072, 1008, "aspect ratios up to 3:1"),
        ("gpt-image-2", 512, 512, "pixels in all"),
        ("gpt-image-2", 3200, 2880, "pixels in all"),
        ("gpt-image-1.5", 1536, 1024, ""),
        ("gpt-image-1-mini", 1536, 864, "renders only"),
        ("some-compatible-model", 2048, 2048, "renders only"),
    ],
)
def test_sizes_per_model_family(model: str, width: int, height: int, problem: str) -> None:
    found = size_problem(model, width, height)
    assert (problem in found) if problem else found == ""


def test_plan_options_come_from_metadata_or_the_default_and_are_checked() -> None:
    assert plan_option(plan(), "quality", "low", ("low", "high")) == "low"
    assert plan_option(plan(quality="high"), "quality", "low", ("low", "high")) == "high"
    with pytest.raises(InvalidRequest) as caught:
        plan_option(plan(quality="ultra"), "quality", "low", ("low", "high"))
    assert [v.field for v in caught.value.violations] == ["plan.metadata['quality']"]
    assert output_mime_type(plan(), "webp") == "image/webp"
    assert output_mime_type(plan(output_format="jpeg"), "png") == "image/jpeg"


class Scripted:
    def __init__(self, name: str, outcome: Exception | None = None, mime: str = "image/png") -> None:
        self.name, self.outcome, self.mime, self.calls = name, outcome, mime, 0

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self.mime

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        if self.outcome is not None:
            raise self.outcome
        return RenderedImage(b"img", self.mime, 1, 1, model=f"{self.name}-model")


async def test_the_chain_falls_back_on_retryable_failures_and_records_who_rendered() -> None:
    first, second, third = Scripted("a", ProviderUnavailable("down")), Scripted("b", ProviderThrottled("slow")), Scripted("c")
    image = await ProviderChain([first, second, third]).render(plan())
    assert (image.provider, image.model) == ("c", "c-model")
    assert (first.calls, second.calls, third.calls) == (1, 1, 1)


@pytest.mark.parametrize("error", [ContentRejected("no"), InvalidRequest([]), ImagegenError("bug")])
async def test_the_chain_stops_at_a_failure_no_other_provider_can_fix(error: ImagegenError) -> None:
    fallback = Scripted("b")
    with pytest.raises(type(error)):
        await ProviderChain([Scripted("a", error), fallback]).render(plan())
    assert fallback.calls == 0


async def test_the_chain_skips_providers_of_another_media_type_and_reports_the_last_failure() -> None:
    webp_only = Scripted("b", mime="image/webp")
    throttled = ProviderThrottled("slow", retry_after=2)
    chain = ProviderChain([Scripted("a", ProviderUnavailable("down")), webp_only, Scripted("c", throttled)])
    with pytest.raises(ProviderThrottled) as caught:
        await chain.render(plan())
    assert webp_only.calls == 0 and caught.value is throttled
    assert caught.value.metadata["providers_tried"] == "a,c"  # b was skipped, not tried


async def test_the_offline_renderer_renders_the_chosen_format() -> None:
    renderer = OfflineRenderer("webp")
    image = await renderer.render(ImageGenerationPlan(
        enhanced_prompt="A lantern", image_type=ImageType.IMAGE_TYPE_ITEM, style="painterly", size="96x64", session_id="s",
    ))
    assert renderer.mime_type(plan()) == image.mime_type == "image/webp"
    assert image.data[:4] == b"RIFF" and image.data[8:12] == b"WEBP"


# ------------------------------------------------------------------ reading an images answer
def read(body: dict | bytes) -> tuple[bytes, str]:
    b64, revised, _ = _base64_image(body if isinstance(body, bytes) else json.dumps(body).encode())
    return binascii.a2b_base64(b64, strict_mode=True), revised


IMAGE = bytes(range(256)) * 4  # its base64 has "+" and "/"


def test_the_base64_image_is_read_from_the_answer_in_place() -> None:
    body = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(IMAGE).decode(), "revised_prompt": "A"}]})
    b64, revised, usage = _base64_image(body.encode())
    assert isinstance(b64, memoryview) and (binascii.a2b_base64(b64), revised) == (IMAGE, "A")
    assert usage is None  # the answer reports none


USAGE = {"input_tokens": 60, "input_tokens_details": {"image_tokens": 10, "text_tokens": 50}, "output_tokens": 272, "total_tokens": 332}


@pytest.mark.parametrize("images", [1, 2], ids=["read-in-place", "parsed-whole"])
def test_the_usage_an_images_answer_reports_is_read_with_its_image(images: int) -> None:
    answer = {"data": [{"b64_json": base64.b64encode(IMAGE).decode()}] * images, "usage": USAGE}
    _, _, usage = _base64_image(json.dumps(answer).encode())
    assert usage == Usage(input_tokens=60, input_image_tokens=10, output_tokens=272, total_tokens=332)


@pytest.mark.parametrize(
    "usage",
    [{"input_tokens": -1, "output_tokens": 1, "total_tokens": 0}, {"input_tokens": "9", "output_tokens": 1, "total_tokens": 1},
     {"input_tokens": 2**60, "output_tokens": 1, "total_tokens": 1}, "lots", None],
)
def test_usage_of_another_shape_is_no_usage(usage: object) -> None:
    body = json.dumps({"data": [{"b64_json": base64.b64encode(IMAGE).decode()}], "usage": usage}).encode()
    assert _base64_image(body)[2] is None


@pytest.mark.parametrize(
    "body",
    [
        # Another layout of the same answer.
        b'{"data" : [ { "revised_prompt" : "A", "b64_json"  :  "' + base64.b64encode(IMAGE) + b'" } ] }',
        # JSON may escape "/" as "\/": the value is then read by parsing the whole answer.
        json.dumps({"data": [{"b64_json": base64.b64encode(IMAGE).decode(), "revised_prompt": "A"}]})
        .replace("/", "\\/").encode(),
        # The key elsewhere too: only the first image's counts.
        json.dumps({"usage": {"b64_json": base64.b64encode(b"not it").decode()},
                    "data": [{"b64_json": base64.b64encode(IMAGE).decode(), "revised_prompt": "A"}]}).encode(),
    ],
    ids=["spacing", "escaped slashes", "the key twice"],
)
def test_any_layout_of_the_answer_gives_the_first_images_base64(body: bytes) -> None:
    assert read(body) == (IMAGE, "A")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"usage": {"b64_json": "AAAA"}, "data": [{"b64_json": ""}]}, "no base64 image"),
        ({"usage": {"b64_json": "AAAA"}, "data": []}, "an empty list of images"),
        ({"data": ["AAAA"], "x": {"b64_json": "AAAA"}}, "an image that is not an object"),
        ({"data": {"b64_json": "AAAA"}}, "no list of images"),
        ({"data": [{"url": "https://example.com/i.png"}]}, "no base64 image"),
    ],
)
def test_an_answer_without_the_first_images_base64_is_unreadable(body: dict, problem: str) -> None:
    with pytest.raises(AnswerUnreadable, match=problem):
        read(body)


def test_the_revised_prompt_is_a_bounded_string() -> None:
    b64 = base64.b64encode(IMAGE).decode()
    assert read({"data": [{"b64_json": b64, "revised_prompt": "x" * 100_000}]})[1] == "x" * MAX_PROMPT_CHARS
    assert read({"data": [{"b64_json": b64, "revised_prompt": {"text": "x"}}]})[1] == ""


def test_an_answer_that_is_not_json_is_a_json_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        _base64_image(b"<html>Bad Gateway</html>")
