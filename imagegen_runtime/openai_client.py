"""The openai SDK client both OpenAI adapters use, with what the SDK leaves unbounded
bounded. Nothing here knows planning or images.

- Time and size per attempt, and no redirects: imagegen_runtime.bounded_http, with a body
  over its limit raised as AnswerTooLarge, which the SDK does not retry (the same request
  would get the same answer). A 3xx is an answer that is not the API's
  (imagegen_runtime.openai_errors).
- A whole call, every attempt and the SDK's waits between them, is bounded by
  call_budget(), which the adapters enforce with within_budget().
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
import openai

from imagegen_runtime.bounded_http import BoundedSend
from imagegen_runtime.openai_errors import AnswerTooLarge, CallTimedOut

T = TypeVar("T")

# The longest Retry-After the SDK waits before a retry (openai._constants.MAX_RETRY_AFTER_DELAY;
# a longer one ends its retries); a test keeps the two in step.
SDK_LONGEST_WAIT = 120.0


def connect(
    *,
    base_url: str,
    api_key: str,
    timeout: float,
    max_retries: int,
    max_response_bytes: int,
    max_stream_bytes: int | None = None,
) -> openai.AsyncOpenAI:
    """An SDK client whose every attempt ends after timeout seconds in all and reads
    at most max_response_bytes of an answer (max_stream_bytes of a streamed one, by
    default the same); no request is made until the first call."""
    return openai.AsyncOpenAI(
        base_url=base_url or None,
        api_key=api_key or "no-key",  # compatible servers may need none; the SDK insists
        timeout=timeout,
        max_retries=max_retries,
        http_client=_BoundedHttpClient(timeout, max_response_bytes, max_stream_bytes),
    )


def connect_azure(
    *,
    endpoint: str,
    deployment: str,
    api_version: str,
    api_key: str,
    token_provider: Callable[[], Awaitable[str]] | None = None,
    timeout: float,
    max_retries: int,
    max_response_bytes: int,
    max_stream_bytes: int | None = None,
) -> openai.AsyncAzureOpenAI:
    """The same bounded client for an Azure OpenAI resource: endpoint
    ("https://NAME.openai.azure.com", or a regional or private one), the deployment
    every call goes to (/openai/deployments/{deployment}/...?api-version=api_version),
    and either api_key (the api-key header) or token_provider (a Microsoft Entra ID
    bearer token, asked for before each request; the SDK's azure_ad_token_provider)."""
    credentials: dict[str, Any] = (
        {"azure_ad_token_provider": token_provider} if token_provider is not None else {"api_key": api_key}
    )
    return openai.AsyncAzureOpenAI(
        azure_endpoint=endpoint,
        azure_deployment=deployment,
        api_version=api_version,
        timeout=timeout,
        max_retries=max_retries,
        http_client=_BoundedHttpClient(timeout, max_response_bytes, max_stream_bytes),
        **credentials,
    )


# Added to a call's budget so that an attempt's own timeout, which the SDK retries and
# reports as a timeout, always comes first.
BUDGET_GRACE = 1.0


def call_budget(timeout: float, max_retries: int) -> float:
    """The longest one call may take: every attempt at its whole timeout, the SDK's
    longest wait before each retry, and BUDGET_GRACE."""
    return timeout * (max_retries + 1) + SDK_LONGEST_WAIT * max_retries + BUDGET_GRACE


async def within_budget(call: Awaitable[T], seconds: float) -> T:
    """await call, or raise CallTimedOut once seconds have passed (the call is cancelled)."""
    budget = asyncio.timeout(seconds)
    try:
        async with budget:
            return await call
    except TimeoutError:
        if budget.expired():
            raise CallTimedOut(seconds) from None
        raise


class _BoundedHttpClient(BoundedSend, openai.DefaultAsyncHttpxClient):  # type: ignore[misc, valid-type]
    """The SDK's default client (its pool and timeouts), with redirects off and the bounds
    of imagegen_runtime.bounded_http; a body over its limit is AnswerTooLarge, an
    openai.APIError, which the SDK passes on at once rather than retrying."""

    def __init__(self, attempt_timeout: float, max_response_bytes: int, max_stream_bytes: int | None) -> None:
        super().__init__(follow_redirects=False)
        self.bound(
            attempt_timeout=attempt_timeout, max_response_bytes=max_response_bytes, max_stream_bytes=max_stream_bytes
        )

    def too_large(self, limit: int, request: httpx2.Request) -> Exception:
        return AnswerTooLarge(limit, request)
