"""plan_image through the real openai SDK against the loopback OpenAI-compatible server:
the model calls the tool (Chat Completions and Responses API), or answers JSON without
tools; the handler plans with the real planner; the executor accepts the plan."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from clients import AsyncImagegenClient, ImagegenClient, PlanningFailed
from clients import agent_tool
from imagegen.json_mapping import plan_from_dict
from tests.conftest import Services
from tests.support.fake_openai import (
    FakeOpenAI,
    chat_content,
    chat_tool_call,
    responses_function_call,
    responses_text,
)

pytestmark = pytest.mark.integration

ARGUMENTS = {"prompt": "Thora the dwarf cleric raises her glowing warhammer", "image_type": "portrait",
             "context": {"race": "dwarf", "class": "cleric"}}  # fmt: skip


def _sdk(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)


async def _executes(services: Services, plan: dict) -> None:
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as imagegen:
        result = await imagegen.executor.execute_plan(plan_from_dict(plan))
    assert result.plan.plan_id == plan["plan_id"] and result.storage_path.startswith("imagegen/table-1/portrait/")
    assert (services.store_dir / result.storage_path.removeprefix("imagegen/")).is_file()


def _planned(plan: dict) -> None:
    assert plan["image_type"] == "IMAGE_TYPE_PORTRAIT" and plan["session_id"] == "table-1"
    assert "dwarf" in plan["enhanced_prompt"] and len(plan["plan_id"]) == 32


async def test_chat_completions_the_model_calls_plan_image_and_the_executor_takes_the_plan(
    services: Services, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script_chat(chat_tool_call("plan_image", ARGUMENTS, call_id="call_1"))

    def sync_backend() -> dict:  # the blocking SDK and client, as a sync backend has them
        completion = _sdk(fake_openai).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Show us Thora!"}], tools=[agent_tool.chat_tool()]
        )
        call = completion.choices[0].message.tool_calls[0]
        assert call.function.name == agent_tool.TOOL_NAME
        with ImagegenClient(services.planner_target, services.executor_target) as imagegen:
            return agent_tool.plan_image(imagegen.planner, call.function.arguments, session_id="table-1")

    plan = await asyncio.to_thread(sync_backend)  # the in-process services need this loop free
    _planned(plan)
    json.dumps(plan)  # a plain tool result
    assert fake_openai.chat_requests[0].body["tools"] == [agent_tool.chat_tool()]
    await _executes(services, plan)


async def test_responses_api_the_model_calls_plan_image_and_the_executor_takes_the_plan(
    services: Services, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script_responses(responses_function_call("plan_image", ARGUMENTS, call_id="call_2"))
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as sdk:
        response = await sdk.responses.create(model="gpt-test", input="Show us Thora!", tools=[agent_tool.responses_tool()])
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert (call.name, call.call_id) == ("plan_image", "call_2")
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as imagegen:
        plan = await agent_tool.aplan_image(imagegen.planner, call.arguments, session_id="table-1")
    _planned(plan)
    assert fake_openai.requests_to("/v1/responses")[0].body["tools"] == [agent_tool.responses_tool()]
    await _executes(services, plan)


async def test_without_tools_the_json_answer_is_parsed_on_both_apis(services: Services, fake_openai: FakeOpenAI) -> None:
    answer = "Here you go:\n```json\n" + json.dumps(ARGUMENTS) + "\n```"
    fake_openai.script_chat(chat_content(answer))
    fake_openai.script_responses(responses_text(answer))
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as sdk:
        chat = await sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Show us Thora!"}],
            response_format=agent_tool.chat_response_format(),
        )  # fmt: skip
        responses = await sdk.responses.create(model="gpt-test", input="Show us Thora!")
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as imagegen:
        plans = [await agent_tool.aplan_image(imagegen.planner, agent_tool.arguments_from_text(text), session_id="table-1")
                 for text in (chat.choices[0].message.content, responses.output_text)]  # fmt: skip
    assert plans[0]["plan_id"] == plans[1]["plan_id"]
    _planned(plans[0])
    assert fake_openai.chat_requests[0].body["response_format"] == agent_tool.chat_response_format()
    await _executes(services, plans[0])


async def test_a_planning_failure_becomes_a_tool_result_the_model_can_act_on(services: Services) -> None:
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as imagegen:
        with pytest.raises(PlanningFailed) as raised:
            await agent_tool.aplan_image(imagegen.planner, {"prompt": "   "}, session_id="table-1")
    result = agent_tool.tool_error(raised.value)
    assert result["error"]["code"] == "INVALID_ARGUMENT" and result["error"]["retryable"] is False
    assert [v["field"] for v in result["error"]["field_violations"]] == ["prompt"]
