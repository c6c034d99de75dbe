"""OpenAI Images through the official openai SDK (images.generate, base64 output),
against OpenAI or any OpenAI-compatible images endpoint.

Each plan is checked before any request: its size against the model family
(image_options.size_problem) and its rendering options (metadata "quality",
"output_format", "moderation", else the configured defaults). SDK errors,
sorted by imagegen_runtime.openai_errors, become the execution errors of
imagegen.errors here; the provider's own message is neither passed on nor logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging

import openai
from PIL import Image, UnidentifiedImageError

from executor_service.ports import RenderedImage
from executor_service.providers import image_options as options
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
from imagegen_runtime.openai_errors import OpenAIFailureKind, classify_openai_error

log = logging.getLogger(__name__)

_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_EXECUTION_ERRORS: dict[OpenAIFailureKind, type[ExecutionError]] = {
    OpenAIFailureKind.UNAVAILABLE: ProviderUnavailable,
    OpenAIFailureKind.THROTTLED: ProviderThrottled,
    OpenAIFailureKind.NOT_USABLE: ProviderMisconfigured,
    OpenAIFailureKind.CONTENT_REJECTED: ContentRejected,
    OpenAIFailureKind.REQUEST_REJECTED: ProviderMisconfigured,
}


class OpenAIImageProvider:
    name = "openai"

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str = options.DEFAULT_MODEL,
        quality: str = "auto",
        output_format: str = "png",
        moderation: str = "auto",
    ) -> None:
        if model in options.RETIRED_MODELS:
            raise ValueError(f"{model} is retired; use a current GPT image model such as {options.DEFAULT_MODEL}")
        self.model = model
        self._client = client
        self._quality = quality
        self._output_format = output_format
        self._moderation = moderation

    @classmethod
    def connect(
        cls,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 180.0,
        max_retries: int = 2,
        **settings: str,
    ) -> OpenAIImageProvider:
        """A provider with its own SDK client; no request is made until the first render."""
        client = openai.AsyncOpenAI(
            base_url=base_url or None,
            api_key=api_key or "no-key",  # compatible servers may need none; the SDK insists
            timeout=timeout,
            max_retries=max_retries,
        )
        return cls(client, **settings)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return options.output_mime_type(plan, self._output_format)

    async def render(self, plan: ImageGenerationPlan) -> RenderedImage:
        width, height = parse_size(plan.size)
        problem = options.size_problem(self.model, width, height)
        if problem:
            raise InvalidRequest([FieldViolation("plan.size", problem)])
        output_format = options.output_format(plan, self._output_format)
        quality = options.plan_option(plan, options.QUALITY_KEY, self._quality, options.QUALITIES)
        moderation = options.plan_option(plan, options.MODERATION_KEY, self._moderation, options.MODERATION_LEVELS)
        try:
            response = await self._client.images.generate(
                model=self.model,
                prompt=plan.enhanced_prompt,
                n=1,
                size=plan.size,
                quality=quality,  # type: ignore[arg-type]
                output_format=output_format,  # type: ignore[arg-type]
                moderation=moderation,  # type: ignore[arg-type]
                # Lets OpenAI tell one table's abuse from another's without learning who plays.
                safety_identifier=hashlib.sha256(plan.session_id.encode()).hexdigest()[:32],
            )
        except openai.APIError as exc:
            raise self._execution_error(exc) from None
        image = response.data[0] if response.data else None
        if image is None or not image.b64_json:
            raise ProviderMisconfigured(f"{self.model} answered without a base64 image", metadata=self._meta())
        revised_prompt = image.revised_prompt or ""
        data = _decode(image.b64_json, self.model)
        del response, image  # the base64 text is as large as the image; let it go
        mime_type, actual_width, actual_height = _describe(data, self.model)
        if mime_type != options.MIME_TYPES[output_format]:
            raise ProviderMisconfigured(
                f"{self.model} returned {mime_type} when asked for {output_format}", metadata=self._meta()
            )
        return RenderedImage(data, mime_type, actual_width, actual_height, self.model, revised_prompt)

    async def aclose(self) -> None:
        await self._client.close()

    def _meta(self) -> dict[str, str]:
        return _meta(self.model)

    def _execution_error(self, exc: openai.APIError) -> ExecutionError:
        failure = classify_openai_error(exc, f"the image provider ({self.model})", log)
        error_type = _EXECUTION_ERRORS[failure.kind]
        return error_type(failure.description, metadata=self._meta(), retry_after=failure.retry_after)


def _meta(model: str) -> dict[str, str]:
    return {"provider": OpenAIImageProvider.name, "model": model}


def _decode(b64: str, model: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderUnavailable(f"{model} returned an image that is not valid base64", metadata=_meta(model)) from None


def _describe(data: bytes, model: str) -> tuple[str, int, int]:
    """(media type, width, height) from the image's header; nothing is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _PIL_FORMATS.get(image.format or "", f"image/{(image.format or '').lower()}"), *image.size
    except (UnidentifiedImageError, OSError):
        raise ProviderUnavailable(f"{model} returned bytes that are not an image", metadata=_meta(model)) from None
