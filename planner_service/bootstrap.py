"""Wiring: settings -> adapters -> planner -> gRPC server. The only module that
chooses adapters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from imagegen import catalogue
from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from imagegen_runtime.bootstrap import Served, run_service, start_service
from imagegen_runtime.serving import RunningServer, ServiceBinding
from planner_service.config import PLAN_LOCK_MARGIN_SECONDS, PlannerSettings
from planner_service.coordination.in_process import InProcessPlans
from planner_service.metrics import PlannerMetrics
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.plan_cache import PlanCache
from planner_service.planning import Planner
from planner_service.ports import PlanCoordination, PlanningAgent
from planner_service.servicer import PlannerServicer

SERVICE_NAME = planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name
# The planner's namespace in a Valkey that other services and deployments may share.
VALKEY_PREFIX = "imagegen:planner"

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


def shares_plans(settings: PlannerSettings) -> bool:
    """Whether LLM plans are shared through Valkey: PLANNER_COORDINATION_URL is set, there
    is an LLM whose plans to share, and the cache is on (with a TTL of 0 nothing is kept)."""
    return settings.coordination.enabled and settings.llm_configured and settings.cache_ttl_seconds > 0


def build_plans(settings: PlannerSettings, metrics: PlannerMetrics | None = None) -> PlanCoordination:
    """Where the same request gets the same plan: Valkey, shared by every replica, when
    shares_plans; this process alone otherwise. With metrics, Valkey's state is the
    gauge imagegen_planner_coordination_up."""
    memory = PlanCache(settings.cache_size, settings.cache_ttl_seconds)
    if not shares_plans(settings):
        return InProcessPlans(memory)
    # Imported here so a planner without Valkey never loads the client (nor one without
    # an LLM the SDK, which call_budget's module imports).
    from imagegen_runtime.openai_client import call_budget
    from imagegen_runtime.valkey import Valkey
    from planner_service.coordination.valkey import ValkeyPlans

    coordination = settings.coordination
    on_change = metrics.coordination_changed if metrics is not None else (lambda up: None)
    on_change(True)  # what the client assumes until its first command says otherwise
    valkey = Valkey(
        coordination.url,
        prefix=VALKEY_PREFIX,
        password=coordination.password,
        timeout=coordination.timeout_seconds,
        on_change=on_change,
    )
    # A replica waits for another's plan as long as one planning can last in the worst
    # case: the draft and its repair, each with every retry after the longest Retry-After.
    longest_planning = 2 * call_budget(settings.llm_timeout_seconds, settings.llm_max_retries)
    return ValkeyPlans(
        valkey,
        ttl_seconds=settings.cache_ttl_seconds,
        lock_seconds=settings.plan_lock_seconds,
        wait_seconds=max(settings.plan_lock_seconds, longest_planning + PLAN_LOCK_MARGIN_SECONDS),
        memory=memory,
    )


def build_planner(
    settings: PlannerSettings,
    llm: PlanningAgent | None = None,
    metrics: PlannerMetrics | None = None,
    plans: PlanCoordination | None = None,
) -> Planner:
    """llm overrides the configured LLM agent (tests pass one built on their own client),
    plans the configured coordination (build_plans). With metrics, LLM requests are
    timed and fallbacks counted. The planner closes plans when it is closed."""
    llm = llm or build_llm_agent(settings)
    if llm is not None and metrics is not None:
        llm = metrics.observed(llm)
    return Planner(
        OfflinePlanningAgent(),
        catalogue.STYLES,
        llm=llm,
        mode=settings.mode,
        fallback=settings.fallback,
        plans=plans if plans is not None else build_plans(settings, metrics),
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
        plans: PlanCoordination | None = None
        served = planner
        if served is None:
            metrics = PlannerMetrics(registry)
            plans = build_plans(settings, metrics)
            served = build_planner(settings, metrics=metrics, plans=plans)
        binding = ServiceBinding(
            SERVICE_NAME, PlannerServicer(served), planner_service_pb2_grpc.add_PlannerServiceServicer_to_server
        )
        return Served(binding, close=served.aclose if planner is None else None, started=_pinging(plans))

    return await start_service(settings, serve, tracer_provider=tracer_provider)


def _pinging(plans: PlanCoordination | None) -> Callable[[RunningServer], Awaitable[None]] | None:
    """With Valkey, one ping once the server is up, so a Valkey that does not answer is
    logged (and the gauge says 0) at start rather than at the first request. It never
    stops the start: the planner serves per process until Valkey answers."""
    ping = getattr(plans, "ping", None)
    if ping is None:
        return None

    async def started(running: RunningServer) -> None:
        await ping()

    return started


def _describe(settings: PlannerSettings) -> str:
    """The start-up log line, after the port."""
    if not settings.llm_configured:
        return f"planning mode {settings.mode}, no LLM configured"
    shared = ""
    if shares_plans(settings):
        valkey = urlsplit(settings.coordination.url)  # where, without the password
        shared = f"; LLM plans shared through Valkey at {valkey.hostname}:{valkey.port or 6379}{valkey.path}"
    return f"planning mode {settings.mode}, LLM {settings.llm_model} via the {settings.llm_path} path{shared}"


def main() -> None:
    run_service("planner", PlannerSettings.from_env, create_server, _describe, log)
