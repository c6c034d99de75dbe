"""Wiring: settings -> adapters -> planner -> gRPC server. The only module that
chooses adapters."""

from __future__ import annotations

import asyncio
import logging

from imagegen.serving import RunningServer, ServiceBinding, serve_until_signalled, start_server
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from planner_service.config import PlannerSettings
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.offline_planner import STYLE_PRESETS
from planner_service.plan_cache import PlanCache
from planner_service.planner import Planner
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


def build_planner(settings: PlannerSettings, llm: PlanningAgent | None = None) -> Planner:
    """llm overrides the configured LLM agent (tests pass one built on their own client)."""
    return Planner(
        OfflinePlanningAgent(),
        STYLE_PRESETS,
        llm=llm or build_llm_agent(settings),
        mode=settings.mode,
        fallback=settings.fallback,
        cache=PlanCache(settings.cache_size, settings.cache_ttl_seconds),
    )


async def create_server(settings: PlannerSettings, planner: Planner | None = None) -> RunningServer:
    """Start the planner's gRPC server; settings.address may use port 0."""
    servicer = PlannerServicer(planner or build_planner(settings))
    binding = ServiceBinding(
        SERVICE_NAME, servicer, planner_service_pb2_grpc.add_PlannerServiceServicer_to_server
    )
    security = settings.security
    return await start_server(
        settings.address,
        [binding],
        enable_reflection=settings.reflection,
        interceptors=security.interceptors(),
        credentials=security.server_credentials(),
        health_address=security.health_address or None,
    )


async def serve(settings: PlannerSettings) -> None:
    planner = build_planner(settings)
    running = await create_server(settings, planner)
    log.info(
        "planner listening on port %d; planning mode %s, %s",
        running.port,
        settings.mode,
        f"LLM {settings.llm_model} via the {settings.llm_path} path" if settings.llm_configured else "no LLM configured",
    )
    try:
        await serve_until_signalled((running, settings.shutdown_grace_seconds))
    finally:
        await planner.aclose()


def main() -> None:
    settings = PlannerSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
