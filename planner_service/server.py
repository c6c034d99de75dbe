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
from planner_service.planner import Planner
from planner_service.servicer import PlannerServicer

SERVICE_NAME = planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"].full_name

log = logging.getLogger("planner_service")


def build_planner(settings: PlannerSettings) -> Planner:
    return Planner(OfflinePlanningAgent(), STYLE_PRESETS)


async def create_server(settings: PlannerSettings, planner: Planner | None = None) -> RunningServer:
    """Start the planner's gRPC server; settings.address may use port 0."""
    servicer = PlannerServicer(planner or build_planner(settings))
    binding = ServiceBinding(
        SERVICE_NAME, servicer, planner_service_pb2_grpc.add_PlannerServiceServicer_to_server
    )
    return await start_server(settings.address, [binding], enable_reflection=settings.reflection)


async def serve(settings: PlannerSettings) -> None:
    running = await create_server(settings)
    log.info("planner listening on port %d", running.port)
    await serve_until_signalled((running, settings.shutdown_grace_seconds))


def main() -> None:
    settings = PlannerSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
