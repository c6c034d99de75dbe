"""Two planner processes (`python -m planner_service`) sharing one Valkey, their LLM the
scripted OpenAI-compatible server on loopback, driven by the real openai SDK: the same
request gets the same plan on either replica after one LLM call, whether the requests
come one after the other or at once; a plan that fell back is shared too; and with
Valkey killed both still plan, SERVING, and say so once in their logs and in the gauge
imagegen_planner_coordination_up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from clients import AsyncPlannerClient
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from planner_service.openai_agent import TOOL_NAME
from tests.support import fake_openai as fo
from tests.support.llm_planner import ANSWER, API_KEY, PROMPT
from tests.support.s3_server import free_ports
from tests.support.valkey_server import ValkeyServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHANNELS = "imagegen:planner:plan-made:*"  # where a replica waits for another's plan
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class PlannerProcess:
    process: subprocess.Popen[bytes]
    target: str
    metrics_port: int
    log_path: Path

    def log_records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def coordination_up(self) -> float | None:
        with _NO_PROXY.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "imagegen_planner_coordination_up":
                    return sample.value
        return None


async def serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    with ValkeyServer(tmp_path / "valkey") as server:
        yield server


@pytest.fixture
async def raw(valkey_server: ValkeyServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(valkey_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def planners(
    fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer, tmp_path: Path
) -> AsyncIterator[list[PlannerProcess]]:
    """Two planner processes, each on a port the test picks, LLM mode, sharing Valkey."""
    ports = free_ports(4)
    started: list[PlannerProcess] = []
    try:
        for name, port, metrics_port in (("a", ports[0], ports[1]), ("b", ports[2], ports[3])):
            env = {
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": str(REPO),
                "PLANNER_ADDRESS": f"127.0.0.1:{port}",
                "PLANNER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                "PLANNER_MODE": "llm",
                "PLANNER_LLM_BASE_URL": fake_openai.base_url,
                "PLANNER_LLM_API_KEY": API_KEY,
                "PLANNER_LLM_MODEL": "gpt-test",
                "PLANNER_LLM_MAX_RETRIES": "0",
                "PLANNER_LLM_TIMEOUT_SECONDS": "10",
                "PLANNER_COORDINATION_URL": valkey_server.url,
                "LOG_FORMAT": "json",
            }
            log_path = tmp_path / f"planner-{name}.log"
            process = spawn(env, tmp_path, log_path)
            started.append(PlannerProcess(process, f"127.0.0.1:{port}", metrics_port, log_path))
        async with asyncio.timeout(60):
            for planner in started:
                while not await serving(planner.target):
                    assert planner.process.poll() is None, planner.log_path.read_text()
                    await asyncio.sleep(0.05)  # polling a child's readiness
        yield started
    finally:
        for planner in started:
            if planner.process.poll() is None:
                planner.process.terminate()
        for planner in started:
            try:
                planner.process.wait(30)
            except subprocess.TimeoutExpired:
                planner.process.kill()
                planner.process.wait()


def spawn(env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m planner_service`, its output (JSON lines) to log_path."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "planner_service"], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def plan(planner: PlannerProcess, prompt: str = PROMPT, session_id: str = "table-1") -> ImageGenerationPlan:
    async with AsyncPlannerClient(planner.target) as client:
        return await client.create_plan(prompt, session_id=session_id, timeout=30)


async def test_the_same_request_to_each_replica_gets_one_plan(
    planners: list[PlannerProcess], fake_openai: fo.FakeOpenAI
) -> None:
    a, b = planners
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    from_a = await plan(a, session_id="table-1")
    from_b = await plan(b, session_id="table-2")
    assert from_a.plan_id == from_b.plan_id and from_a.enhanced_prompt == ANSWER["enhanced_prompt"]
    assert (from_a.session_id, from_b.session_id) == ("table-1", "table-2")
    assert from_b.provenance.planner == "llm" and len(fake_openai.chat_requests) == 1


async def test_the_same_request_sent_to_both_at_once_gets_one_plan(
    planners: list[PlannerProcess], fake_openai: fo.FakeOpenAI, raw: redis.Redis
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


async def test_a_plan_that_fell_back_is_shared_too(planners: list[PlannerProcess], fake_openai: fo.FakeOpenAI) -> None:
    a, b = planners
    fake_openai.script_chat(fo.error(503, "the LLM is down"))
    from_a = await plan(a)
    from_b = await plan(b)
    assert from_a.provenance.fell_back and from_b.plan_id == from_a.plan_id and from_b.provenance.fell_back
    assert len(fake_openai.chat_requests) == 1


async def test_without_valkey_both_replicas_still_plan_and_serve(
    planners: list[PlannerProcess], fake_openai: fo.FakeOpenAI, valkey_server: ValkeyServer
) -> None:
    a, b = planners
    assert [await asyncio.to_thread(p.coordination_up) for p in planners] == [1.0, 1.0]
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
        assert await serving(planner.target)
        assert await asyncio.to_thread(planner.coordination_up) == 0.0
        down = [r for r in planner.log_records() if "Valkey does not answer" in str(r["message"])]
        assert len(down) == 1 and down[0]["level"] == "WARNING", planner.log_path.read_text()
