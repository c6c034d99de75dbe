"""Wiring: settings -> provider and store -> executor -> gRPC server. The only
module that chooses adapters."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.ports import ImageProvider, ObjectStore
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import OpenAIImageProvider
from executor_service.servicer import ExecutorServicer
from executor_service.stores.local_store import LocalObjectStore
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.serving import RunningServer, ServiceBinding, serve_until_signalled, start_server
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc

SERVICE_NAME = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name

log = logging.getLogger("executor_service")


def build_store(settings: ExecutorSettings) -> ObjectStore:
    """The configured store, ready to use (the bucket exists); raises if it cannot be used."""
    if settings.store == "minio":
        store: LocalObjectStore | MinioObjectStore = MinioObjectStore.connect(
            endpoint=settings.minio_endpoint,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key,
            bucket=settings.bucket,
            secure=settings.minio_secure,
            region=settings.minio_region,
            url_expiry=dt.timedelta(seconds=settings.url_expiry_seconds),
            timeout=settings.minio_timeout_seconds,
            retries=settings.minio_max_retries,
        )
    else:
        store = LocalObjectStore(settings.local_store_dir, settings.bucket)
    store.ensure_ready()
    return store


def build_provider(settings: ExecutorSettings) -> ImageProvider:
    """The configured providers in their fallback order; one provider needs no chain."""
    providers: list[ImageProvider] = []
    for name in settings.providers:
        if name == "openai":
            providers.append(
                OpenAIImageProvider.connect(
                    base_url=settings.openai_base_url,
                    api_key=settings.openai_api_key,
                    timeout=settings.openai_timeout_seconds,
                    max_retries=settings.openai_max_retries,
                    model=settings.openai_model,
                    quality=settings.openai_quality,
                    output_format=settings.output_format,
                    moderation=settings.openai_moderation,
                )
            )
        else:
            providers.append(OfflineRenderer(settings.output_format))
    return providers[0] if len(providers) == 1 else ProviderChain(providers)


def build_executor(settings: ExecutorSettings) -> Executor:
    return Executor(build_provider(settings), build_store(settings), settings.public_base_url)


async def create_server(settings: ExecutorSettings, executor: Executor | None = None) -> RunningServer:
    """Start the executor's gRPC server; settings.address may use port 0."""
    servicer = ExecutorServicer(executor or build_executor(settings))
    binding = ServiceBinding(
        SERVICE_NAME, servicer, executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server
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


async def serve(settings: ExecutorSettings) -> None:
    executor = build_executor(settings)
    running = await create_server(settings, executor)
    log.info(
        "executor listening on port %d (providers %s, store %s)",
        running.port, ",".join(settings.providers), settings.store,
    )
    try:
        await serve_until_signalled((running, settings.shutdown_grace_seconds))
    finally:
        await executor.aclose()


def main() -> None:
    settings = ExecutorSettings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(settings))
