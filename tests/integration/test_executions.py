"""Executions that outlive the call, in one process (the embedded default): a real
executor server on 127.0.0.1, the local store, the offline renderer (which reports one
preview) or a provider held mid-render, and the clients of clients/."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_PREVIEW_BYTES, MAX_PREVIEW_SIDE, PROGRESS_STEP_PERCENT
from imagegen.v1.executor_service_pb2 import ExecutionStage, ExecutionState
from imagegen.v1.image_plan_pb2 import ImageType
from tests.conftest import PUBLIC_BASE
from tests.support import fake_comfyui as fc
from tests.support.executor_server import HeldProvider, running_executor
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration

make_plan = plan_maker(enhanced_prompt="A lich's phylactery", image_type=ImageType.IMAGE_TYPE_ITEM, session_id="crypt-1")
S = ExecutionState


def _store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "images", "imagegen")
    store.ensure_ready()
    return store


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[tuple[str, LocalObjectStore]]:
    store = _store(tmp_path)
    async with running_executor(Executor(OfflineRenderer(), store, PUBLIC_BASE)) as target:
        yield target, store


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[str, LocalObjectStore, HeldProvider]]:
    store = _store(tmp_path)
    provider = HeldProvider(inner=OfflineRenderer(), hold=True)
    async with running_executor(Executor(provider, store, PUBLIC_BASE)) as target:
        yield target, store, provider


async def test_watch_sees_queued_running_preview_then_succeeded_in_order(offline) -> None:
    target, store = offline
    async with AsyncExecutorClient(target) as client:
        started = await client.start_execution(make_plan())
        assert started.name.startswith("executions/") and started.state == S.EXECUTION_STATE_QUEUED
        events = [event async for event in client.watch_execution(started.name)]
    states = [e.execution.state for e in events]
    assert states[0] in (S.EXECUTION_STATE_QUEUED, S.EXECUTION_STATE_RUNNING)
    assert states[-1] == S.EXECUTION_STATE_SUCCEEDED
    # The order holds: no state goes back.
    assert states == sorted(states)
    previews = [e for e in events if e.execution.stage == ExecutionStage.EXECUTION_STAGE_PREVIEW]
    assert len(previews) == 1 and previews[0].execution.state == S.EXECUTION_STATE_RUNNING
    preview = previews[0].preview
    assert len(preview.image_data) <= MAX_PREVIEW_BYTES and preview.mime_type == "image/webp"
    with Image.open(io.BytesIO(preview.image_data)) as image:
        assert max(image.size) <= MAX_PREVIEW_SIDE and image.size == (preview.width, preview.height)
    done = events[-1].execution
    assert done.result.storage_path and await store.stat(done.result.storage_path.partition("/")[2]) is not None
    # A preview comes before the final state; the stages in between are RENDERING and STORING.
    index = {e.execution.stage: i for i, e in reversed(list(enumerate(events)))}
    assert index[ExecutionStage.EXECUTION_STAGE_RENDERING] < index[ExecutionStage.EXECUTION_STAGE_PREVIEW]
    assert index[ExecutionStage.EXECUTION_STAGE_PREVIEW] < index[ExecutionStage.EXECUTION_STAGE_STORING]
    # The offline renderer reports half its render done after the preview (its 100 is not shown).
    assert [(e.execution.stage, e.execution.progress_percent) for e in events if e.execution.progress_percent] == [
        (ExecutionStage.EXECUTION_STAGE_RENDERING, 50)
    ]
    assert done.progress_percent == 0


async def test_a_comfyui_renders_sampler_steps_become_throttled_progress_then_0_when_done(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (20, 40, 60)).save(out, format="PNG")
    steps = 40  # a sampler step is 2.5 percent: every other one is a 5 percent step
    with fc.FakeComfyUI() as fake:
        fake.script(fc.renders(out.getvalue(), progress=tuple((n, steps) for n in range(steps + 1))))
        provider = build_provider(ExecutorSettings(
            providers=("comfyui",), comfyui_url=fake.url, comfyui_request_timeout_seconds=5.0,
            comfyui_timeout_seconds=10.0, comfyui_checkpoint="sdxl.safetensors",
        ))
        async with running_executor(Executor(provider, _store(tmp_path), PUBLIC_BASE)) as target:
            async with AsyncExecutorClient(target) as client:
                started = await client.start_execution(make_plan())
                events = [event async for event in client.watch_execution(started.name)]
    progress = [e.execution for e in events if e.execution.progress_percent]
    percents = [execution.progress_percent for execution in progress]
    assert percents, "no progress was announced"
    assert all(e.state == S.EXECUTION_STATE_RUNNING and e.stage == ExecutionStage.EXECUTION_STAGE_RENDERING for e in progress)
    # Rising in steps of at least 5, never 100 while rendering: 19 at most for 41 reports.
    assert all(b - a >= PROGRESS_STEP_PERCENT for a, b in zip([0, *percents], percents))
    assert percents[-1] < 100 and len(percents) <= 100 // PROGRESS_STEP_PERCENT - 1
    assert set(percents) <= set(range(PROGRESS_STEP_PERCENT, 100, PROGRESS_STEP_PERCENT))
    storing = [e.execution for e in events if e.execution.stage == ExecutionStage.EXECUTION_STAGE_STORING]
    assert storing and all(e.progress_percent == 0 for e in storing)
    done = events[-1].execution
    assert done.state == S.EXECUTION_STATE_SUCCEEDED and done.progress_percent == 0


async def test_an_execution_runs_on_when_its_starter_leaves(held) -> None:
    target, store, provider = held
    async with AsyncExecutorClient(target) as client:  # the starter's channel closes at the end of this block
        started = await client.start_execution(make_plan(), request_id="start-1")
    await provider.started.wait()
    provider.release.set()
    async with AsyncExecutorClient(target) as other:
        events = [event async for event in other.watch_execution(started.name)]
        assert events[-1].execution.state == S.EXECUTION_STATE_SUCCEEDED
        got = await other.get_execution(started.name)
        assert got.result == events[-1].execution.result and provider.calls == 1
        # request_id: a retried start returns the first start's execution; a stored plan starts SUCCEEDED.
        assert (await other.start_execution(make_plan(), request_id="start-1")).name == started.name
        again = await other.start_execution(make_plan())
        assert again.name != started.name and again.state == S.EXECUTION_STATE_SUCCEEDED and again.result.reused
        with pytest.raises(ExecutionFailed) as caught:
            await other.start_execution(make_plan(session_id="crypt-2"), request_id="start-1")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert provider.calls == 1


async def test_cancel_mid_render_stores_nothing_and_a_second_cancel_is_a_no_op(held, tmp_path: Path) -> None:
    target, store, provider = held
    async with AsyncExecutorClient(target) as client:
        started = await client.start_execution(make_plan())
        await provider.started.wait()
        cancelled = await client.cancel_execution(started)
        assert cancelled.state == S.EXECUTION_STATE_CANCELLED
        assert cancelled.error.code == grpc.StatusCode.CANCELLED.value[0]
        assert provider.cancelled.is_set()
        assert (await client.cancel_execution(started)).state == S.EXECUTION_STATE_CANCELLED
        assert (await client.get_execution(started)).state == S.EXECUTION_STATE_CANCELLED
    assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []


async def test_a_session_watch_sees_every_execution_of_its_session_only(held) -> None:
    target, _, provider = held
    provider.release.set()
    async with AsyncExecutorClient(target) as client:
        seen: list[str] = []
        heard = asyncio.Event()
        names: list[str] = []

        async def watch() -> None:
            async for event in client.watch_session("crypt-7"):
                assert event.execution.session_id == "crypt-7"
                heard.set()
                if event.execution.state == S.EXECUTION_STATE_SUCCEEDED and event.execution.name in names:
                    seen.append(event.execution.name)
                    if len(seen) == 2:
                        return

        watcher = asyncio.ensure_future(watch())
        # The watch is open once it hears something: probe the session until it does.
        async with asyncio.timeout(30):
            probe = 0
            while not heard.is_set():
                probe += 1
                await client.start_execution(make_plan(enhanced_prompt=f"A probe, {probe}", session_id="crypt-7"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), 1)
        for prompt in ("A ghoul", "A wight"):
            names.append((await client.start_execution(make_plan(enhanced_prompt=prompt, session_id="crypt-7"))).name)
        await client.start_execution(make_plan(enhanced_prompt="A bat", session_id="crypt-8"))
        async with asyncio.timeout(30):
            await watcher
    assert sorted(seen) == sorted(names)


async def test_list_pages_newest_first_over_120_executions_of_3_sessions(held) -> None:
    target, _, provider = held  # held: they stay QUEUED or RUNNING, records only
    async with AsyncExecutorClient(target) as client:
        names: dict[str, list[str]] = {"s-a": [], "s-b": [], "s-c": []}
        for n in range(120):
            session = ("s-a", "s-b", "s-c")[n % 3]
            started = await client.start_execution(make_plan(enhanced_prompt=f"A room, {n}", session_id=session))
            names[session].append(started.name)
        for session, expected in names.items():
            listed, token, pages = [], "", 0
            while True:
                page = await client.list_executions(session, page_size=7, page_token=token)
                assert len(page.executions) <= 7
                listed += [e.name for e in page.executions]
                pages += 1
                if not (token := page.next_page_token):
                    break
            assert listed == list(reversed(expected)) and pages == 6
            assert all(e.session_id == session for e in (await client.list_executions(session)).executions)
        with pytest.raises(ExecutionFailed) as caught:
            await client.list_executions("s-a", page_token=token or "bm90IGEgdG9rZW4")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        first = await client.list_executions("s-a", page_size=2)
        with pytest.raises(ExecutionFailed) as caught:
            await client.list_executions("s-b", page_token=first.next_page_token)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        for name in [n for ns in names.values() for n in ns]:
            await client.cancel_execution(name)
        provider.release.set()


async def test_a_malformed_name_is_invalid_argument_and_an_unknown_one_not_found(offline) -> None:
    target, _ = offline
    async with AsyncExecutorClient(target) as client:
        for call in (client.get_execution, client.cancel_execution):
            with pytest.raises(ExecutionFailed) as caught:
                await call("executions/not-an-id")
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(ExecutionFailed) as caught:
                await call("executions/" + "0" * 32)
            assert caught.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ExecutionFailed) as caught:
            [event async for event in client.watch_execution("executions/" + "f" * 32)]
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ExecutionFailed) as caught:
            await client.start_execution(make_plan(size="7x7"))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
