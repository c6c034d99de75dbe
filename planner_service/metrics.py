"""The planner's Prometheus metrics: what the use case reports (PlanningObserver)
and what the LLM does (ObservedAgent wraps the LLM agent). Wiring only: the
domain never imports this module."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from imagegen.errors import ImagegenError
from imagegen_runtime.telemetry.metrics import LATENCY_BUCKETS
from planner_service.ports import DraftUnusable, PlanDraft, PlanningAgent, PlanRequest, Repair


class PlannerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.llm_fallbacks = Counter(
            "imagegen_planner_llm_fallbacks",
            "Plans made offline because the LLM could not plan, by reason (LLM_UNAVAILABLE, LLM_OUTPUT_INVALID).",
            ("reason",), registry=registry,
        )
        self.llm_seconds = Histogram(
            "imagegen_planner_llm_seconds",
            "Time one LLM request (a draft or a repair) took, by model and outcome (ok, unusable, error).",
            ("model", "outcome"), buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.llm_errors = Counter(
            "imagegen_planner_llm_errors",
            "Failed LLM requests by model and reason (LLM_UNAVAILABLE, LLM_RATE_LIMITED, LLM_NOT_USABLE, ...).",
            ("model", "reason"), registry=registry,
        )
        self._registry = registry
        self.coordination_up: Gauge | None = None  # only with Valkey (coordination_changed)

    # PlanningObserver
    def llm_fell_back(self, reason: str) -> None:
        self.llm_fallbacks.labels(reason).inc()

    # Valkey's on_change (imagegen_runtime.valkey): registered on first use, so a planner
    # without PLANNER_COORDINATION_URL exports no gauge rather than a misleading 0.
    def coordination_changed(self, up: bool) -> None:
        if self.coordination_up is None:
            self.coordination_up = Gauge(
                "imagegen_planner_coordination_up",
                "1 while Valkey answers and plans are shared across replicas; 0 while this planner "
                "plans per process because it does not.",
                registry=self._registry,
            )
        self.coordination_up.set(1 if up else 0)

    def observed(self, agent: PlanningAgent) -> PlanningAgent:
        return ObservedAgent(agent, self)


class ObservedAgent:
    """A PlanningAgent that times every draft and counts failures by reason."""

    def __init__(self, inner: PlanningAgent, metrics: PlannerMetrics) -> None:
        self.name = inner.name
        self.model = inner.model
        self._inner = inner
        self._metrics = metrics

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        started = time.perf_counter()
        outcome = "error"
        try:
            draft = await self._inner.draft(request, repair)
            outcome = "unusable" if draft.problems else "ok"
            return draft
        except asyncio.CancelledError:
            outcome = ""
            raise
        except DraftUnusable:
            outcome = "unusable"
            raise
        except Exception as exc:
            reason = exc.reason if isinstance(exc, ImagegenError) else "INTERNAL"
            self._metrics.llm_errors.labels(self.model, reason).inc()
            raise
        finally:
            if outcome:
                self._metrics.llm_seconds.labels(self.model, outcome).observe(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._inner.aclose()
