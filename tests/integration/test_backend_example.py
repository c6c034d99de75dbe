"""docs/backend.md's DM agent loop runs as printed: the real openai SDK against the loopback
OpenAI-compatible server, real planner and executor, in a separate Python process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

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
