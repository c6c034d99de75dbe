"""MinioObjectStore against a real S3 server: SeaweedFS on loopback, or a real MinIO
when S3_TEST_ENDPOINT (and keys) are set; the same tests either way."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from executor_service.ports import AlreadyStored
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.errors import NotFound, StorageMisconfigured, StorageUnavailable
from tests.support.s3_server import ExternalS3, S3Server, free_ports
from tests.support.tcp_forwarder import TcpForwarder

pytestmark = pytest.mark.integration

S3 = S3Server | ExternalS3
KEY = "table-1/portrait/0123456789abcdef0123456789abcdef.png"
META = {"plan-id": "0123456789abcdef0123456789abcdef", "provider": "openai", "model": "gpt-image-2"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def make_store(s3: S3, bucket: str, **overrides: object) -> MinioObjectStore:
    options: dict = dict(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket,
        secure=s3.secure, region=s3.region, timeout=5.0, retries=0,
    )
    options.update(overrides)
    return MinioObjectStore.connect(**options)


@pytest.fixture
def store(s3_server: S3, s3_bucket: str) -> MinioObjectStore:
    store = make_store(s3_server, s3_bucket)
    store.ensure_ready()
    return store


async def test_a_missing_bucket_is_created_and_ensuring_again_is_harmless(s3_server: S3, s3_bucket: str) -> None:
    assert not s3_server.client().bucket_exists(s3_bucket)
    store = make_store(s3_server, s3_bucket)
    store.ensure_ready()
    store.ensure_ready()
    assert s3_server.client().bucket_exists(s3_bucket)


async def test_put_stat_and_read_back_with_content_type_and_metadata(store: MinioObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert await store.stat(KEY) is None
    stored = await store.put(KEY, data, "image/png", META)
    assert (stored.key, stored.size, stored.content_type, dict(stored.metadata)) == (KEY, len(data), "image/png", META)
    again = await store.stat(KEY)
    assert again is not None and dataclasses.replace(again, create_time=stored.create_time) == stored
    # put() reads the time from the PUT's Date header, stat() from Last-Modified: the
    # same store clock in whole seconds, which a write may straddle.
    assert abs(again.create_time - stored.create_time) <= dt.timedelta(seconds=1)
    assert stored.create_time.tzinfo is not None
    assert store.storage_path(KEY) == f"{store.bucket}/{KEY}"
    reader = await store.open(KEY, chunk_size=1024 * 1024)
    chunks = [chunk async for chunk in reader.chunks]
    assert b"".join(chunks) == data and reader.stored.content_type == "image/png"
    assert [len(chunk) for chunk in chunks] == [1024 * 1024] * 3 + [17]


async def test_put_is_conditional_so_a_second_writer_gets_what_is_stored(
    store: MinioObjectStore, s3_server: S3
) -> None:
    """If-None-Match: * must reach the server as a header (minio-py's put_object would send
    it as X-Amz-Meta-If-None-Match, and both PUTs would succeed)."""
    first = await store.put(KEY, b"first writer", "image/png", {**META, "sha256": "1"})
    with pytest.raises(AlreadyStored) as taken:
        await store.put(KEY, b"second writer, other bytes", "image/png", {**META, "sha256": "2"})
    assert dataclasses.replace(taken.value.existing, create_time=first.create_time) == first
    stored = s3_server.client().get_object(store.bucket, KEY)
    try:
        assert stored.read() == b"first writer"
        assert not any(name.lower().endswith("if-none-match") for name in stored.headers)
    finally:
        stored.close()
        stored.release_conn()


async def test_concurrent_puts_leave_one_object_and_every_writer_describes_it(s3_server: S3, s3_bucket: str) -> None:
    # SeaweedFS answers concurrent conditional PUTs of one key one by one, about a second
    # apart: a generous timeout, as this is about what is stored, not how fast.
    store = make_store(s3_server, s3_bucket, timeout=30.0)
    store.ensure_ready()
    outcomes = await asyncio.gather(
        *(store.put(KEY, f"writer {i}".encode() * (i + 1), "image/png", {"sha256": str(i)}) for i in range(6)),
        return_exceptions=True,
    )
    written = [o for o in outcomes if not isinstance(o, BaseException)]
    taken = [o.existing for o in outcomes if isinstance(o, AlreadyStored)]
    assert len(written) == 1 and len(taken) == 5, outcomes
    reader = await store.open(KEY, chunk_size=1 << 20)
    data = b"".join([chunk async for chunk in reader.chunks])
    for described in (*written, *taken):
        assert described.size == len(data) and described.metadata["sha256"] == written[0].metadata["sha256"]


async def test_an_image_over_the_multipart_threshold_is_one_object(store: MinioObjectStore, s3_server: S3) -> None:
    data = os.urandom(6 * 1024 * 1024)  # above minio's 5 MiB part size: still one PUT
    await store.put(KEY, data, "image/webp", META)
    reader = await store.open(KEY, chunk_size=4 * 1024 * 1024)
    assert b"".join([chunk async for chunk in reader.chunks]) == data
    assert [o.object_name for o in s3_server.client().list_objects(store.bucket, recursive=True)] == [KEY]


async def test_the_presigned_url_serves_the_bytes(store: MinioObjectStore) -> None:
    await store.put(KEY, b"\x89PNG stored bytes", "image/png", META)
    assert http_get(await store.url(KEY)) == (200, b"\x89PNG stored bytes")
    signed = await store.sign(KEY, dt.timedelta(minutes=5))
    assert http_get(signed.url) == (200, b"\x89PNG stored bytes")
    assert signed.expire_time is not None
    left = signed.expire_time - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(minutes=4) < left <= dt.timedelta(minutes=5)


async def test_a_tampered_url_is_refused(store: MinioObjectStore) -> None:
    await store.put(KEY, b"secret", "image/png", META)
    url = await store.url(KEY)
    at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    tampered = url[:at] + ("0" if url[at] != "0" else "1") + url[at + 1:]
    status, body = http_get(tampered)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    other_key = http_get(url.replace(KEY, KEY.replace("table-1", "table-2")))
    assert other_key[0] == 403


async def test_an_expired_url_is_refused(s3_server: S3, store: MinioObjectStore) -> None:
    await store.put(KEY, b"old", "image/png", META)
    ten_minutes_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    signed_long_ago = make_store(s3_server, store.bucket, url_expiry=dt.timedelta(seconds=1))
    signed_long_ago._now = lambda: ten_minutes_ago  # signed then, valid for one second: no sleep needed
    signed = await signed_long_ago.sign(KEY, None)
    assert signed.expire_time == ten_minutes_ago + dt.timedelta(seconds=1)
    status, body = http_get(signed.url)
    assert status == 403 and b"expired" in body.lower()


@pytest.mark.parametrize("credentials", [{"secret_key": "wrong-secret"}, {"access_key": "no-such-key"}])
async def test_wrong_credentials_are_a_clear_error_that_no_retry_fixes(
    s3_server: S3, store: MinioObjectStore, credentials: dict
) -> None:
    await store.put(KEY, b"data", "image/png", META)
    refused = make_store(s3_server, store.bucket, **credentials)
    with pytest.raises(StorageMisconfigured) as at_start:
        refused.ensure_ready()
    with pytest.raises(StorageMisconfigured) as on_read:
        await refused.stat(KEY)
    with pytest.raises(StorageMisconfigured):
        await refused.put(KEY.replace(".png", ".webp"), b"data", "image/webp", META)
    for error in (at_start.value, on_read.value):
        assert not error.retryable and error.reason == "STORAGE_NOT_USABLE"
        assert "credentials" in error.message
    assert await store.stat(KEY.replace(".png", ".webp")) is None


async def test_nothing_listening_is_storage_unavailable(s3_bucket: str) -> None:
    (port,) = free_ports(1)
    dead = MinioObjectStore.connect(
        endpoint=f"127.0.0.1:{port}", access_key="k", secret_key="s", bucket=s3_bucket, secure=False,
        timeout=2.0, retries=1,
    )
    with pytest.raises(StorageUnavailable) as caught:
        dead.ensure_ready()
    assert caught.value.retryable
    with pytest.raises(StorageUnavailable):
        await dead.stat(KEY)
    with pytest.raises(StorageUnavailable):
        await dead.put(KEY, b"data", "image/png", META)


async def test_missing_objects_are_not_found(store: MinioObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.open(KEY, 1024)
    with pytest.raises(NotFound):
        await store.sign(KEY, None)



def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_closing_an_unread_reader_releases_its_connection(store: MinioObjectStore) -> None:
    await store.put(KEY, b"x" * 100_000, "image/png", META)
    gc.collect()  # earlier tests' clients close their sockets now, not mid-count
    before = open_fds()
    readers = [await store.open(KEY, chunk_size=10) for _ in range(10)]  # kept: only aclose may free them
    assert open_fds() >= before + 5
    for reader in readers:
        await reader.aclose()
    assert open_fds() <= before + 2


# ---- image URLs for the public endpoint (EXECUTOR_MINIO_PUBLIC_ENDPOINT) ----------------


@pytest.fixture
def public_address(s3_server: S3) -> Iterator[TcpForwarder]:
    """Another address that reaches the same S3 server, as players reach an in-cluster
    MinIO through an ingress: a forwarder on its own loopback port."""
    with TcpForwarder(s3_server.endpoint) as forwarder:
        yield forwarder


def with_host(url: str, netloc: str) -> str:
    return urlunsplit(urlsplit(url)._replace(netloc=netloc))


async def test_urls_are_signed_for_the_public_endpoint_and_open_there(
    s3_server: S3, s3_bucket: str, public_address: TcpForwarder
) -> None:
    store = make_store(s3_server, s3_bucket, public_endpoint=public_address.endpoint, public_secure=s3_server.secure)
    store.ensure_ready()
    await store.put(KEY, b"\x89PNG for the players", "image/png", META)
    assert await store.stat(KEY) is not None
    reader = await store.open(KEY, 1024)
    await reader.aclose()
    assert public_address.connections == 0  # the store's own requests go to the internal endpoint

    for url in (await store.url(KEY), (await store.sign(KEY, dt.timedelta(minutes=5))).url):
        assert urlsplit(url).netloc == public_address.endpoint != s3_server.endpoint
        assert http_get(url) == (200, b"\x89PNG for the players")
        # Signed for the public host: the same URL with the internal host is refused, so
        # rewriting the host of a URL signed for the internal one would be refused too.
        status, body = http_get(with_host(url, s3_server.endpoint))
        assert status == 403 and b"SignatureDoesNotMatch" in body
    assert public_address.connections == 2  # the two GETs above, nothing else


async def test_without_a_public_endpoint_urls_name_the_internal_one(store: MinioObjectStore, s3_server: S3) -> None:
    await store.put(KEY, b"inside", "image/png", META)
    url = await store.url(KEY)
    assert urlsplit(url).netloc == s3_server.endpoint and http_get(url) == (200, b"inside")


async def test_signing_for_the_public_endpoint_makes_no_request_to_it(s3_server: S3, s3_bucket: str) -> None:
    # The public name often does not resolve or route from inside the cluster. Nothing
    # listens on this port: a GetBucketLocation there (what the SDK does to learn the
    # region when it is not given) would fail the signing.
    (port,) = free_ports(1)
    store = make_store(s3_server, s3_bucket, public_endpoint=f"127.0.0.1:{port}", public_secure=False)
    store.ensure_ready()
    await store.put(KEY, b"data", "image/png", META)
    url = await store.url(KEY)
    signed = await store.sign(KEY, None)
    for signed_url in (url, signed.url):
        parts = urlsplit(signed_url)
        assert (parts.scheme, parts.netloc, parts.path) == ("http", f"127.0.0.1:{port}", f"/{s3_bucket}/{KEY}")
        assert f"%2F{s3_server.region}%2Fs3%2Faws4_request" in parts.query  # signed for the configured region


async def test_an_https_public_endpoint_gives_https_urls_without_the_default_port() -> None:
    store = MinioObjectStore.connect(
        endpoint="minio.storage.svc.cluster.local:9000", access_key="k", secret_key="s", bucket="imagegen",
        secure=False, region="eu-west-1", public_endpoint="images.example.com:443", public_secure=True,
    )
    parts = urlsplit(await store.url(KEY))  # signed locally: neither host is reached
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "images.example.com", f"/imagegen/{KEY}")
    assert "eu-west-1" in parts.query and "X-Amz-Signature=" in parts.query


async def test_two_executors_without_coordination_both_describe_the_stored_object(s3_server: S3, s3_bucket: str) -> None:
    """Cluster mode's fence without Valkey: both render different bytes; both results carry
    the sha256 and size of the one object that is stored."""
    import hashlib

    from executor_service.executor import Executor
    from tests.unit.test_executor import DifferentEachTime, execute_at_once

    provider = DifferentEachTime()
    executors = [Executor(provider, make_store(s3_server, s3_bucket, timeout=30.0), "https://x") for _ in range(2)]
    results = await execute_at_once(executors, provider)
    names = [o.object_name for o in s3_server.client().list_objects(s3_bucket, recursive=True)]
    (name,) = [n for n in names if not n.endswith(".plan.json")]
    assert names == [name, name + ".plan.json"]  # one image, and its plan written by either (the same plan)
    stored = s3_server.client().get_object(s3_bucket, name)
    try:
        data = stored.read()
    finally:
        stored.close()
        stored.release_conn()
    assert [(r.content_sha256, r.byte_size) for r in results] == [(hashlib.sha256(data).hexdigest(), len(data))] * 2
