"""docs/backend.md's examples run as printed, each in a separate Python process against a
real planner and executor: the DM agent loop (the real openai SDK against the loopback
OpenAI-compatible server) and the session broadcaster (WatchSessionExecutions)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from clients import AsyncImagegenClient
from tests.conftest import PUBLIC_BASE, Services
from tests.support.fake_openai import FakeOpenAI, chat_content, chat_tool_call

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str) -> str:
    text = (ROOT / "docs" / "backend.md").read_text("utf-8")
    return text.split(f"<!-- backend-example: {name} -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


async def _run(script: Path, env: dict[str, str]) -> list[dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_the_dm_agent_loop_plans_in_the_turn_and_executes_after_it(
    services: Services, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script_chat(
        chat_tool_call("plan_image", {"prompt": "A crypt of broken sarcophagi lit by green flame", "image_type": "location"}),
        chat_tool_call("plan_image", {"prompt": "A skeleton knight", "image_type": "selfie"}),  # fixed by the model
        chat_content("Green fire flickers over broken sarcophagi..."),
    )  # fmt: skip
    script = tmp_path / "dm_agent_loop.py"
    script.write_text(_example("dm-agent-loop"))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "OPENAI_BASE_URL": fake_openai.base_url,
           "OPENAI_API_KEY": "test", "IMAGEGEN_PLANNER": services.planner_target,
           "IMAGEGEN_EXECUTOR": services.executor_target}  # fmt: skip
    events = await _run(script, env)

    assert [event["type"] for event in events] == ["narration", "image"]
    assert events[0]["text"].startswith("Green fire")
    image = events[1]
    assert image["image_type"] == "IMAGE_TYPE_LOCATION" and image["reused"] is False
    assert (services.store_dir / image["proxy_url"].removeprefix(PUBLIC_BASE + "/")).is_file()
    # The refused arguments went back to the model as the tool result, naming the field.
    third = fake_openai.chat_requests[2].body["messages"]
    refused = json.loads(third[-1]["content"])
    assert third[-1]["role"] == "tool" and refused["error"]["field_violations"][0]["field"] == "arguments.image_type"
    assert fake_openai.chat_requests[0].body["tools"][0]["function"]["name"] == "plan_image"


async def test_the_session_broadcaster_forwards_progress_previews_and_the_image_of_any_caller(
    services: Services, tmp_path: Path
) -> None:
    script = tmp_path / "session_broadcaster.py"
    script.write_text(_example("session-broadcaster"))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "SESSION": "table-9",
           "IMAGEGEN_EXECUTOR": services.executor_target}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    events: list[dict] = []

    async def next_event(seconds: float) -> dict:
        line = await asyncio.wait_for(process.stdout.readline(), seconds)
        assert line, (await process.stderr.read()).decode()
        events.append(json.loads(line))
        return events[-1]

    try:
        async with AsyncImagegenClient(services.planner_target, services.executor_target) as caller:
            # The watch is open once it hears something: probe the session until it does.
            async with asyncio.timeout(60):
                probe = 0
                while not events:
                    probe += 1
                    await caller.generate(f"A probe, {probe}", session_id="table-9", image_type="item", wait=False)
                    with contextlib.suppress(TimeoutError):
                        await next_event(1)
            started = await caller.generate(
                "A wyvern over the keep", session_id="table-9", image_type="scene", wait=False
            )
            name = started.execution.name
            async with asyncio.timeout(60):
                while not (events[-1]["execution"] == name and events[-1]["type"] == "image"):
                    await next_event(60)
    finally:
        process.terminate()
        await process.wait()
    mine = [event for event in events if event["execution"] == name]
    assert {event["plan_id"] for event in mine} == {started.plan.plan_id}
    kinds = [event["type"] for event in mine]
    assert kinds[0] == "image_progress" and kinds[-1] == "image" and "image_preview" in kinds
    assert kinds.index("image_preview") < len(kinds) - 1
    preview = next(event for event in mine if event["type"] == "image_preview")
    assert preview["url"].startswith("data:image/webp;base64,")
    assert mine[-1]["reused"] is False
    assert (services.store_dir / mine[-1]["proxy_url"].removeprefix(PUBLIC_BASE + "/")).is_file()
