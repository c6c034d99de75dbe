"""`imagegen check-types PROMPT`: one row per image type of the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegen import catalogue
from tests.support import cli

pytestmark = pytest.mark.integration


def _rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert lines[0].split()[:5] == ["type", "size", "style", "prompt", "plan_id"]
    return {line.split()[0]: line.split() for line in lines[2:]}


def test_offline_it_plans_every_image_type_with_no_service_running(tmp_path: Path) -> None:
    result = cli.run(["check-types", "Thora the dwarf cleric in a torchlit crypt", "--offline"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert list(rows) == list(catalogue.IMAGE_TYPE_NAMES) and len(rows) == 7
    for name, row in rows.items():
        assert row[1] == catalogue.IMAGE_TYPES[name].default_size and row[2] == catalogue.DEFAULT_STYLE
        assert row[3] == "Thora" and len(row[-1]) == 32  # the prompt's start, the plan_id
    assert len({row[-1] for row in rows.values()}) == 7
    assert not list(tmp_path.rglob("*.png"))  # planned only: nothing rendered


def test_execute_adds_where_each_image_went(tmp_path: Path) -> None:
    result = cli.run(["check-types", "A rusty longsword", "--offline", "--execute", "--style", "ink-sketch"],
                     cwd=tmp_path, env={"EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "store")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[-2:] == ["stored", "at"]
    for name, row in _rows(result.stdout).items():
        assert row[2] == "ink-sketch"
        assert row[-1] == f"imagegen/check-types/{name}/{row[-2]}.png"
        assert (tmp_path / "store" / "check-types" / name / f"{row[-2]}.png").is_file()


def test_against_running_services_and_a_refused_plan_fails_the_command(tmp_path: Path) -> None:
    with cli.imagegen_up(tmp_path) as (planner, executor):
        result = cli.run(["check-types", "A map of the sunken temple", "--planner", planner, "--executor", executor],
                         cwd=tmp_path)  # fmt: skip
        refused = cli.run(["check-types", "A map", "--session-id", "../x", "--planner", planner], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(_rows(result.stdout)) == list(catalogue.IMAGE_TYPE_NAMES)
    assert refused.returncode == 1
    assert all(line.endswith("failed: INVALID_ARGUMENT INVALID_REQUEST") for line in refused.stdout.splitlines()[2:])


def test_the_table_shows_no_control_characters_a_prompt_carries(tmp_path: Path) -> None:
    # An enhanced prompt (the caller's words, or an LLM's) may hold terminal escapes: a title
    # change, colours. The table is for a terminal, so they are shown as spaces, not run.
    result = cli.run(["check-types", "Thora\x1b]0;owned\x07 the \x1b[31mdwarf", "--offline"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert len(result.stdout.splitlines()) == 2 + len(catalogue.IMAGE_TYPE_NAMES)  # one line a type
    assert _rows(result.stdout)["scene"][3] == "Thora"
