"""Prometheus metrics scraped over HTTP from real servers after known calls."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clients import AsyncExecutorClient, AsyncPlannerClient, ExecutionFailed
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from executor_service.coordination.in_process_executions import InProcessExecutionQueue
from executor_service.coordination.valkey_executions import ValkeyExecutionQueue
from executor_service.executions import Executions
from executor_service.executor import Executor
from executor_service.metrics import ExecutorMetrics
from executor_service.stores.local_store import LocalObjectStore
from imagegen.v1.executor_service_pb2 import Execution, ExecutionState
from imagegen_runtime.serving import RunningServer
from imagegen_runtime.telemetry.settings import TelemetrySettings
from imagegen_runtime.valkey import Valkey
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.conftest import PUBLIC_BASE
from tests.integration.test_executor_rpcs import make_plan
from tests.integration.test_openai_images import image_bytes
from tests.support import fake_openai as fo
from tests.support.calls import ClosingLines, closing_lines, codes
from tests.support.executor_server import HeldProvider
from tests.support.valkey_server import ValkeyServer

pytestmark = pytest.mark.integration

METRICS = TelemetrySettings(metrics_address="127.0.0.1:0")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> tuple[str, Samples]:
    with _NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


async def scrape(running: RunningServer) -> Samples:
    assert running.metrics_port
    return (await asyncio.to_thread(_scrape, running.metrics_port))[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpc(service: str, method: str, code: str, kind: str = "unary") -> dict[str, str]:
    return dict(grpc_service=f"imagegen.v1.{service}", grpc_method=method, grpc_type=kind, grpc_code=code)


@pytest.fixture
async def executor(tmp_path: Path, fake_openai: fo.FakeOpenAI) -> AsyncIterator[RunningServer]:
    """openai first (the fake, no retries), then offline; metrics on a port of its own."""
    settings = ExecutorSettings(
        address="127.0.0.1:0", local_store_dir=tmp_path / "images", public_base_url=PUBLIC_BASE,
        providers=("openai", "offline"), openai_base_url=fake_openai.base_url, openai_max_retries=0,
        telemetry=METRICS,
    )
    running = await create_executor_server(settings)
    yield running
    await running.stop(None)


async def test_executor_metrics_count_calls_codes_dedup_providers_and_bytes(
    executor: RunningServer, fake_openai: fo.FakeOpenAI
) -> None:
    down = fo.error(503, "the images API is down")
    fake_openai.script_images(down, down)
    async with AsyncExecutorClient(f"127.0.0.1:{executor.port}") as client:
        first = await client.execute_plan(make_plan())  # openai fails, offline renders
        again = await client.execute_plan(make_plan())  # stored already: a dedup hit
        with pytest.raises(ExecutionFailed) as caught:
            await client.execute_plan(make_plan(size="12x12"))
        events = [event async for event in client.stream_execute_plan(make_plan(style="noir"))]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not first.reused and again.reused and events[-1].result.byte_size > 0

    samples = await scrape(executor)
    assert value(samples, "grpc_server_handled_total", **rpc("ExecutorService", "ExecutePlan", "OK")) == 2
    assert value(samples, "grpc_server_handled_total", **rpc("ExecutorService", "ExecutePlan", "INVALID_ARGUMENT")) == 1
    assert value(
        samples, "grpc_server_handled_total", **rpc("ExecutorService", "StreamExecutePlan", "OK", "server_stream")
    ) == 1
    assert value(
        samples, "grpc_server_handling_seconds_count", **rpc("ExecutorService", "ExecutePlan", "OK")
    ) == 2
    assert value(samples, "imagegen_executor_dedup_hits_total", kind="stored") == 1
    assert value(samples, "imagegen_executor_stored_images_total") == 2
    assert value(samples, "imagegen_executor_stored_bytes_total") == first.byte_size + events[-1].result.byte_size
    # both renders (the first plan, the noir one) went to openai, which failed, then to offline
    assert value(samples, "imagegen_executor_provider_errors_total", provider="openai", reason="PROVIDER_UNAVAILABLE") == 2
    assert value(samples, "imagegen_executor_provider_seconds_count", provider="openai", outcome="error") == 2
    assert value(samples, "imagegen_executor_provider_seconds_count", provider="offline", outcome="ok") == 2
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_a_request_id_replay_and_a_shared_render_count_as_dedup_hits(executor: RunningServer) -> None:
    async with AsyncExecutorClient(f"127.0.0.1:{executor.port}") as client:
        plan = make_plan(style="watercolor")
        # fake's queue is empty: openai fails fast (500) and offline renders; both callers share it
        together = await asyncio.gather(client.execute_plan(plan, request_id="r-1"), client.execute_plan(plan))
        replayed = await client.execute_plan(plan, request_id="r-1")
    assert replayed == together[0]
    samples = await scrape(executor)
    assert value(samples, "imagegen_executor_dedup_hits_total", kind="request_id") == 1
    assert value(samples, "imagegen_executor_dedup_hits_total", kind="in_flight") == 1
    assert value(samples, "imagegen_executor_stored_images_total") == 1


async def test_two_servers_in_one_process_count_apart(tmp_path: Path) -> None:
    servers = [
        await create_executor_server(
            ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path / name, telemetry=METRICS)
        )
        for name in ("a", "b")
    ]
    try:
        async with AsyncExecutorClient(f"127.0.0.1:{servers[0].port}") as client:
            await client.execute_plan(make_plan())
        counts = [
            value(await scrape(server), "grpc_server_handled_total", **rpc("ExecutorService", "ExecutePlan", "OK"))
            for server in servers
        ]
    finally:
        for server in servers:
            await server.stop(None)
    assert counts == [1, 0]
    assert servers[0].metrics_port != servers[1].metrics_port


async def test_the_metrics_port_closes_with_the_server(tmp_path: Path) -> None:
    running = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path, telemetry=METRICS)
    )
    port = running.metrics_port
    assert port is not None
    await asyncio.to_thread(_scrape, port)
    await running.stop(None)
    with pytest.raises(OSError):
        await asyncio.to_thread(_scrape, port)


async def test_no_metrics_address_serves_no_metrics(tmp_path: Path) -> None:
    running = await create_executor_server(ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path))
    try:
        assert running.metrics_port is None
    finally:
        await running.stop(None)


async def test_planner_metrics_count_llm_fallbacks_and_llm_errors(fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(fo.error(503, "the LLM is down"))
    settings = PlannerSettings(
        address="127.0.0.1:0", llm_base_url=fake_openai.base_url, llm_api_key="sk-test", llm_model="gpt-test",
        llm_max_retries=0, llm_timeout_seconds=2.0, telemetry=METRICS,
    )
    running = await create_planner_server(settings)
    try:
        async with AsyncPlannerClient(f"127.0.0.1:{running.port}") as client:
            plan = await client.create_plan("A goblin chief on a throne of bones", session_id="t-1")
        samples = await scrape(running)
    finally:
        await running.stop(None)
    assert plan.provenance.fell_back
    assert value(samples, "grpc_server_handled_total", **rpc("PlannerService", "CreatePlan", "OK")) == 1
    assert value(samples, "imagegen_planner_llm_fallbacks_total", reason="LLM_UNAVAILABLE") == 1
    assert value(samples, "imagegen_planner_llm_errors_total", model="gpt-test", reason="LLM_UNAVAILABLE") == 1
    assert value(samples, "imagegen_planner_llm_seconds_count", model="gpt-test", outcome="error") == 1


@contextlib.asynccontextmanager
async def held_executor(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, HeldProvider]]:
    """An executor whose renders wait until released: never, here."""
    provider = HeldProvider(hold=True)
    running = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", telemetry=METRICS),
        Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE),
    )
    try:
        yield running, provider
    finally:
        await running.stop(None)
        await provider.aclose()


def execute_plan_codes(lines: ClosingLines) -> list[str]:
    return codes(lines.of("imagegen.v1.ExecutorService/ExecutePlan"))


def handled(samples: Samples, code: str) -> float:
    return value(samples, "grpc_server_handled_total", **rpc("ExecutorService", "ExecutePlan", code))


async def test_calls_past_their_deadline_are_counted_deadline_exceeded_every_time(tmp_path: Path) -> None:
    """The client's deadline passes a moment before the server's, so its cancellation can
    reach the server while the server still has a little time left: still DEADLINE_EXCEEDED."""
    calls = 100
    with closing_lines() as lines:
        async with held_executor(tmp_path) as (running, _):
            async with AsyncExecutorClient(f"127.0.0.1:{running.port}") as client:
                outcomes = await asyncio.gather(
                    *(client.execute_plan(make_plan(style=f"style-{i}"), timeout=0.5 + 0.01 * (i % 10))
                      for i in range(calls)),
                    return_exceptions=True,
                )  # fmt: skip
            assert [o.code for o in outcomes] == [grpc.StatusCode.DEADLINE_EXCEEDED] * calls  # type: ignore[union-attr]
            await lines.wait_for(lambda records: len(execute_plan_codes(lines)) == calls)
            samples = await scrape(running)
    assert execute_plan_codes(lines) == ["DEADLINE_EXCEEDED"] * calls
    assert (handled(samples, "DEADLINE_EXCEEDED"), handled(samples, "CANCELLED")) == (calls, 0)


async def test_a_call_its_client_cancels_is_counted_cancelled(tmp_path: Path) -> None:
    with closing_lines() as lines:
        async with held_executor(tmp_path) as (running, provider):
            async with AsyncExecutorClient(f"127.0.0.1:{running.port}", timeout=60) as client:
                call = asyncio.ensure_future(client.execute_plan(make_plan(style="noir")))
                await asyncio.wait_for(provider.started.wait(), 10)  # the render is under way
                call.cancel()
                await lines.wait_for(lambda records: len(execute_plan_codes(lines)) == 1)
            samples = await scrape(running)
    assert execute_plan_codes(lines) == ["CANCELLED"]
    assert (handled(samples, "CANCELLED"), handled(samples, "DEADLINE_EXCEEDED")) == (1, 0)


# -- detached executions --------------------------------------------------------------


@pytest.fixture
async def openai_only(tmp_path: Path, fake_openai: fo.FakeOpenAI) -> AsyncIterator[RunningServer]:
    """openai alone (the fake, no retries): what it answers is how an execution ends."""
    settings = ExecutorSettings(
        address="127.0.0.1:0", local_store_dir=tmp_path / "images", public_base_url=PUBLIC_BASE,
        providers=("openai",), openai_base_url=fake_openai.base_url, openai_max_retries=0, telemetry=METRICS,
    )
    running = await create_executor_server(settings)
    yield running
    await running.stop(None)


async def _scrape_until(running: RunningServer, done: Callable[[Samples], bool]) -> Samples:
    """The metrics once done holds (a worker reports an end just after recording it, so a
    watcher may see the end first); polled, for at most 10 s."""
    async with asyncio.timeout(10):
        while not done(samples := await scrape(running)):
            await asyncio.sleep(0.02)
    return samples


async def test_executions_count_started_ended_by_state_and_reason_their_time_and_those_running(
    openai_only: RunningServer, fake_openai: fo.FakeOpenAI
) -> None:
    blocked = fo.error(400, "blocked", type="image_generation_user_error", code="moderation_blocked")
    fake_openai.script_images(fo.images_b64(image_bytes()), blocked, fo.hang())
    async with AsyncExecutorClient(f"127.0.0.1:{openai_only.port}", timeout=30) as client:
        ends = []
        for style in ("noir", "watercolor"):  # one at a time: the fake answers in order
            started = await client.start_execution(make_plan(style=style))
            ends.append([event async for event in client.watch_execution(started)][-1].execution)
        hung = await client.start_execution(make_plan(style="pixel"))
        await asyncio.to_thread(fake_openai.wait_for_requests, 3)  # its render is under way
        during = await scrape(openai_only)
        ends.append(await client.cancel_execution(hung))
    assert [e.state for e in ends] == [
        ExecutionState.EXECUTION_STATE_SUCCEEDED, ExecutionState.EXECUTION_STATE_FAILED,
        ExecutionState.EXECUTION_STATE_CANCELLED,
    ]
    assert value(during, "imagegen_executor_executions_running") == 1
    assert value(during, "imagegen_executor_executions_started_total") == 3

    ended = "imagegen_executor_executions_ended_total"
    samples = await _scrape_until(
        openai_only, lambda s: sum(v for (name, _), v in s.items() if name == ended) == 3
    )
    assert value(samples, "imagegen_executor_executions_started_total") == 3
    assert {labels: v for (name, labels), v in samples.items() if name == ended} == {
        frozenset({("state", "succeeded"), ("reason", "")}): 1,
        frozenset({("state", "failed"), ("reason", "CONTENT_REJECTED")}): 1,
        frozenset({("state", "cancelled"), ("reason", "")}): 1,
    }
    for state in ("succeeded", "failed", "cancelled"):
        assert value(samples, "imagegen_executor_execution_seconds_count", state=state) == 1
        assert value(samples, "imagegen_executor_execution_seconds_bucket", state=state, le="+Inf") == 1
    # the cancelled one ran from its start until the cancel, after the scrape above
    assert value(samples, "imagegen_executor_execution_seconds_sum", state="cancelled") > 0
    assert value(samples, "imagegen_executor_executions_running") == 0
    assert value(samples, "imagegen_executor_execution_takeovers_total") == 0  # in-process: none


async def test_an_execution_left_by_a_replica_gone_quiet_is_counted_taken_over(valkey_server: ValkeyServer) -> None:
    valkey = Valkey(valkey_server.url, prefix=f"test:{uuid.uuid4().hex[:12]}", retry_interval=0.05)
    registry = CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    lease = 0.6
    gone = ValkeyExecutionQueue(valkey, workers=1, ttl_seconds=600, lease_seconds=lease)
    survivor = ValkeyExecutionQueue(valkey, workers=1, ttl_seconds=600, lease_seconds=lease, observer=metrics)
    taken, ran = asyncio.Event(), asyncio.Event()
    try:
        async def hold(execution_id: str, cancel: asyncio.Event) -> None:
            taken.set()
            await asyncio.Event().wait()  # until its replica stops

        async def finish(execution_id: str, cancel: asyncio.Event) -> None:
            ran.set()

        gone.serve(hold)
        execution = Execution(name=f"executions/{uuid.uuid4().hex}", state=ExecutionState.EXECUTION_STATE_QUEUED,
                              session_id="crypt-1")
        await gone.create(execution)
        await asyncio.wait_for(taken.wait(), 10)
        await gone.aclose()  # stopped mid-run: its entry stays pending, never acknowledged
        assert registry.get_sample_value("imagegen_executor_execution_takeovers_total") == 0
        survivor.serve(finish)
        await asyncio.wait_for(ran.wait(), 10)
        assert registry.get_sample_value("imagegen_executor_execution_takeovers_total") == 1
    finally:
        await survivor.aclose()
        await gone.aclose()
        await valkey.aclose()


async def test_an_execution_its_stopping_replica_leaves_unended_is_no_longer_counted_running(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    provider = HeldProvider(hold=True)
    executor = Executor(provider, LocalObjectStore(tmp_path), PUBLIC_BASE)
    executions = Executions(
        executor, InProcessExecutionQueue(workers=1, ttl_seconds=600), observer=ExecutorMetrics(registry)
    )
    try:
        executions.start_workers()
        await executions.start(make_plan(style="noir"))
        await asyncio.wait_for(provider.started.wait(), 10)
        assert registry.get_sample_value("imagegen_executor_executions_running") == 1
        await executions.aclose()  # the workers stop mid-render
    finally:
        await executions.aclose()
        await executor.aclose()
    assert provider.cancelled.is_set()
    assert registry.get_sample_value("imagegen_executor_executions_running") == 0
    assert registry.get_sample_value("imagegen_executor_executions_started_total") == 1
    assert registry.get_sample_value("imagegen_executor_execution_seconds_count", {"state": "cancelled"}) is None
