"""Bounds for an SDK's httpx2 client: what the SDKs (openai, google-genai) leave unbounded.

- Time. httpx's timeout is per read, so a server that sends a byte now and then holds a
  request for ever. Here one attempt (connect, headers and the whole body) ends after
  attempt_timeout seconds in all, raised as httpx2.ReadTimeout so the SDK retries it and
  reports it as it does its own timeouts.
- Size. A body is read up to max_response_bytes after undoing its content-encoding, and
  no further: a larger Content-Length is refused before the body is read, a body that
  grows past the limit is dropped as it does. A streamed answer (server-sent events) is
  bounded by max_stream_bytes as it is read.
- Redirects are not followed (the clients are made with follow_redirects=False): an API
  never sends one, and following it would send the request, prompt included, elsewhere.

Pure transport, no SDK: each SDK's client mixes BoundedSend into the httpx2 client class
it wants and says, with too_large(), which error its SDK passes on without a retry.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx2

_DIGITS = re.compile(r"[0-9]{1,20}")


class BodyTooLarge(Exception):
    """An answer's body was over limit bytes (declared or read), and was not read on."""

    def __init__(self, limit: int, request: object = None) -> None:
        super().__init__(f"an answer larger than {limit} bytes")
        self.limit = limit
        self.request = request


class BoundedSend:
    """Mixed in before an httpx2.AsyncClient class; call bound() in __init__."""

    _attempt_timeout: float
    _max_bytes: int
    _max_stream_bytes: int

    def bound(self, *, attempt_timeout: float, max_response_bytes: int, max_stream_bytes: int | None = None) -> None:
        """Seconds per attempt in all; bytes of a body, and of a streamed one (default the same)."""
        self._attempt_timeout = attempt_timeout
        self._max_bytes = max_response_bytes
        self._max_stream_bytes = max_stream_bytes if max_stream_bytes is not None else max_response_bytes

    def too_large(self, limit: int, request: httpx2.Request) -> Exception:
        """The error for a body over limit: one the SDK passes on rather than retries
        (the same request would get the same answer)."""
        return BodyTooLarge(limit, request)

    async def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> httpx2.Response:
        attempt = asyncio.timeout(self._attempt_timeout)
        try:
            async with attempt:
                response = await super().send(request, stream=True, **kwargs)  # type: ignore[misc]
                try:
                    self._refuse_declared_excess(response, request, self._max_stream_bytes if stream else self._max_bytes)
                    if not stream:  # the SDK streams only what it is asked to
                        await self._read(response, request)
                    else:  # server-sent events (image previews): bounded the same way, as they are read
                        response.stream = _BoundedStream(response.stream, self._max_stream_bytes, request, self)
                except BaseException:
                    await response.aclose()
                    raise
                return response
        except TimeoutError:
            if attempt.expired():
                # What httpx raises for a slow read, so the SDK retries it and reports it
                # as it does its own timeouts.
                raise httpx2.ReadTimeout(
                    f"no whole answer within {self._attempt_timeout:g} s", request=request
                ) from None
            raise

    def _refuse_declared_excess(self, response: httpx2.Response, request: httpx2.Request, limit: int) -> None:
        declared = response.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and (not _DIGITS.fullmatch(declared) or int(declared) > limit):
            raise self.too_large(limit, request)

    async def _read(self, response: httpx2.Response, request: httpx2.Request) -> None:
        parts: list[bytes] = []
        size = 0
        # Decoded as it arrives, so a small compressed body cannot grow far past the
        # limit either: by one decoded chunk at most.
        async for part in response.aiter_bytes():
            size += len(part)
            if size > self._max_bytes:
                raise self.too_large(self._max_bytes, request)
            parts.append(part)
        # Where aread() keeps the body; the SDKs read .content, .text and .json() from it.
        response._content = b"".join(parts)
        del parts


class _BoundedStream(httpx2.AsyncByteStream):
    """A streamed body that ends with the client's too_large() past max_bytes (as received)."""

    def __init__(self, inner: Any, max_bytes: int, request: httpx2.Request, client: BoundedSend) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._request = request
        self._client = client

    async def __aiter__(self) -> Any:
        size = 0
        async for part in self._inner:
            size += len(part)
            if size > self._max_bytes:
                raise self._client.too_large(self._max_bytes, self._request)
            yield part

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()
