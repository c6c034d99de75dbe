"""Google's image models through the google-genai SDK: Gemini image models with
client.aio.models.generate_content (reference images go in as image parts), and Imagen
with client.aio.models.generate_images.

Where (ai.google.dev/gemini-api/docs/image-generation, cloud.google.com/vertex-ai/
generative-ai/docs/image/overview):
- the Gemini API with an API key: POST {base}/v1/models/{model}:generateContent,
  the key in x-goog-api-key. Gemini image models only: the SDK sends Imagen's
  generate_images to Vertex AI alone;
- Vertex AI with a project and location (Application Default Credentials, or the
  credentials given): POST {base}/v1beta1/projects/{project}/locations/{location}/
  publishers/google/models/{model}:generateContent or :predict (Imagen).
base_url points either at a regional endpoint ("https://europe-west4-aiplatform.
googleapis.com"), a private one or a proxy.

Bounds: the SDK's HTTP client is replaced by one that ends each attempt after `timeout`
seconds in all and reads no answer past the base64 size of max_image_bytes (plus
room for the JSON around it); the SDK's own retries (tenacity: 408, 429, 5xx,
connection errors; at most LONGEST_RETRY_WAIT apart) run max_retries times; the whole call
ends after every attempt's timeout and those waits, and a second.

Failures, as for every provider: 429 -> ProviderThrottled (with the Retry-After when
sent); 401, 403, 404 (no such model), other 4xx and missing credentials ->
ProviderMisconfigured; 5xx, no answer in time, no connection, an answer that is not
the API's or too large -> ProviderUnavailable; a prompt blocked or an image filtered
for safety (promptFeedback.blockReason, a SAFETY-like finishReason, Imagen's
raiFilteredReason or no image at all) -> ContentRejected. The server's messages are
never passed on: only the HTTP status and the API's status word.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import google.auth.credentials
import google.auth.exceptions
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from executor_service.capabilities import plan_seed, refuse_unless_capable
from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from executor_service.providers.openai_images import ENVELOPE_BYTES, base64_length
from executor_service.providers.verify import DEFAULT_MAX_IMAGE_BYTES
from imagegen import catalogue
from imagegen.catalogue import GEMINI_ASPECT_RATIOS, IMAGEN_ASPECT_RATIOS, MAX_PROMPT_CHARS, ProviderCapabilities
from imagegen.errors import (
    ContentRejected,
    ExecutionError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size
from imagegen_runtime.bounded_http import BodyTooLarge, BoundedSend
from imagegen_runtime.openai_errors import retry_after_seconds

log = logging.getLogger(__name__)

GEMINI, IMAGEN = "gemini", "imagen"
# Why Gemini stops or refuses when the content is what it refuses (types.FinishReason,
# types.BlockedReason).
_REFUSALS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "JAILBREAK", "MODEL_ARMOR", "RECITATION", "IMAGE_RECITATION",
})
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
# The longest wait the SDK's retries make between two attempts (its exponential backoff,
# capped here rather than at its default minute).
LONGEST_RETRY_WAIT = 20.0


class _BoundedHttpClient(BoundedSend, httpx2.AsyncClient):
    """An httpx2 client for the SDK with the bounds of imagegen_runtime.bounded_http:
    redirects off, a total time per attempt, no body read past max_response_bytes."""

    def __init__(self, *, attempt_timeout: float, max_response_bytes: int) -> None:
        super().__init__(follow_redirects=False, timeout=attempt_timeout)
        self.bound(attempt_timeout=attempt_timeout, max_response_bytes=max_response_bytes)


class GoogleImageProvider:
    """kind: GEMINI (generate_content) or IMAGEN (generate_images); the provider's name."""

    def __init__(
        self,
        client: genai.Client,
        *,
        kind: str,
        model: str,
        call_timeout: float | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        """http_client: the one client's HTTP client, to close with it (the SDK leaves a
        client it was given open)."""
        if kind not in (GEMINI, IMAGEN):
            raise ValueError(f"unknown Google image provider {kind!r}")
        self.name = kind
        self.model = model
        self._client = client
        self._call_timeout = call_timeout
        self._http_client = http_client
        self._capabilities = catalogue.provider_capabilities(kind, model)

    @classmethod
    def connect(
        cls,
        *,
        kind: str,
        model: str,
        api_key: str = "",
        vertex_project: str = "",
        vertex_location: str = "us-central1",
        credentials: google.auth.credentials.Credentials | None = None,
        base_url: str = "",
        timeout: float = 180.0,
        max_retries: int = 2,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> GoogleImageProvider:
        """A provider with its own SDK client: Vertex AI when vertex_project is set (with
        credentials, else Application Default Credentials, looked up at the first
        render), else the Gemini API with api_key. No request is made here."""
        http_client = _BoundedHttpClient(
            attempt_timeout=timeout, max_response_bytes=base64_length(max_image_bytes) + ENVELOPE_BYTES
        )
        http_options = types.HttpOptions(
            base_url=base_url or None,
            timeout=int(timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=max_retries + 1, max_delay=LONGEST_RETRY_WAIT),
            httpx_async_client=http_client,
        )
        if vertex_project:
            client = genai.Client(
                vertexai=True, project=vertex_project, location=vertex_location,
                credentials=credentials, http_options=http_options,
            )
        else:
            client = genai.Client(api_key=api_key, http_options=http_options)
        # Every attempt, the SDK's longest waits between them, and a second of grace.
        budget = timeout * (max_retries + 1) + LONGEST_RETRY_WAIT * max_retries + 1.0
        return cls(client, kind=kind, model=model, call_timeout=budget, http_client=http_client)

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self._capabilities

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        refuse_unless_capable(self, plan, inputs)
        width, height = parse_size(plan.size)
        seed = plan_seed(plan)
        budget = asyncio.timeout(self._call_timeout)
        try:
            async with budget:
                if self.name == IMAGEN:
                    data, mime_type, revised = await self._imagen(plan, seed)
                else:
                    data, mime_type, revised = await self._gemini(plan, inputs, seed)
        except TimeoutError:
            if budget.expired():
                raise self._unavailable(f"did not answer within {self._call_timeout:g} s, retries included") from None
            raise self._unavailable("did not answer in time") from None
        except genai_errors.APIError as exc:
            raise self._api_error(exc) from None
        except BodyTooLarge as exc:
            raise self._unavailable(f"answered with {exc}") from None
        except httpx2.TimeoutException:
            raise self._unavailable("did not answer in time") from None
        except (httpx2.TransportError, google.auth.exceptions.TransportError):
            raise self._unavailable("could not be reached") from None
        except (google.auth.exceptions.DefaultCredentialsError, google.auth.exceptions.RefreshError):
            raise ProviderMisconfigured(
                f"the image provider ({self.model}) has no usable Google credentials", metadata=self._meta()
            ) from None
        # Not JSON (RecursionError: nested past the parser's depth), or JSON of another shape.
        except (ValueError, RecursionError, TypeError, AttributeError, KeyError, IndexError):
            raise self._unavailable("answered with something that is not an API answer") from None
        if mime_type != "image/png":
            raise self._unavailable("returned an image of another media type than image/png")
        return RenderedImage(data, mime_type, width, height, self.model, revised, seed=seed)

    async def aclose(self) -> None:
        try:
            await self._client.aio.aclose()
        finally:
            if self._http_client is not None:
                await self._http_client.aclose()

    async def _gemini(
        self, plan: ImageGenerationPlan, inputs: RenderInputs, seed: int | None
    ) -> tuple[bytes, str, str]:
        parts: list[Any] = [types.Part.from_bytes(data=ref.data, mime_type=ref.mime_type) for ref in inputs.references]
        parts.append(types.Part.from_text(text=plan.enhanced_prompt))
        response = await self._client.aio.models.generate_content(
            model=self.model,
            contents=[types.Content(role="user", parts=parts)],
            config=types.GenerateContentConfig(
                response_modalities=["IMAGE"],
                candidate_count=1,
                seed=seed,
                image_config=types.ImageConfig(aspect_ratio=GEMINI_ASPECT_RATIOS[plan.size]),
            ),
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            raise self._rejected(f"blocked the prompt ({_word(feedback.block_reason)})")
        if not response.candidates:
            raise self._rejected("returned no image")
        candidate = response.candidates[0]
        for part in (candidate.content.parts if candidate.content is not None else None) or ():
            if part.inline_data is not None and part.inline_data.data:
                return part.inline_data.data, part.inline_data.mime_type or "", ""
        reason = _word(candidate.finish_reason)
        if reason in _REFUSALS:
            raise self._rejected(f"refused the content ({reason})")
        raise self._unavailable(f"answered without an image (finish reason {reason or 'none'})")

    async def _imagen(self, plan: ImageGenerationPlan, seed: int | None) -> tuple[bytes, str, str]:
        response = await self._client.aio.models.generate_images(
            model=self.model,
            prompt=plan.enhanced_prompt,
            config=types.GenerateImagesConfig(
                number_of_images=1,
                aspect_ratio=IMAGEN_ASPECT_RATIOS[plan.size],
                output_mime_type="image/png",
                include_rai_reason=True,
                # A seed renders alike only without the SynthID watermark (Imagen's docs).
                seed=seed,
                add_watermark=False if seed is not None else None,
            ),
        )
        images = response.generated_images or []
        if not images:
            raise self._rejected("filtered the image out")
        first = images[0]
        if first.image is None or not first.image.image_bytes:
            if first.rai_filtered_reason:
                raise self._rejected("filtered the image out (responsible-AI filter)")
            raise self._unavailable("answered without an image")
        revised = first.enhanced_prompt if isinstance(first.enhanced_prompt, str) else ""
        return first.image.image_bytes, first.image.mime_type or "image/png", revised[:MAX_PROMPT_CHARS]

    # -- errors -------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        return {"provider": self.name, "model": self.model}

    def _unavailable(self, what: str) -> ProviderUnavailable:
        log.warning("the image provider (%s) %s", self.model, what)
        return ProviderUnavailable(f"the image provider ({self.model}) {what}", metadata=self._meta())

    def _rejected(self, what: str) -> ContentRejected:
        log.info("the image provider (%s) %s", self.model, what)
        return ContentRejected(f"the image provider ({self.model}) {what}", metadata=self._meta())

    def _api_error(self, exc: genai_errors.APIError) -> ExecutionError:
        code = exc.code if isinstance(exc.code, int) else None
        status = _word(exc.status)
        log.warning("the image provider (%s) failed: HTTP %s %s", self.model, code, status)
        subject = f"the image provider ({self.model})"
        if code == 429:
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            return ProviderThrottled(
                f"{subject} is rate limiting requests", metadata=self._meta(), retry_after=retry_after_seconds(headers)
            )
        if code is None or code >= 500 or code in (408, 409):
            return ProviderUnavailable(f"{subject} failed (HTTP {code})", metadata=self._meta())
        if code in (401, 403):
            return ProviderMisconfigured(f"{subject} refused the credentials (HTTP {code})", metadata=self._meta())
        return ProviderMisconfigured(
            f"{subject} rejected the request (HTTP {code}, {status or 'no status'}); check the model and settings",
            metadata=self._meta(),
        )


def _word(value: object) -> str:
    """An enum's or status's name, when it is plainly one (else "")."""
    text = getattr(value, "value", value)
    return text if isinstance(text, str) and 0 < len(text) <= 64 and set(text) <= _WORD else ""
