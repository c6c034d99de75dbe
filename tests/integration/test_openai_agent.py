"""OpenAIPlanningAgent: the real openai SDK against the scripted OpenAI-compatible
server on 127.0.0.1 (tests/support/fake_openai.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest

from imagegen.catalogue import IMAGE_TYPE_NAMES, STYLES
from imagegen.errors import PlannerMisconfigured, PlannerThrottled, PlannerUnavailable, PlanningError
from imagegen.v1.image_plan_pb2 import ImageType
from planner_service.drafts import SIZE_PATTERN
from planner_service.openai_agent import MAX_REFUSAL_CHARS, TOOL_NAME, OpenAIPlanningAgent
from planner_service.ports import DraftUnusable, PlanDraft, PlanRequest, Repair
from tests.support import fake_openai as fo

pytestmark = pytest.mark.integration

API_KEY = "sk-test-agent-0123456789"
ANSWER = {
    "enhanced_prompt": "A red dragon coiled on a hoard of gold, torchlight on its scales.",
    "image_type": "creature",
    "style": "dark-fantasy",
    "size": "1024x1024",
}
REQUEST = PlanRequest(
    prompt="A red dragon on its hoard", session_id="s1", context={"mood": "menacing", "location": "a cave"}
)

AgentFactory = Callable[..., OpenAIPlanningAgent]


@pytest.fixture
async def make_agent(fake_openai: fo.FakeOpenAI) -> AsyncIterator[AgentFactory]:
    agents: list[OpenAIPlanningAgent] = []

    def make(**options: object) -> OpenAIPlanningAgent:
        settings = dict(base_url=fake_openai.base_url, api_key=API_KEY, model="gpt-test",
                        styles=STYLES, timeout=1.0, max_retries=0)
        settings.update(options)
        agents.append(OpenAIPlanningAgent.connect(**settings))  # type: ignore[arg-type]
        return agents[-1]

    yield make
    for agent in agents:
        await agent.aclose()


def draft_of(answer: dict) -> PlanDraft:
    return PlanDraft(**answer, answer=json.dumps(answer))


async def test_tools_path_forces_one_strict_tool_and_returns_its_arguments(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    draft = await make_agent().draft(REQUEST)

    assert draft == draft_of(ANSWER)
    (sent,) = fake_openai.chat_requests
    body = sent.body
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert (body["model"], body["temperature"], body["seed"]) == ("gpt-test", 0, 0)
    assert body["tool_choice"] == {"type": "function", "function": {"name": TOOL_NAME}}
    assert body["parallel_tool_calls"] is False and "response_format" not in body
    (tool,) = body["tools"]
    function = tool["function"]
    assert function["name"] == TOOL_NAME and function["strict"] is True
    schema = function["parameters"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == sorted(schema["properties"]) == sorted(ANSWER)
    assert schema["properties"]["image_type"]["enum"] == list(IMAGE_TYPE_NAMES)
    assert schema["properties"]["style"]["enum"] == sorted(STYLES)
    assert schema["properties"]["size"]["pattern"] == SIZE_PATTERN
    prompt_schema = schema["properties"]["enhanced_prompt"]
    assert "maxLength" not in prompt_schema and "at most 4000 characters" in prompt_schema["description"]
    system, user = body["messages"]
    assert system["role"] == "system" and TOOL_NAME in system["content"]
    assert json.loads(user["content"]) == {
        "moment": "A red dragon on its hoard", "facts": {"location": "a cave", "mood": "menacing"}
    }


async def test_the_callers_choices_are_passed_to_the_model(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    request = PlanRequest(prompt="Thora", session_id="s", image_type=ImageType.IMAGE_TYPE_PORTRAIT,
                                style="heroic", size="512x512")
    await make_agent().draft(request)
    user = fake_openai.chat_requests[0].body["messages"][1]
    assert json.loads(user["content"]) == {"moment": "Thora", "image_type": "portrait",
                                           "style": "heroic", "size": "512x512"}


async def test_json_path_asks_for_a_strict_json_schema_and_reads_the_content(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_content(json.dumps(ANSWER)))
    draft = await make_agent(path="json").draft(REQUEST)

    assert draft == draft_of(ANSWER)
    body = fake_openai.chat_requests[0].body
    assert "tools" not in body and "tool_choice" not in body
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["properties"]["style"]["enum"] == sorted(STYLES)


async def test_json_path_falls_back_to_json_text_when_the_server_refuses_json_schema(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI
) -> None:
    fenced = "Here is the plan:\n```json\n" + json.dumps(ANSWER) + "\n```"
    fake_openai.script_chat(
        fo.error(400, "response_format json_schema is not supported", param="response_format"),
        fo.chat_content(fenced),
        fo.chat_content(json.dumps(ANSWER)),
    )
    agent = make_agent(path="json")
    assert (await agent.draft(REQUEST)).image_type == "creature"
    assert (await agent.draft(REQUEST)).image_type == "creature"

    refused, retried, later = (r.body for r in fake_openai.chat_requests)
    assert "response_format" in refused
    assert "response_format" not in retried and "response_format" not in later  # remembered
    # Without the format, the schema still reaches the model, in the instructions.
    assert '"enum": ["scene", "character"' in retried["messages"][0]["content"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({**ANSWER, "mood": "grim"}, "mood: unknown field"),
        ({k: v for k, v in ANSWER.items() if k != "size"}, "size: is required"),
        ({**ANSWER, "size": 1024}, "size: must be a string"),
    ],
)
async def test_misshapen_answers_are_drafts_that_name_their_problems(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI, answer: dict[str, object], problem: str
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, answer))
    draft = await make_agent().draft(REQUEST)
    assert problem in draft.problems and draft.answer == json.dumps(answer)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (fo.chat_tool_call(TOOL_NAME, '{"enhanced_prompt": "unterminated'), "the answer is not valid JSON"),
        (fo.chat_tool_call(TOOL_NAME, "[1, 2]"), "the answer must be one JSON object"),
        (fo.chat_completion({"role": "assistant", "content": None, "refusal": "I cannot help"},
                            finish_reason="stop"), f"the answer did not call {TOOL_NAME} (it refused: I cannot help)"),
    ],
)
async def test_unreadable_answers_are_unusable_drafts_that_keep_the_answer(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI, reply: fo.Reply, problem: str
) -> None:
    fake_openai.script_chat(reply)
    with pytest.raises(DraftUnusable) as caught:
        await make_agent().draft(REQUEST)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    message = reply.body["choices"][0]["message"]
    sent = message["tool_calls"][0]["function"]["arguments"] if message.get("tool_calls") else message["refusal"]
    assert caught.value.answer == sent


async def test_a_repair_shows_the_model_its_answer_and_every_problem(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    repair = Repair('{"image_type": "selfie"}', ["image_type: unknown image type 'selfie'", "size: is required"])
    await make_agent().draft(REQUEST, repair)

    messages = fake_openai.chat_requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == repair.answer
    assert "- image_type: unknown image type 'selfie'\n- size: is required" in messages[3]["content"]
    assert TOOL_NAME in messages[3]["content"]


async def test_no_seed_is_sent_when_it_is_turned_off(make_agent: AgentFactory, fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    await make_agent(seed=None).draft(REQUEST)
    assert "seed" not in fake_openai.chat_requests[0].body


@pytest.mark.parametrize(
    ("reply", "error_type", "reason"),
    [
        (fo.error(429, "slow down", headers={"Retry-After": "7"}), PlannerThrottled, "LLM_RATE_LIMITED"),
        (fo.error(500, "boom"), PlannerUnavailable, "LLM_UNAVAILABLE"),
        (fo.error(503, "overloaded"), PlannerUnavailable, "LLM_UNAVAILABLE"),
        (fo.error(401, f"Incorrect API key provided: {API_KEY}"), PlannerMisconfigured, "LLM_NOT_USABLE"),
        (fo.error(403, "not allowed"), PlannerMisconfigured, "LLM_NOT_USABLE"),
        (fo.error(404, "The model gpt-test does not exist"), PlannerMisconfigured, "LLM_NOT_USABLE"),
        (fo.error(400, "tools are not supported"), PlannerMisconfigured, "LLM_NOT_USABLE"),
        (fo.disconnect(), PlannerUnavailable, "LLM_UNAVAILABLE"),
        (fo.delay(5, fo.chat_tool_call(TOOL_NAME, ANSWER)), PlannerUnavailable, "LLM_UNAVAILABLE"),
    ],
    ids=["429", "500", "503", "401", "403", "404", "400", "disconnect", "timeout"],
)
async def test_sdk_errors_become_planning_errors(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI, reply: fo.ReplySpec,
    error_type: type[PlanningError], reason: str,
) -> None:
    fake_openai.script_chat(reply)
    with pytest.raises(PlanningError) as caught:
        await make_agent(timeout=0.3).draft(REQUEST)
    error = caught.value
    assert isinstance(error, error_type)
    assert error.reason == reason and error.metadata == {"model": "gpt-test"}
    assert API_KEY not in error.message  # the server's text is never passed on
    assert error.retry_after == (7.0 if error_type is PlannerThrottled else None)


async def test_a_refusal_is_kept_short_wherever_it_goes(make_agent: AgentFactory, fake_openai: fo.FakeOpenAI) -> None:
    refusal = "I will not. " * 10_000
    fake_openai.script_chat(fo.chat_completion({"role": "assistant", "content": None, "refusal": refusal},
                                               finish_reason="stop"))
    with pytest.raises(DraftUnusable) as caught:
        await make_agent().draft(REQUEST)
    assert caught.value.answer == refusal[:MAX_REFUSAL_CHARS]
    assert all(len(problem) < MAX_REFUSAL_CHARS + 100 for problem in caught.value.problems)


@pytest.mark.parametrize(
    "reply",
    [fo.raw(200, "<html>Sign in</html>", content_type="text/html"), fo.raw(200, "{oops"), fo.Reply(200, {"data": "x"}),
     fo.Reply(200, {"choices": ["x"]}), fo.redirect("http://127.0.0.1:9/v1/chat/completions")],
    ids=["html", "invalid json", "another shape", "choices of strings", "redirect"],
)
async def test_an_answer_that_is_not_a_chat_completion_is_planner_unavailable(
    make_agent: AgentFactory, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    fake_openai.script_chat(reply)
    with pytest.raises(PlannerUnavailable) as caught:
        await make_agent().draft(REQUEST)
    assert caught.value.metadata == {"model": "gpt-test"} and caught.value.retryable
