"""OpenAI Images through the official openai SDK (images.generate, base64 output),
against OpenAI, any OpenAI-compatible images endpoint, or an Azure OpenAI deployment
(connect_azure: the SDK's AsyncAzureOpenAI client, the same requests and answers at
/openai/deployments/{deployment}/images/generations?api-version=...).

Each plan is checked before any request: its size against the model family
(image_options.size_problem) and its rendering options (metadata "quality",
"output_format", "moderation", else the configured defaults). The SDK client is
imagegen_runtime.openai_client's: each attempt ends after `timeout` seconds in all,
the whole call (retries included) after call_budget(), and no answer is read past
the base64 size of max_image_bytes. The answer's body is read here, not by the SDK,
and defensively (it may be HTML, JSON of another shape, a null image...): the base64
text is found in the body and measured before it is decoded, once, from the body
itself, so a large answer is held about twice (its body and the image), not four
times. Failures, sorted by imagegen_runtime.openai_errors, become the execution
errors of imagegen.errors here; the provider's own message is neither passed on nor
logged.

The image itself is not looked at here: every provider's output is checked whole
(format, size, every pixel) by providers.verify.VerifiedProvider, which bootstrap
wraps around each provider. The width and height returned are the plan's, which
that check holds the image to.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from executor_service.capabilities import refuse_unless_capable
from executor_service.ports import NO_INPUTS, ReferenceInput, RenderedImage, RenderInputs, Usage
from executor_service.providers import image_options as options
from executor_service.providers.verify import DEFAULT_MAX_IMAGE_BYTES
from imagegen.catalogue import EXTENSIONS, MAX_PROMPT_CHARS, ProviderCapabilities, provider_capabilities
from imagegen.errors import (
    ContentRejected,
    ExecutionError,
    FieldViolation,
    InvalidRequest,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size
from imagegen_runtime import openai_client
from imagegen_runtime.openai_errors import (
    OPENAI_FAILURES,
    UNDECODABLE_BODY_ERRORS,
    WRONG_SHAPE_ERRORS,
    AnswerUnreadable,
    OpenAIFailureKind,
    classify_openai_error,
)

log = logging.getLogger(__name__)

# Room in an answer for what comes with the base64 image: the JSON around it, the
# revised prompt, usage.
ENVELOPE_BYTES = 1024 * 1024
_EXECUTION_ERRORS: dict[OpenAIFailureKind, type[ExecutionError]] = {
    OpenAIFailureKind.UNAVAILABLE: ProviderUnavailable,
    OpenAIFailureKind.THROTTLED: ProviderThrottled,
    OpenAIFailureKind.NOT_USABLE: ProviderMisconfigured,
    OpenAIFailureKind.CONTENT_REJECTED: ContentRejected,
    OpenAIFailureKind.REQUEST_REJECTED: ProviderMisconfigured,
}


# images.edit wants a mask as a PNG under 4 MB ("Create image edit", mask).
MAX_MASK_BYTES = 4 * 1000 * 1000
# Partial images asked for when someone listens for previews (the API takes 0 to 3).
PARTIAL_IMAGES = 2


class OpenAIImageProvider:

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str = options.DEFAULT_MODEL,
        quality: str = "auto",
        output_format: str = "png",
        moderation: str = "auto",
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        call_timeout: float | None = None,
        name: str = "openai",
    ) -> None:
        """call_timeout bounds a whole render's request, retries included (None: no
        bound beyond the client's own); name is the provider's in results and errors
        ("azure" for an Azure OpenAI deployment)."""
        self.name = name
        if model in options.RETIRED_MODELS:
            raise ValueError(f"{model} is retired; use a current GPT image model such as {options.DEFAULT_MODEL}")
        self.model = model
        self._client = client
        self._quality = quality
        self._output_format = output_format
        self._moderation = moderation
        self._max_image_bytes = max_image_bytes
        self._max_b64_chars = base64_length(max_image_bytes)
        self._call_timeout = call_timeout

    @classmethod
    def connect(
        cls,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 180.0,
        max_retries: int = 2,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        call_timeout: float | None = None,
        **settings: str,
    ) -> OpenAIImageProvider:
        """A provider with its own SDK client; no request is made until the first render.
        timeout is one attempt's, in all; call_timeout (default: the SDK's retries at
        that timeout and its longest waits, openai_client.call_budget) the whole call's."""
        client = openai_client.connect(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            **_answer_bounds(max_image_bytes),
        )
        if call_timeout is None:
            call_timeout = openai_client.call_budget(timeout, max_retries)
        return cls(client, max_image_bytes=max_image_bytes, call_timeout=call_timeout, **settings)  # type: ignore[arg-type]

    @classmethod
    def connect_azure(
        cls,
        *,
        endpoint: str,
        deployment: str,
        api_version: str,
        api_key: str = "",
        token_provider: Callable[[], Awaitable[str]] | None = None,
        timeout: float = 180.0,
        max_retries: int = 2,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        call_timeout: float | None = None,
        **settings: str,
    ) -> OpenAIImageProvider:
        """A provider named "azure" rendering through an Azure OpenAI deployment
        (openai_client.connect_azure: api_key, or token_provider for Microsoft Entra ID).
        settings["model"] is the model the deployment runs (its size rules apply)."""
        client = openai_client.connect_azure(
            endpoint=endpoint,
            deployment=deployment,
            api_version=api_version,
            api_key=api_key,
            token_provider=token_provider,
            timeout=timeout,
            max_retries=max_retries,
            **_answer_bounds(max_image_bytes),
        )
        if call_timeout is None:
            call_timeout = openai_client.call_budget(timeout, max_retries)
        return cls(
            client, max_image_bytes=max_image_bytes, call_timeout=call_timeout, name="azure", **settings  # type: ignore[arg-type]
        )

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return provider_capabilities(self.name, self.model)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return options.output_mime_type(plan, self._output_format)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        refuse_unless_capable(self, plan, inputs)
        width, height = parse_size(plan.size)
        problem = options.size_problem(self.model, width, height)
        if problem:
            raise InvalidRequest([FieldViolation("plan.size", problem)])
        output_format = options.output_format(plan, self._output_format)
        quality = options.plan_option(plan, options.QUALITY_KEY, self._quality, options.QUALITIES)
        moderation = options.plan_option(plan, options.MODERATION_KEY, self._moderation, options.MODERATION_LEVELS)
        # Lets OpenAI tell one table's abuse from another's without learning who plays.
        safety_identifier = hashlib.sha256(plan.session_id.encode()).hexdigest()[:32]
        mime_type = options.MIME_TYPES[output_format]
        # The raw answer: read here rather than by the SDK, whose JSON parse would hold the
        # base64 text three times over (the body, its text, the value) while it runs.
        if inputs.references:
            # With reference images: the edit endpoint (multipart), every reference in the
            # plan's order (the prompt calls them reference 1, 2, ...), the mask for the first.
            extra: dict[str, Any] = {}
            if inputs.mask is not None:
                extra["mask"] = _mask_file(inputs.mask)
            request = self._client.images.with_raw_response.edit(
                model=self.model,
                image=[_file(n, ref) for n, ref in enumerate(inputs.references, 1)],
                prompt=plan.enhanced_prompt,
                n=1,
                size=plan.size,  # type: ignore[arg-type]
                quality=quality,  # type: ignore[arg-type]
                output_format=output_format,  # type: ignore[arg-type]
                safety_identifier=safety_identifier,
                **extra,
            )
        else:
            arguments: dict[str, Any] = dict(
                model=self.model,
                prompt=plan.enhanced_prompt,
                n=1,
                size=plan.size,
                quality=quality,
                output_format=output_format,
                moderation=moderation,
                safety_identifier=safety_identifier,
            )
            if inputs.on_preview is not None:
                data, usage = await self._render_streamed(arguments, inputs.on_preview, mime_type)
                return RenderedImage(data, mime_type, width, height, self.model, usage=usage)
            request = self._client.images.with_raw_response.generate(**arguments)
        try:
            if self._call_timeout is None:
                response = await request
            else:
                response = await openai_client.within_budget(request, self._call_timeout)
            body = response.http_response.content
            del response
            b64, revised_prompt, usage = _base64_image(body)
        except OPENAI_FAILURES as exc:
            raise self._execution_error(exc) from None
        if len(b64) > self._max_b64_chars:  # measured before decoding: nothing this large is decoded
            raise self._unavailable(f"returned an image of more than {self._max_image_bytes} bytes")
        try:
            data = binascii.a2b_base64(b64, strict_mode=True)  # reads the body in place: no copy
        except (binascii.Error, ValueError):
            raise self._unavailable("returned an image that is not valid base64") from None
        del b64, body
        return RenderedImage(data, mime_type, width, height, self.model, revised_prompt, usage=usage)

    async def _render_streamed(
        self, arguments: dict[str, Any], on_preview: Callable[[bytes, str], None], mime_type: str
    ) -> tuple[bytes, Usage | None]:
        """The image of a streamed generation (stream=True, partial_images) and the usage its
        completed event reports, telling on_preview each partial image as it arrives. A partial image that is too large or
        not base64 is skipped; the final one is held to the same limits as an unstreamed
        answer. The whole stream is within the call's budget."""

        async def consume() -> tuple[str, Usage | None]:
            stream = await self._client.images.generate(**arguments, stream=True, partial_images=PARTIAL_IMAGES)
            try:
                async for event in stream:
                    kind, b64 = getattr(event, "type", None), getattr(event, "b64_json", None)
                    if kind == "image_generation.partial_image":
                        partial = self._decoded(b64)
                        if partial is not None:
                            on_preview(partial, mime_type)
                    elif kind == "image_generation.completed":
                        if not isinstance(b64, str) or not b64:
                            raise AnswerUnreadable("a completed event with no base64 image")
                        reported = getattr(event, "usage", None)
                        usage = _usage({"usage": reported.model_dump()}) if hasattr(reported, "model_dump") else None
                        return b64, usage
            finally:
                await stream.close()
            raise AnswerUnreadable("a stream that ended with no image")

        try:
            if self._call_timeout is None:
                b64, usage = await consume()
            else:
                b64, usage = await openai_client.within_budget(consume(), self._call_timeout)
        except OPENAI_FAILURES as exc:
            raise self._execution_error(exc) from None
        if len(b64) > self._max_b64_chars:
            raise self._unavailable(f"returned an image of more than {self._max_image_bytes} bytes")
        data = self._decoded(b64)
        if data is None:
            raise self._unavailable("returned an image that is not valid base64")
        return data, usage

    def _decoded(self, b64: object) -> bytes | None:
        if not isinstance(b64, str) or not b64 or len(b64) > self._max_b64_chars:
            return None
        try:
            return binascii.a2b_base64(b64, strict_mode=True)
        except (binascii.Error, ValueError):
            return None

    async def aclose(self) -> None:
        await self._client.close()

    def _meta(self) -> dict[str, str]:
        return {"provider": self.name, "model": self.model}

    def _unavailable(self, what: str) -> ProviderUnavailable:
        log.warning("the image provider (%s) %s", self.model, what)
        return ProviderUnavailable(f"the image provider ({self.model}) {what}", metadata=self._meta())

    def _execution_error(self, exc: Exception) -> ExecutionError:
        failure = classify_openai_error(exc, f"the image provider ({self.model})", log)
        error_type = _EXECUTION_ERRORS[failure.kind]
        return error_type(failure.description, metadata=self._meta(), retry_after=failure.retry_after)


def _file(number: int, ref: ReferenceInput) -> tuple[str, bytes, str]:
    """A reference as the SDK's multipart file: (file name, bytes, media type)."""
    return f"reference-{number}.{EXTENSIONS.get(ref.mime_type, 'png')}", ref.data, ref.mime_type


def _mask_file(mask: ReferenceInput) -> tuple[str, bytes, str]:
    """The mask as the edit endpoint takes it: a PNG under 4 MB; else InvalidRequest on plan.mask."""
    if mask.mime_type != "image/png":
        raise InvalidRequest([FieldViolation("plan.mask.storage_path", "must be a PNG image for this provider")])
    if len(mask.data) >= MAX_MASK_BYTES:
        raise InvalidRequest([FieldViolation("plan.mask.storage_path", f"must be under {MAX_MASK_BYTES} bytes for this provider")])
    return "mask.png", mask.data, mask.mime_type


def base64_length(size: int) -> int:
    """How many base64 characters size bytes take (with padding)."""
    return 4 * -(-size // 3)


def _answer_bounds(max_image_bytes: int) -> dict[str, int]:
    """The SDK client's read limits for images of at most max_image_bytes: one answer, and a
    streamed one, which carries the partial images too (each at most the image's size)."""
    one = base64_length(max_image_bytes) + ENVELOPE_BYTES
    return {"max_response_bytes": one, "max_stream_bytes": (1 + PARTIAL_IMAGES) * one}


def _base64_image(body: bytes) -> tuple[bytes | memoryview | str, str, Usage | None]:
    """(base64 text, revised prompt, usage) of the answer's one image; AnswerUnreadable when the
    answer is not an images response holding one base64 image, a JSON error when it is
    not JSON. The base64 text is a view into body when it can be: see _in_place."""
    found = _in_place(body)
    if found is not None:
        return found
    answer = json.loads(body)
    try:
        first = _first_image(answer)
        b64 = first.get("b64_json")
    except WRONG_SHAPE_ERRORS as exc:
        raise AnswerUnreadable(f"an answer of another shape ({type(exc).__name__})") from None
    if not isinstance(b64, str) or not b64:
        raise AnswerUnreadable("no base64 image")
    return b64, _revised_prompt(first), _usage(answer)


# The one place an image's base64 can be: "b64_json": "<base64>". Base64 has no quote and
# no backslash, so the value ends at the next quote.
_B64_VALUE = re.compile(rb'"b64_json"\s*:\s*"')


def _in_place(body: bytes) -> tuple[memoryview, str, Usage | None] | None:
    """The base64 text as a view into body, and the revised prompt, from the answer's
    JSON parsed without that text (so it is never copied into a str); None when the
    answer is not plainly that (then it is parsed whole). Safe by construction: the
    key must occur once, and the JSON without its value must show it, emptied, as the
    first image's b64_json."""
    match = _B64_VALUE.search(body)
    if match is None:
        return None
    start = match.end()
    end = body.find(b'"', start)
    if end < 0 or body.find(b"\\", start, end) >= 0 or _B64_VALUE.search(body, end) is not None:
        return None
    try:
        envelope = json.loads(body[:start] + body[end:])
        first = _first_image(envelope)
    except (AnswerUnreadable, *UNDECODABLE_BODY_ERRORS, *WRONG_SHAPE_ERRORS):
        return None  # the whole answer, parsed, says what is wrong with it
    if first.get("b64_json") != "":
        return None
    return memoryview(body)[start:end], _revised_prompt(first), _usage(envelope)


def _first_image(answer: Any) -> dict[str, Any]:
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise AnswerUnreadable("no list of images")
    if not data:
        raise AnswerUnreadable("an empty list of images")
    if not isinstance(data[0], dict):
        raise AnswerUnreadable("an image that is not an object")
    return data[0]


def _revised_prompt(image: dict[str, Any]) -> str:
    """The provider's words reach the result: a string, and no longer than a prompt may be."""
    revised = image.get("revised_prompt")
    return revised[:MAX_PROMPT_CHARS] if isinstance(revised, str) else ""


def _usage(answer: Any) -> Usage | None:
    """The answer's token usage (ImagesResponse.usage: input_tokens, input_tokens_details.
    image_tokens, output_tokens, total_tokens); None when it has none or it is not that
    shape. Counts are taken only as non-negative integers below 2**53."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    counts = (
        usage.get("input_tokens"),
        details.get("image_tokens", 0) if isinstance(details, dict) else 0,
        usage.get("output_tokens"),
        usage.get("total_tokens"),
    )
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**53 for n in counts):
        return None
    return Usage(*counts)  # type: ignore[arg-type]
