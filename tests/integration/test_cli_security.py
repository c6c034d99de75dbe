"""The imagegen command against services that require TLS and tokens: separate
processes, real ports, the certificates and tokens as an operator passes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.pki import Pki, make_pki

pytestmark = pytest.mark.integration

PLANNER_TOKEN = "cli-planner-token-0123456789"
EXECUTOR_TOKEN = "cli-executor-token-0123456789"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def secured_up(tmp_path: Path, pki: Pki) -> Iterator[tuple[str, str]]:
    """`imagegen up` with mutual TLS and a token per service, from the environment."""
    env: dict[str, str] = {}
    for service, token in (("PLANNER", PLANNER_TOKEN), ("EXECUTOR", EXECUTOR_TOKEN)):
        env |= {
            f"{service}_TLS_CERT_FILE": str(pki.server_cert),
            f"{service}_TLS_KEY_FILE": str(pki.server_key),
            f"{service}_TLS_CLIENT_CA_FILE": str(pki.ca),
            f"{service}_AUTH_TOKEN": token,
        }
    with cli.imagegen_up(tmp_path, env) as addresses:
        yield addresses


def test_plan_execute_and_generate_with_tls_flags_and_token_variables(
    secured_up: tuple[str, str], pki: Pki, tmp_path: Path
) -> None:
    planner, executor = secured_up
    flags = ["--planner", planner, "--executor", executor,
             "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]  # fmt: skip
    tokens = {"IMAGEGEN_PLANNER_TOKEN": PLANNER_TOKEN, "IMAGEGEN_EXECUTOR_TOKEN": EXECUTOR_TOKEN}

    planned = cli.run(["plan", "A silver key", "--session-id", "cli-sec", "--mode", "offline", *flags], tmp_path, tokens)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    executed = cli.run(["execute", "-", *flags], tmp_path, tokens, stdin=planned.stdout)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    assert json.loads(executed.stdout)["plan"]["plan_id"] == json.loads(planned.stdout)["plan_id"]

    # the same through the environment instead of flags
    env = {**tokens, "IMAGEGEN_PLANNER": planner, "IMAGEGEN_EXECUTOR": executor, "IMAGEGEN_TLS_CA": str(pki.ca),
           "IMAGEGEN_TLS_CERT": str(pki.client_cert), "IMAGEGEN_TLS_KEY": str(pki.client_key)}  # fmt: skip
    generated = cli.run(["generate", "A silver key", "--session-id", "cli-sec", "--mode", "offline"], tmp_path, env)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert json.loads(generated.stdout)["reused"] is True

    # no planner token: refused, and said so
    refused = cli.run(["plan", "A silver key", "--session-id", "cli-sec", *flags], tmp_path,
                      {"IMAGEGEN_EXECUTOR_TOKEN": EXECUTOR_TOKEN, "IMAGEGEN_PLANNER_TOKEN": ""})  # fmt: skip
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert (error["code"], error["reason"]) == ("UNAUTHENTICATED", "MISSING_CREDENTIALS")
    assert PLANNER_TOKEN not in refused.stdout + refused.stderr
