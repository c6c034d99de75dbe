"""The imagegen command as a user runs it: separate processes, real ports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support import cli

pytestmark = pytest.mark.integration



def test_demo_writes_a_png_through_both_services(tmp_path: Path) -> None:
    result = cli.run(["demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    written = Path(re.search(r"image written to (\S+)", result.stderr)[1])
    assert written == tmp_path / "var" / "images" / payload["storage_path"].removeprefix("imagegen/")
    assert Image.open(written).format == "PNG"
    assert payload["image_type"] == "character" and payload["provider"] == "offline"


def test_a_demo_can_keep_the_character_of_an_earlier_demos_image(tmp_path: Path) -> None:
    first = cli.run(["demo", "Portrait of Thora, dwarf cleric"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path = json.loads(first.stdout)["storage_path"]
    second = cli.run(["demo", "Thora in a torchlit crypt", "--reference", path], cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    payload = json.loads(second.stdout)
    assert payload["reference_images"] == [path] and "subject in reference 1" in payload["prompt"]


@pytest.fixture
def running_up(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with cli.imagegen_up(tmp_path) as addresses:
        yield addresses


def test_up_then_plan_execute_and_generate(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    targets = ["--planner", planner, "--executor", executor]
    planned = cli.run(["plan", "A ring of invisibility", "--session-id", "cli", "--context", "material=gold"] + targets, tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["image_type"] == "IMAGE_TYPE_ITEM" and "material: gold" in plan["enhanced_prompt"]

    executed = cli.run(["execute", "-"] + targets, tmp_path, stdin=planned.stdout)
    assert executed.returncode == 0, executed.stderr
    result = json.loads(executed.stdout)
    assert result["plan"]["plan_id"] == plan["plan_id"] and result["reused"] is False

    generated = cli.run(["generate", "A ring of invisibility", "--session-id", "cli", "--context", "material=gold"] + targets, tmp_path)
    assert generated.returncode == 0, generated.stderr
    payload = json.loads(generated.stdout)
    assert payload["reused"] is True and payload["storage_path"] == result["storage_path"]


def test_generate_with_a_reference_keeps_the_stored_portrait(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    targets = ["--planner", planner, "--executor", executor]
    portrait = cli.run(["generate", "Thora, dwarf cleric", "--session-id", "cli", "--image-type", "portrait",
                        "--size", "256x256"] + targets, tmp_path)
    assert portrait.returncode == 0, portrait.stderr
    path = json.loads(portrait.stdout)["storage_path"]
    planned = cli.run(["plan", "Thora guards the gate", "--session-id", "cli", "--reference", path,
                       "--reference", f"style:{path}"] + targets, tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert [(r["storage_path"], r["role"]) for r in plan["reference_images"]] == [
        (path, "REFERENCE_ROLE_SUBJECT"), (path, "REFERENCE_ROLE_STYLE"),
    ]
    assert "subject in reference 1" in plan["enhanced_prompt"] and "of reference 2" in plan["enhanced_prompt"]
    scene = cli.run(["generate", "Thora guards the gate", "--session-id", "cli", "--size", "256x256",
                     "--reference", path] + targets, tmp_path)
    assert scene.returncode == 0, scene.stderr
    payload = json.loads(scene.stdout)
    assert payload["reference_images"] == [path] and payload["provider"] == "offline"
    missing = cli.run(["generate", "Thora", "--session-id", "cli", "--reference", path.replace("portrait", "item")]
                      + targets, tmp_path)
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "NOT_FOUND"


def test_start_watch_executions_and_cancel(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    targets = ["--planner", planner, "--executor", executor]
    started = cli.run(["start", "A bag of holding", "--session-id", "cli-x", "--size", "256x256"] + targets, tmp_path)
    assert started.returncode == 0, started.stderr
    answer = json.loads(started.stdout)
    name = answer["execution"]["name"]
    assert name.startswith("executions/") and answer["plan"]["session_id"] == "cli-x"

    watched = cli.run(["watch", name, "--timeout", "60"] + targets, tmp_path)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["execution"]["state"] == "EXECUTION_STATE_SUCCEEDED"

    listed = cli.run(["executions", "--session-id", "cli-x"] + targets, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)["executions"]] == [name]

    cancelled = cli.run(["cancel", name] + targets, tmp_path)  # ended already: a no-op
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "EXECUTION_STATE_SUCCEEDED"

    unknown = cli.run(["cancel", "executions/" + "0" * 32] + targets, tmp_path)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["error"]["code"] == "NOT_FOUND"


def test_bad_input_prints_the_error_as_json(running_up: tuple[str, str], tmp_path: Path) -> None:
    planner, executor = running_up
    failed = cli.run(["plan", "x", "--session-id", "../x", "--planner", planner], tmp_path)
    assert failed.returncode == 1
    error = json.loads(failed.stdout)["error"]
    assert (error["kind"], error["code"], error["field_violations"][0]["field"]) == (
        "PlanningFailed", "INVALID_ARGUMENT", "session_id",
    )


def test_execute_takes_any_plan_file_grpcurl_takes(running_up: tuple[str, str], tmp_path: Path) -> None:
    """proto3 JSON: null for a default, lowerCamelCase names, enum numbers (imagegen.json_mapping)."""
    _, executor = running_up
    plan = {"enhancedPrompt": "A brass lantern", "imageType": 4, "style": "painterly", "size": "256x256",
            "sessionId": "cli", "metadata": None, "provenance": None, "planId": None}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    executed = cli.run(["execute", "plan.json", "--executor", executor], tmp_path)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    assert json.loads(executed.stdout)["plan"]["image_type"] == "IMAGE_TYPE_ITEM"


@pytest.mark.parametrize(("level", "fmt"), [("INFO", "json"), ("INFO", "text"), ("WARNING", "json")])
def test_demo_logs_as_log_level_and_log_format_say(tmp_path: Path, level: str, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", level)
    monkeypatch.setenv("LOG_FORMAT", fmt)
    result = cli.run(["demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    calls = [line for line in result.stderr.splitlines() if "ExecutorService/ExecutePlan OK" in line]
    if level == "WARNING":
        assert calls == []
    elif fmt == "json":
        assert [json.loads(line)["code"] for line in calls] == ["OK"]
    else:
        assert len(calls) == 1 and not calls[0].startswith("{") and " INFO imagegen.rpc " in calls[0]


def test_up_with_a_bad_setting_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_URL_EXPIRY_SECONDS", "forever")
    result = cli.run(["up"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["imagegen: EXECUTOR_URL_EXPIRY_SECONDS='forever': expected a whole number"]
