"""What every benchmark shares: timing runs at a fixed concurrency, percentiles,
a printed table and a JSON file per benchmark.

Figures are ratios against a baseline measured in the same run, because these
machines are noisy; absolute numbers are printed for context only.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_results_dir = RESULTS_DIR


def set_results_dir(path: Path) -> None:
    global _results_dir
    _results_dir = path


@dataclass(frozen=True)
class LoadStats:
    requests: int
    concurrency: int
    seconds: float
    throughput: float  # requests per second
    p50_ms: float
    p99_ms: float


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_load(call: Callable[[int], Awaitable[Any]], *, requests: int, concurrency: int) -> LoadStats:
    """Make `requests` calls, `concurrency` at a time; call(i) gets the request's index."""
    latencies: list[float] = []
    next_index = iter(range(requests))

    async def worker() -> None:
        for i in next_index:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return LoadStats(
        requests=requests,
        concurrency=concurrency,
        seconds=seconds,
        throughput=requests / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


@dataclass(frozen=True)
class Target:
    """A target ratio: met when value <op> limit."""

    description: str
    value: float
    limit: float
    op: str  # ">=" or "<="
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit


def report(name: str, rows: list[dict[str, Any]], targets: list[Target], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print a table and the targets, write bench/results/<name>.json, return the record."""
    print(f"\n## {name}")
    if rows:
        columns = list(rows[0])
        widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for row in rows:
            print("  ".join(_fmt(row[c]).ljust(w) for c, w in zip(columns, widths)))
    for target in targets:
        verdict = "met" if target.met else "MISSED"
        print(f"target: {target.description}: {target.value:.3f}{target.unit} {target.op} {target.limit}{target.unit} -> {verdict}")
    record = {
        "benchmark": name,
        "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
        "targets": [{**asdict(t), "met": t.met} for t in targets],
        **(extra or {}),
    }
    _results_dir.mkdir(parents=True, exist_ok=True)
    (_results_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
