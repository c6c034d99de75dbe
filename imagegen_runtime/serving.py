"""What both servers share: build a grpc.aio server with health, reflection (v1
and v1alpha) and the one interceptor (request ids, auth, error mapping, logs,
metrics, tracing); run it until SIGTERM/SIGINT, then drain gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from imagegen.catalogue import MAX_MESSAGE_BYTES, MIN_PING_INTERVAL_SECONDS
from imagegen_runtime import reflection
from imagegen_runtime.interceptor import CallInterceptor

log = logging.getLogger(__name__)

# Clients ping every DEFAULT_KEEPALIVE_SECONDS, between calls too (clients/channels.py);
# a server refuses pings more frequent than MIN_PING_INTERVAL_SECONDS with GOAWAY
# too_many_pings, so it must stay below every client's keepalive time.
SERVER_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_SECONDS * 1000),
)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to register it: its full name and generated add_*_to_server."""

    name: str
    servicer: Any
    register: Callable[[Any, grpc.aio.Server], None]


class HealthServicer(health.aio.HealthServicer):
    """grpc_health's asyncio servicer, with the List method of grpc.health.v1's current
    version, which it leaves unimplemented: every registered name and its status."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)  # the base class keeps them there, and offers no reader
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # Observability (imagegen_runtime.telemetry): the metrics endpoint's port when one is
    # served, and what stop() closes once the server has drained (in order).
    metrics_port: int | None = None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The plaintext health-only server (start_server's health_address), if any.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for close in self.on_stop:
            await close()
        if self.health_server is not None:  # probes see NOT_SERVING until the drain ends
            await self.health_server.stop(None)


async def start_server(
    address: str,
    services: Sequence[ServiceBinding],
    *,
    enable_reflection: bool = True,
    interceptor: CallInterceptor | None = None,
    credentials: grpc.ServerCredentials | None = None,
    health_address: str | None = None,
) -> RunningServer:
    """Start serving on address ("host:port", port 0 picks a free one).

    interceptor is the server's one interceptor (imagegen_runtime.interceptor; by
    default one with no token, metrics or tracing, which still maps errors, gives
    request ids and logs); credentials, when given, make the port TLS instead of
    plaintext. health_address, when given, also serves the same health statuses (and
    reflection, nothing else) in plaintext there, for probes that cannot do TLS,
    through the same interceptor without its token check.
    """
    interceptor = interceptor or CallInterceptor()
    server = grpc.aio.server(interceptors=[interceptor], options=SERVER_OPTIONS)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in services:
        binding.register(binding.servicer, server)
    names = tuple(binding.name for binding in services)
    if enable_reflection:
        reflection.enable_server_reflection((*names, health.SERVICE_NAME), server)
    port = (
        server.add_secure_port(address, credentials) if credentials is not None else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    running = RunningServer(server, port, health_servicer, names)
    if health_address:
        try:
            running.health_server, running.health_port = await _start_health_server(
                health_address, health_servicer, interceptor.without_token()
            )
        except BaseException:
            await server.stop(None)
            raise
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return running


async def _start_health_server(
    address: str, servicer: health.aio.HealthServicer, interceptor: CallInterceptor
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[interceptor], options=SERVER_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    # Reflection of health alone, so grpcurl can check it too; it shows nothing of the API.
    reflection.enable_server_reflection((health.SERVICE_NAME,), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port


async def serve_until_signalled(*drains: tuple[RunningServer, float]) -> None:
    """Serve until SIGTERM or SIGINT; then, for each (server, grace), report
    NOT_SERVING, refuse new calls and give in-flight calls up to grace seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
        await asyncio.gather(*(running.stop(grace) for running, grace in drains))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
