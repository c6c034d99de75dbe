"""Wiring: settings -> adapters -> planner -> gRPC server. The only module that
chooses adapters."""

from __future__ import annotations

import asyncio
import logging

from opentelemetry.trace import TracerProvider

from imagegen_runtime.serving import RunningServer, ServiceBinding, serve_until_signalled, start_server
from imagegen_runtime.telemetry.logs import configure_logging
from imagegen_runtime.telemetry.server_telemetry import ServerTelemetry
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from planner_service.config import PlannerSettings
from planner_service.metrics import PlannerMetrics
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.offline_rules import STYLE_PRESETS
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
        styles=STYLE_PRESETS,
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
        STYLE_PRESETS,
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
    passed in is the caller's to close. tracer_provider overrides the configured tracing."""
    telemetry = ServerTelemetry(settings.telemetry, tracer_provider=tracer_provider)
    owned = planner is None
    planner = planner or build_planner(settings, metrics=PlannerMetrics(telemetry.registry))
    servicer = PlannerServicer(planner)
    binding = ServiceBinding(
        SERVICE_NAME, servicer, planner_service_pb2_grpc.add_PlannerServiceServicer_to_server
    )
    security = settings.security
    running = await start_server(
        settings.address,
        [binding],
        enable_reflection=settings.reflection,
        interceptors=[*telemetry.interceptors(), *security.interceptors()],
        credentials=security.server_credentials(),
        health_address=security.health_address or None,
    )
    await _observe(running, telemetry, planner if owned else None)
    return running


async def _observe(running: RunningServer, telemetry: ServerTelemetry, owned: Planner | None) -> None:
    """The metrics endpoint, and what stop() closes. Health is SERVING while the
    server runs: the planner needs nothing to plan (docs/operations.md)."""
    try:
        telemetry.attach(running)
    except BaseException:
        await running.stop(None)
        raise
    if owned is not None:
        running.on_stop.append(owned.aclose)


async def serve(settings: PlannerSettings) -> None:
    running = await create_server(settings)
    log.info(
        "planner listening on port %d; planning mode %s, %s",
        running.port,
        settings.mode,
        f"LLM {settings.llm_model} via the {settings.llm_path} path" if settings.llm_configured else "no LLM configured",
        extra={"port": running.port, "metrics_port": running.metrics_port},
    )
    await serve_until_signalled((running, settings.shutdown_grace_seconds))


def main() -> None:
    settings = PlannerSettings.from_env()
    configure_logging(settings.log_level, settings.telemetry.log_format)
    asyncio.run(serve(settings))
