"""imagegen_runtime.bootstrap: what the shared start-up closes when a step fails, and
how `python -m <service>` stops on settings it cannot use (the services' own
subprocess runs are in tests/integration/test_service_main.py)."""

from __future__ import annotations

import logging
import socket

import pytest

from imagegen_runtime.bootstrap import CONFIG_ERROR_EXIT_STATUS, Served, run_service, start_service
from imagegen_runtime.server_settings import ServerSettings
from imagegen_runtime.serving import RunningServer, ServiceBinding
from imagegen_runtime.settings import ConfigError


class Owned:
    """Something a server owns: it records being closed."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.closed = 0
        self.events = [] if events is None else events

    async def aclose(self) -> None:
        self.closed += 1
        self.events.append("owned closed")


def served(owned: Owned, started: object = None) -> Served:
    binding = ServiceBinding("test.v1.TestService", object(), lambda servicer, server: None)
    return Served(binding, close=owned.aclose, started=started)  # type: ignore[arg-type]


async def test_what_the_server_owns_is_closed_last_on_stop() -> None:
    events: list[str] = []
    owned = Owned(events)

    async def started(running: RunningServer) -> None:
        async def stop_watching() -> None:
            events.append("watch stopped")

        running.on_stop.append(stop_watching)

    running = await start_service(ServerSettings(), lambda registry: served(owned, started))
    assert running.port and events == []
    await running.stop(None)
    assert events == ["watch stopped", "owned closed"]


async def test_what_serve_built_is_closed_when_the_server_cannot_start() -> None:
    owned = Owned()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises((OSError, RuntimeError)):
            await start_service(ServerSettings(address=address), lambda registry: served(owned))
    assert owned.closed == 1


async def test_a_failing_start_step_stops_the_server_and_closes_what_it_owns() -> None:
    owned, seen = Owned(), []

    async def started(running: RunningServer) -> None:
        seen.append(running)
        raise RuntimeError("the watch cannot start")

    with pytest.raises(RuntimeError, match="the watch cannot start"):
        await start_service(ServerSettings(), lambda registry: served(owned, started))
    assert owned.closed == 1 and len(seen) == 1


def test_a_config_error_stops_with_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def settings_from_env() -> ServerSettings:
        raise ConfigError("TEST_TIMEOUT_SECONDS='abc': expected a number")

    with pytest.raises(SystemExit) as exited:
        run_service("test", settings_from_env, None, None, logging.getLogger("test"))  # type: ignore[arg-type]
    assert exited.value.code == CONFIG_ERROR_EXIT_STATUS
    assert capsys.readouterr().err == "test: TEST_TIMEOUT_SECONDS='abc': expected a number\n"
