"""The imagegen command as a user runs it, for the CLI tests: a separate process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

IMAGEGEN = [sys.executable, "-m", "imagegen_cli"]


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """One imagegen command to its end, with env over this process's environment."""
    return subprocess.run(
        IMAGEGEN + args, cwd=cwd, env={**os.environ, **(env or {})}, input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@contextmanager
def imagegen_up(cwd: Path, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """`imagegen up` in cwd on free ports, storing images under cwd/store, with env
    over this process's environment: yields (planner, executor) as it prints them once
    both servers listen; then SIGTERM, which must end it with status 0."""
    env = {**os.environ, "EXECUTOR_LOCAL_STORE_DIR": str(cwd / "store"), **(env or {})}
    process = subprocess.Popen(
        IMAGEGEN + ["up", "--planner-address", "127.0.0.1:0", "--executor-address", "127.0.0.1:0",
                    "--web-address", "127.0.0.1:0"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(2)]  # printed once both servers listen
    addresses = [re.search(r"listening on (\S+)", line)[1] for line in lines]
    yield addresses[0], addresses[1]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
