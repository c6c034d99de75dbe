"""The executor's Prometheus metrics: what the use cases report (ExecutionObserver,
DetachedRunObserver),
what each image provider does (ObservedProvider wraps one) and what the Valkey
coordination reports (its CoordinationObserver, and whether Valkey answers). Wiring
only: the domain never imports this module."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from executor_service.ports import NO_INPUTS, ExecutionEnd, ImageProvider, RenderedImage, RenderInputs, ReuseKind
from imagegen.catalogue import ProviderCapabilities
from imagegen.errors import ImagegenError
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen_runtime.telemetry.metrics import LATENCY_BUCKETS

# An execution runs from a stored image's fast path (a tenth of a second) to a slow
# provider's render under a full queue (minutes); past ten minutes is +Inf.
EXECUTION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.dedup_hits = Counter(
            "imagegen_executor_dedup_hits",
            "Executions answered without a render of their own, by how: stored (already in the store), "
            "in_flight (joined an identical render), request_id (a retried call).",
            ("kind",), registry=registry,
        )
        self.stored_bytes = Counter(
            "imagegen_executor_stored_bytes", "Bytes of rendered images written to the store.", registry=registry
        )
        self.stored_images = Counter(
            "imagegen_executor_stored_images", "Rendered images written to the store.", registry=registry
        )
        self.cost_micros = Counter(
            "imagegen_executor_cost_micros",
            "Estimated cost of rendered and stored images in USD micros (EXECUTOR_PRICE_TABLE and the "
            "usage the provider reported), by provider and model.",
            ("provider", "model"), registry=registry,
        )
        self.provider_seconds = Histogram(
            "imagegen_executor_provider_seconds",
            "Time one image provider took to render or fail, by provider and outcome (ok, error).",
            ("provider", "outcome"), buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.provider_errors = Counter(
            "imagegen_executor_provider_errors",
            "Failed renders by provider and error reason (PROVIDER_UNAVAILABLE, PROVIDER_RATE_LIMITED, ...).",
            ("provider", "reason"), registry=registry,
        )

        self.executions_started = Counter(
            "imagegen_executor_executions_started",
            "Detached executions (StartExecution) a worker of this replica took and ran.",
            registry=registry,
        )
        self.executions_ended = Counter(
            "imagegen_executor_executions_ended",
            "Detached executions this replica's workers ended, by final state (succeeded, failed, cancelled) "
            "and, for failed, the error's ErrorInfo reason (PROVIDER_UNAVAILABLE, CONTENT_REJECTED, ...).",
            ("state", "reason"), registry=registry,
        )
        self.execution_seconds = Histogram(
            "imagegen_executor_execution_seconds",
            "Time from a worker taking a detached execution (RUNNING) to its end, by final state.",
            ("state",), buckets=EXECUTION_BUCKETS, registry=registry,
        )
        self.executions_running = Gauge(
            "imagegen_executor_executions_running",
            "Detached executions running on this replica now.",
            registry=registry,
        )
        self.execution_takeovers = Counter(
            "imagegen_executor_execution_takeovers",
            "Detached executions this replica took over from a replica gone quiet (XAUTOCLAIM past the lease).",
            registry=registry,
        )

        self.coordination_up = Gauge(
            "imagegen_executor_coordination_up",
            "1 while Valkey (EXECUTOR_COORDINATION_URL) answers, so coordination is cluster-wide; "
            "0 while it does not (coordination is per process) or when none is configured.",
            registry=registry,
        )
        self.lease_waits = Counter(
            "imagegen_executor_lease_waits",
            "Renders that waited for another replica's render of the same image (its render lease).",
            registry=registry,
        )
        self.lease_takeovers = Counter(
            "imagegen_executor_lease_takeovers",
            "Render leases taken once the holder's expired with no end announced: a replica died or stalled mid-render.",
            registry=registry,
        )
        self.coordination_fallbacks = Counter(
            "imagegen_executor_coordination_fallbacks",
            "Coordination answered per process because Valkey did not answer, by operation "
            "(render_lease, provider_slot, pause_provider, request_record).",
            ("operation",), registry=registry,
        )

    # ExecutionObserver
    def reused(self, kind: ReuseKind) -> None:
        self.dedup_hits.labels(kind).inc()

    def stored(self, byte_size: int) -> None:
        self.stored_images.inc()
        self.stored_bytes.inc(byte_size)

    def cost(self, provider: str, model: str, cost_micros: int) -> None:
        self.cost_micros.labels(provider, model).inc(cost_micros)

    # DetachedRunObserver
    def execution_started(self) -> None:
        self.executions_started.inc()
        self.executions_running.inc()

    def execution_ended(self, state: ExecutionEnd, reason: str, seconds: float) -> None:
        self.executions_running.dec()
        self.executions_ended.labels(state, reason).inc()
        self.execution_seconds.labels(state).observe(seconds)

    def execution_abandoned(self) -> None:
        self.executions_running.dec()

    # ExecutionQueueObserver (executor_service.coordination.valkey_executions)
    def execution_taken_over(self) -> None:
        self.execution_takeovers.inc()

    def observed(self, provider: ImageProvider) -> ImageProvider:
        return ObservedProvider(provider, self)

    # Valkey's on_change
    def coordination_changed(self, up: bool) -> None:
        self.coordination_up.set(1 if up else 0)

    # CoordinationObserver (executor_service.coordination.valkey)
    def lease_waited(self) -> None:
        self.lease_waits.inc()

    def lease_taken_over(self) -> None:
        self.lease_takeovers.inc()

    def fell_back(self, operation: str) -> None:
        self.coordination_fallbacks.labels(operation).inc()


class ObservedProvider:
    """An ImageProvider that times every render and counts failures by reason."""

    def __init__(self, inner: ImageProvider, metrics: ExecutorMetrics) -> None:
        self.name = inner.name
        self._inner = inner
        self._metrics = metrics

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self._inner.capabilities(plan)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self._inner.mime_type(plan)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        started = time.perf_counter()
        try:
            image = await self._inner.render(plan, inputs)
        except asyncio.CancelledError:
            raise  # the caller left: not the provider's failure
        except Exception as exc:
            reason = exc.reason if isinstance(exc, ImagegenError) else "INTERNAL"
            self._metrics.provider_errors.labels(self.name, reason).inc()
            self._metrics.provider_seconds.labels(self.name, "error").observe(time.perf_counter() - started)
            raise
        self._metrics.provider_seconds.labels(self.name, "ok").observe(time.perf_counter() - started)
        return image

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()
