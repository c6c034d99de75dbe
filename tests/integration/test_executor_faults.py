"""What a caller sees when things go wrong mid-execution: the caller gives up
(deadline, cancel), or the store dies and comes back. Real executor server,
real openai SDK against the loopback fake, real S3 servers."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import grpc
import pytest

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.executor import Executor, object_key
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.fingerprint import with_fingerprint
from tests.conftest import PUBLIC_BASE
from tests.integration.test_executor_rpcs import make_plan, minio_store  # noqa: F401 - fixture
from tests.integration.test_openai_images import image_bytes, openai_provider
from tests.support import fake_openai as fo
from tests.support.executor_server import HeldProvider, running_executor
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration


def stored_keys(store: MinioObjectStore, client) -> list[str]:  # type: ignore[no-untyped-def]
    return [item.object_name for item in client.list_objects(store.bucket, recursive=True)]


async def test_a_deadline_cancels_the_provider_call_and_stores_nothing(
    fake_openai: fo.FakeOpenAI, minio_store: MinioObjectStore, s3_server: S3Server
) -> None:
    fake_openai.script_images(fo.delay(30, fo.images_b64(image_bytes())))
    provider = HeldProvider(inner=openai_provider(fake_openai, timeout=60))
    plan = make_plan()
    async with running_executor(Executor(provider, minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            with pytest.raises(ExecutionFailed) as caught:
                await client.execute_plan(plan, timeout=0.5)
        # The SDK's request was in flight when the deadline passed, and was cancelled.
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        await asyncio.wait_for(provider.cancelled.wait(), 10)
    error = caught.value
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED and error.retryable and error.plan == plan
    assert await minio_store.stat(object_key(with_fingerprint(plan), "image/png")) is None
    assert stored_keys(minio_store, s3_server.client()) == []


async def test_a_cancelled_call_cancels_the_render_and_the_next_call_starts_afresh(
    fake_openai: fo.FakeOpenAI, minio_store: MinioObjectStore
) -> None:
    fake_openai.script_images(fo.delay(30, fo.images_b64(image_bytes())), fo.images_b64(image_bytes()))
    provider = HeldProvider(inner=openai_provider(fake_openai, timeout=60))
    async with running_executor(Executor(provider, minio_store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            call = asyncio.ensure_future(client.execute_plan(make_plan()))
            await asyncio.to_thread(fake_openai.wait_for_requests, 1)
            call.cancel()
            await asyncio.wait_for(provider.cancelled.wait(), 10)
            result = await client.execute_plan(make_plan())
    assert not result.reused and provider.calls == 2
    assert len(fake_openai.image_requests) == 2


async def test_a_store_that_dies_mid_run_is_unavailable_and_the_retry_after_restart_succeeds(
    fake_openai: fo.FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tempdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # any temporary file would land here
    gate = threading.Event()
    png = image_bytes()
    fake_openai.script_images(lambda request: (gate.wait(10), fo.images_b64(png))[1], fo.images_b64(png))
    s3 = S3Server(tmp_path / "faulty-s3").start()  # its own server: the session's stays up
    try:
        store = MinioObjectStore.connect(
            endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket="fault-test",
            secure=False, region=s3.region, timeout=2.0, retries=1,
        )
        store.ensure_ready()
        plan = make_plan()
        async with running_executor(Executor(openai_provider(fake_openai), store, PUBLIC_BASE)) as target:
            async with AsyncExecutorClient(target) as client:
                call = asyncio.ensure_future(client.execute_plan(plan))
                await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # rendering: the store answered stat
                await asyncio.to_thread(s3.stop, graceful=False)  # the store crashes mid-run
                gate.set()
                with pytest.raises(ExecutionFailed) as caught:
                    await call
                error = caught.value
                assert (error.code, error.reason, error.retryable) == (
                    grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE", True,
                )
                assert error.plan == with_fingerprint(plan)
                await asyncio.to_thread(s3.start)
                assert stored_keys(store, s3.client()) == []  # no partial object
                retried = await client.execute_plan(error.plan)  # the plan from the error is enough
        assert not retried.reused and len(fake_openai.image_requests) == 2
        key = retried.storage_path.partition("/")[2]
        assert stored_keys(store, s3.client()) == [key, key + ".plan.json"]  # the image and the plan kept beside it
        response = s3.client().get_object("fault-test", key)
        try:
            assert response.read() == png
        finally:
            response.close()
            response.release_conn()
        assert list(scratch.iterdir()) == []  # no temporary file, on the failed run or the retry
    finally:
        s3.stop(graceful=False)
