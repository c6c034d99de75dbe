"""Render every kustomize target once per session, for all deploy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import checks


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for target in checks.TARGETS:
        result = checks.run(checks.render(target, str(out)))
        assert result.returncode == 0, f"{target} does not render:\n{result.stderr}"
    return out


@pytest.fixture(scope="session")
def manifests(rendered_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Rendered name (base.yaml, dev.yaml, prod.yaml) -> its objects."""
    return {
        name: [doc for doc in yaml.safe_load_all((rendered_dir / name).read_text()) if doc]
        for name in checks.TARGETS.values()
    }
