"""The LLM side of the planning domain, with an in-memory agent: drafts, the repair
and fallback rules, the cache, and the settings that configure them."""

from __future__ import annotations

import asyncio
import json
from collections import deque

import pytest

from imagegen.catalogue import STYLES
from imagegen.errors import (
    InvalidRequest,
    PlannerMisconfigured,
    PlannerThrottled,
    PlannerUnavailable,
    PlanOutputInvalid,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen_runtime.settings import ConfigError
from planner_service.config import PlannerSettings
from planner_service.coordination.in_process import InProcessPlans
from planner_service.drafts import normalise_draft, parse_draft, plan_from_draft
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.plan_cache import PlanCache, request_fingerprint
from planner_service.planning import Planner
from planner_service.ports import DraftUnusable, PlanDraft, PlanRequest, Repair

ANSWER = {"enhanced_prompt": "A wyvern over a burning village.", "image_type": "creature",
          "style": "dark-fantasy", "size": "1024x1024"}
REQUEST = PlanRequest(prompt="A wyvern attacks the village", session_id="s1")


class ScriptedAgent:
    """An LLM stand-in: answers (JSON text) or exceptions, in order; records each call."""

    name, model = "llm", "scripted"

    def __init__(self, *replies: object) -> None:
        self.replies = deque(replies)
        self.calls: list[Repair | None] = []
        self.gate: asyncio.Event | None = None

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        self.calls.append(repair)
        if self.gate is not None:
            await self.gate.wait()
        reply = self.replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return parse_draft(reply if isinstance(reply, str) else json.dumps(reply))

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def planner(agent: ScriptedAgent | None, **options: object) -> Planner:
    return Planner(OfflinePlanningAgent(), STYLES, llm=agent, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- drafts
def test_parse_finds_json_in_fences_and_prose() -> None:
    text = json.dumps(ANSWER)
    for answer in (text, f"```json\n{text}\n```", f"Sure! {text} Enjoy."):
        assert parse_draft(answer) == PlanDraft(**ANSWER, answer=answer)


def test_parse_lists_every_structural_problem() -> None:
    draft = parse_draft(json.dumps({"enhanced_prompt": 3, "image_type": "map", "style": "heroic", "extra": 1}))
    assert draft.problems == ("extra: unknown field", "size: is required", "enhanced_prompt: must be a string")
    assert (draft.enhanced_prompt, draft.image_type, draft.size) == ("", "map", "")


def test_a_repair_names_every_problem_of_shape_and_value_at_once() -> None:
    """The issue's example: an unknown field, a bad image type and an absurd size, all in one repair."""
    answer = json.dumps({"enhanced_prompt": "A wyvern", "image_type": "hologram", "style": "heroic",
                         "size": "99999x99999", "mood": "grim"})
    with pytest.raises(DraftUnusable) as caught:
        plan_from_draft(parse_draft(answer), "s1", STYLES)
    fields = [problem.split(":", 1)[0] for problem in caught.value.problems]
    assert sorted(fields) == ["image_type", "mood", "size"], caught.value.problems
    assert caught.value.answer == answer


def test_a_repair_never_echoes_the_model_unbounded() -> None:
    answer = json.dumps({**{f"k{i}" + "x" * 5000: 1 for i in range(50)}, "enhanced_prompt": "A wyvern",
                         "image_type": "y" * 100_000, "style": "z" * 100_000, "size": "9" * 100_000})
    with pytest.raises(DraftUnusable) as caught:
        plan_from_draft(parse_draft(answer), "s1", STYLES)
    assert len("; ".join(caught.value.problems)) < 4000
    assert len(caught.value.problems) <= 12


def test_normalise_tidies_the_model_and_lets_the_callers_choices_win() -> None:
    draft = PlanDraft("  A   wyvern\n over  a village ", " Creature ", "Dark-Fantasy", "1024 X 1024")
    tidy = normalise_draft(draft, REQUEST)
    assert (tidy.enhanced_prompt, tidy.image_type, tidy.style, tidy.size) == (
        "A wyvern over a village", "creature", "dark-fantasy", "1024x1024")
    chosen = PlanRequest(prompt="x", session_id="s", image_type=ImageType.IMAGE_TYPE_MAP,
                               style="parchment-map", size="2048x2048")
    chosen_tidy = normalise_draft(draft, chosen)
    assert (chosen_tidy.image_type, chosen_tidy.style, chosen_tidy.size) == ("map", "parchment-map", "2048x2048")


def test_plan_from_draft_names_each_bad_value_once() -> None:
    draft = PlanDraft("x" * 4001, "selfie", "baroque", "10x10", answer="the answer")
    with pytest.raises(DraftUnusable) as caught:
        plan_from_draft(draft, "s1", STYLES)
    problems = caught.value.problems
    assert caught.value.answer == "the answer"
    assert [p.split(":")[0] for p in problems] == ["image_type", "style", "enhanced_prompt", "size"]
    assert "unknown style preset 'baroque'" in problems[1]
    assert problems[2].endswith("(it has 4001 characters)") and problems[3].endswith("(got '10x10')")


# --------------------------------------------------------------------------- repair and fallback
async def test_one_repair_round_trip_carries_the_answer_and_its_problems() -> None:
    agent = ScriptedAgent({**ANSWER, "size": "big"}, ANSWER)
    plan = await planner(agent).create_plan(REQUEST)
    assert plan.provenance.planner == "llm" and plan.enhanced_prompt == ANSWER["enhanced_prompt"]
    first, repair = agent.calls
    assert first is None and repair is not None
    assert json.loads(repair.answer)["size"] == "big"
    assert repair.problems == ('size: must be "WIDTHxHEIGHT", for example "1024x1024" (got \'big\')',)


async def test_a_second_unusable_answer_fails_without_fallback() -> None:
    agent = ScriptedAgent("nope", "still nope", ANSWER)
    with pytest.raises(PlanOutputInvalid, match="not valid JSON"):
        await planner(agent, fallback=False).create_plan(REQUEST)
    assert len(agent.calls) == 2


@pytest.mark.parametrize("error", [PlannerThrottled("slow down", retry_after=2), PlannerMisconfigured("bad key")])
async def test_rate_limits_and_refused_credentials_are_never_hidden_by_the_fallback(error: Exception) -> None:
    with pytest.raises(type(error)):
        await planner(ScriptedAgent(error), fallback=True).create_plan(REQUEST)


async def test_an_unreachable_llm_falls_back_to_the_offline_plan() -> None:
    plan = await planner(ScriptedAgent(PlannerUnavailable("down")), fallback=True).create_plan(REQUEST)
    offline = await planner(None).create_plan(REQUEST)
    assert (plan.provenance.planner, plan.provenance.fell_back) == ("offline", True)
    assert plan.plan_id == offline.plan_id and not offline.provenance.fell_back


async def test_an_unknown_mode_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        await planner(None).create_plan(PlanRequest(prompt="x", session_id="s", mode=42))
    assert [v.field for v in caught.value.violations] == ["mode"]


def test_the_configured_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="mode"):
        planner(None, mode="creative")


# --------------------------------------------------------------------------- cache
async def test_cached_plans_expire_after_their_ttl() -> None:
    clock = Clock()
    agent = ScriptedAgent(ANSWER, {**ANSWER, "style": "heroic"})
    subject = planner(agent, plans=InProcessPlans(PlanCache(8, ttl_seconds=60, clock=clock)))
    first = await subject.create_plan(REQUEST)
    clock.now = 59.9
    assert await subject.create_plan(REQUEST) == first and len(agent.calls) == 1
    clock.now = 60.0
    assert (await subject.create_plan(REQUEST)).style == "heroic" and len(agent.calls) == 2


def test_the_cache_keeps_the_most_recently_used_entries() -> None:
    cache = PlanCache(2, ttl_seconds=60, clock=Clock())
    plans = {key: ImageGenerationPlan(plan_id=key) for key in "abc"}
    cache.put("a", plans["a"])
    cache.put("b", plans["b"])
    assert cache.get("a") == plans["a"]  # a is now more recent than b
    cache.put("c", plans["c"])
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (plans["a"], None, plans["c"])
    assert len(cache) == 2


def test_a_cache_of_size_or_ttl_zero_keeps_nothing() -> None:
    for cache in (PlanCache(0, 60), PlanCache(8, 0)):
        cache.put("a", ImageGenerationPlan(plan_id="a"))
        assert cache.get("a") is None and not cache.enabled


def test_cached_plans_cannot_be_changed_through_a_copy() -> None:
    cache = PlanCache(2, 60)
    cache.put("a", ImageGenerationPlan(plan_id="a"))
    cache.get("a").plan_id = "changed"  # type: ignore[union-attr]
    assert cache.get("a").plan_id == "a"  # type: ignore[union-attr]


def test_the_request_fingerprint_ignores_session_and_context_order() -> None:
    one = PlanRequest(prompt="p", session_id="s1", context={"a": "1", "b": "2"})
    two = PlanRequest(prompt="p", session_id="s2", context={"b": "2", "a": "1"})
    assert request_fingerprint(one, "llm") == request_fingerprint(two, "llm")
    assert request_fingerprint(one, "llm") != request_fingerprint(one, "offline")
    assert request_fingerprint(one, "llm") != request_fingerprint(PlanRequest(prompt="q", session_id="s1"), "llm")


async def test_identical_requests_in_flight_share_one_llm_answer() -> None:
    agent = ScriptedAgent(ANSWER)
    agent.gate = asyncio.Event()
    subject = planner(agent, plans=InProcessPlans(PlanCache(8, 60)))

    async def open_the_gate() -> None:  # runs after both requests have started: tasks run in order
        agent.gate.set()  # type: ignore[union-attr]

    other = PlanRequest(prompt=REQUEST.prompt, session_id="s2")
    one, two, _ = await asyncio.gather(subject.create_plan(REQUEST), subject.create_plan(other), open_the_gate())
    assert len(agent.calls) == 1
    assert one.plan_id == two.plan_id and (one.session_id, two.session_id) == ("s1", "s2")


# --------------------------------------------------------------------------- settings
def test_settings_from_the_environment() -> None:
    settings = PlannerSettings.from_env({
        "PLANNER_MODE": "LLM", "PLANNER_LLM_BASE_URL": "http://127.0.0.1:8080/v1/", "PLANNER_LLM_MODEL": "llama",
        "PLANNER_LLM_PATH": "json", "PLANNER_LLM_TIMEOUT_SECONDS": "2.5", "PLANNER_LLM_MAX_RETRIES": "0",
        "PLANNER_LLM_SEED": "off", "PLANNER_LLM_FALLBACK": "false", "PLANNER_CACHE_SIZE": "10",
        "PLANNER_CACHE_TTL_SECONDS": "30",
    })
    assert (settings.mode, settings.llm_base_url, settings.llm_model, settings.llm_path) == (
        "llm", "http://127.0.0.1:8080/v1", "llama", "json")
    assert (settings.llm_timeout_seconds, settings.llm_max_retries, settings.llm_seed, settings.fallback) == (
        2.5, 0, None, False)
    assert (settings.cache_size, settings.cache_ttl_seconds, settings.llm_api_key) == (10, 30.0, "")
    defaults = PlannerSettings.from_env({})
    assert (defaults.mode, defaults.llm_configured, defaults.fallback, defaults.llm_seed) == ("auto", False, True, 0)


def test_the_api_key_comes_from_planner_llm_api_key_or_openai_api_key_and_is_never_printed() -> None:
    assert PlannerSettings.from_env({"OPENAI_API_KEY": "sk-a"}).llm_api_key == "sk-a"
    settings = PlannerSettings.from_env({"OPENAI_API_KEY": "sk-a", "PLANNER_LLM_API_KEY": "sk-b"})
    assert settings.llm_api_key == "sk-b" and settings.llm_configured
    assert settings.effective_llm_base_url == "https://api.openai.com/v1"
    assert "sk-b" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLANNER_MODE", "creative"),
        ("PLANNER_LLM_PATH", "grpc"),
        ("PLANNER_LLM_BASE_URL", "127.0.0.1:8080"),
        ("PLANNER_LLM_TIMEOUT_SECONDS", "0"),
        ("PLANNER_LLM_MAX_RETRIES", "-1"),
        ("PLANNER_LLM_MAX_RETRIES", "two"),
        ("PLANNER_LLM_SEED", "1.5"),
        ("PLANNER_LLM_FALLBACK", "maybe"),
        ("PLANNER_CACHE_SIZE", "lots"),
        ("PLANNER_CACHE_TTL_SECONDS", "-5"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        PlannerSettings.from_env({"PLANNER_LLM_API_KEY": "sk-x", name: value})


def test_mode_llm_needs_an_llm() -> None:
    with pytest.raises(ConfigError, match="PLANNER_MODE"):
        PlannerSettings.from_env({"PLANNER_MODE": "llm"})
