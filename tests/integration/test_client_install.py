"""The project as others install it: a wheel built from this tree, in fresh venvs.

`pip install imagegen` (no extra) is what the game backend gets: the clients, the
contract and the `imagegen` command's plan/execute/generate, with no LLM, image,
storage or telemetry SDK. `imagegen[planner]` and `imagegen[executor]` are what the
two images install (deploy/docker/Dockerfile); each must run its service alone.
Packages come from pip's cache or the index, as for any user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from clients import AsyncImagegenClient
from tests.conftest import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# Modules only the services (or the web edge's extra, imagegen[web]) need: none may be
# importable with the base install.
SERVICE_ONLY_MODULES = (
    "openai", "minio", "PIL", "prometheus_client", "opentelemetry.sdk", "opentelemetry",
    "pythonjsonlogger", "grpc_health", "grpc_reflection", "starlette", "uvicorn",
)  # fmt: skip


def _env() -> dict[str, str]:
    """The caller's environment without what would point a venv at this tree or at other services."""
    return {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "IMAGEGEN_", "PLANNER_", "EXECUTOR_", "OTEL_"))
    }  # fmt: skip


def _run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}{result.stderr}"
    return result


def _venv(path: Path, requirement: str) -> Path:
    """A fresh venv with `requirement` installed by this venv's pip (no pip inside, so it is made
    in a few milliseconds; no bytecode compiled ahead, which halves the install); returns its python."""
    _run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent)
    python = path / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile", requirement,
         cwd=path.parent)  # fmt: skip
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built the way pip builds it for a user (isolated, with the
    build-system's setuptools), from a copy of what it ships, so no build/ lands in the tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        re.split(r"[.*]", p)[0] for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    ignore = shutil.ignore_patterns("__pycache__", "*.py[co]")
    for name in packages:
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy(ROOT / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist"]
    _run(*pip_wheel, source, cwd=work)
    (built,) = (work / "dist").glob("imagegen-*.whl")
    return built


@pytest.fixture(scope="module")
def light_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv with the project installed without extras."""
    return _venv(tmp_path_factory.mktemp("light") / "venv", str(wheel))


async def _python(python: Path, code: str, *args: str, cwd: Path) -> dict:
    """Run code in that python (isolated: neither this tree nor PYTHON* variables on its path);
    its last stdout line is JSON."""
    process = await asyncio.create_subprocess_exec(
        str(python), "-I", "-c", code, *args, cwd=cwd, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout.decode().splitlines()[-1])


IMPORTABLE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.import_module(name).__file__
    except ModuleNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


async def test_the_base_install_has_the_clients_and_no_service_dependency(
    light_python: Path, tmp_path: Path
) -> None:
    found = await _python(
        light_python, IMPORTABLE, "clients", "imagegen.json_mapping", *SERVICE_ONLY_MODULES, cwd=tmp_path
    )
    venv = light_python.parent.parent
    assert Path(found["clients"]).is_relative_to(venv), found["clients"]
    assert Path(found["imagegen.json_mapping"]).is_relative_to(venv)
    importable = {name: path for name, path in found.items() if name in SERVICE_ONLY_MODULES and path}
    assert importable == {}, f"the base install brings services' dependencies: {importable}"


GENERATE = """
import json, sys
from clients import ImagegenClient
with ImagegenClient(sys.argv[1], sys.argv[2]) as imagegen:
    generation = imagegen.generate("A rusty longsword on a tavern table", session_id="light-install")
print(json.dumps(generation.payload))
"""


async def test_the_base_install_generates_against_real_services(
    light_python: Path, services: Services, tmp_path: Path
) -> None:
    payload = await _python(
        light_python, GENERATE, services.planner_target, services.executor_target, cwd=tmp_path
    )
    assert payload["reused"] is False and payload["provider"] == "offline"
    stored = services.store_dir / payload["storage_path"].partition("/")[2]
    assert stored.is_file() and stored.stat().st_size > 0


async def _imagegen(python: Path, *args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(python.parent / "imagegen"), *args, cwd=cwd, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_the_base_install_command_generates_and_asks_for_the_extras_to_run_services(
    light_python: Path, services: Services, tmp_path: Path
) -> None:
    targets = ["--planner", services.planner_target, "--executor", services.executor_target]
    generate = ["generate", "A map of the sunken temple", "--session-id", "light-cli", *targets]
    code, stdout, stderr = await _imagegen(light_python, *generate, cwd=tmp_path)
    assert code == 0, stderr
    assert json.loads(stdout)["image_type"] == "map"

    for command in ("up", "demo"):
        code, stdout, stderr = await _imagegen(light_python, command, cwd=tmp_path)
        assert code == 2 and stdout == "", stderr
        assert "install imagegen[planner,executor,web]" in stderr and "Traceback" not in stderr, stderr


# ---- each image's extra runs its service ----------------------------------------------


async def _start(
    python: Path, service: str, env: dict[str, str], log: Path
) -> tuple[asyncio.subprocess.Process, int]:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            str(python), "-I", "-m", f"{service}_service", cwd=log.parent, env={**_env(), **env},
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if found := re.search(r"listening on port (\d+)", log.read_text()):
            return process, int(found[1])
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    raise AssertionError(f"the {service} did not start:\n{log.read_text()}")


async def _stop(process: asyncio.subprocess.Process) -> int:
    with contextlib.suppress(ProcessLookupError):  # it may have exited already
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_each_service_runs_from_its_own_extra(wheel: Path, tmp_path: Path) -> None:
    planner_python, executor_python = await asyncio.gather(  # two pips at once: half the wait
        asyncio.to_thread(_venv, tmp_path / "planner", f"{wheel}[planner]"),
        asyncio.to_thread(_venv, tmp_path / "executor", f"{wheel}[executor]"),
    )
    found = await _python(planner_python, IMPORTABLE, "PIL", "minio", cwd=tmp_path)
    assert found == {"PIL": None, "minio": None}, "the planner's extra brings the executor's dependencies"

    planner, planner_port = await _start(planner_python, "planner", {
        "PLANNER_ADDRESS": "127.0.0.1:0", "PLANNER_METRICS_ADDRESS": "127.0.0.1:0",
        "PLANNER_SHUTDOWN_GRACE_SECONDS": "0",
    }, tmp_path / "planner.log")  # fmt: skip
    try:
        executor, executor_port = await _start(executor_python, "executor", {
            "EXECUTOR_ADDRESS": "127.0.0.1:0", "EXECUTOR_METRICS_ADDRESS": "127.0.0.1:0",
            "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "images"), "EXECUTOR_SHUTDOWN_GRACE_SECONDS": "0",
        }, tmp_path / "executor.log")  # fmt: skip
        try:
            async with AsyncImagegenClient(
                f"127.0.0.1:{planner_port}", f"127.0.0.1:{executor_port}"
            ) as client:
                generation = await client.generate("A dragon over the harbour", session_id="extras")
        finally:
            assert await _stop(executor) == 0, (tmp_path / "executor.log").read_text()
    finally:
        assert await _stop(planner) == 0, (tmp_path / "planner.log").read_text()
    assert generation.payload["provider"] == "offline"
    assert (tmp_path / "images" / generation.payload["storage_path"].partition("/")[2]).is_file()
