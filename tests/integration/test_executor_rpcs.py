"""StreamExecutePlan, GetImage and SignImageUrl, and dedup, through a real executor
server and clients/; the store is MinIO (the session's S3 server) unless a test
is about the local store."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from clients import AsyncExecutorClient, ExecutionFailed, ExecutorClient
from executor_service.bootstrap import create_server
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.ports import ObjectReader
from executor_service.servicer import IMAGE_READ_BYTES
from executor_service.stores.local_store import LocalObjectStore
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.catalogue import IMAGE_CHUNK_BYTES
from imagegen.errors import ProviderUnavailable
from imagegen.fingerprint import with_fingerprint
from imagegen.v1 import executor_service_pb2_grpc
from imagegen.v1.executor_service_pb2 import ExecutionStage, GetImageRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.conftest import PUBLIC_BASE
from tests.integration.test_minio_store import http_get
from tests.integration.test_openai_images import image_bytes, openai_provider
from tests.support import fake_openai as fo
from tests.support.executor_server import HeldProvider, running_executor
from tests.support.plans import plan_maker
from tests.support.s3_server import ExternalS3, S3Server
from tests.support.tcp_forwarder import TcpForwarder

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


make_plan = plan_maker(enhanced_prompt="A mimic disguised as a chest", image_type=ImageType.IMAGE_TYPE_ITEM, session_id="table-9")


@pytest.fixture
def minio_store(s3_server: S3Server | ExternalS3, s3_bucket: str) -> MinioObjectStore:
    store = MinioObjectStore.connect(
        endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key,
        bucket=s3_bucket, secure=s3_server.secure, region=s3_server.region, timeout=5.0, retries=0,
    )
    store.ensure_ready()
    return store


async def stages(client: AsyncExecutorClient, plan: ImageGenerationPlan, **options: object) -> list:
    return [(ExecutionStage.Name(event.stage), event) async for event in client.stream_execute_plan(plan, **options)]


async def test_stream_reports_each_stage_then_the_result_and_skips_them_when_reused(
    minio_store: MinioObjectStore,
) -> None:
    provider = HeldProvider(b"\x89PNG streamed")
    async with running_executor(Executor(provider, minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            first = await stages(client, make_plan())
            again = await stages(client, make_plan())
            unary = await client.execute_plan(make_plan())
    assert [name for name, _ in first] == [
        "EXECUTION_STAGE_ACCEPTED", "EXECUTION_STAGE_RENDERING", "EXECUTION_STAGE_STORING", "EXECUTION_STAGE_COMPLETED",
    ]
    assert [event.HasField("result") for _, event in first] == [False, False, False, True]
    assert [name for name, _ in again] == ["EXECUTION_STAGE_ACCEPTED", "EXECUTION_STAGE_COMPLETED"]
    fresh, reused = first[-1][1].result, again[-1][1].result
    assert not fresh.reused and reused.reused and unary.reused
    assert reused.storage_path == fresh.storage_path == unary.storage_path
    assert provider.calls == 1


async def test_a_failed_stream_ends_with_the_status_execute_plan_gives(tmp_path: Path) -> None:
    failing = HeldProvider()
    failing.render = _raise(ProviderUnavailable("provider down"))  # type: ignore[method-assign]
    async with running_executor(Executor(failing, LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            seen = []
            with pytest.raises(ExecutionFailed) as streamed:
                async for event in client.stream_execute_plan(make_plan()):
                    seen.append(ExecutionStage.Name(event.stage))
            with pytest.raises(ExecutionFailed) as unary:
                await client.execute_plan(make_plan())
            with pytest.raises(ExecutionFailed) as invalid:
                await stages(client, make_plan(size="12x12"))
    assert seen == ["EXECUTION_STAGE_ACCEPTED", "EXECUTION_STAGE_RENDERING"]
    for error in (streamed.value, unary.value):
        assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", True)
        assert error.plan == with_fingerprint(make_plan())
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT and invalid.value.plan == make_plan(size="12x12")


def _raise(error: Exception):  # type: ignore[no-untyped-def]
    async def render(plan: ImageGenerationPlan, inputs: object = None) -> None:
        raise error

    return render


async def test_get_image_streams_a_large_image_exactly_in_chunks(minio_store: MinioObjectStore) -> None:
    data = os.urandom(5 * MiB + 123)
    async with running_executor(Executor(HeldProvider(data), minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan())
            image = await client.get_image(result.storage_path)
            async with grpc.aio.insecure_channel(target) as channel:
                stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
                messages = [m async for m in stub.GetImage(GetImageRequest(storage_path=result.storage_path))]
        synced = await asyncio.to_thread(_sync_get_image, target, result.storage_path)
    assert image.data == data == synced and image.mime_type == "image/png"
    assert hashlib.sha256(image.data).hexdigest() == result.content_sha256
    # In messages of IMAGE_READ_BYTES (well under the contract's 1 MiB): what a call holds.
    assert [len(m.chunk_data) for m in messages] == [IMAGE_READ_BYTES] * (5 * MiB // IMAGE_READ_BYTES) + [123]
    assert IMAGE_READ_BYTES <= IMAGE_CHUNK_BYTES
    assert (messages[0].mime_type, messages[0].total_size) == ("image/png", len(data))
    assert messages[0].content_sha256 == result.content_sha256  # known before the bytes: an image route's ETag
    assert all(not m.mime_type and not m.total_size and not m.content_sha256 for m in messages[1:])


async def test_get_image_of_an_empty_image_still_says_what_it_is(tmp_path: Path) -> None:
    async with running_executor(Executor(HeldProvider(b""), LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan())
        async with grpc.aio.insecure_channel(target) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            messages = [m async for m in stub.GetImage(GetImageRequest(storage_path=result.storage_path))]
    assert [(m.mime_type, m.total_size, m.chunk_data) for m in messages] == [("image/png", 0, b"")]


class CountingStore:
    """The store, counting for each reader it opens (in order) how many chunks were
    asked of it; until() waits for a state of those counts."""

    def __init__(self, inner: MinioObjectStore) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.requested: list[int] = []
        self._changed = asyncio.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open(self, key: str, chunk_size: int) -> ObjectReader:
        reader = await self.inner.open(key, chunk_size)
        index = len(self.requested)
        self.requested.append(0)
        await self._notify()
        return ObjectReader(reader.stored, self._counted(reader.chunks, index), reader.release)

    async def _counted(self, chunks: AsyncIterator[bytes], index: int) -> AsyncIterator[bytes]:
        try:
            while True:
                self.requested[index] += 1  # counted when asked for, before the store answers
                await self._notify()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), 30)


# A client that takes one message and then nothing: BDP probing off, so its HTTP/2 window
# stays at 64 KiB and a 256 KiB message cannot pass it; a connection of its own.
STALLING_CLIENT = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]


async def test_stalled_readers_hold_no_more_than_the_getimage_buffer(minio_store: MinioObjectStore) -> None:
    data = os.urandom(16 * IMAGE_READ_BYTES + 5)
    store = CountingStore(minio_store)
    slots = 4
    settings = ExecutorSettings(address="127.0.0.1:0", getimage_buffer_bytes=slots * IMAGE_READ_BYTES)
    running = await create_server(settings, Executor(HeldProvider(data), store, PUBLIC_BASE))  # type: ignore[arg-type]
    target = f"127.0.0.1:{running.port}"
    channels = [grpc.aio.insecure_channel(target, options=STALLING_CLIENT) for _ in range(slots + 1)]
    try:
        async with AsyncExecutorClient(target) as client:
            path = (await client.execute_plan(make_plan())).storage_path
        stalled = [await AsyncExecutorClient(channel).open_image(path) for channel in channels[:slots]]
        # Each has taken its first message and stopped. Its call asked the store for the
        # second chunk (holding one of the buffer's slots) and waits for the reader to take
        # it: one chunk ahead of its reader, no more.
        await store.until(lambda: len(store.requested) == slots and min(store.requested) >= 2)
        # The buffer is spent: another call opens the image but reads nothing of it.
        late = asyncio.ensure_future(AsyncExecutorClient(channels[slots]).get_image(path))
        await store.until(lambda: len(store.requested) == slots + 1)
        assert store.requested == [2] * slots + [0]
        # A stalled reader goes away; its slot lets the waiting call through.
        await stalled[0].aclose()
        assert (await asyncio.wait_for(late, 30)).data == data
        for stream in stalled[1:]:  # the others read on, and get the image whole
            async with stream:
                assert b"".join([chunk async for chunk in stream]) == data
        assert store.requested[1:] == [len(range(0, len(data), IMAGE_READ_BYTES)) + 1] * slots  # + the end
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
        await running.stop(None)


async def test_a_reader_that_stops_for_good_is_ended_and_frees_its_slot(minio_store: MinioObjectStore) -> None:
    """One slot, a caller that takes one message and never another: after the write
    timeout its call ends (DEADLINE_EXCEEDED, READER_STALLED) and the next caller is served."""
    data = os.urandom(8 * IMAGE_READ_BYTES)
    settings = ExecutorSettings(
        address="127.0.0.1:0", getimage_buffer_bytes=IMAGE_READ_BYTES, getimage_write_timeout_seconds=0.5
    )
    running = await create_server(settings, Executor(HeldProvider(data), minio_store, PUBLIC_BASE))
    target = f"127.0.0.1:{running.port}"
    stalling = grpc.aio.insecure_channel(target, options=STALLING_CLIENT)
    try:
        async with AsyncExecutorClient(target) as client:
            path = (await client.execute_plan(make_plan())).storage_path
            stalled = await AsyncExecutorClient(stalling).open_image(path)
            assert (await asyncio.wait_for(client.get_image(path), 30)).data == data  # served once the slot is freed
        with pytest.raises(ExecutionFailed) as ended:
            async with stalled:
                [chunk async for chunk in stalled]
        assert (ended.value.code, ended.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "READER_STALLED")
    finally:
        await stalling.close()
        await running.stop(None)


async def test_image_urls_open_at_the_public_endpoint_set_in_the_environment(
    s3_server: S3Server | ExternalS3, s3_bucket: str
) -> None:
    with TcpForwarder(s3_server.endpoint) as public:  # another address reaching the same store
        settings = ExecutorSettings.from_env({
            "EXECUTOR_ADDRESS": "127.0.0.1:0", "EXECUTOR_STORE": "minio", "EXECUTOR_BUCKET": s3_bucket,
            "EXECUTOR_MINIO_ENDPOINT": s3_server.url, "EXECUTOR_MINIO_REGION": s3_server.region,
            "EXECUTOR_MINIO_ACCESS_KEY": s3_server.access_key, "EXECUTOR_MINIO_SECRET_KEY": s3_server.secret_key,
            "EXECUTOR_MINIO_PUBLIC_ENDPOINT": s3_server.url.replace(s3_server.endpoint, public.endpoint),
        })
        running = await create_server(settings)  # the executor built from those settings, as in production
        try:
            async with AsyncExecutorClient(f"127.0.0.1:{running.port}") as client:
                result = await client.execute_plan(make_plan())
                signed = await client.sign_image_url(result.storage_path, expires_in=60)
                image = await client.get_image(result.storage_path)
        finally:
            await running.stop(None)
        for url in (result.image_url, signed.image_url):
            assert urlsplit(url).netloc == public.endpoint
            assert http_get(url) == (200, image.data)
            assert http_get(url.replace(public.endpoint, s3_server.endpoint, 1))[0] == 403


def _sync_get_image(target: str, storage_path: str) -> bytes:
    with ExecutorClient(target) as client, client.open_image(storage_path) as stream:
        assert (stream.mime_type, stream.total_size) == ("image/png", 5 * MiB + 123)
        return b"".join(stream)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("{bucket}/table-9/item/" + "0" * 32 + ".png", grpc.StatusCode.NOT_FOUND),  # nothing stored there
        ("other-bucket/{key}", grpc.StatusCode.NOT_FOUND),  # another bucket
        ("{bucket}/{key}.meta.json", grpc.StatusCode.NOT_FOUND),  # not a key the executor writes
        ("{bucket}/table-9/secrets.txt", grpc.StatusCode.NOT_FOUND),
        ("{bucket}/table-9/../../other-bucket/{key}", grpc.StatusCode.INVALID_ARGUMENT),
        ("{bucket}/table-9//item/x.png", grpc.StatusCode.INVALID_ARGUMENT),
        ("{bucket}", grpc.StatusCode.INVALID_ARGUMENT),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_get_image_and_sign_reach_nothing_but_stored_images(
    minio_store: MinioObjectStore, path: str, code: grpc.StatusCode
) -> None:
    async with running_executor(Executor(HeldProvider(b"img"), minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            stored = await client.execute_plan(make_plan())
            key = stored.storage_path.partition("/")[2]
            path = path.format(bucket=minio_store.bucket, key=key)
            with pytest.raises(ExecutionFailed) as fetched:
                await client.get_image(path)
            with pytest.raises(ExecutionFailed) as signed:
                await client.sign_image_url(path)
    for error in (fetched.value, signed.value):
        assert error.code == code and error.plan is None and not error.retryable


async def test_sign_image_url_mints_a_working_url_with_its_expiry(minio_store: MinioObjectStore) -> None:
    async with running_executor(Executor(HeldProvider(b"\x89PNG signed"), minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan())
            signed = await client.sign_image_url(result.storage_path, expires_in=60)
            default = await client.sign_image_url(result.storage_path)
            with pytest.raises(ExecutionFailed) as too_long:
                await client.sign_image_url(result.storage_path, expires_in=dt.timedelta(days=8))
        sync_signed = await asyncio.to_thread(_sync_sign, target, result.storage_path)
    assert http_get(signed.image_url) == (200, b"\x89PNG signed")
    assert http_get(sync_signed) == (200, b"\x89PNG signed")
    now = dt.datetime.now(dt.timezone.utc)
    assert signed.expire_time is not None and now < signed.expire_time <= now + dt.timedelta(seconds=60)
    assert default.expire_time is not None and default.expire_time > now + dt.timedelta(minutes=59)
    assert too_long.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in too_long.value.violations] == ["expires_in"]


def _sync_sign(target: str, storage_path: str) -> str:
    with ExecutorClient(target) as client:
        return client.sign_image_url(storage_path, expires_in=30).image_url


async def test_the_local_store_signs_file_urls_that_do_not_expire(tmp_path: Path) -> None:
    async with running_executor(Executor(HeldProvider(b"local"), LocalObjectStore(tmp_path), PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            result = await client.execute_plan(make_plan())
            signed = await client.sign_image_url(result.storage_path, expires_in=5)
            image = await client.get_image(result.storage_path)
    assert signed.image_url == result.image_url and signed.expire_time is None
    assert image.data == b"local"


async def test_a_second_execution_makes_no_provider_call(
    fake_openai: fo.FakeOpenAI, minio_store: MinioObjectStore
) -> None:
    fake_openai.script_images(fo.images_b64(image_bytes()))
    async with running_executor(Executor(openai_provider(fake_openai), minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            first = await client.execute_plan(make_plan())
            second = await client.execute_plan(make_plan())
    assert len(fake_openai.image_requests) == 1
    assert not first.reused and second.reused
    assert (second.storage_path, second.content_sha256, second.create_time) == (
        first.storage_path, first.content_sha256, first.create_time,
    )
    assert (second.provider.name, second.provider.model) == ("openai", "gpt-image-2")


async def test_sixteen_concurrent_identical_plans_make_one_provider_call(
    fake_openai: fo.FakeOpenAI, minio_store: MinioObjectStore
) -> None:
    gate = threading.Event()
    png = image_bytes()
    fake_openai.script_images(lambda request: (gate.wait(10), fo.images_b64(png))[1])
    async with running_executor(Executor(openai_provider(fake_openai), minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            rendering = [asyncio.Event() for _ in range(16)]

            async def execute(joined: asyncio.Event) -> object:
                async for event in client.stream_execute_plan(make_plan()):
                    if event.stage == ExecutionStage.EXECUTION_STAGE_RENDERING:
                        joined.set()  # this call has joined the shared render
                    if event.stage == ExecutionStage.EXECUTION_STAGE_COMPLETED:
                        return event.result
                raise AssertionError("no result")

            calls = [asyncio.ensure_future(execute(joined)) for joined in rendering]
            await asyncio.wait_for(asyncio.gather(*(joined.wait() for joined in rendering)), 10)
            gate.set()
            results = await asyncio.gather(*calls)
    assert len(fake_openai.image_requests) == 1
    assert all(result == results[0] for result in results) and not results[0].reused
