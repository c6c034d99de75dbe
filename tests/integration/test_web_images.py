"""The image route (clients.web) against real services: a real executor and planner on
loopback, the app served by uvicorn on a free port, spoken to over HTTP by httpx."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from clients import AsyncImagegenClient
from clients.web import create_app
from clients.web.images import CACHE_CONTROL, MAX_CONDITION_HEADER_CHARS, none_match, parse_range, UNSATISFIABLE
from clients.web.server import WebServer
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from tests.conftest import PUBLIC_BASE, Services

pytestmark = pytest.mark.integration


@dataclass
class Route:
    http: httpx.AsyncClient
    client: AsyncImagegenClient
    path: str  # the route's path of the stored image
    data: bytes
    sha256: str


@pytest.fixture
async def route(services: Services) -> AsyncIterator[Route]:
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as client:
        app = create_app(client, image_prefix="/api/images")  # PUBLIC_BASE's path
        server = await WebServer(app, "127.0.0.1", 0).start()
        try:
            generation = await client.generate("A rusty longsword on a tavern table", session_id="web-1")
            key = generation.result.proxy_url.removeprefix(PUBLIC_BASE + "/")
            data = (services.store_dir / key).read_bytes()
            async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
                yield Route(http, client, f"/api/images/{key}", data, hashlib.sha256(data).hexdigest())
        finally:
            await server.stop()


async def test_get_streams_the_stored_bytes_with_content_type_etag_and_immutable_caching(route: Route) -> None:
    response = await route.http.get(route.path)
    assert response.status_code == 200
    assert response.content == route.data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(route.data))
    assert response.headers["etag"] == f'"{route.sha256}"'
    assert response.headers["cache-control"] == CACHE_CONTROL == "public, max-age=31536000, immutable"
    assert response.headers["accept-ranges"] == "bytes"


async def test_head_says_the_same_without_the_bytes(route: Route) -> None:
    response = await route.http.head(route.path)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == str(len(route.data))
    assert (response.headers["etag"], response.headers["content-type"]) == (f'"{route.sha256}"', "image/png")


@pytest.mark.parametrize("header", ['"{sha}"', 'W/"{sha}"', '"0000", "{sha}"', '"0000",W/"{sha}"', "*"])
async def test_a_matching_if_none_match_is_304_with_no_body(route: Route, header: str) -> None:
    for method in ("GET", "HEAD"):
        response = await route.http.request(method, route.path, headers={"If-None-Match": header.format(sha=route.sha256)})
        assert response.status_code == 304 and response.content == b""
        assert response.headers["etag"] == f'"{route.sha256}"'
        assert response.headers["cache-control"] == CACHE_CONTROL


async def test_an_if_none_match_of_other_tags_gets_the_image(route: Route) -> None:
    response = await route.http.get(route.path, headers={"If-None-Match": f'"{"0" * 64}", W/"x"'})
    assert response.status_code == 200 and response.content == route.data


async def test_a_byte_range_is_206_with_its_bytes(route: Route) -> None:
    size = len(route.data)
    for header, (first, last) in (("bytes=10-19", (10, 19)), ("bytes=-7", (size - 7, size - 1)),
                                  (f"bytes={size - 3}-", (size - 3, size - 1)), (f"bytes=5-{size + 100}", (5, size - 1))):  # fmt: skip
        response = await route.http.get(route.path, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == route.data[first : last + 1], header
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert response.headers["content-length"] == str(last - first + 1)
        assert response.headers["etag"] == f'"{route.sha256}"'


async def test_a_range_past_the_end_is_416_and_several_ranges_get_the_whole_image(route: Route) -> None:
    size = len(route.data)
    response = await route.http.get(route.path, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{size}"
    whole = await route.http.get(route.path, headers={"Range": "bytes=0-1,5-9"})
    assert whole.status_code == 200 and whole.content == route.data


async def test_if_range_applies_the_range_only_for_the_current_etag(route: Route) -> None:
    ranged = await route.http.get(route.path, headers={"Range": "bytes=0-3", "If-Range": f'"{route.sha256}"'})
    assert ranged.status_code == 206 and ranged.content == route.data[:4]
    stale = await route.http.get(route.path, headers={"Range": "bytes=0-3", "If-Range": f'"{"0" * 64}"'})
    assert stale.status_code == 200 and stale.content == route.data


async def test_a_key_the_executor_never_wrote_is_404(route: Route) -> None:
    for path in ("/api/images/web-1/item/" + "0" * 32 + ".png", "/api/images/web-1/item/..%2F..%2Fx.png",
                 "/api/images/other-bucket-file", "/api/images/" + "a/" * 600 + "x.png"):  # fmt: skip
        response = await route.http.get(path)
        assert response.status_code == 404, path
        assert "etag" not in response.headers and response.headers["cache-control"] == "no-store"


async def test_an_overlong_if_none_match_is_refused(route: Route) -> None:
    response = await route.http.get(route.path, headers={"If-None-Match": '"x",' * (MAX_CONDITION_HEADER_CHARS // 4 + 1)})
    assert response.status_code == 400


async def test_503_with_retry_after_while_the_executor_is_down_then_the_image_again(
    route: Route, services: Services
) -> None:
    port = services.executor.port
    await services.executor.stop(None)
    response = await route.http.get(route.path)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1 and response.headers["cache-control"] == "no-store"

    restarted = await create_executor_server(
        ExecutorSettings(address=f"127.0.0.1:{port}", local_store_dir=services.store_dir, public_base_url=PUBLIC_BASE)
    )
    try:
        async with asyncio.timeout(30):  # the client's channel reconnects with backoff
            while (response := await route.http.get(route.path)).status_code == 503:
                await asyncio.sleep(0.2)
        assert response.status_code == 200 and response.content == route.data
    finally:
        await restarted.stop(None)


def test_if_none_match_and_range_parsing_follow_rfc_9110() -> None:
    etag = '"abc"'
    assert none_match('"abc"', etag) and none_match('W/"abc"', etag) and none_match(' "x" , W/"abc"', etag)
    assert none_match("*", None) and not none_match('"abc"', None) and not none_match('"abcd"', etag)
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=-20", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) is UNSATISFIABLE and parse_range("bytes=-0", 10) is UNSATISFIABLE
    for ignored in ("items=0-1", "bytes=5-2", "bytes=-", "bytes=0-1,3-4", "bytes=x-1", "bytes=" + "1" * 5000 + "-"):
        assert parse_range(ignored, 10) is None, ignored


def test_any_range_of_an_empty_image_is_unsatisfiable() -> None:
    assert parse_range("bytes=0-", 0) is UNSATISFIABLE
