"""The contract's own checks: buf lint and format, generated code up to date,
and the import rules between layers. Each runs the real tool."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes() -> None:
    result = run(BIN / "buf", "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format_finds_no_diff() -> None:
    result = run(BIN / "buf", "format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_would_catch_a_bad_proto(tmp_path: Path) -> None:
    module = tmp_path / "protos" / "imagegen" / "v1"
    shutil.copytree(ROOT / "protos" / "imagegen" / "v1", module)
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    (module / "extra.proto").write_text(
        'syntax = "proto3";\npackage imagegen.v1;\nenum Color { RED = 0; }\n'
    )
    result = subprocess.run([str(BIN / "buf"), "lint"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "should be suffixed with \"_UNSPECIFIED\"" in result.stdout


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = run(sys.executable, ROOT / "scripts" / "gen_protos.py", tmp_path)
    assert result.returncode == 0, result.stderr
    fresh, committed = tmp_path / "imagegen" / "v1", ROOT / "imagegen" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert mismatch == [] and errors == [], f"stale generated code: {mismatch + errors}; run `make proto`"
    extra = {p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi")} - set(names)
    assert extra == set(), f"generated files with no proto: {extra}"


def test_import_rules_hold() -> None:
    result = run(BIN / "lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout, result.stdout


def _previous_commit_with_protos() -> str:
    """The newest commit before HEAD that has the contract: what the working tree must not break."""
    result = run("git", "log", "--format=%H", "--skip=1", "-1", "--", "protos")
    return result.stdout.strip()


def test_buf_breaking_against_the_previous_contract() -> None:
    previous = _previous_commit_with_protos()
    assert previous, "no earlier commit with protos/: the history is needed for the breaking check"
    result = run(BIN / "buf", "breaking", "--against", f".git#ref={previous},subdir=.")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_would_catch_a_removed_field(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    for copy in (before, after):
        shutil.copytree(ROOT / "protos", copy / "protos")
        shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    plan_proto = after / "protos" / "imagegen" / "v1" / "image_plan.proto"
    plan_proto.write_text(plan_proto.read_text().replace("  string style = 4;\n", ""))
    result = subprocess.run(
        [str(BIN / "buf"), "breaking", "--against", str(before)], cwd=after, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and 'field "4" with name "style"' in result.stdout
