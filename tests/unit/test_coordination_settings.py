"""The executor's coordination settings, and the adapter the wiring builds from them."""

from __future__ import annotations

import pytest

from executor_service.bootstrap import build_coordination
from executor_service.config import ExecutorSettings
from executor_service.coordination.in_process import InProcessCoordination
from executor_service.coordination.valkey import ValkeyCoordination
from imagegen_runtime.settings import ConfigError


def test_coordination_is_in_process_with_no_provider_cap_by_default() -> None:
    settings = ExecutorSettings.from_env({})
    assert (settings.provider_concurrency, settings.lease_seconds, settings.request_ttl_seconds) == (0, 15.0, 86_400)
    assert not settings.coordination.enabled
    assert isinstance(build_coordination(settings), InProcessCoordination)


async def test_a_coordination_url_makes_it_valkey_with_the_settings_given() -> None:
    settings = ExecutorSettings.from_env({
        "EXECUTOR_COORDINATION_URL": "redis://:hunter2@valkey.internal:6379/0",
        "EXECUTOR_PROVIDER_CONCURRENCY": "4", "EXECUTOR_LEASE_SECONDS": "6", "EXECUTOR_REQUEST_TTL_SECONDS": "600",
    })
    assert (settings.provider_concurrency, settings.lease_seconds, settings.request_ttl_seconds) == (4, 6.0, 600)
    assert "hunter2" not in repr(settings)
    coordination = build_coordination(settings)  # connects at first use: nothing listens there
    try:
        assert isinstance(coordination, ValkeyCoordination)
    finally:
        await coordination.aclose()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXECUTOR_PROVIDER_CONCURRENCY", "-1"),
        ("EXECUTOR_PROVIDER_CONCURRENCY", "two"),
        ("EXECUTOR_LEASE_SECONDS", "0.5"),
        ("EXECUTOR_REQUEST_TTL_SECONDS", "0"),
    ],
)
def test_a_bad_coordination_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        ExecutorSettings.from_env({variable: value})
