"""Wiring: settings -> provider and store -> executor -> gRPC server. The only
module that chooses adapters."""

from __future__ import annotations

import datetime as dt
import logging

from grpc_health.v1 import health_pb2
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.metrics import ExecutorMetrics
from executor_service.ports import ImageProvider, ObjectStore
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import OpenAIImageProvider
from executor_service.servicer import ExecutorServicer
from executor_service.stores.local_store import LocalObjectStore
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc
from imagegen_runtime.bootstrap import Served, run_service, start_service
from imagegen_runtime.health import LIVENESS, DependencyWatch
from imagegen_runtime.serving import RunningServer, ServiceBinding

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


def build_provider(settings: ExecutorSettings, metrics: ExecutorMetrics | None = None) -> ImageProvider:
    """The configured providers in their fallback order; one provider needs no chain.
    With metrics, each provider is timed and its failures counted."""
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
    if metrics is not None:
        providers = [metrics.observed(provider) for provider in providers]
    return providers[0] if len(providers) == 1 else ProviderChain(providers)


def build_executor(settings: ExecutorSettings, metrics: ExecutorMetrics | None = None) -> Executor:
    return Executor(
        build_provider(settings, metrics), build_store(settings), settings.public_base_url, observer=metrics
    )


async def create_server(
    settings: ExecutorSettings, executor: Executor | None = None, *, tracer_provider: TracerProvider | None = None
) -> RunningServer:
    """Start the executor's gRPC server; settings.address may use port 0. Without an
    executor it builds one from settings (with metrics) and closes it on stop; one
    passed in is the caller's to close. tracer_provider overrides the configured tracing.
    Health follows the store (a DependencyWatch); liveness is SERVING while the server runs."""

    def serve(registry: CollectorRegistry) -> Served:
        served = executor or build_executor(settings, ExecutorMetrics(registry))
        binding = ServiceBinding(
            SERVICE_NAME, ExecutorServicer(served), executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server
        )

        async def watch_store(running: RunningServer) -> None:
            watch = DependencyWatch(
                running,
                served.check_store,
                what="the object store",
                interval=settings.health_interval_seconds,
                timeout=settings.health_timeout_seconds,
            )
            watch.start()
            running.on_stop.insert(0, watch.aclose)  # stopped first, before what it checks closes
            await running.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

        return Served(binding, close=served.aclose if executor is None else None, started=watch_store)

    return await start_service(settings, serve, tracer_provider=tracer_provider)


def _describe(settings: ExecutorSettings) -> str:
    """The start-up log line, after the port."""
    return f"providers {','.join(settings.providers)}, store {settings.store}"


def main() -> None:
    run_service("executor", ExecutorSettings.from_env, create_server, _describe, log)
