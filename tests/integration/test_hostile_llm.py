"""A hostile or broken LLM endpoint, as the planner's callers see it: the real openai
SDK against the scripted server on loopback, inside a real planner server called
through clients/.

- An answer that is not the API's (HTML, JSON of another shape, a redirect, a proxy's
  404, more than the planner reads) is LLM_UNAVAILABLE, and PLANNER_LLM_FALLBACK gives
  the offline plan.
- A chat completion with nothing usable in it (no choices, no message, no tool call)
  is an unusable answer: one repair, then LLM_OUTPUT_INVALID or the offline plan.
- A timeout is a total timeout: an LLM that drips its answer is given up on.
- Numbers and texts from the LLM are bounded before they are used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from clients import AsyncPlannerClient, PlanningFailed
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from planner_service.openai_agent import MAX_ANSWER_BYTES, TOOL_NAME
from tests.support import fake_openai as fo
from tests.support.llm_planner import ANSWER, API_KEY, PROMPT, running_llm_planner

pytestmark = pytest.mark.integration

StartPlanner = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_planner(fake_openai: fo.FakeOpenAI) -> AsyncIterator[StartPlanner]:
    """Start a planner pointed at the fake LLM (a 5 s timeout unless overrides say
    otherwise); returns its target. All are stopped after the test."""
    async with contextlib.AsyncExitStack() as started:

        async def start(**overrides: object) -> str:
            planner = running_llm_planner(fake_openai, **{"llm_timeout_seconds": 5.0, **overrides})
            return await started.enter_async_context(planner)

        yield start


async def plan(target: str, *, timeout: float = 30) -> ImageGenerationPlan:
    async with AsyncPlannerClient(target, timeout=timeout) as client:
        return await client.create_plan(PROMPT, session_id="table-1")


async def failure(target: str) -> PlanningFailed:
    with pytest.raises(PlanningFailed) as caught:
        await plan(target)
    return caught.value


def completion(body: object) -> fo.Reply:
    return fo.Reply(200, body)


def with_message(message: object) -> fo.Reply:
    return completion({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-test",
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


# Answers that are not the API's: the LLM is unavailable, whatever sent them.
NOT_THE_APIS = {
    "html with 200": fo.raw(200, "<html><body>Sign in to the Wi-Fi</body></html>", content_type="text/html"),
    "invalid json": fo.raw(200, '{"choices": [{"message": '),
    "not utf-8": fo.raw(200, b"\xff\xfe\xfd garbage"),
    "json of another shape": completion({"data": "x"}),
    "choices a string": completion({"choices": "x"}),
    "choices a list of strings": completion({"choices": ["x"]}),
    "a list": completion([]),
    "null": fo.raw(200, "null"),
    "json nested past the parser's depth": fo.raw(200, "[" * 10_000 + "]" * 10_000),
    "a redirect": fo.redirect("http://127.0.0.1:9/v1/chat/completions", status=307),
    "404 html": fo.raw(404, "<html><body>404 Not Found</body></html>", content_type="text/html"),
    "more than the planner reads": fo.chat_tool_call(
        TOOL_NAME, {**ANSWER, "enhanced_prompt": "x" * (MAX_ANSWER_BYTES + 1)}),
    "gzip bomb": fo.gzipped(fo.chat_tool_call(TOOL_NAME, {**ANSWER, "enhanced_prompt": "x" * (4 * MAX_ANSWER_BYTES)})),
    "content-length of 400 digits": fo.Reply(200, {"choices": []}, declared_length="9" * 400),
}


@pytest.mark.parametrize("reply", NOT_THE_APIS.values(), ids=NOT_THE_APIS.keys())
async def test_an_answer_that_is_not_the_apis_falls_back_to_the_offline_plan(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    fake_openai.script_chat(reply)
    result = await plan(await start_planner())
    assert (result.provenance.planner, result.provenance.fell_back) == ("offline", True)
    assert len(fake_openai.chat_requests) == 1  # no repair: there was no answer to repair


@pytest.mark.parametrize("reply", NOT_THE_APIS.values(), ids=NOT_THE_APIS.keys())
async def test_an_answer_that_is_not_the_apis_is_llm_unavailable_without_fallback(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    fake_openai.script_chat(reply)
    error = await failure(await start_planner(fallback=False))
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE", True)
    assert API_KEY not in error.message


async def test_a_redirect_is_not_followed(start_planner: StartPlanner, fake_openai: fo.FakeOpenAI) -> None:
    # Followed, it would take the request (the game's moment included) wherever it points.
    fake_openai.script_chat(fo.redirect(f"{fake_openai.url}/elsewhere/v1/chat/completions", status=307))
    fake_openai.script("/elsewhere/v1/chat/completions", fo.chat_tool_call(TOOL_NAME, ANSWER))
    result = await plan(await start_planner())
    assert (result.provenance.planner, result.provenance.fell_back) == ("offline", True)
    assert [r.path for r in fake_openai.requests] == ["/v1/chat/completions"]


# Chat completions with nothing usable in them: the model is asked once to repair.
NOTHING_USABLE = {
    "no choices": completion({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-test",
                              "choices": []}),
    "null message": with_message(None),
    "tool call missing": with_message({"role": "assistant", "content": None}),
    "tool call without a function": with_message({"role": "assistant", "content": None,
                                                  "tool_calls": [{"id": "t", "type": "function"}]}),
    "arguments not a string": with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": TOOL_NAME, "arguments": {"size": 5}}}]}),
    "arguments nested past the parser's depth": with_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": TOOL_NAME, "arguments": "[" * 10_000 + "]" * 10_000}}]}),
    "a refusal of 100 000 characters": with_message({"role": "assistant", "content": None, "refusal": "no " * 33_334}),
}


@pytest.mark.parametrize("reply", NOTHING_USABLE.values(), ids=NOTHING_USABLE.keys())
async def test_an_answer_with_nothing_usable_is_repaired_then_falls_back(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    fake_openai.script_chat(reply, reply)
    result = await plan(await start_planner())
    assert (result.provenance.planner, result.provenance.fell_back) == ("offline", True)
    assert len(fake_openai.chat_requests) == 2  # the answer and its one repair


@pytest.mark.parametrize("reply", NOTHING_USABLE.values(), ids=NOTHING_USABLE.keys())
async def test_an_answer_with_nothing_usable_is_llm_output_invalid_without_fallback(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    fake_openai.script_chat(reply, reply)
    error = await failure(await start_planner(fallback=False))
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, "LLM_OUTPUT_INVALID")
    assert len(error.message) < 2000  # a model's refusal is cut short before it reaches anyone


async def test_a_repaired_answer_after_a_null_message_is_the_plan(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(with_message(None), fo.chat_tool_call(TOOL_NAME, ANSWER))
    result = await plan(await start_planner())
    assert (result.provenance.planner, result.enhanced_prompt) == ("llm", ANSWER["enhanced_prompt"])


# ------------------------------------------------------------------ kind 5: a total timeout
async def test_an_answer_dripped_a_byte_at_a_time_falls_back_before_the_callers_deadline(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    # Never idle for a whole second, so a per-read timeout of 1 s never fires; the
    # answer would take minutes. Only a total timeout per attempt gets the offline
    # plan to the caller within its deadline.
    fake_openai.script_chat(*[fo.drip(fo.chat_tool_call(TOOL_NAME, ANSWER), interval=0.2)] * 2)
    target = await start_planner(llm_timeout_seconds=1.0, llm_max_retries=1)
    result = await plan(target, timeout=15)
    assert (result.provenance.planner, result.provenance.fell_back) == ("offline", True)
    assert len(fake_openai.chat_requests) == 2  # the attempt and its one retry, each given up after 1 s


async def test_a_dripped_answer_is_llm_unavailable_without_fallback(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI
) -> None:
    fake_openai.script_chat(fo.drip(fo.chat_tool_call(TOOL_NAME, ANSWER), interval=0.2))
    target = await start_planner(llm_timeout_seconds=1.0, fallback=False)
    with pytest.raises(PlanningFailed) as caught:
        await plan(target, timeout=15)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE")


# ------------------------------------------------------------------ kind 6: bounded numbers
MAX = MAX_RETRY_AFTER.total_seconds()


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("9" * 400, MAX), ("1e308", MAX), ("-30", 0.0), ("nan", None), ("Fri, 31 Dec 9999 23:59:59 GMT", MAX)],
    ids=["400 digits", "1e308", "negative", "nan", "far future"],
)
async def test_a_rate_limit_with_any_retry_after_is_resource_exhausted_with_a_bounded_wait(
    start_planner: StartPlanner, fake_openai: fo.FakeOpenAI, retry_after: str, seconds: float | None
) -> None:
    fake_openai.script_chat(fo.error(429, "slow down", headers={"Retry-After": retry_after}))
    error = await failure(await start_planner())
    assert (error.code, error.reason, error.retry_after) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "LLM_RATE_LIMITED", seconds,
    )
