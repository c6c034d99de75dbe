"""docs/deploy.md shows the commands the checks run, verbatim."""

from __future__ import annotations

import pytest

from tests.deploy import checks

pytestmark = pytest.mark.integration


def _commands() -> list[list[str]]:
    return [
        *(checks.render(target) for target in checks.TARGETS),
        *(checks.validate(name) for name in checks.TARGETS.values()),
        checks.checkov(),
        checks.hadolint(),
        checks.compose_config(),
    ]


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[:3]))
def test_docs_show_the_command_the_check_runs(argv: list[str]) -> None:
    lines = {line.strip() for line in (checks.REPO / "docs/deploy.md").read_text().splitlines()}
    assert checks.documented(argv) in lines


def test_docs_state_the_kubernetes_versions() -> None:
    docs = (checks.REPO / "docs/deploy.md").read_text()
    for version in checks.KUBERNETES_VERSIONS:
        assert version.rsplit(".", 1)[0] in docs, f"docs/deploy.md does not name Kubernetes {version}"
