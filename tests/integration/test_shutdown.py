"""SIGTERM to a real executor process during a slow execution: the execution
finishes, new calls are refused, the process exits 0, and every line it logged
is JSON.

The process listens on a port the test picks (EXECUTOR_ADDRESS=127.0.0.1:PORT, by
tests/support/service_process.py): port 0 would leave the test no way to learn it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc
from tests.integration.test_executor_rpcs import make_plan
from tests.integration.test_openai_images import image_bytes
from tests.support import fake_openai as fo
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.integration

RENDER_SECONDS = 2.0


async def refused(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.UNAVAILABLE
    return False  # answered (NOT_SERVING while the drain begins)


async def test_sigterm_finishes_the_execution_in_flight_and_refuses_new_calls(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    png = image_bytes()
    fake_openai.script_images(fo.delay(RENDER_SECONDS, fo.images_b64(png)))
    env = {
        "EXECUTOR_PROVIDER": "openai",
        "EXECUTOR_OPENAI_BASE_URL": fake_openai.base_url,
        "EXECUTOR_OPENAI_MAX_RETRIES": "0",
        "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "images"),
        "EXECUTOR_SHUTDOWN_GRACE_SECONDS": "30",
    }
    executor = ServiceProcess("executor", "executor", env, tmp_path).spawn()
    process, target = executor.process, executor.target
    assert process is not None  # spawned
    try:
        await executor.serving()

        async with grpc.aio.insecure_channel(target) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            in_flight = stub.ExecutePlan(
                executor_service_pb2.ExecutePlanRequest(plan=make_plan()), metadata=(("x-request-id", "req-draining"),)
            )
            await asyncio.to_thread(fake_openai.wait_for_requests, 1)  # the render is under way
            process.send_signal(signal.SIGTERM)

            async with asyncio.timeout(RENDER_SECONDS * 5):
                while not await refused(target):
                    await asyncio.sleep(0.02)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ExecutePlan(executor_service_pb2.ExecutePlanRequest(plan=make_plan(style="noir")), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            response = await asyncio.wait_for(in_flight, 30)
            assert dict(await in_flight.trailing_metadata())["x-request-id"] == "req-draining"

        assert not response.result.reused and response.result.byte_size == len(png)
        assert (tmp_path / "images" / response.result.storage_path.partition("/")[2]).read_bytes() == png
        assert len(fake_openai.image_requests) == 1  # the refused call never reached the provider
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        executor.kill()

    records = executor.log_records()
    messages = [record["message"] for record in records]
    assert any(message.startswith("executor listening on port") for message in messages)
    assert "shutting down" in messages
    (done,) = [r for r in records if r.get("request_id") == "req-draining" and r["logger"] == "imagegen.rpc"]
    assert done["code"] == "OK" and done["latency_ms"] >= RENDER_SECONDS * 1000 * 0.9
    assert messages.index("shutting down") < messages.index(done["message"])
