"""Prometheus metrics: a registry per server, served on its own HTTP port.

A registry of its own (not prometheus_client's global one) lets several
servers live in one process, as they do in the tests and in `imagegen up`,
each with its own counts. The RPC metrics follow go-grpc-prometheus's names,
so the usual gRPC dashboards work, with the code on the histogram too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from imagegen_runtime.telemetry.calls import FinishedCall

# From 5 ms to 5 min: a planner answers in milliseconds, an image can take minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and GC collectors (memory, CPU, open fds)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class RpcMetrics:
    """Calls handled and their latency, by service, method, type and final code. The
    labelled series of each (service, method, type, code) are looked up once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_service", "grpc_method", "grpc_type", "grpc_code")
        self.handled = Counter(
            "grpc_server_handled", "gRPC calls completed on the server, by final status code.",
            labels, registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds", "Time from a call's start to its final status, in seconds.",
            labels, buckets=LATENCY_BUCKETS, registry=registry,
        )
        self._series: dict[tuple[str, str, str, grpc.StatusCode], tuple[Any, Any]] = {}

    def call_finished(self, call: FinishedCall) -> None:
        key = call[:4]
        series = self._series.get(key)
        if series is None:
            labels = (call.service, call.method, call.kind, call.code.name)
            series = self._series[key] = (self.handled.labels(*labels), self.handling_seconds.labels(*labels))
        series[0].inc()
        series[1].observe(call.seconds)


class MetricsEndpoint:
    """prometheus_client's HTTP server on host:port (port 0 picks one), in a daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    @classmethod
    def start(cls, address: str, registry: CollectorRegistry) -> MetricsEndpoint:
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
        return cls(server, thread)

    async def aclose(self) -> None:
        # shutdown() waits for the serving loop's next poll (up to 0.5 s): not on the event loop.
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
