"""Two planner processes (`python -m planner_service`) sharing one Valkey, their LLM the
scripted OpenAI-compatible server on loopback, driven by the real openai SDK: the same
request gets the same plan on either replica after one LLM call, whether the requests
come one after the other or at once; a plan that fell back is shared too; and with
Valkey killed both still plan, SERVING, and say so once in their logs and in the gauge
imagegen_planner_coordination_up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from grpc_health.v1 import health_pb2

from clients import AsyncPlannerClient
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from planner_service.openai_agent import TOOL_NAME
from tests.support import fake_openai as fo
from tests.support.llm_planner import ANSWER, API_KEY, PROMPT
from tests.support.service_process import ServiceProcess, health, start_all
from tests.support.valkey_server import ValkeyServer

pytestmark = pytest.mark.integration

CHANNELS = "imagegen:planner:plan-made:*"  # where a replica waits for another's plan


def coordination_up(planner: ServiceProcess) -> float | None:
    """The gauge imagegen_planner_coordination_up, None when the planner has none."""
    return planner.metrics().get(("imagegen_planner_coordination_up", frozenset()))


@pytest.fixture
async def planners(
    fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer, tmp_path: Path
) -> AsyncIterator[list[ServiceProcess]]:
    """Two planner processes, each on ports the test picks, LLM mode, sharing Valkey."""
    env = {
        "PLANNER_MODE": "llm",
        "PLANNER_LLM_BASE_URL": fake_openai.base_url,
        "PLANNER_LLM_API_KEY": API_KEY,
        "PLANNER_LLM_MODEL": "gpt-test",
        "PLANNER_LLM_MAX_RETRIES": "0",
        "PLANNER_LLM_TIMEOUT_SECONDS": "10",
        "PLANNER_COORDINATION_URL": valkey_server.url,
    }
    started = [ServiceProcess("planner", f"planner-{name}", env, tmp_path) for name in "ab"]
    try:
        yield await start_all(started)
    finally:
        for planner in started:
            planner.stop()


async def plan(planner: ServiceProcess, prompt: str = PROMPT, session_id: str = "table-1") -> ImageGenerationPlan:
    async with AsyncPlannerClient(planner.target) as client:
        return await client.create_plan(prompt, session_id=session_id, timeout=30)


async def test_the_same_request_to_each_replica_gets_one_plan(
    planners: list[ServiceProcess], fake_openai: fo.FakeOpenAI
) -> None:
    a, b = planners
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    from_a = await plan(a, session_id="table-1")
    from_b = await plan(b, session_id="table-2")
    assert from_a.plan_id == from_b.plan_id and from_a.enhanced_prompt == ANSWER["enhanced_prompt"]
    assert (from_a.session_id, from_b.session_id) == ("table-1", "table-2")
    assert from_b.provenance.planner == "llm" and len(fake_openai.chat_requests) == 1


async def test_the_same_request_sent_to_both_at_once_gets_one_plan(
    planners: list[ServiceProcess], fake_openai: fo.FakeOpenAI, raw: redis.Redis
) -> None:
    a, b = planners
    answer = threading.Event()  # the LLM answers once the other replica waits for the plan

    def held(request: fo.RecordedRequest) -> fo.Reply:
        answer.wait(30)
        return fo.chat_tool_call(TOOL_NAME, ANSWER)

    fake_openai.script_chat(held)
    both = asyncio.gather(plan(a), plan(b))

    async def one_plans_the_other_waits() -> bool:
        channels = await raw.pubsub_channels(CHANNELS)
        waiting = sum(count for _, count in await raw.pubsub_numsub(*channels)) if channels else 0
        return len(fake_openai.chat_requests) == 1 and waiting == 1

    try:
        async with asyncio.timeout(30):
            while not await one_plans_the_other_waits():
                await asyncio.sleep(0.02)  # polling Valkey's state, which no one announces
    finally:
        answer.set()
    from_a, from_b = await both
    assert from_a.plan_id == from_b.plan_id
    assert len(fake_openai.chat_requests) == 1


async def test_a_plan_that_fell_back_is_shared_too(planners: list[ServiceProcess], fake_openai: fo.FakeOpenAI) -> None:
    a, b = planners
    fake_openai.script_chat(fo.error(503, "the LLM is down"))
    from_a = await plan(a)
    from_b = await plan(b)
    assert from_a.provenance.fell_back and from_b.plan_id == from_a.plan_id and from_b.provenance.fell_back
    assert len(fake_openai.chat_requests) == 1


async def test_without_valkey_both_replicas_still_plan_and_serve(
    planners: list[ServiceProcess], fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer
) -> None:
    a, b = planners
    assert [await asyncio.to_thread(coordination_up, p) for p in planners] == [1.0, 1.0]
    valkey_server.kill()
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER), fo.chat_tool_call(TOOL_NAME, ANSWER))
    from_a = await plan(a)
    from_b = await plan(b)
    assert (from_a.provenance.planner, from_b.provenance.planner) == ("llm", "llm")
    assert not from_a.provenance.fell_back and not from_b.provenance.fell_back
    assert len(fake_openai.chat_requests) == 2  # each its own: nothing shared without Valkey
    assert await plan(a) == from_a  # its own memory still answers the same request
    assert len(fake_openai.chat_requests) == 2
    for planner in planners:
        assert await health(planner.target) == health_pb2.HealthCheckResponse.SERVING
        assert await asyncio.to_thread(coordination_up, planner) == 0.0
        down = [r for r in planner.log_records() if "Valkey does not answer" in str(r["message"])]
        assert len(down) == 1 and down[0]["level"] == "WARNING", planner.log_path.read_text()
