"""Structured logs from real servers: one JSON object per line, every line of a
call carrying its request id, which comes back in the trailing metadata."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from clients.errors import execution_failed
from imagegen.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    planner_service_pb2,
    planner_service_pb2_grpc,
)
from imagegen_runtime.telemetry.logs import configure_logging
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.conftest import Services
from tests.integration.test_executor_rpcs import make_plan
from tests.support import fake_openai as fo
from tests.support.logs import captured_logs

pytestmark = pytest.mark.integration

PROMPT = "A secret door behind the tapestry of the lich queen"


class JsonLines:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]  # every line is JSON

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [record for record in self.records() if record.get("request_id") == request_id]

    async def call_line(self, request_id: str) -> dict[str, Any]:
        """The one line a call logs, once it is there: the server writes it as the call
        ends, which a busy machine may get to after the caller has its answer."""
        async with asyncio.timeout(10):
            while not any(r.get("logger") == "imagegen.rpc" for r in self.of(request_id)):
                await asyncio.sleep(0.01)
        (line,) = self.of(request_id)  # one line per call, and nothing else of it
        return line


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    """The services' log configuration, writing to a buffer; the root logger is put back after."""
    with captured_logs("INFO", "json") as stream:
        yield JsonLines(stream)


def trailing(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata or ()}


async def test_a_callers_request_id_is_on_every_line_and_comes_back(services: Services, json_logs: JsonLines) -> None:
    async with grpc.aio.insecure_channel(services.executor_target) as channel:
        call = executor_service_pb2_grpc.ExecutorServiceStub(channel).ExecutePlan(
            executor_service_pb2.ExecutePlanRequest(plan=make_plan()), metadata=(("x-request-id", "req-7f3a"),)
        )
        response = await call
        returned = trailing(await call.trailing_metadata())
    assert returned["x-request-id"] == "req-7f3a"
    line = await json_logs.call_line("req-7f3a")
    assert line["logger"] == "imagegen.rpc" and line["level"] == "INFO"
    assert line["method"] == "imagegen.v1.ExecutorService/ExecutePlan" and line["code"] == "OK"
    assert line["session_id"] == "table-9" and line["plan_id"] == response.result.plan.plan_id
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    assert {"time", "message"} <= set(line)


async def test_a_request_id_is_minted_when_none_is_sent(services: Services, json_logs: JsonLines) -> None:
    async with grpc.aio.insecure_channel(services.planner_target) as channel:
        call = planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(
            planner_service_pb2.CreatePlanRequest(prompt=PROMPT, session_id="t-2")
        )
        response = await call
        minted = trailing(await call.trailing_metadata())["x-request-id"]
    assert uuid.UUID(minted).version == 4
    line = await json_logs.call_line(minted)
    assert line["method"] == "imagegen.v1.PlannerService/CreatePlan" and line["code"] == "OK"
    assert line["session_id"] == "t-2" and line["plan_id"] == response.plan.plan_id
    assert all(PROMPT not in json.dumps(record) for record in json_logs.records())  # no prompt above DEBUG


async def test_a_failed_call_returns_its_request_id_beside_the_error_details(
    services: Services, json_logs: JsonLines
) -> None:
    plan = make_plan(size="12x12")
    async with grpc.aio.insecure_channel(services.executor_target) as channel:
        call = executor_service_pb2_grpc.ExecutorServiceStub(channel).ExecutePlan(
            executor_service_pb2.ExecutePlanRequest(plan=plan), metadata=(("x-request-id", "req-bad-size"),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
    assert trailing(caught.value.trailing_metadata())["x-request-id"] == "req-bad-size"
    failure = execution_failed(caught.value, plan)  # the google.rpc details survive too
    assert failure.reason == "INVALID_REQUEST" and [v.field for v in failure.violations] == ["plan.size"]
    line = await json_logs.call_line("req-bad-size")  # one line per call, failed or not, with the reason
    assert (line["logger"], line["code"], line["reason"]) == ("imagegen.rpc", "INVALID_ARGUMENT", "INVALID_REQUEST")


async def test_a_forged_request_id_is_replaced(services: Services, json_logs: JsonLines) -> None:
    forged = 'x" level="ERROR' + "a" * 200
    async with grpc.aio.insecure_channel(services.planner_target) as channel:
        call = planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(
            planner_service_pb2.CreatePlanRequest(prompt=PROMPT, session_id="t-3"), metadata=(("x-request-id", forged),)
        )
        await call
        returned = trailing(await call.trailing_metadata())["x-request-id"]
    assert returned != forged and uuid.UUID(returned)


async def test_the_domains_own_lines_carry_the_calls_request_id(fake_openai: fo.FakeOpenAI, json_logs: JsonLines) -> None:
    fake_openai.script_chat(fo.error(503, "down"))
    running = await create_planner_server(
        PlannerSettings(address="127.0.0.1:0", llm_base_url=fake_openai.base_url, llm_max_retries=0)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(
                planner_service_pb2.CreatePlanRequest(prompt=PROMPT, session_id="t-4"),
                metadata=(("x-request-id", "req-fallback"),),
            )
    finally:
        await running.stop(None)
    loggers = [line["logger"] for line in json_logs.of("req-fallback")]
    assert "planner_service.planning" in loggers  # "LLM planning failed ...; planning offline instead"
    assert loggers[-1] == "imagegen.rpc"


def test_text_format_and_unknown_formats() -> None:
    with captured_logs("WARNING", "text") as stream:
        logging.getLogger("x").warning("plain %s", "words")
        with pytest.raises(ValueError):
            configure_logging("INFO", "yaml", stream)
    assert stream.getvalue().rstrip().endswith("WARNING x plain words")
