"""The executor's health tells the truth about its store: NOT_SERVING (overall and
for ExecutorService) while the store cannot be used, SERVING again when it can.
Real servers, a real S3 server of the test's own that it stops and starts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from executor_service.bootstrap import SERVICE_NAME
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen_runtime.health import LIVENESS
from imagegen_runtime.serving import RunningServer
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAST_CHECKS = dict(health_interval_seconds=0.05, health_timeout_seconds=2.0)


async def statuses(target: str, service: str) -> set[int]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
            for name in ("", service)
        }


async def until(target: str, status: int, service: str = SERVICE_NAME, timeout: float = 20.0) -> None:
    """Poll health (both names) until it is status; fail after timeout."""
    async with asyncio.timeout(timeout):
        while await statuses(target, service) != {status}:
            await asyncio.sleep(0.02)


@pytest.fixture
async def s3(tmp_path: Path) -> AsyncIterator[S3Server]:
    server = await asyncio.to_thread(S3Server(tmp_path / "health-s3").start)  # its own: the session's stays up
    yield server
    await asyncio.to_thread(server.stop, graceful=False)


async def test_health_follows_the_s3_store_down_and_up(s3: S3Server) -> None:
    running = await create_executor_server(
        ExecutorSettings(
            address="127.0.0.1:0", store="minio", bucket="health-test", minio_endpoint=s3.endpoint,
            minio_access_key=s3.access_key, minio_secret_key=s3.secret_key, minio_region=s3.region,
            minio_timeout_seconds=1.0, minio_max_retries=0, **FAST_CHECKS,
        )
    )
    target = f"127.0.0.1:{running.port}"
    try:
        assert await statuses(target, SERVICE_NAME) == {SERVING}
        await asyncio.to_thread(s3.stop, graceful=False)
        await until(target, NOT_SERVING)
        await asyncio.to_thread(s3.start)
        await until(target, SERVING)
    finally:
        await running.stop(None)


async def test_health_follows_the_local_store_directory(tmp_path: Path) -> None:
    store = tmp_path / "images"
    running = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=store, **FAST_CHECKS)
    )
    target = f"127.0.0.1:{running.port}"
    try:
        await until(target, SERVING)
        shutil.rmtree(store)  # e.g. a volume that went away
        await until(target, NOT_SERVING)
        assert await statuses(target, LIVENESS) == {NOT_SERVING, SERVING}  # "" is down, liveness is not
        store.mkdir()
        await until(target, SERVING)
    finally:
        await running.stop(None)


async def test_stopping_drains_health_and_ends_the_checks(tmp_path: Path) -> None:
    running: RunningServer = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path, **FAST_CHECKS)
    )
    checks = [task for task in asyncio.all_tasks() if "DependencyWatch._watch" in repr(task.get_coro())]
    assert len(checks) == 1
    await running.stop(None)
    assert checks[0].done()
    response = await running.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), None)  # type: ignore[arg-type]
    assert response.status == NOT_SERVING


async def test_the_planner_is_serving_with_its_llm_unreachable() -> None:
    """The planner has no hard dependency: an LLM that is down costs a fallback, not the pod."""
    running = await create_planner_server(
        PlannerSettings(address="127.0.0.1:0", llm_base_url="http://127.0.0.1:1/v1", llm_max_retries=0)
    )
    try:
        assert await statuses(f"127.0.0.1:{running.port}", "imagegen.v1.PlannerService") == {SERVING}
    finally:
        await running.stop(None)
