"""What clients/channels.py gives every channel, shown against real servers: the
retry policy (UNAVAILABLE only), round_robin across addresses, the default deadline.

The servers are planner stand-ins served by imagegen_runtime.serving.start_server (so
with the production server options) whose CreatePlan does what each test needs
and records which server answered how often.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from clients import AsyncPlannerClient, ChannelOptions, PlanningFailed, RetryPolicy
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen_runtime.serving import ServiceBinding, start_server

pytestmark = pytest.mark.integration

SERVICE = planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name


@dataclass
class ScriptedPlanner(planner_service_pb2_grpc.PlannerServiceServicer):
    """CreatePlan aborts with the scripted codes, in order, then answers with a plan
    whose session_id is this server's name."""

    name: str
    failures: list[grpc.StatusCode] = field(default_factory=list)
    hold: asyncio.Event | None = None  # set: every call waits for it
    attempts: int = 0

    async def CreatePlan(self, request, context):  # type: ignore[no-untyped-def]
        self.attempts += 1
        if self.failures:
            await context.abort(self.failures.pop(0), "scripted failure")
        if self.hold is not None:
            await self.hold.wait()
        return planner_service_pb2.CreatePlanResponse(plan=ImageGenerationPlan(session_id=self.name))


@contextlib.asynccontextmanager
async def serving(*planners: planner_service_pb2_grpc.PlannerServiceServicer) -> AsyncIterator[list[int]]:
    running = [
        await start_server(
            "127.0.0.1:0",
            [ServiceBinding(SERVICE, planner, planner_service_pb2_grpc.add_PlannerServiceServicer_to_server)],
            enable_reflection=False,
        )
        for planner in planners
    ]
    try:
        yield [r.port for r in running]
    finally:
        for r in running:
            await r.stop(None)


async def plan(target: str, options: ChannelOptions | None = None, **kwargs: float) -> str:
    async with AsyncPlannerClient(target, options=options, **kwargs) as client:
        return (await client.create_plan("x", session_id="s")).session_id


async def test_unavailable_is_retried_by_the_channel() -> None:
    planner = ScriptedPlanner("a", failures=[grpc.StatusCode.UNAVAILABLE])
    async with serving(planner) as (port,):
        assert await plan(f"127.0.0.1:{port}") == "a"
    assert planner.attempts == 2


async def test_retries_are_bounded_by_max_attempts() -> None:
    planner = ScriptedPlanner("a", failures=[grpc.StatusCode.UNAVAILABLE] * 5)
    options = ChannelOptions(retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.01))
    async with serving(planner) as (port,):
        with pytest.raises(PlanningFailed) as failed:
            await plan(f"127.0.0.1:{port}", options)
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert planner.attempts == 3


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL]
)
async def test_other_codes_are_not_retried(code: grpc.StatusCode) -> None:
    planner = ScriptedPlanner("a", failures=[code])
    async with serving(planner) as (port,):
        with pytest.raises(PlanningFailed) as failed:
            await plan(f"127.0.0.1:{port}")
    assert failed.value.code == code
    assert planner.attempts == 1


async def test_no_retry_policy_means_one_attempt() -> None:
    planner = ScriptedPlanner("a", failures=[grpc.StatusCode.UNAVAILABLE])
    async with serving(planner) as (port,):
        with pytest.raises(PlanningFailed):
            await plan(f"127.0.0.1:{port}", ChannelOptions(retry=None))
    assert planner.attempts == 1


async def calls_until_both_answer(target: str, options: ChannelOptions | None, limit: int = 100) -> list[str]:
    """Answers of up to limit calls on one channel, stopping once both servers answered."""
    answers: list[str] = []
    async with AsyncPlannerClient(target, options=options) as client:
        while len(answers) < limit and set(answers) != {"a", "b"}:
            answers.append((await client.create_plan("x", session_id="s")).session_id)
    return answers


async def test_round_robin_spreads_calls_over_every_address() -> None:
    a, b = ScriptedPlanner("a"), ScriptedPlanner("b")
    async with serving(a, b) as (port_a, port_b):
        target = f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}"
        assert set(await calls_until_both_answer(target, None)) == {"a", "b"}
        # pick_first, gRPC's default, sends every call to one address: the policy matters
        assert len(set(await calls_until_both_answer(target, ChannelOptions(load_balancing="pick_first")))) == 1


async def test_the_clients_default_deadline_ends_a_slow_call() -> None:
    hold = asyncio.Event()  # never set: the call can only end by its deadline
    planner = ScriptedPlanner("slow", hold=hold)
    async with serving(planner) as (port,):
        with pytest.raises(PlanningFailed) as failed:
            await asyncio.wait_for(plan(f"127.0.0.1:{port}", timeout=0.2), timeout=30)
    assert failed.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert planner.attempts == 1


def _sync_plan(target: str, options: ChannelOptions) -> Callable[[], str]:
    from clients import PlannerClient

    def call() -> str:
        with PlannerClient(target, options=options) as client:
            return client.create_plan("x", session_id="s").session_id

    return call


async def test_the_blocking_client_gets_the_same_retry_policy() -> None:
    planner = ScriptedPlanner("a", failures=[grpc.StatusCode.UNAVAILABLE])
    async with serving(planner) as (port,):
        assert await asyncio.to_thread(_sync_plan(f"127.0.0.1:{port}", ChannelOptions())) == "a"
    assert planner.attempts == 2


async def test_create_plan_sends_the_mode_to_the_real_planner() -> None:
    from planner_service.bootstrap import create_server
    from planner_service.config import PlannerSettings

    running = await create_server(PlannerSettings(address="127.0.0.1:0"))  # no LLM configured
    try:
        async with AsyncPlannerClient(f"127.0.0.1:{running.port}") as client:
            offline = await client.create_plan("A torch", session_id="s", mode="offline")
            with pytest.raises(PlanningFailed) as refused:
                await client.create_plan("A torch", session_id="s", mode="llm")
    finally:
        await running.stop(None)
    assert offline.plan_id
    assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LLM_NOT_CONFIGURED")


@dataclass
class FailingPlanner(planner_service_pb2_grpc.PlannerServiceServicer):
    """CreatePlan raises a domain error, mapped to its status by the servers' error mapping."""

    error: Exception
    attempts: int = 0

    async def CreatePlan(self, request, context):  # type: ignore[no-untyped-def]
        self.attempts += 1
        raise self.error


async def test_an_unavailable_the_service_reports_itself_is_not_replayed() -> None:
    """PROVIDER_UNAVAILABLE, LLM_UNAVAILABLE, STORAGE_UNAVAILABLE come after the service
    retried its dependency already: the channel must not multiply those attempts."""
    from imagegen import errors

    planner = FailingPlanner(errors.PlannerUnavailable("the LLM is down"))
    async with serving(planner) as (port,):
        with pytest.raises(PlanningFailed) as failed:
            await plan(f"127.0.0.1:{port}")
    assert (failed.value.code, failed.value.reason) == (grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE")
    assert planner.attempts == 1
