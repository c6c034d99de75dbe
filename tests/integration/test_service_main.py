"""`python -m planner_service` / `python -m executor_service` with settings they
cannot use: one line on stderr naming the variable, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run_service(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PLANNER_", "EXECUTOR_", "OPENAI_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**clean, "PLANNER_ADDRESS": "127.0.0.1:0", "EXECUTOR_ADDRESS": "127.0.0.1:0", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("planner_service", "PLANNER_LLM_TIMEOUT_SECONDS", "abc"),
        ("planner_service", "PLANNER_MODE", "psychic"),
        ("executor_service", "EXECUTOR_OPENAI_TIMEOUT_SECONDS", "abc"),
        ("executor_service", "EXECUTOR_BUCKET", "Not_A_Bucket"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_line_naming_it(module: str, variable: str, value: str) -> None:
    done = run_service(module, **{variable: value})
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{module.removesuffix('_service')}: ") and variable in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_comfyui_workflow_that_cannot_work_stops_the_executor_naming_it(tmp_path: Path) -> None:
    workflow = tmp_path / "flow.json"
    workflow.write_text('{"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "n": "{{steps}}"}}}')
    done = run_service("executor_service", EXECUTOR_PROVIDER="comfyui", EXECUTOR_COMFYUI_WORKFLOW=str(workflow))
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert line.startswith("executor: ") and "EXECUTOR_COMFYUI_WORKFLOW" in line and "steps" in line
    assert "Traceback" not in done.stderr
