"""Run a planner server whose LLM is the scripted OpenAI-compatible fake
(tests/support/fake_openai.py), and the scene the LLM tests ask it for."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from planner_service.bootstrap import build_planner, create_server
from planner_service.config import PlannerSettings
from tests.support.fake_openai import FakeOpenAI

API_KEY = "sk-test-planner-9876543210"
PROMPT = "The party ambushes goblins on a rope bridge"
# What the fake LLM answers for PROMPT, when a test scripts it to.
ANSWER = {
    "enhanced_prompt": "Adventurers spring an ambush on goblins crossing a swaying rope bridge over a gorge.",
    "image_type": "scene",
    "style": "cinematic",
    "size": "1536x1024",
}


@contextlib.asynccontextmanager
async def running_llm_planner(fake_openai: FakeOpenAI, **overrides: object) -> AsyncIterator[str]:
    """A planner built from settings, as `python -m planner_service` builds it, with its
    LLM on fake_openai (model gpt-test, API_KEY, no retries, 1 s timeout; overrides set
    any PlannerSettings field), served on 127.0.0.1 port 0; yields its target, stops it
    and closes the planner after."""
    settings = PlannerSettings(**{  # type: ignore[arg-type]
        "address": "127.0.0.1:0", "llm_base_url": fake_openai.base_url, "llm_api_key": API_KEY,
        "llm_model": "gpt-test", "llm_max_retries": 0, "llm_timeout_seconds": 1.0, **overrides,
    })  # fmt: skip
    planner = build_planner(settings)
    running = await create_server(settings, planner)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(None)
        await planner.aclose()
