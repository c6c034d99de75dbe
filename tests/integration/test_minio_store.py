"""MinioObjectStore against a real S3 server: SeaweedFS on loopback, or a real MinIO
when S3_TEST_ENDPOINT (and keys) are set; the same tests either way."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import os
import urllib.error
import urllib.request

import pytest

from executor_service.stores.minio_store import MinioObjectStore
from imagegen.errors import NotFound, StorageMisconfigured, StorageUnavailable
from tests.support.s3_server import ExternalS3, S3Server, free_ports

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
