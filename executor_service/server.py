"""Wiring: settings -> provider and store -> executor -> gRPC server. The only
module that chooses adapters."""

from __future__ import annotations

import asyncio
import logging

from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.servicer import ExecutorServicer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.serving import RunningServer, ServiceBinding, serve_until_signalled, start_server
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc

SERVICE_NAME = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name

log = logging.getLogger("executor_service")


def build_executor(settings: ExecutorSettings) -> Executor:
    store = LocalObjectStore(settings.local_store_dir, settings.bucket)
    store.ensure_ready()
    return Executor(OfflineRenderer(), store, settings.public_base_url)


async def create_server(settings: ExecutorSettings, executor: Executor | None = None) -> RunningServer:
    """Start the executor's gRPC server; settings.address may use port 0."""
    servicer = ExecutorServicer(executor or build_executor(settings))
    binding = ServiceBinding(
        SERVICE_NAME, servicer, executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server
    )
    return await start_server(settings.address, [binding], enable_reflection=settings.reflection)


async def serve(settings: ExecutorSettings) -> None:
    running = await create_server(settings)
    log.info("executor listening on port %d", running.port)
    await serve_until_signalled((running, settings.shutdown_grace_seconds))


def main() -> None:
    settings = ExecutorSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
