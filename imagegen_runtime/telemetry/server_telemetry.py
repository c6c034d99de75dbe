"""What a server's telemetry settings start: a metrics registry and the RPC metrics
(an observer of the server's interceptor), the tracer provider, the metrics
endpoint, and their closing."""

from __future__ import annotations

from opentelemetry.trace import TracerProvider

from imagegen_runtime.serving import RunningServer
from imagegen_runtime.telemetry.calls import CallObserver
from imagegen_runtime.telemetry.metrics import MetricsEndpoint, RpcMetrics, new_registry
from imagegen_runtime.telemetry.settings import TelemetrySettings
from imagegen_runtime.telemetry.tracing import otlp_tracer_provider


class ServerTelemetry:
    def __init__(self, settings: TelemetrySettings, *, tracer_provider: TracerProvider | None = None) -> None:
        """tracer_provider overrides the settings' exporter (tests pass an in-memory one)."""
        self._settings = settings
        self.registry = new_registry()
        self._rpc = RpcMetrics(self.registry)
        self._owns_provider = tracer_provider is None and bool(settings.tracing_endpoint)
        self.tracer_provider = tracer_provider or (
            otlp_tracer_provider(settings.service_name, settings.tracing_endpoint) if self._owns_provider else None
        )

    @property
    def observers(self) -> tuple[CallObserver, ...]:
        """What the server's interceptor tells of each finished call: the RPC metrics."""
        return (self._rpc,)

    def attach(self, running: RunningServer) -> None:
        """Serve the metrics (when an address is set) and close it all once the server has stopped."""
        if self._settings.metrics_address:
            endpoint = MetricsEndpoint.start(self._settings.metrics_address, self.registry)
            running.metrics_port = endpoint.port
            running.on_stop.append(endpoint.aclose)
        if self._owns_provider:
            running.on_stop.append(self._flush_traces)

    async def _flush_traces(self) -> None:
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown is not None:
            shutdown()  # exports what is batched; bounded by the exporter's timeout
