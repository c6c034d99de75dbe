"""The Dockerfile: hadolint-clean, builds from what .dockerignore lets in,
pins what it installs; its health check works against a real server."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imagegen_runtime.serving import RunningServer
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.deploy import checks

pytestmark = pytest.mark.integration

DOCKER = checks.REPO / "deploy/docker"


def test_hadolint_finds_nothing() -> None:
    result = checks.run(checks.hadolint())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint ignore" not in (checks.REPO / checks.DOCKERFILE).read_text()


def test_hadolint_catches_an_unpinned_base(tmp_path: Path) -> None:
    text = (checks.REPO / checks.DOCKERFILE).read_text().replace("python:3.11.14-slim-bookworm", "python", 1)
    (tmp_path / "Dockerfile").write_text(text)
    argv = checks.hadolint()
    result = checks.run([*argv[:-1], str(tmp_path / "Dockerfile")])
    assert result.returncode != 0 and "DL3006" in result.stdout


def test_base_images_are_pinned_to_a_patch_release() -> None:
    bases = re.findall(r"^FROM (\S+)", (checks.REPO / checks.DOCKERFILE).read_text(), re.M)
    external = [b for b in bases if ":" in b]
    assert external and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", b) for b in external)


def _copied_sources() -> list[str]:
    sources = []
    for line in (checks.REPO / checks.DOCKERFILE).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


def test_every_copied_path_gets_past_dockerignore() -> None:
    lines = (checks.REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for source in _copied_sources():
        path = source.rstrip("/")
        assert (checks.REPO / path).exists(), source
        assert any(path == a or path.startswith(a + "/") for a in allowed), f"{source} is ignored"


def test_the_image_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((checks.REPO / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {re.split(r"[.*]", pattern)[0] for pattern in includes}
    copied = {source.rstrip("/") for source in _copied_sources()}
    assert packages <= copied, f"not copied into the image: {packages - copied}"
    assert pyproject["project"]["readme"] in copied


def _service_requirements() -> list[Requirement]:
    """The base dependencies and those of the services' extras, self-references followed."""
    project = tomllib.loads((checks.REPO / "pyproject.toml").read_text())["project"]
    extras, found = project["optional-dependencies"], list(map(Requirement, project["dependencies"]))
    pending, seen = ["planner", "executor"], set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in map(Requirement, extras[extra]):
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def test_constraints_pin_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for dependency in _service_requirements():
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{dependency.name} is not pinned in deploy/docker/constraints.txt"
        assert dependency.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {dependency}"
    assert {"openai", "minio", "pillow", "grpcio-health-checking"} <= {canonicalize_name(d.name) for d in _service_requirements()}


# ---- the container health check ---------------------------------------------------


async def _healthcheck(service: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DOCKER / "healthcheck.py"), service,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(checks.REPO), **env},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    return process.returncode or 0, stderr.decode()


@pytest.fixture
async def planner() -> RunningServer:
    running = await create_planner_server(PlannerSettings(address="127.0.0.1:0", mode="offline"))
    yield running
    await running.server.stop(None)


async def test_healthcheck_passes_while_serving_and_fails_when_draining(planner: RunningServer) -> None:
    env = {"PLANNER_ADDRESS": f"0.0.0.0:{planner.port}", "PLANNER_MODE": "offline"}
    assert await _healthcheck("planner", env) == (0, "")
    await planner.health.enter_graceful_shutdown()
    code, stderr = await _healthcheck("planner", env)
    assert code == 1 and "NOT_SERVING" in stderr


async def test_healthcheck_fails_when_nothing_listens(planner: RunningServer) -> None:
    port = planner.port
    await planner.server.stop(None)
    code, stderr = await _healthcheck("executor", {"EXECUTOR_ADDRESS": f"127.0.0.1:{port}"})
    assert code == 1 and "UNAVAILABLE" in stderr


def test_healthcheck_targets_loopback_for_wildcard_addresses() -> None:
    sys.path.insert(0, str(DOCKER))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(DOCKER))
    assert healthcheck.target_for("0.0.0.0:50051") == "127.0.0.1:50051"
    assert healthcheck.target_for("[::]:50052") == "127.0.0.1:50052"
    assert healthcheck.target_for("10.0.0.7:50052") == "10.0.0.7:50052"


async def test_healthcheck_uses_the_plaintext_health_port_of_a_tls_server(tmp_path: Path) -> None:
    from imagegen_runtime.security import ServerSecurity
    from tests.support.pki import make_pki

    pki = make_pki(tmp_path)
    security = ServerSecurity(
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), health_address="127.0.0.1:0"
    )
    running = await create_planner_server(PlannerSettings(address="127.0.0.1:0", mode="offline", security=security))
    try:
        env = {
            "PLANNER_ADDRESS": f"0.0.0.0:{running.port}", "PLANNER_MODE": "offline",
            "PLANNER_TLS_CERT_FILE": str(pki.server_cert), "PLANNER_TLS_KEY_FILE": str(pki.server_key),
        }  # fmt: skip
        code, _ = await _healthcheck("planner", env)
        assert code == 1, "a plaintext check cannot pass against the TLS port"
        assert await _healthcheck("planner", {**env, "PLANNER_HEALTH_ADDRESS": f"0.0.0.0:{running.health_port}"}) == (0, "")
    finally:
        await running.stop(None)
