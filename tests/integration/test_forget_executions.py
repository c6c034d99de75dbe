"""DeleteSessionImages forgets the session's executions too: those not ended are cancelled
first (a running render is hung up and stores nothing), then every record of the session
goes, and other sessions' executions run on. In one process (a real executor server on
127.0.0.1 with a provider held mid-render) and across replicas on a real Valkey
(executor processes, the real openai SDK against the loopback fake, real S3)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.bootstrap import create_server
from executor_service.config import ExecutorSettings
from executor_service.coordination.in_process_executions import InProcessExecutionQueue
from executor_service.coordination.valkey_executions import FORGET_BATCH, ValkeyExecutionQueue
from executor_service.executor import Executor
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.v1.executor_service_pb2 import Execution, ExecutionState
from imagegen_runtime.valkey import Valkey
from tests.conftest import PUBLIC_BASE
from tests.integration.test_cluster_executor import Cluster, cluster, clients, stored, until  # noqa: F401 - the fixture
from tests.integration.test_openai_images import image_bytes
from tests.integration.test_openai_images import make_plan as openai_plan
from tests.support import fake_openai as fo
from tests.support.executor_server import HeldProvider
from tests.support.plans import plan_maker
from tests.support.s3_server import ExternalS3, S3Server
from tests.support.valkey_server import ValkeyServer

pytestmark = pytest.mark.integration

S = ExecutionState
make_plan = plan_maker(enhanced_prompt="A drowned bell tower", session_id="coast-1")


async def _not_found(client: AsyncExecutorClient, name: str) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await client.get_execution(name)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def _ended(client: AsyncExecutorClient, name: str) -> Execution:
    return [event async for event in client.watch_execution(name, timeout=60)][-1].execution


def _files(root: Path, session_id: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and session_id in p.parts]


@pytest.fixture
async def one_worker(tmp_path: Path) -> AsyncIterator[tuple[str, HeldProvider, Path]]:
    """An executor with one execution worker, so a second execution waits QUEUED."""
    root = tmp_path / "images"
    store = LocalObjectStore(root, "imagegen")
    store.ensure_ready()
    provider = HeldProvider(inner=OfflineRenderer(), hold=True)
    executor = Executor(provider, store, PUBLIC_BASE)
    running = await create_server(ExecutorSettings(address="127.0.0.1:0", execution_workers=1), executor)
    try:
        yield f"127.0.0.1:{running.port}", provider, root
    finally:
        provider.release.set()
        await running.stop(None)
        await executor.aclose()


async def test_deleting_a_session_cancels_and_forgets_its_executions_only(one_worker) -> None:
    target, provider, root = one_worker
    async with AsyncExecutorClient(target) as client:
        # One that succeeded (its image stored), one held mid-render, one QUEUED behind it.
        provider.release.set()
        done = await client.start_execution(make_plan(enhanced_prompt="A lantern"), request_id="turn-1")
        assert (await _ended(client, done.name)).state == S.EXECUTION_STATE_SUCCEEDED
        provider.release.clear()
        provider.started.clear()
        running = await client.start_execution(make_plan(enhanced_prompt="A gull"), request_id="turn-2")
        await provider.started.wait()
        queued = await client.start_execution(make_plan(enhanced_prompt="A wreck"))
        other = await client.start_execution(make_plan(session_id="coast-2"), request_id="turn-9")
        assert (await client.get_execution(running)).state == S.EXECUTION_STATE_RUNNING
        assert (await client.get_execution(queued)).state == S.EXECUTION_STATE_QUEUED
        assert _files(root, "coast-1")  # the image and its plan

        assert await client.delete_session_images("coast-1") == 1
        assert provider.cancelled.is_set()  # the held render was hung up
        for name in (done.name, running.name, queued.name):
            await _not_found(client, name)
        assert list((await client.list_executions("coast-1")).executions) == []
        # The other session's execution was left alone: it runs once the worker is free.
        provider.release.set()
        assert (await _ended(client, other.name)).state == S.EXECUTION_STATE_SUCCEEDED
        assert (await client.start_execution(make_plan(session_id="coast-2"), request_id="turn-9")).name == other.name
        assert _files(root, "coast-1") == []  # the cancelled render stored nothing, then or later

        # Safe to repeat; the session's request_ids are free again.
        assert await client.delete_session_images("coast-1") == 0
        again = await client.start_execution(make_plan(enhanced_prompt="A gull"), request_id="turn-2")
        assert again.name != running.name
        assert (await _ended(client, again.name)).state == S.EXECUTION_STATE_SUCCEEDED
        assert [e.name for e in (await client.list_executions("coast-1")).executions] == [again.name]


async def test_a_bad_session_id_is_invalid_argument_and_forgets_nothing(one_worker) -> None:
    target, provider, _ = one_worker
    async with AsyncExecutorClient(target) as client:
        started = await client.start_execution(make_plan())
        await provider.started.wait()
        with pytest.raises(ExecutionFailed) as caught:
            await client.delete_session_images("not a session/..")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (await client.get_execution(started)).state == S.EXECUTION_STATE_RUNNING
        assert not provider.cancelled.is_set()
        await client.cancel_execution(started)


@pytest.mark.slow
async def test_across_replicas_on_valkey_nothing_of_the_session_is_left(
    cluster: Cluster,  # noqa: F811 - the fixture
    fake_openai: fo.FakeOpenAI,
    s3_server: S3Server | ExternalS3,
    s3_bucket: str,
    raw: redis.Redis,
) -> None:
    png = image_bytes()
    # The session's render and the other session's, both long; then a short one.
    fake_openai.script_images(fo.delay(60, fo.images_b64(png)), fo.delay(60, fo.images_b64(png)), fo.images_b64(png))
    replicas = await cluster(2, EXECUTOR_EXECUTION_WORKERS="1")
    async with clients(replicas) as (first, second):
        running = await first.start_execution(openai_plan(session_id="table-9"), request_id="turn-1")
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        other = await first.start_execution(openai_plan(session_id="table-8"), request_id="turn-8")
        await asyncio.to_thread(fake_openai.wait_for_requests, 2)  # both replicas' workers are busy
        queued = await first.start_execution(openai_plan(enhanced_prompt="A mimic", session_id="table-9"))
        assert (await second.get_execution(queued)).state == S.EXECUTION_STATE_QUEUED
        ids = [running.name.removeprefix("executions/"), queued.name.removeprefix("executions/")]

        assert await second.delete_session_images("table-9") == 0
        await asyncio.to_thread(fake_openai.wait_for_hang_ups, 1)  # the running render was hung up
        for client in (first, second):
            for name in (running.name, queued.name):
                await _not_found(client, name)
            assert list((await client.list_executions("table-9")).executions) == []
        assert (await first.get_execution(other)).state == S.EXECUTION_STATE_RUNNING
        keys = [key.decode() for key in await raw.keys("*")]
        left = [key for key in keys if any(i in key for i in ids) or key.endswith((":table-9", ":turn-1"))]
        assert left == []
        assert any(key.endswith(":turn-8") for key in keys)  # the other session's binding stays

        assert await first.delete_session_images("table-9") == 0
        assert (await first.start_execution(openai_plan(session_id="table-8"), request_id="turn-8")).name == other.name
        assert (await second.cancel_execution(other)).state == S.EXECUTION_STATE_CANCELLED
    assert stored(s3_server, s3_bucket) == {}


# -- the ExecutionQueue port, both adapters, without workers ----------------------------


@pytest.fixture(params=["in_process", "valkey"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[InProcessExecutionQueue | ValkeyExecutionQueue]:
    if request.param == "in_process":
        yield InProcessExecutionQueue(ttl_seconds=600)
        return
    server = request.getfixturevalue("valkey_server")
    valkey = Valkey(server.url, prefix=f"test:{uuid.uuid4().hex[:12]}", retry_interval=0.05)
    adapter = ValkeyExecutionQueue(valkey, workers=1, ttl_seconds=600)
    try:
        yield adapter
    finally:
        await adapter.aclose()
        await valkey.aclose()


def _queued(session_id: str, n: int) -> Execution:
    execution = Execution(
        name=f"executions/{uuid.uuid4().hex}",
        state=S.EXECUTION_STATE_QUEUED,
        session_id=session_id,
        request_id=f"{session_id}-{n}",
    )
    execution.create_time.FromMicroseconds(1_796_000_000_000_000 + n)
    return execution


async def test_the_queue_forgets_a_session_of_more_than_a_batch_cancelling_first(queue) -> None:
    count = FORGET_BATCH * 2 + 7  # several batches
    mine, theirs = [_queued("big", n) for n in range(count)], [_queued("small", n) for n in range(3)]
    for execution in mine + theirs:
        ids = execution.name.removeprefix("executions/")
        assert await queue.bind_request(execution.request_id, execution.session_id, "p", ids) is None
        await queue.create(execution)
    watched = mine[0].name.removeprefix("executions/")
    async with queue.watch(watched) as events:
        assert await queue.forget_session("big") == count
        async with asyncio.timeout(10):
            heard = await anext(events)  # a QUEUED one ended CANCELLED before it was forgotten
        assert heard.execution.state == S.EXECUTION_STATE_CANCELLED
    for execution in mine:
        assert await queue.get(execution.name.removeprefix("executions/")) is None
    assert await queue.page("big", 1000, None) == []
    # Its request_ids are free again; the other session's records and bindings are untouched.
    assert await queue.bind_request(mine[0].request_id, "big", "p", "f" * 32) is None
    assert [e.name for e in await queue.page("small", 1000, None)] == [e.name for e in reversed(theirs)]
    for execution in theirs:
        found = await queue.get(execution.name.removeprefix("executions/"))
        assert found is not None and found.state == S.EXECUTION_STATE_QUEUED
        ids = execution.name.removeprefix("executions/")
        assert await queue.bind_request(execution.request_id, "small", "p", "0" * 32) == ids
    assert await queue.forget_session("big") == 0  # safe to repeat


@pytest.mark.slow
async def test_while_valkey_is_down_deleting_a_session_is_unavailable_and_deletes_nothing(
    cluster: Cluster,  # noqa: F811 - the fixture
    fake_openai: fo.FakeOpenAI,
    s3_server: S3Server | ExternalS3,
    s3_bucket: str,
    valkey_server: ValkeyServer,
) -> None:
    fake_openai.script_images(fo.images_b64(image_bytes()))
    (replica,) = await cluster(1)
    async with AsyncExecutorClient(replica.target, timeout=30) as client:
        started = await client.start_execution(openai_plan(session_id="table-5"))
        assert (await _ended(client, started.name)).state == S.EXECUTION_STATE_SUCCEEDED
        kept = stored(s3_server, s3_bucket)
        assert kept
        valkey_server.kill()
        with pytest.raises(ExecutionFailed) as caught:
            await client.delete_session_images("table-5")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.reason == "EXECUTIONS_UNAVAILABLE"
        assert stored(s3_server, s3_bucket) == kept  # nothing deleted: call again later
        valkey_server.start()
        await until(lambda: replica.metric("imagegen_executor_coordination_up") == 1)
        assert await client.delete_session_images("table-5") == 1
        await _not_found(client, started.name)
    assert stored(s3_server, s3_bucket) == {}
