"""What both services' bootstraps wire alike: telemetry, TLS and the bearer token
around one gRPC service, closing what the server owns once it has drained, and the
body of `python -m <service>` (settings, logging, serving until a signal).

Each service's bootstrap keeps what is its own: building its planner or executor
and their adapters (served), and what to start once the server is up (the
executor's store watch).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from imagegen_runtime.interceptor import CallInterceptor
from imagegen_runtime.server_settings import ServerSettings
from imagegen_runtime.serving import RunningServer, ServiceBinding, serve_until_signalled, start_server
from imagegen_runtime.settings import ConfigError
from imagegen_runtime.telemetry.logs import configure_logging
from imagegen_runtime.telemetry.server_telemetry import ServerTelemetry

# How a service stops on settings it cannot use: one line on stderr, and this status.
CONFIG_ERROR_EXIT_STATUS = 2

S = TypeVar("S", bound=ServerSettings)  # PlannerSettings, ExecutorSettings


@dataclass(frozen=True)
class Served:
    """What a service puts behind the shared server: its binding; close, what the
    server owns and closes last on stop (None when the caller owns it); started,
    anything to start once the server is up, before create returns."""

    binding: ServiceBinding
    close: Callable[[], Awaitable[None]] | None = None
    started: Callable[[RunningServer], Awaitable[None]] | None = None


async def start_service(
    settings: ServerSettings,
    serve: Callable[[CollectorRegistry], Served],
    *,
    tracer_provider: TracerProvider | None = None,
) -> RunningServer:
    """Start one service's gRPC server as settings say (settings.address may use port 0):
    its one interceptor (the RPC metrics, tracing, the bearer token); TLS credentials;
    reflection; the plaintext health port; the metrics endpoint. serve builds what is served, given the registry
    for its metrics. tracer_provider overrides the configured tracing.

    If anything fails after serve, what it built is closed before the error goes on.
    """
    telemetry = ServerTelemetry(settings.telemetry, tracer_provider=tracer_provider)
    served = serve(telemetry.registry)
    security = settings.security
    try:
        running = await start_server(
            settings.address,
            [served.binding],
            enable_reflection=settings.reflection,
            interceptor=CallInterceptor(
                observers=telemetry.observers,
                token_check=security.token_check(),
                tracer_provider=telemetry.tracer_provider,
            ),
            credentials=security.server_credentials(),
            health_address=security.health_address or None,
        )
    except BaseException:
        await _close(served)
        raise
    try:
        telemetry.attach(running)
        if served.started is not None:
            await served.started(running)
    except BaseException:
        try:
            await running.stop(None)
        finally:
            await _close(served)
        raise
    if served.close is not None:
        running.on_stop.append(served.close)
    return running


async def _close(served: Served) -> None:
    if served.close is not None:
        await served.close()


def run_service(
    name: str,
    settings_from_env: Callable[[], S],
    create_server: Callable[[S], Awaitable[RunningServer]],
    describe: Callable[[S], str],
    log: logging.Logger,
) -> None:
    """`python -m <name>_service`: read the settings, configure logging, serve until
    SIGTERM/SIGINT, then drain for settings.shutdown_grace_seconds. Settings it cannot
    use (a ConfigError, which names the variable) stop it with one line on stderr,
    "<name>: <problem>", and exit status 2; no traceback."""
    try:
        settings = settings_from_env()
        configure_logging(settings.log_level, settings.telemetry.log_format)
        asyncio.run(_serve(name, settings, create_server, describe, log))
    except ConfigError as error:
        print(f"{name}: {error}", file=sys.stderr, flush=True)
        sys.exit(CONFIG_ERROR_EXIT_STATUS)


async def _serve(
    name: str,
    settings: S,
    create_server: Callable[[S], Awaitable[RunningServer]],
    describe: Callable[[S], str],
    log: logging.Logger,
) -> None:
    running = await create_server(settings)
    log.info(
        "%s listening on port %d; %s",
        name, running.port, describe(settings),
        extra={"port": running.port, "metrics_port": running.metrics_port},
    )
    await serve_until_signalled((running, settings.shutdown_grace_seconds))
