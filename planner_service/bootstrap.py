"""Wiring: settings -> adapters -> planner -> gRPC server. The only module that
chooses adapters."""

from __future__ import annotations

import logging

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from imagegen import catalogue
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from imagegen_runtime.bootstrap import Served, run_service, start_service
from imagegen_runtime.serving import RunningServer, ServiceBinding
from planner_service.config import PlannerSettings
from planner_service.metrics import PlannerMetrics
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.plan_cache import PlanCache
from planner_service.planning import Planner
from planner_service.ports import PlanningAgent
from planner_service.servicer import PlannerServicer

SERVICE_NAME = planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name

log = logging.getLogger("planner_service")


def build_llm_agent(settings: PlannerSettings) -> PlanningAgent | None:
    """The LLM agent when one is configured; it connects on first use. Built even when
    PLANNER_MODE is offline, which is only the default: a request may ask for the LLM."""
    if not settings.llm_configured:
        return None
    # Imported here so an offline planner never loads the SDK.
    from planner_service.openai_agent import OpenAIPlanningAgent

    return OpenAIPlanningAgent.connect(
        base_url=settings.effective_llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        styles=catalogue.STYLES,
        path=settings.llm_path,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        seed=settings.llm_seed,
    )


def build_planner(
    settings: PlannerSettings, llm: PlanningAgent | None = None, metrics: PlannerMetrics | None = None
) -> Planner:
    """llm overrides the configured LLM agent (tests pass one built on their own client).
    With metrics, LLM requests are timed and fallbacks counted."""
    llm = llm or build_llm_agent(settings)
    if llm is not None and metrics is not None:
        llm = metrics.observed(llm)
    return Planner(
        OfflinePlanningAgent(),
        catalogue.STYLES,
        llm=llm,
        mode=settings.mode,
        fallback=settings.fallback,
        cache=PlanCache(settings.cache_size, settings.cache_ttl_seconds),
        observer=metrics,
    )


async def create_server(
    settings: PlannerSettings, planner: Planner | None = None, *, tracer_provider: TracerProvider | None = None
) -> RunningServer:
    """Start the planner's gRPC server; settings.address may use port 0. Without a
    planner it builds one from settings (with metrics) and closes it on stop; one
    passed in is the caller's to close. tracer_provider overrides the configured tracing.
    Health is SERVING while the server runs: the planner needs nothing to plan
    (docs/operations.md)."""

    def serve(registry: CollectorRegistry) -> Served:
        served = planner or build_planner(settings, metrics=PlannerMetrics(registry))
        binding = ServiceBinding(
            SERVICE_NAME, PlannerServicer(served), planner_service_pb2_grpc.add_PlannerServiceServicer_to_server
        )
        return Served(binding, close=served.aclose if planner is None else None)

    return await start_service(settings, serve, tracer_provider=tracer_provider)


def _describe(settings: PlannerSettings) -> str:
    """The start-up log line, after the port."""
    if not settings.llm_configured:
        return f"planning mode {settings.mode}, no LLM configured"
    return f"planning mode {settings.mode}, LLM {settings.llm_model} via the {settings.llm_path} path"


def main() -> None:
    run_service("planner", PlannerSettings.from_env, create_server, _describe, log)
