"""`python -m bench [NAME ...] [--quick]`: run benchmarks, print tables, write bench/results/*.json."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from bench.harness import RESULTS_DIR, set_results_dir

BENCHMARKS = {
    "planner": "bench.bench_planner",
    "executor": "bench.bench_executor",
    "two_stage": "bench.bench_two_stage",
    "storage": "bench.bench_storage",
    "provider_memory": "bench.bench_provider_memory",
    "coordination": "bench.bench_coordination",
    "executions": "bench.bench_executions",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}; default: all")
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs: checks they work, not the figures")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    set_results_dir(args.out)
    missed = 0
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(BENCHMARKS[name])
        records = asyncio.run(module.run(quick=args.quick))
        for record in records if isinstance(records, list) else [records]:
            missed += sum(not t["met"] for t in record["targets"])
    print(f"\n{missed} target(s) missed" if missed else "\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
