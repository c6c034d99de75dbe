"""The planner with an LLM, as a real gRPC server called through clients/, the LLM
being the real openai SDK against the scripted OpenAI-compatible server on loopback.

Each case asserts the plan, or the status code and the ErrorInfo reason."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from clients import AsyncPlannerClient, PlanningFailed
from clients.errors import planning_failed
from imagegen.fingerprint import with_fingerprint
from imagegen.v1 import planner_service_pb2_grpc
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen.v1.planner_service_pb2 import CreatePlanRequest, PlanningMode
from planner_service.bootstrap import build_planner, create_server
from planner_service.config import PlannerSettings
from planner_service.openai_agent import TOOL_NAME
from planner_service.ports import PlanRequest
from tests.support import fake_openai as fo
from tests.support.llm_planner import ANSWER, API_KEY, PROMPT, running_llm_planner

pytestmark = pytest.mark.integration

BAD_ANSWER = {**ANSWER, "image_type": "selfie", "size": "5000x5000"}

StartPlanner = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_planner(fake_openai: fo.FakeOpenAI) -> AsyncIterator[StartPlanner]:
    """Start a planner pointed at the fake LLM; returns its target."""
    async with contextlib.AsyncExitStack() as started:

        async def start(**overrides: object) -> str:
            return await started.enter_async_context(running_llm_planner(fake_openai, **overrides))

        yield start


async def plan(target: str, prompt: str = PROMPT, **options: object) -> ImageGenerationPlan:
    async with AsyncPlannerClient(target) as client:
        return await client.create_plan(prompt, session_id=str(options.pop("session_id", "table-1")), **options)


async def failure(target: str, **options: object) -> PlanningFailed:
    with pytest.raises(PlanningFailed) as caught:
        await plan(target, **options)
    return caught.value


def last_user_message(request: fo.RecordedRequest) -> str:
    return request.body["messages"][-1]["content"]


async def offline_twin(**options: object) -> ImageGenerationPlan:
    """What the offline planner makes of the same request."""
    planner = build_planner(PlannerSettings(mode="offline"))
    request = PlanRequest(prompt=PROMPT, session_id="table-1", **options)  # type: ignore[arg-type]
    return await planner.create_plan(request)


# --------------------------------------------------------------------------- plans
async def test_a_tool_call_becomes_the_plan(start_planner: StartPlanner, fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    result = await plan(await start_planner())

    assert result.enhanced_prompt == ANSWER["enhanced_prompt"]
    assert (result.image_type, result.style, result.size) == (ImageType.IMAGE_TYPE_SCENE, "cinematic", "1536x1024")
    assert result.session_id == "table-1" and result.plan_id == with_fingerprint(result).plan_id
    assert (result.provenance.planner, result.provenance.model, result.provenance.fell_back) == (
        "llm", "gpt-test", False)
    assert len(fake_openai.chat_requests) == 1


async def test_json_content_becomes_the_plan(start_planner: StartPlanner, fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(fo.chat_content(json.dumps(ANSWER)))
    result = await plan(await start_planner(llm_path="json"))
    assert result.enhanced_prompt == ANSWER["enhanced_prompt"] and result.provenance.planner == "llm"
    assert fake_openai.chat_requests[0].body["response_format"]["type"] == "json_schema"


async def test_the_callers_choices_win_over_the_models(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    result = await plan(await start_planner(), image_type="location", style="watercolor", size="800x600")
    assert (result.image_type, result.style, result.size) == (ImageType.IMAGE_TYPE_LOCATION, "watercolor", "800x600")


async def test_malformed_json_is_repaired(start_planner: StartPlanner, fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(
        fo.chat_tool_call(TOOL_NAME, '{"enhanced_prompt": "Goblins on a bri'),
        fo.chat_tool_call(TOOL_NAME, ANSWER),
    )
    result = await plan(await start_planner())
    assert result.provenance.planner == "llm" and not result.provenance.fell_back
    first, repair = fake_openai.chat_requests
    assert repair.body["messages"][-2]["content"] == '{"enhanced_prompt": "Goblins on a bri'
    assert "the answer is not valid JSON" in last_user_message(repair)


async def test_invalid_fields_are_repaired_with_exactly_what_was_wrong(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, BAD_ANSWER), fo.chat_tool_call(TOOL_NAME, ANSWER))
    result = await plan(await start_planner())

    assert result.image_type == ImageType.IMAGE_TYPE_SCENE and result.provenance.planner == "llm"
    feedback = last_user_message(fake_openai.chat_requests[1])
    assert "- image_type: unknown image type 'selfie'; expected one of scene, character" in feedback
    assert "- size: each side must be 64 to 4096 pixels (got '5000x5000')" in feedback


async def test_still_invalid_after_the_repair_falls_back_to_the_offline_plan(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, BAD_ANSWER), fo.chat_tool_call(TOOL_NAME, BAD_ANSWER))
    result = await plan(await start_planner())

    assert (result.provenance.planner, result.provenance.model, result.provenance.fell_back) == ("offline", "", True)
    assert result.plan_id == (await offline_twin()).plan_id
    assert len(fake_openai.chat_requests) == 2  # one repair, no more


async def test_still_invalid_after_the_repair_is_an_error_when_fallback_is_off(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, BAD_ANSWER), fo.chat_content("no JSON here"))
    error = await failure(await start_planner(fallback=False))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.INTERNAL, "LLM_OUTPUT_INVALID", False)
    assert "still unusable after a repair" in error.message and "not valid JSON" in error.message


# --------------------------------------------------------------------------- errors
async def test_rate_limit_is_resource_exhausted_with_retry_info_even_with_fallback(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.error(429, "Rate limit reached", headers={"Retry-After": "7"}))
    error = await failure(await start_planner(fallback=True))
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LLM_RATE_LIMITED")
    assert error.retry_after == 7.0 and error.retryable


@pytest.fixture(
    params=[fo.error(500, "The server had an error"), fo.delay(5, fo.chat_tool_call(TOOL_NAME, ANSWER))],
    ids=["500", "timeout"],
)
def unreachable_llm(request: pytest.FixtureRequest, fake_openai: fo.FakeOpenAI) -> None:
    """The LLM's one reply is a 500, or comes too late (the planners below time out at 0.3 s)."""
    fake_openai.script_chat(request.param)


async def test_unreachable_llm_is_unavailable_when_fallback_is_off(
    start_planner: StartPlanner, unreachable_llm: None
) -> None:
    error = await failure(await start_planner(fallback=False, llm_timeout_seconds=0.3))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE", True)


async def test_unreachable_llm_falls_back_to_the_offline_plan_when_fallback_is_on(
    start_planner: StartPlanner, unreachable_llm: None
) -> None:
    result = await plan(await start_planner(llm_timeout_seconds=0.3))
    assert (result.provenance.planner, result.provenance.fell_back) == ("offline", True)
    assert result.plan_id == (await offline_twin()).plan_id


async def test_refused_credentials_are_failed_precondition_even_with_fallback(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.error(401, "Incorrect API key provided"))
    error = await failure(await start_planner(fallback=True))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.FAILED_PRECONDITION, "LLM_NOT_USABLE", False)


# --------------------------------------------------------------------------- cache and modes
async def test_the_same_request_gets_the_cached_plan_without_asking_the_llm_again(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    target = await start_planner()
    first = await plan(target)
    again = await plan(target)
    other_session = await plan(target, session_id="table-2")

    assert again == first  # provenance included: it is the plan made the first time
    assert other_session.plan_id == first.plan_id and other_session.session_id == "table-2"
    assert len(fake_openai.chat_requests) == 1
    fake_openai.assert_all_consumed()


async def test_mode_per_request(start_planner: StartPlanner, fake_openai: fo.FakeOpenAI) -> None:
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    target = await start_planner(mode="offline")
    requests = {
        mode: CreatePlanRequest(prompt=PROMPT, session_id="s", mode=mode)
        for mode in (PlanningMode.PLANNING_MODE_UNSPECIFIED, PlanningMode.PLANNING_MODE_OFFLINE,
                     PlanningMode.PLANNING_MODE_AUTO)
    }
    async with grpc.aio.insecure_channel(target) as channel:
        stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
        planners = {mode: (await stub.CreatePlan(request)).plan.provenance.planner
                    for mode, request in requests.items()}
    # The server runs offline by default, yet has an LLM: auto on a request uses it.
    assert planners == {PlanningMode.PLANNING_MODE_UNSPECIFIED: "offline",
                        PlanningMode.PLANNING_MODE_OFFLINE: "offline", PlanningMode.PLANNING_MODE_AUTO: "llm"}
    assert len(fake_openai.chat_requests) == 1


async def test_mode_llm_without_an_llm_is_failed_precondition(fake_openai: fo.FakeOpenAI) -> None:
    running = await create_server(PlannerSettings(address="127.0.0.1:0"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
            auto = await stub.CreatePlan(CreatePlanRequest(prompt=PROMPT, session_id="s"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreatePlan(
                    CreatePlanRequest(prompt=PROMPT, session_id="s", mode=PlanningMode.PLANNING_MODE_LLM))
    finally:
        await running.stop(None)
    assert auto.plan.provenance.planner == "offline"  # auto, and no LLM configured
    error = planning_failed(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LLM_NOT_CONFIGURED")
    assert fake_openai.requests == []


# --------------------------------------------------------------------------- logs
async def test_logs_speak_of_planning_keep_prompts_at_debug_and_never_show_the_key(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_openai.script_chat(
        fo.chat_tool_call(TOOL_NAME, BAD_ANSWER),
        fo.chat_tool_call(TOOL_NAME, ANSWER),
        fo.error(401, f"Incorrect API key provided: {API_KEY}"),  # some servers echo the key
    )
    target = await start_planner()
    await plan(target)
    await failure(target, prompt="A different moment")

    text = caplog.text
    assert API_KEY not in text
    assert any(PROMPT in r.getMessage() for r in caplog.records)  # prompts do reach DEBUG ...
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG and PROMPT in r.getMessage()]  # ... only
    assert "generat" not in text.lower()
    assert "planned" in text and "asking it once to repair" in text
