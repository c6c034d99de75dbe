"""The security settings: what a bad deployment gets told, and that secrets stay out of it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from executor_service.config import ExecutorSettings
from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.settings import ConfigError
from planner_service.config import PlannerSettings
from tests.support.pki import Pki, make_pki

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_both_services_read_their_own_security_block(pki: Pki) -> None:
    env = {
        "PLANNER_TLS_CERT_FILE": str(pki.server_cert),
        "PLANNER_TLS_KEY_FILE": str(pki.server_key),
        "PLANNER_TLS_CLIENT_CA_FILE": str(pki.ca),
        "PLANNER_AUTH_TOKEN": TOKEN,
        "PLANNER_HEALTH_ADDRESS": "0.0.0.0:50061",
        "EXECUTOR_AUTH_TOKEN": TOKEN[::-1],
    }
    planner = PlannerSettings.from_env(env).security
    executor = ExecutorSettings.from_env(env).security
    assert (planner.tls, planner.mutual_tls, planner.auth_token, planner.health_address) == (
        True, True, TOKEN, "0.0.0.0:50061",
    )  # fmt: skip
    assert (executor.tls, executor.auth_token, executor.health_address) == (False, TOKEN[::-1], "")
    assert isinstance(planner.server_credentials(), grpc.ServerCredentials)
    assert executor.server_credentials() is None and executor.token_check() is not None
    assert ServerSecurity().token_check() is None


def test_nothing_set_means_plaintext_and_no_auth() -> None:
    security = PlannerSettings.from_env({}).security
    assert (security.tls, security.auth_token, security.server_credentials(), security.token_check()) == (
        False, "", None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PLANNER_TLS_CERT_FILE": "c.pem"}, "set both PLANNER_TLS_CERT_FILE and PLANNER_TLS_KEY_FILE"),
        ({"PLANNER_TLS_KEY_FILE": "k.pem"}, "set both PLANNER_TLS_CERT_FILE and PLANNER_TLS_KEY_FILE"),
        ({"PLANNER_TLS_CLIENT_CA_FILE": "ca.pem"}, "PLANNER_TLS_CLIENT_CA_FILE (mutual TLS) needs PLANNER_TLS_CERT_FILE"),
        ({"PLANNER_AUTH_TOKEN": "short"}, "PLANNER_AUTH_TOKEN: expected at least 16 characters"),
        ({"PLANNER_AUTH_TOKEN": "has a space in it, 0123456789"}, "PLANNER_AUTH_TOKEN: expected visible ASCII"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        PlannerSettings.from_env(env)
    assert message in str(refused.value)
    assert env.get("PLANNER_AUTH_TOKEN", "\0") not in str(refused.value)  # a token is never echoed


@pytest.mark.parametrize(
    ("variable", "broken", "message"),
    [
        ("EXECUTOR_TLS_CERT_FILE", "missing", "cannot read it"),
        ("EXECUTOR_TLS_KEY_FILE", "missing", "cannot read it"),
        ("EXECUTOR_TLS_CLIENT_CA_FILE", "missing", "cannot read it"),
        ("EXECUTOR_TLS_CERT_FILE", "not-pem", "expected a PEM file with a certificate"),
        ("EXECUTOR_TLS_KEY_FILE", "not-pem", "expected a PEM file with a private key"),
        ("EXECUTOR_TLS_CLIENT_CA_FILE", "not-pem", "expected a PEM file with a certificate"),
        ("EXECUTOR_TLS_KEY_FILE", "other-key", "EXECUTOR_TLS_KEY_FILE does not match EXECUTOR_TLS_CERT_FILE"),
    ],
)
def test_bad_files_stop_the_start_naming_the_variable(
    pki: Pki, tmp_path: Path, variable: str, broken: str, message: str
) -> None:
    env = {
        "EXECUTOR_TLS_CERT_FILE": str(pki.server_cert),
        "EXECUTOR_TLS_KEY_FILE": str(pki.server_key),
        "EXECUTOR_TLS_CLIENT_CA_FILE": str(pki.ca),
    }
    bad = {"missing": tmp_path / "nowhere.pem", "not-pem": tmp_path / "junk.pem", "other-key": pki.client_key}[broken]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    env[variable] = str(bad)
    security = ExecutorSettings.from_env(env).security  # the files are read at start, not here
    with pytest.raises(ConfigError) as refused:
        security.server_credentials()
    assert str(refused.value).startswith(variable) and message in str(refused.value)


def test_the_token_is_not_in_the_settings_repr() -> None:
    settings = PlannerSettings.from_env({"PLANNER_AUTH_TOKEN": TOKEN})
    assert settings.security.auth_token == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
