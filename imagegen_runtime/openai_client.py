"""The openai SDK client both OpenAI adapters use, with what the SDK leaves unbounded
bounded. Nothing here knows planning or images.

- Time. httpx's timeout is per read, so an endpoint that sends a byte now and then
  holds a request for ever. Here one attempt (connect, headers and the whole body)
  ends after `timeout` seconds in all, as a timeout the SDK retries like its own. A
  whole call, every attempt and the SDK's waits between them, is bounded by
  call_budget(), which the adapters enforce with within_budget().
- Size. A body is read up to max_response_bytes, after undoing its content-encoding,
  and no further: a larger Content-Length is refused before the body is read, a body
  that grows past the limit is dropped as it does (AnswerTooLarge, which the SDK does
  not retry: the same request would get the same answer).
- Redirects are not followed: the API never sends one, and following it would send
  the request, prompt included, elsewhere. A 3xx is an answer that is not the API's
  (imagegen_runtime.openai_errors).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2
import openai

from imagegen_runtime.openai_errors import AnswerTooLarge, CallTimedOut

T = TypeVar("T")

# The longest Retry-After the SDK waits before a retry (openai._constants.MAX_RETRY_AFTER_DELAY;
# a longer one ends its retries); a test keeps the two in step.
SDK_LONGEST_WAIT = 120.0
_DIGITS = re.compile(r"[0-9]{1,20}")


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
        http_client=_BoundedHttpClient(
            attempt_timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_stream_bytes=max_stream_bytes if max_stream_bytes is not None else max_response_bytes,
        ),
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
        http_client=_BoundedHttpClient(
            attempt_timeout=timeout,
            max_response_bytes=max_response_bytes,
            max_stream_bytes=max_stream_bytes if max_stream_bytes is not None else max_response_bytes,
        ),
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


class _BoundedStream(httpx2.AsyncByteStream):
    """A streamed body that ends with AnswerTooLarge past max_bytes (as received)."""

    def __init__(self, inner: Any, max_bytes: int, request: httpx2.Request) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._request = request

    async def __aiter__(self) -> Any:
        size = 0
        async for part in self._inner:
            size += len(part)
            if size > self._max_bytes:
                raise AnswerTooLarge(self._max_bytes, self._request)
            yield part

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedHttpClient(openai.DefaultAsyncHttpxClient):  # type: ignore[misc, valid-type]
    """The SDK's default client (its pool and timeouts), with redirects off, a total
    time per attempt and a limit on the body read."""

    def __init__(self, *, attempt_timeout: float, max_response_bytes: int, max_stream_bytes: int) -> None:
        super().__init__(follow_redirects=False)
        self._attempt_timeout = attempt_timeout
        self._max_bytes = max_response_bytes
        self._max_stream_bytes = max_stream_bytes

    async def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> httpx2.Response:
        attempt = asyncio.timeout(self._attempt_timeout)
        try:
            async with attempt:
                response = await super().send(request, stream=True, **kwargs)
                try:
                    self._refuse_declared_excess(response, request, self._max_stream_bytes if stream else self._max_bytes)
                    if not stream:  # the SDK streams only what it is asked to
                        await self._read(response, request)
                    else:  # server-sent events (image previews): bounded the same way, as they are read
                        response.stream = _BoundedStream(response.stream, self._max_stream_bytes, request)
                except BaseException:
                    await response.aclose()
                    raise
                return response
        except TimeoutError:
            if attempt.expired():
                # What httpx raises for a slow read, so the SDK retries it and reports
                # APITimeoutError as for its own timeouts.
                raise httpx2.ReadTimeout(
                    f"no whole answer within {self._attempt_timeout:g} s", request=request
                ) from None
            raise

    def _refuse_declared_excess(self, response: httpx2.Response, request: httpx2.Request, limit: int) -> None:
        declared = response.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and (not _DIGITS.fullmatch(declared) or int(declared) > limit):
            raise AnswerTooLarge(limit, request)

    async def _read(self, response: httpx2.Response, request: httpx2.Request) -> None:
        parts: list[bytes] = []
        size = 0
        # Decoded as it arrives, so a small compressed body cannot grow far past the
        # limit either: by one decoded chunk at most.
        async for part in response.aiter_bytes():
            size += len(part)
            if size > self._max_bytes:
                raise AnswerTooLarge(self._max_bytes, request)
            parts.append(part)
        # Where aread() keeps the body; the SDK reads .content, .text and .json() from it.
        response._content = b"".join(parts)
        del parts
