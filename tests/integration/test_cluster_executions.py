"""Executions across replicas: several `python -m executor_service` processes on one real
Valkey and one real S3 server (SeaweedFS), the real openai SDK against the loopback fake
with replies that take seconds. An execution outlives its caller and its replica, is
cancelled from any replica, and is watched from any replica."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.executor import object_key
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.executor_service_pb2 import ExecutionState
from tests.integration.test_cluster_executor import Cluster, cluster, clients, kept_plan, stored, until  # noqa: F401 - the fixture
from tests.integration.test_openai_images import image_bytes, make_plan
from tests.support import fake_openai as fo
from tests.support.s3_server import ExternalS3, S3Server
from tests.support.valkey_server import ValkeyServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

S = ExecutionState


async def _ended(client: AsyncExecutorClient, name: str) -> list:
    return [event async for event in client.watch_execution(name, timeout=60)]


async def test_an_execution_outlives_its_caller_and_another_replica_returns_its_result(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, s3_server: S3Server | ExternalS3, s3_bucket: str
) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.delay(2.0, fo.images_b64(png)))
    first, second = await cluster(2)
    plan = make_plan()
    async with AsyncExecutorClient(first.target) as starter:
        started = await starter.start_execution(plan, request_id="turn-7")
    # The starter's channel is closed: nobody holds a call for it any more.
    await asyncio.to_thread(fake_openai.wait_for_requests, 1)
    async with AsyncExecutorClient(second.target) as other:
        events = await _ended(other, started.name)
        done = await other.get_execution(started.name)
        assert (await other.start_execution(plan, request_id="turn-7")).name == started.name
    assert events[-1].execution.state == S.EXECUTION_STATE_SUCCEEDED == done.state
    assert done.result.storage_path == f"{s3_bucket}/{object_key(with_fingerprint(plan), 'image/png')}"
    key = object_key(with_fingerprint(plan), "image/png")
    assert stored(s3_server, s3_bucket) == {key: png, key + ".plan.json": kept_plan(plan)}
    assert len(fake_openai.image_requests) == 1 and not fake_openai.hung_up


@pytest.mark.parametrize("end", ["kill", "stop"])
async def test_the_replica_running_it_killed_another_completes_it_once(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, s3_server: S3Server | ExternalS3, s3_bucket: str, end: str
) -> None:
    """kill -9, or SIGTERM (a pod moved): the entry is left pending either way."""
    lease = 3.0
    png = image_bytes()
    fake_openai.script_images(fo.delay(120, fo.images_b64(png)), fo.delay(1.0, fo.images_b64(png)))
    (runner,) = await cluster(1, EXECUTOR_LEASE_SECONDS=str(lease))
    plan = make_plan()
    async with AsyncExecutorClient(runner.target) as on_runner:
        started = await on_runner.start_execution(plan)
    await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # the only replica runs it
    (survivor,) = await cluster(1, EXECUTOR_LEASE_SECONDS=str(lease))
    runner.kill() if end == "kill" else runner.stop()
    killed = time.monotonic()
    async with AsyncExecutorClient(survivor.target) as on_survivor:
        events = await _ended(on_survivor, started.name)
    took = time.monotonic() - killed
    assert events[-1].execution.state == S.EXECUTION_STATE_SUCCEEDED
    assert len(fake_openai.image_requests) == 2
    key = object_key(with_fingerprint(plan), "image/png")
    assert stored(s3_server, s3_bucket) == {key: png, key + ".plan.json": kept_plan(plan)}  # whole, once
    # The entry idles past the lease, is claimed at the survivor's next look (a third of
    # the lease), waits out the dead render lease, then one render of 1 s.
    assert took <= 2 * lease + 1.0 + 5.0
    assert survivor.messages("took over")
    # The survivor counts the takeover and the run it finished (reported just after it is recorded).
    ended = "imagegen_executor_executions_ended_total"
    await until(lambda: survivor.metric(ended, state="succeeded", reason="") == 1)
    assert survivor.metric("imagegen_executor_execution_takeovers_total") == 1
    assert survivor.metric("imagegen_executor_executions_started_total") == 1
    assert survivor.metric("imagegen_executor_executions_running") == 0


async def test_cancel_mid_render_from_another_replica(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, s3_server: S3Server | ExternalS3, s3_bucket: str
) -> None:
    fake_openai.script_images(fo.delay(60, fo.images_b64(image_bytes())))
    replicas = await cluster(2)
    async with clients(replicas) as (first, second):
        started = await first.start_execution(make_plan())
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        assert (await second.get_execution(started.name)).state == S.EXECUTION_STATE_RUNNING
        cancelled = await second.cancel_execution(started.name)
        assert cancelled.state == S.EXECUTION_STATE_CANCELLED
        assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
        await asyncio.to_thread(fake_openai.wait_for_hang_ups, 1)  # the provider saw the hang-up
        again = await first.cancel_execution(started.name)  # a no-op
        assert again.state == S.EXECUTION_STATE_CANCELLED and again.update_time == cancelled.update_time
    assert stored(s3_server, s3_bucket) == {}


async def test_watch_sees_queued_running_preview_succeeded_and_a_session_watch_sees_every_replica(
    cluster: Cluster, fake_openai: fo.FakeOpenAI
) -> None:
    png, partial = image_bytes(), image_bytes(size=(256, 256))
    # One worker per replica: three executions keep the three busy, the fourth waits QUEUED.
    fake_openai.script_images(*[fo.delay(1.5, fo.images_stream(png, [partial]))] * 4)
    replicas = await cluster(3, EXECUTOR_EXECUTION_WORKERS="1")
    async with clients(replicas) as executors:
        heard: list = []
        listening = asyncio.Event()

        async def watch_session() -> None:
            async for event in executors[2].watch_session("table-1"):
                heard.append(event.execution)
                listening.set()
                if sum(e.state == S.EXECUTION_STATE_SUCCEEDED for e in heard) == 4:
                    return

        session_watch = asyncio.ensure_future(watch_session())
        busy = []
        for i in range(3):
            busy.append(await executors[i].start_execution(make_plan(enhanced_prompt=f"A sea hag {i}", session_id="table-1")))
            if i == 0:  # the session watch is open once it has heard the first start
                async with asyncio.timeout(10):
                    await listening.wait()
        await asyncio.to_thread(fake_openai.wait_for_requests, 3)  # every worker is rendering
        waiting = await executors[0].start_execution(make_plan(enhanced_prompt="A kraken", session_id="table-1"))
        events = await _ended(executors[1], waiting.name)
        async with asyncio.timeout(60):
            await session_watch
    assert waiting.state == S.EXECUTION_STATE_QUEUED and waiting.queue_position == 0
    steps: list[str] = []
    for event in events:
        step = "PREVIEW" if event.HasField("preview") else S.Name(event.execution.state).removeprefix("EXECUTION_STATE_")
        if not steps or steps[-1] != step:
            steps.append(step)
    assert steps == ["QUEUED", "RUNNING", "PREVIEW", "RUNNING", "SUCCEEDED"] or steps == ["QUEUED", "RUNNING", "PREVIEW", "SUCCEEDED"]
    preview = next(e.preview for e in events if e.HasField("preview"))
    assert preview.mime_type == "image/webp" and max(preview.width, preview.height) <= 256
    # The session watch heard all four, started on three replicas.
    assert {e.name for e in heard} == {*(b.name for b in busy), waiting.name}
    assert all(e.session_id == "table-1" for e in heard)


async def test_while_valkey_is_down_start_execution_is_unavailable_and_execute_plan_serves(
    cluster: Cluster, fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer
) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.images_b64(png), fo.images_b64(png))
    (replica,) = await cluster(1)
    async with AsyncExecutorClient(replica.target, timeout=30) as client:
        before = await client.start_execution(make_plan(enhanced_prompt="before"))
        assert (await _ended(client, before.name))[-1].execution.state == S.EXECUTION_STATE_SUCCEEDED
        valkey_server.kill()
        with pytest.raises(ExecutionFailed) as caught:
            await client.start_execution(make_plan(enhanced_prompt="down"))
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.reason == "EXECUTIONS_UNAVAILABLE"
        assert (await client.execute_plan(make_plan(enhanced_prompt="down"))).byte_size == len(png)
        valkey_server.start()
        await until(lambda: replica.metric("imagegen_executor_coordination_up") == 1)
        again = await client.start_execution(make_plan(enhanced_prompt="down"))
        assert again.state == S.EXECUTION_STATE_SUCCEEDED and again.result.reused


async def test_list_pages_newest_first_over_120_executions_of_3_sessions_from_any_replica(
    cluster: Cluster, fake_openai: fo.FakeOpenAI
) -> None:
    png = image_bytes()
    fake_openai.script_images(*[fo.images_b64(png)] * 3)  # one plan per session: one render each
    replicas = await cluster(2)
    sessions = ("hall-a", "hall-b", "hall-c")
    async with clients(replicas) as (first, second):
        names: dict[str, list[str]] = {session: [] for session in sessions}
        for n in range(120):
            session = sessions[n % 3]
            started = await (first, second)[n % 2].start_execution(make_plan(session_id=session))
            names[session].append(started.name)
        for session, expected in names.items():
            listed, token, pages = [], "", 0
            while True:
                page = await (second, first)[pages % 2].list_executions(session, page_size=7, page_token=token)
                listed += [e.name for e in page.executions]
                pages += 1
                if not (token := page.next_page_token):
                    break
            assert listed == list(reversed(expected)) and pages == 6
        with pytest.raises(ExecutionFailed) as caught:
            await first.get_execution("executions/nope")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ExecutionFailed) as caught:
            await second.get_execution("executions/" + "0" * 32)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
