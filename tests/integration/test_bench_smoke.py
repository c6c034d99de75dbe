"""A smoke-sized run of every benchmark: they keep working and write their
results. Figures are not judged here; docs/performance.md records them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("*.json"))]
    assert len(records) >= len(BENCHMARKS)
    for record in records:
        assert record["rows"] and record["targets"] and record["machine"]["cpus"]
        assert all(isinstance(t["met"], bool) for t in record["targets"])
        assert f"## {record['benchmark']}" in result.stdout


def test_an_unknown_benchmark_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown benchmark" in result.stderr
