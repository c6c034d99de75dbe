"""GET and HEAD {prefix}/{key}: a stored image, streamed from GetImage.

proxy_url is EXECUTOR_PUBLIC_BASE_URL + "/" + key, and keys are content-addressed
({session_id}/{image_type}/{plan_id}.{ext}: the same key is always the same bytes), so
the answer is cached for good: a strong ETag that is the image's SHA-256 (GetImage's
first message says it before the bytes come), Cache-Control immutable, 304 for a
matching If-None-Match, and a single byte Range (RFC 9110 sections 8.8.3, 13.1.2,
14.2 and 15.5.17).

| executor says | route answers |
|---|---|
| the image | 200 (or 206, 304, 416 as the request's conditions and range say) |
| NOT_FOUND, INVALID_ARGUMENT (a key it never writes) | 404 |
| UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (down, its store down, overloaded) | 503 with Retry-After |
| anything else (a refused token, say) | 502 |
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from clients.aio import AsyncExecutorClient, AsyncImageStream
from clients.errors import ExecutionFailed
from imagegen.catalogue import MAX_RETRY_AFTER, MAX_STORAGE_PATH_CHARS

CACHE_CONTROL = "public, max-age=31536000, immutable"
# Retry-After when the executor gave no RetryInfo of its own: long enough for a pod to restart.
DEFAULT_RETRY_AFTER_SECONDS = 5
# The longest If-None-Match, If-Range and Range the route reads (a list of 64 ETags fits);
# a longer If-None-Match is 400, a longer Range or If-Range is ignored (RFC 9110 14.2 allows it).
MAX_CONDITION_HEADER_CHARS = 4096
# GetImage's deadline for the route: long enough for a large image to a slow reader.
IMAGE_TIMEOUT_SECONDS = 60.0

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NOT_FOUND = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
_UNAVAILABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class ImageRoute:
    """The route's endpoint (serve): executor is the asyncio client the app was given, bucket the
    executor's EXECUTOR_BUCKET (storage_path = bucket/key)."""

    def __init__(self, executor: AsyncExecutorClient, bucket: str) -> None:
        self._executor = executor
        self._bucket = bucket

    async def serve(self, request: Request) -> Response:
        key = request.path_params["key"]
        if not key or len(key) + len(self._bucket) + 1 > MAX_STORAGE_PATH_CHARS:
            return _text(404, "no such image")
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and len(if_none_match) > MAX_CONDITION_HEADER_CHARS:
            return _text(400, "If-None-Match is too long")
        try:
            stream = await self._executor.open_image(f"{self._bucket}/{key}", timeout=IMAGE_TIMEOUT_SECONDS)
        except ExecutionFailed as error:
            return _failed(error)
        try:
            response = self._answer(request, stream, if_none_match)
        except BaseException:
            await stream.aclose()
            raise
        if not isinstance(response, StreamingResponse):  # no bytes to send: end the GetImage call now
            await stream.aclose()
        return response

    def _answer(self, request: Request, stream: AsyncImageStream, if_none_match: str | None) -> Response:
        etag = f'"{stream.content_sha256}"' if _SHA256_HEX.fullmatch(stream.content_sha256) else None
        headers = {"Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
        if etag:
            headers["ETag"] = etag
        if if_none_match is not None and none_match(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        size = stream.total_size
        byte_range = None
        range_header = request.headers.get("range")
        if range_header is not None and if_range_holds(request.headers.get("if-range"), etag):
            byte_range = parse_range(range_header, size)
            if byte_range is UNSATISFIABLE:
                headers["Content-Range"] = f"bytes */{size}"
                return Response(status_code=416, headers=headers)
        media_type = stream.mime_type or "application/octet-stream"
        if byte_range is None:
            status, start, length = 200, 0, size
        else:
            start, end = byte_range
            status, length = 206, end - start + 1
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media_type)
        return StreamingResponse(_body(stream, start, length), status_code=status, headers=headers,
                                 media_type=media_type)  # fmt: skip


@dataclass(frozen=True)
class _Unsatisfiable:
    pass


UNSATISFIABLE = _Unsatisfiable()


def none_match(header: str, etag: str | None) -> bool:
    """If-None-Match (RFC 9110 13.1.2) against an existing image: "*" matches; otherwise any
    entity-tag in the list matching etag by weak comparison (W/ ignored on both sides)."""
    if header.strip() == "*":
        return True
    if etag is None:
        return False
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def if_range_holds(header: str | None, etag: str | None) -> bool:
    """Whether a Range applies under If-Range (RFC 9110 13.1.5): none given, or our ETag by
    strong comparison (a weak tag or a date never matches: we send no Last-Modified)."""
    if header is None:
        return True
    return etag is not None and len(header) <= MAX_CONDITION_HEADER_CHARS and header.strip() == etag


def parse_range(header: str, size: int) -> tuple[int, int] | _Unsatisfiable | None:
    """A single byte range (RFC 9110 14.1.2) as (first, last) inclusive within size;
    UNSATISFIABLE when it lies wholly past the end (416); None when the header is to be
    ignored (another unit, bad syntax, too long, or several ranges: the whole image, 200)."""
    if len(header) > MAX_CONDITION_HEADER_CHARS:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1


async def _body(stream: AsyncImageStream, start: int, length: int) -> AsyncIterator[bytes]:
    """length bytes of the image from offset start; the GetImage call ends as soon as
    they are sent, or when the HTTP client goes away."""
    position, end = 0, start + length
    try:
        async for chunk in stream:
            chunk_end = position + len(chunk)
            if chunk_end > start:
                yield chunk[max(0, start - position) : end - position]
            position = chunk_end
            if position >= end:
                break
    finally:
        await stream.aclose()


def _failed(error: ExecutionFailed) -> Response:
    if error.code in _NOT_FOUND:
        return _text(404, "no such image")
    if error.code in _UNAVAILABLE:
        wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS
        wait = min(max(1, math.ceil(wait)), int(MAX_RETRY_AFTER.total_seconds()))
        return _text(503, "the image service is unavailable; try again", {"Retry-After": str(wait)})
    return _text(502, "the image service failed")


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})
