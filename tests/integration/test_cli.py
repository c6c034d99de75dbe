"""The imagegen command as a user runs it: separate processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.integration

IMAGEGEN = [sys.executable, "-m", "imagegen_cli"]


def run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(IMAGEGEN + args, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)


def test_demo_writes_a_png_through_both_services(tmp_path: Path) -> None:
    result = run(["demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    written = Path(re.search(r"image written to (\S+)", result.stderr)[1])
    assert written == tmp_path / "var" / "images" / payload["storage_path"].removeprefix("imagegen/")
    assert Image.open(written).format == "PNG"
    assert payload["image_type"] == "character" and payload["provider"] == "offline"


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[tuple[str, str]]:
    env = {**os.environ, "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "store")}
    process = subprocess.Popen(
        IMAGEGEN + ["up", "--planner-address", "127.0.0.1:0", "--executor-address", "127.0.0.1:0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(2)]  # printed once both servers listen
    addresses = [re.search(r"listening on (\S+)", line)[1] for line in lines]
    yield addresses[0], addresses[1]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_up_then_plan_execute_and_generate(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    targets = ["--planner", planner, "--executor", executor]
    planned = run(["plan", "A ring of invisibility", "--session-id", "cli", "--context", "material=gold"] + targets, tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["image_type"] == "IMAGE_TYPE_ITEM" and "material: gold" in plan["enhanced_prompt"]

    executed = run(["execute", "-"] + targets, tmp_path, stdin=planned.stdout)
    assert executed.returncode == 0, executed.stderr
    result = json.loads(executed.stdout)
    assert result["plan"]["plan_id"] == plan["plan_id"] and result["reused"] is False

    generated = run(["generate", "A ring of invisibility", "--session-id", "cli", "--context", "material=gold"] + targets, tmp_path)
    assert generated.returncode == 0, generated.stderr
    payload = json.loads(generated.stdout)
    assert payload["reused"] is True and payload["storage_path"] == result["storage_path"]


def test_bad_input_prints_the_error_as_json(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    failed = run(["plan", "x", "--session-id", "../x", "--planner", planner], tmp_path)
    assert failed.returncode == 1
    error = json.loads(failed.stdout)["error"]
    assert (error["kind"], error["code"], error["field_violations"][0]["field"]) == (
        "PlanningFailed", "INVALID_ARGUMENT", "session_id",
    )
