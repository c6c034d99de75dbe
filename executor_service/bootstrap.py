"""Wiring: settings -> provider and store -> executor -> gRPC server. The only
module that chooses adapters."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from executor_service.config import ExecutorSettings
from executor_service.coordination.in_process import InProcessCoordination
from executor_service.coordination.valkey import ValkeyCoordination
from executor_service.coordination.valkey_executions import ValkeyExecutionQueue
from executor_service.coordination.in_process_executions import InProcessExecutionQueue
from executor_service.executions import Executions
from executor_service.executor import Executor
from executor_service.metrics import ExecutorMetrics
from executor_service.ports import ExecutionCoordination, ExecutionQueue, ImageProvider, ObjectStore
from executor_service.providers.chain import ProviderChain
from executor_service.providers.comfyui import ComfyUIProvider, Workflow
from executor_service.providers.google_images import GoogleImageProvider
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.providers.openai_images import OpenAIImageProvider
from executor_service.providers.verify import ImageLimits, VerifiedProvider
from executor_service.servicer import ExecutorServicer
from executor_service.stores.local_store import LocalObjectStore
from executor_service.stores.minio_store import MinioObjectStore
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc
from imagegen_runtime.settings import ConfigError
from imagegen_runtime.bootstrap import Served, run_service, start_service
from imagegen_runtime.error_mapping import status_message
from imagegen_runtime.health import LIVENESS, DependencyWatch
from imagegen_runtime.serving import RunningServer, ServiceBinding
from imagegen_runtime.valkey import Valkey

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
            public_endpoint=settings.minio_public_endpoint,
            public_secure=settings.minio_public_secure,
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
    Every provider's image is checked whole before anything can store it
    (providers/verify.py), so a broken one makes the chain fall back. With metrics,
    each provider is timed and its failures (a refused image included) counted."""
    limits = ImageLimits(max_bytes=settings.max_image_bytes)
    providers: list[ImageProvider] = []
    for name in settings.providers:
        if name == "openai":
            provider: ImageProvider = OpenAIImageProvider.connect(
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key,
                timeout=settings.openai_timeout_seconds,
                max_retries=settings.openai_max_retries,
                max_image_bytes=settings.max_image_bytes,
                model=settings.openai_model,
                quality=settings.openai_quality,
                output_format=settings.output_format,
                moderation=settings.openai_moderation,
            )
        elif name == "azure":
            provider = OpenAIImageProvider.connect_azure(
                endpoint=settings.azure_openai_endpoint,
                deployment=settings.azure_openai_deployment,
                api_version=settings.azure_openai_api_version,
                api_key=settings.azure_openai_api_key,
                token_provider=None if settings.azure_openai_api_key else _entra_token_provider(),
                timeout=settings.openai_timeout_seconds,
                max_retries=settings.openai_max_retries,
                max_image_bytes=settings.max_image_bytes,
                model=settings.azure_openai_model,
                quality=settings.openai_quality,
                output_format=settings.output_format,
                moderation=settings.openai_moderation,
            )
        elif name == "comfyui":
            try:
                workflow = Workflow.load(settings.comfyui_workflow)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"EXECUTOR_COMFYUI_WORKFLOW: {exc}") from None
            provider = ComfyUIProvider(
                url=settings.comfyui_url,
                workflow=workflow,
                checkpoint=settings.comfyui_checkpoint,
                negative_prompt=settings.comfyui_negative_prompt,
                request_timeout=settings.comfyui_request_timeout_seconds,
                render_timeout=settings.comfyui_timeout_seconds,
                max_image_bytes=settings.max_image_bytes,
            )
        elif name in ("gemini", "imagen"):
            provider = GoogleImageProvider.connect(
                kind=name,
                model=settings.gemini_model if name == "gemini" else settings.imagen_model,
                api_key=settings.google_api_key,
                vertex_project=settings.google_vertex_project,
                vertex_location=settings.google_vertex_location,
                base_url=settings.google_base_url,
                timeout=settings.google_timeout_seconds,
                max_retries=settings.google_max_retries,
                max_image_bytes=settings.max_image_bytes,
            )
        elif name == "offline":
            provider = OfflineRenderer(settings.output_format)
        else:
            raise ConfigError(f"EXECUTOR_PROVIDER: unknown provider {name!r}")
        providers.append(VerifiedProvider(provider, limits))
    if metrics is not None:
        providers = [metrics.observed(provider) for provider in providers]
    return providers[0] if len(providers) == 1 else ProviderChain(providers)


# The scope of a Microsoft Entra ID token for Azure OpenAI (learn.microsoft.com, "Azure
# OpenAI: Microsoft Entra ID authentication").
AZURE_COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"


def _entra_token_provider() -> Callable[[], Awaitable[str]]:
    """Bearer tokens for Azure OpenAI from azure-identity's DefaultAzureCredential
    (managed identity, workload identity, environment, Azure CLI...): the optional
    `azure` extra. ConfigError when it is not installed."""
    try:
        from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
    except ImportError:
        raise ConfigError(
            "EXECUTOR_PROVIDER includes azure without EXECUTOR_AZURE_OPENAI_API_KEY: signing in with "
            "Microsoft Entra ID needs azure-identity (pip install 'imagegen[executor,azure]')"
        ) from None
    return get_bearer_token_provider(DefaultAzureCredential(), AZURE_COGNITIVE_SCOPE)  # type: ignore[no-any-return]


def build_coordination(
    settings: ExecutorSettings, metrics: ExecutorMetrics | None = None
) -> InProcessCoordination | ValkeyCoordination:
    """Valkey when EXECUTOR_COORDINATION_URL is set (falling back to in-process while it
    does not answer), else in-process. The caller closes it (aclose)."""
    local = InProcessCoordination(provider_concurrency=settings.provider_concurrency)
    if not settings.coordination.enabled:
        return local
    coordination = settings.coordination
    valkey = Valkey(
        coordination.url,
        # Object keys are unique within a bucket: deployments sharing a Valkey stay apart.
        prefix=f"imagegen:executor:{settings.bucket}",
        password=coordination.password,
        timeout=coordination.timeout_seconds,
        on_change=metrics.coordination_changed if metrics is not None else lambda up: None,
    )
    if metrics is not None:
        metrics.coordination_changed(True)  # Valkey starts out presumed up; the first use says otherwise
    return ValkeyCoordination(
        valkey,
        provider_concurrency=settings.provider_concurrency,
        lease_seconds=settings.lease_seconds,
        request_ttl_seconds=settings.request_ttl_seconds,
        fallback=local,
        observer=metrics,
    )


def build_executor(
    settings: ExecutorSettings,
    metrics: ExecutorMetrics | None = None,
    coordination: ExecutionCoordination | None = None,
) -> Executor:
    """coordination: the caller's, to close after the executor (build_coordination);
    without one, in-process with the configured provider cap."""
    return Executor(
        build_provider(settings, metrics),
        build_store(settings),
        settings.public_base_url,
        coordination=coordination or InProcessCoordination(provider_concurrency=settings.provider_concurrency),
        observer=metrics,
        quotas=settings.session_quota,
        prices=settings.price_table,
        page_token_key=page_token_key(settings),
    )


def page_token_key(settings: ExecutorSettings) -> bytes:
    """EXECUTOR_PAGE_TOKEN_KEY; unset, with S3, a key derived from what every replica of one
    deployment already shares (its S3 secret key and bucket), so a page token from one
    replica opens on another; unset with the local store (one process): random."""
    if settings.page_token_key:
        return settings.page_token_key.encode()
    if settings.store == "minio":
        shared = f"imagegen page tokens\0{settings.bucket}\0{settings.minio_secret_key}".encode()
        return hashlib.sha256(shared).digest()
    return b""


async def keep_retention(executor: Executor, settings: ExecutorSettings) -> None:
    """EXECUTOR_RETENTION_DAYS: a lifecycle rule on the bucket where the store has one, else
    a sweep every EXECUTOR_RETENTION_SWEEP_SECONDS for as long as the server runs. A failed
    sweep is logged and tried again at the next period."""
    retention = dt.timedelta(days=settings.retention_days)
    try:
        if await executor.set_store_retention(settings.retention_days):
            log.info("retention: the store expires images after %d days", settings.retention_days)
            return
    except Exception:  # noqa: BLE001 - the sweep does it instead
        log.warning("retention: cannot set the store's lifecycle rule; sweeping instead", exc_info=True)
    while True:
        try:
            deleted = await executor.sweep(retention)
            if deleted:
                log.info("retention: deleted %d images older than %d days", deleted, settings.retention_days)
        except Exception:  # noqa: BLE001 - kept running: the next sweep tries again
            log.warning("retention: the sweep failed", exc_info=True)
        await asyncio.sleep(settings.retention_sweep_seconds)
def build_execution_queue(
    settings: ExecutorSettings,
    coordination: ExecutionCoordination | None = None,
    metrics: ExecutorMetrics | None = None,
) -> ExecutionQueue:
    """Where executions are recorded and queued: on the coordination's Valkey, across every
    replica, when it has one (its takeovers counted in metrics); else in this process (the
    embedded default)."""
    if isinstance(coordination, ValkeyCoordination):
        return ValkeyExecutionQueue(
            coordination.valkey,
            workers=settings.execution_workers,
            ttl_seconds=settings.execution_ttl_seconds,
            lease_seconds=settings.lease_seconds,
            observer=metrics,
        )
    return InProcessExecutionQueue(workers=settings.execution_workers, ttl_seconds=settings.execution_ttl_seconds)


def build_executions(
    executor: Executor, queue: ExecutionQueue, settings: ExecutorSettings, metrics: ExecutorMetrics | None = None
) -> Executions:
    """The executions use case over executor, its errors described as the calls' statuses,
    its page tokens signed like ListImages' (page_token_key), what its workers run counted
    in metrics."""
    return Executions(
        executor, queue, describe_error=status_message, page_token_key=page_token_key(settings), observer=metrics
    )


async def create_server(
    settings: ExecutorSettings, executor: Executor | None = None, *, tracer_provider: TracerProvider | None = None
) -> RunningServer:
    """Start the executor's gRPC server; settings.address may use port 0. Without an
    executor it builds one from settings (with metrics and its coordination: Valkey when
    EXECUTOR_COORDINATION_URL is set) and closes both on stop; one passed in is the
    caller's to close. tracer_provider overrides the configured tracing.
    Health follows the store (a DependencyWatch); liveness is SERVING while the server runs."""

    def serve(registry: CollectorRegistry) -> Served:
        coordination: InProcessCoordination | ValkeyCoordination | None = None
        metrics: ExecutorMetrics | None = None
        if executor is None:
            metrics = ExecutorMetrics(registry)
            coordination = build_coordination(settings, metrics)  # connects at its first use, not here
            served = build_executor(settings, metrics, coordination)
        else:
            served = executor
        queue = build_execution_queue(settings, served.coordination, metrics)
        executions = build_executions(served, queue, settings, metrics)

        async def close() -> None:
            try:
                await executions.aclose()  # its workers first: they use the executor
                if executor is None:
                    await served.aclose()
            finally:
                if coordination is not None:
                    await coordination.aclose()

        servicer = ExecutorServicer(
            served,
            executions,
            image_buffer_bytes=settings.getimage_buffer_bytes,
            image_write_timeout=settings.getimage_write_timeout_seconds,
        )
        binding = ServiceBinding(SERVICE_NAME, servicer, executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server)

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
            executions.start_workers()
            if isinstance(coordination, ValkeyCoordination):
                coordination.start()  # the wake-ups' subscription, which also tells whether Valkey answers
            if settings.retention_days:
                retention = asyncio.ensure_future(keep_retention(served, settings))

                async def stop_retention() -> None:
                    retention.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await retention

                running.on_stop.insert(0, stop_retention)

        return Served(binding, close=close, started=watch_store)

    return await start_service(settings, serve, tracer_provider=tracer_provider)


def _describe(settings: ExecutorSettings) -> str:
    """The start-up log line, after the port."""
    where = "valkey" if settings.coordination.enabled else "in-process"
    return f"providers {','.join(settings.providers)}, store {settings.store}, coordination {where}"


def main() -> None:
    run_service("executor", ExecutorSettings.from_env, create_server, _describe, log)
