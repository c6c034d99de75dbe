"""The executor's Prometheus metrics: what the use case reports (ExecutionObserver)
and what each image provider does (ObservedProvider wraps one). Wiring only:
the domain never imports this module."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Histogram

from executor_service.ports import ImageProvider, RenderedImage, ReuseKind
from imagegen.errors import ImagegenError
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen_runtime.telemetry.metrics import LATENCY_BUCKETS


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

    # ExecutionObserver
    def reused(self, kind: ReuseKind) -> None:
        self.dedup_hits.labels(kind).inc()

    def stored(self, byte_size: int) -> None:
        self.stored_images.inc()
        self.stored_bytes.inc(byte_size)

    def observed(self, provider: ImageProvider) -> ImageProvider:
        return ObservedProvider(provider, self)


class ObservedProvider:
    """An ImageProvider that times every render and counts failures by reason."""

    def __init__(self, inner: ImageProvider, metrics: ExecutorMetrics) -> None:
        self.name = inner.name
        self._inner = inner
        self._metrics = metrics

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self._inner.mime_type(plan)

    async def render(self, plan: ImageGenerationPlan) -> RenderedImage:
        started = time.perf_counter()
        try:
            image = await self._inner.render(plan)
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
