"""Cluster mode: several `python -m executor_service` processes sharing a real Valkey and
a real S3 server (SeaweedFS), the real openai SDK against the loopback fake. One render
per plan, request_id retries and the provider cap hold across replicas; a replica killed
mid-render is taken over; Valkey killed and restarted leaves the service serving."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.executor import object_key
from imagegen.fingerprint import with_fingerprint
from imagegen.json_mapping import plan_to_json
from imagegen.v1.executor_service_pb2 import ExecutionStage
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult
from tests.conftest import PUBLIC_BASE
from tests.integration.test_openai_images import image_bytes, make_plan
from tests.support import fake_openai as fo
from tests.support.s3_server import ExternalS3, S3Server
from tests.support.service_process import ServiceProcess, health, start_all
from tests.support.valkey_server import ValkeyServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP = "imagegen_executor_coordination_up"
Cluster = Callable[..., Awaitable[list[ServiceProcess]]]


@pytest.fixture
def cluster(
    tmp_path: Path,
    fake_openai: fo.FakeOpenAI,
    s3_server: S3Server | ExternalS3,
    s3_bucket: str,
    valkey_server: ValkeyServer,
) -> Iterator[Cluster]:
    """cluster(count, **env): count executor processes on one Valkey, one bucket and
    the fake OpenAI, serving; stopped after the test."""
    started: list[ServiceProcess] = []

    async def start(count: int = 3, **env: str) -> list[ServiceProcess]:
        shared = {
            "EXECUTOR_PROVIDER": "openai",
            "EXECUTOR_OPENAI_BASE_URL": fake_openai.base_url,
            "EXECUTOR_OPENAI_MAX_RETRIES": "0",
            "EXECUTOR_OPENAI_TIMEOUT_SECONDS": "120",
            "EXECUTOR_STORE": "minio",
            "EXECUTOR_MINIO_ENDPOINT": s3_server.url,
            "EXECUTOR_MINIO_ACCESS_KEY": s3_server.access_key,
            "EXECUTOR_MINIO_SECRET_KEY": s3_server.secret_key,
            "EXECUTOR_MINIO_REGION": s3_server.region,
            "EXECUTOR_BUCKET": s3_bucket,
            "EXECUTOR_PUBLIC_BASE_URL": PUBLIC_BASE,
            "EXECUTOR_COORDINATION_URL": valkey_server.url,
            **env,
        }
        names = [f"executor-{len(started) + i}" for i in range(count)]
        processes = [ServiceProcess("executor", name, shared, tmp_path) for name in names]
        started.extend(processes)
        return await start_all(processes)

    yield start
    for process in started:
        process.stop()


@asynccontextmanager
async def clients(replicas: list[ServiceProcess]) -> AsyncIterator[list[AsyncExecutorClient]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(AsyncExecutorClient(r.target, timeout=120)) for r in replicas]


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Return once condition() holds: a bounded poll of real processes' state."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.05)


def stored(s3_server: S3Server | ExternalS3, bucket: str) -> dict[str, bytes]:
    client = s3_server.client()
    objects = {}
    for item in client.list_objects(bucket, recursive=True):
        response = client.get_object(bucket, item.object_name)
        try:
            objects[item.object_name] = response.read()
        finally:
            response.close()
            response.release_conn()
    return objects


def kept_plan(plan: ImageGenerationPlan) -> bytes:
    """The plan the executor keeps beside the image (its {key}.plan.json)."""
    return plan_to_json(with_fingerprint(plan)).encode()


def description(result: ImageGenerationResult) -> tuple[object, ...]:
    return (
        result.storage_path, result.content_sha256, result.byte_size, result.mime_type,
        result.width, result.height, result.provider.name, result.provider.model,
    )


async def test_32_identical_plans_over_3_replicas_make_one_provider_call(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, s3_server: S3Server, s3_bucket: str
) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.delay(1.0, fo.images_b64(png)))  # one reply: a second call would fail
    replicas = await cluster(3)
    plan = make_plan()
    async with clients(replicas) as executors:
        results = await asyncio.gather(*(executors[i % 3].execute_plan(plan) for i in range(32)))
    assert len(fake_openai.image_requests) == 1
    assert len({description(result) for result in results}) == 1
    key = object_key(with_fingerprint(plan), "image/png")
    assert stored(s3_server, s3_bucket) == {key: png, key + ".plan.json": kept_plan(plan)}
    assert results[0].storage_path == f"{s3_bucket}/{key}"
    assert (results[0].content_sha256, results[0].byte_size) == (hashlib.sha256(png).hexdigest(), len(png))
    assert sum(r.metric("imagegen_executor_lease_waits_total") for r in replicas) >= 1


async def test_a_request_id_retried_on_another_replica_joins_the_render_and_then_gets_the_first_result(
    cluster: Cluster, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_images(fo.delay(1.5, fo.images_b64(image_bytes())))
    replicas = await cluster(3)
    plan = make_plan()
    async with clients(replicas) as (first, second, third):
        original = asyncio.ensure_future(first.execute_plan(plan, request_id="turn-42"))
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # the first call is rendering
        retried = await second.execute_plan(plan, request_id="turn-42")
        first_result = await original
        assert len(fake_openai.image_requests) == 1
        assert replicas[1].metric("imagegen_executor_lease_waits_total") == 1  # it waited on the first's lease
        assert description(retried) == description(first_result)

        assert await third.execute_plan(plan, request_id="turn-42") == first_result  # as it was, URL and all
        with pytest.raises(ExecutionFailed) as caught:
            await third.execute_plan(make_plan(session_id="table-9"), request_id="turn-42")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake_openai.image_requests) == 1


async def test_a_lease_holder_killed_mid_render_is_taken_over_by_a_waiting_replica(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, s3_server: S3Server, s3_bucket: str
) -> None:
    lease, render = 3.0, 1.0
    png = image_bytes()
    fake_openai.script_images(fo.delay(120, fo.images_b64(png)), fo.delay(render, fo.images_b64(png)))
    holder, waiter = await cluster(2, EXECUTOR_LEASE_SECONDS=str(lease))
    plan = make_plan()
    async with clients([holder, waiter]) as (on_holder, on_waiter):
        doomed = asyncio.ensure_future(on_holder.execute_plan(plan))
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # the holder is rendering
        waiting = asyncio.ensure_future(on_waiter.execute_plan(plan))
        await until(lambda: waiter.metric("imagegen_executor_lease_waits_total") == 1)
        killed = time.monotonic()
        holder.kill()
        result = await waiting
        took = time.monotonic() - killed
        with pytest.raises(ExecutionFailed):
            await doomed
    # The lease runs out at most `lease` after the kill; the waiter looks every lease/3; then one render.
    assert took <= lease + lease / 3 + render + 2.0
    assert not result.reused and len(fake_openai.image_requests) == 2
    key = object_key(with_fingerprint(plan), "image/png")
    assert stored(s3_server, s3_bucket) == {key: png, key + ".plan.json": kept_plan(plan)}  # whole, once
    assert waiter.metric("imagegen_executor_lease_takeovers_total") == 1
    assert waiter.messages("took over the render")


async def test_valkey_killed_mid_run_leaves_every_replica_serving_and_its_return_resumes_coordination(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer
) -> None:
    png = image_bytes()
    fake_openai.script_images(*[fo.images_b64(png)] * 5)
    replicas = await cluster(2)
    first_replica, second_replica = replicas
    await until(lambda: all(r.metric(UP) == 1 for r in replicas))
    async with clients(replicas) as (first, second):
        await first.execute_plan(make_plan(enhanced_prompt="before"))

        valkey_server.kill()
        await until(lambda: all(r.metric(UP) == 0 for r in replicas))
        answers = [
            await (first, second)[i % 2].execute_plan(make_plan(enhanced_prompt=f"down {i}"), request_id=f"down-{i}")
            for i in range(4)
        ]
        # Per process: a retry on the same replica still gets the first result.
        assert await first.execute_plan(make_plan(enhanced_prompt="down 0"), request_id="down-0") == answers[0]
        for replica in replicas:
            assert await health(replica.target) == health_pb2.HealthCheckResponse.SERVING
            assert len(replica.messages("Valkey does not answer")) == 1

        valkey_server.start()  # empty, on the same port
        await until(lambda: all(r.metric(UP) == 1 for r in replicas))
        for replica in replicas:
            assert len(replica.messages("Valkey answers again")) == 1
        # Cross-replica dedup works again: the second replica waits for the first's render.
        requests_before = len(fake_openai.image_requests)
        fake_openai.script_images(fo.delay(1.5, fo.images_b64(png)))
        plan = make_plan(enhanced_prompt="after")
        rendering = asyncio.ensure_future(first.execute_plan(plan))
        await asyncio.to_thread(fake_openai.wait_for_requests, requests_before + 1)
        joined = await second.execute_plan(plan)
        assert description(joined) == description(await rendering)
    assert len(fake_openai.image_requests) == requests_before + 1
    assert second_replica.metric("imagegen_executor_lease_waits_total") == 1
    assert first_replica.metric("imagegen_executor_coordination_fallbacks_total", operation="render_lease") >= 1


async def test_a_provider_cap_of_2_holds_across_3_replicas_and_callers_beyond_it_hear_queued(
    cluster: Cluster, fake_openai: fo.FakeOpenAI
) -> None:
    gate = threading.Event()
    png = image_bytes()

    def held(request: fo.RecordedRequest) -> fo.Reply:
        gate.wait(60)
        return fo.images_b64(png)

    fake_openai.script_images(*[held] * 12)
    replicas = await cluster(3, EXECUTOR_PROVIDER_CONCURRENCY="2")
    queued = 0
    ten_queued = asyncio.Event()

    async def stream(executor: AsyncExecutorClient, i: int) -> list[int]:
        nonlocal queued
        stages = []
        async for event in executor.stream_execute_plan(make_plan(enhanced_prompt=f"a stall at the market, {i}")):
            stages.append(event.stage)
            if event.stage == ExecutionStage.EXECUTION_STAGE_QUEUED:
                queued += 1
                if queued == 10:
                    ten_queued.set()
        return stages

    async with clients(replicas) as executors:
        calls = [asyncio.ensure_future(stream(executors[i % 3], i)) for i in range(12)]
        try:
            await asyncio.wait_for(ten_queued.wait(), 30)  # two render, ten wait for a slot
            await asyncio.to_thread(fake_openai.wait_for_requests, 2)
            assert fake_openai.in_flight == 2
        finally:
            gate.set()
        heard = await asyncio.gather(*calls)
    assert fake_openai.most_in_flight == 2 and len(fake_openai.image_requests) == 12
    assert all(stages[-1] == ExecutionStage.EXECUTION_STAGE_COMPLETED for stages in heard)
    assert sum(stages.count(ExecutionStage.EXECUTION_STAGE_QUEUED) for stages in heard) == 10
