"""The contract's own checks: buf lint and format, generated code up to date,
the import rules between layers, and no break of the released contract. Each runs
the real tool; none needs git history, so a shallow clone passes too."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

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
    shutil.copytree(ROOT / "protos", tmp_path / "protos")  # the vendored google/ imports too
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


# ---- breaking changes: against the released contract, committed in contract-baseline/ ----


def _baseline() -> Path:
    """The released contract: a buf image that `make contract-baseline` writes at a release."""
    found = sorted((ROOT / "contract-baseline").glob("imagegen-*.json"))
    names = [p.name for p in found]
    assert len(found) == 1, f"want one contract-baseline/imagegen-<version>.json, found {names}"
    return found[0]


def test_buf_breaking_against_the_released_contract() -> None:
    result = run(BIN / "buf", "breaking", "--against", _baseline())
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\nprotos/ breaks the released contract: undo the break "
        "(refreshing the baseline is for releases, see contract-baseline/README.md)"
    )


def test_the_baseline_is_the_released_contract_or_an_older_one() -> None:
    """Current or older: a release of this version or before, and an image of this module,
    so that passing `buf breaking` against it means something."""
    baseline = _baseline()
    released = Version(baseline.stem.removeprefix("imagegen-"))
    project = Version(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
    assert released <= project, f"{baseline.name} is newer than the project's version {project}"

    files = json.loads(baseline.read_text())["file"]
    own = {f["name"] for f in files if not f.get("bufExtension", {}).get("isImport")}
    current = {str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto")}
    assert own and own <= current, f"not an image of protos/: {sorted(own)} vs {sorted(current)}"
    made_by_hand = [f["name"] for f in files if "sourceCodeInfo" in f]
    assert made_by_hand == [], "made without --exclude-source-info: use make contract-baseline"


def test_buf_breaking_against_the_baseline_would_catch_a_removed_field(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    plan_proto = tmp_path / "protos" / "imagegen" / "v1" / "image_plan.proto"
    plan_proto.write_text(plan_proto.read_text().replace("  string style = 4;\n", ""))
    breaking = [str(BIN / "buf"), "breaking", "--against", str(_baseline())]
    result = subprocess.run(breaking, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, "removing a released field passed the baseline check"
    assert 'field "4" with name "style"' in result.stdout, result.stdout + result.stderr


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
