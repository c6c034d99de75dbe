"""Every error reaches a default-configured client whole: plans at every documented
maximum, rejected by the provider (the fake OpenAI server) every way it can, through
the sync and asyncio clients and the real grpcurl (Go's gRPC, default settings), five
times each, always with the code and reason; and a request with a hundred bad fields
too. gRPC refuses trailers over 8 KiB at random, so one lucky try would prove nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from clients import AsyncExecutorClient, ExecutionFailed, ExecutorClient
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.fingerprint import with_fingerprint
from imagegen.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    planner_service_pb2,
    planner_service_pb2_grpc,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen_runtime.error_mapping import ERROR_TRAILER_BUDGET_BYTES, MAX_VIOLATIONS
from imagegen_runtime.serving import RunningServer
from imagegen_runtime.telemetry.settings import TelemetrySettings
from tests.support import fake_openai as fo
from tests.support.calls import running_service
from tests.support.plans import make_plan
from tests.unit.test_error_size import PLANS, trailer_size

pytestmark = pytest.mark.integration

GRPCURL = Path(sys.executable).parent / "grpcurl"
TRIES = 5


@dataclass(frozen=True)
class Rejection:
    reply: fo.Reply
    code: grpc.StatusCode
    reason: str
    retry_after: float | None = None


REJECTIONS = {
    "moderation_blocked": Rejection(
        fo.error(400, "blocked", type="image_generation_user_error", code="moderation_blocked"),
        grpc.StatusCode.FAILED_PRECONDITION, "CONTENT_REJECTED",
    ),
    "401": Rejection(fo.error(401, "bad key"), grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_NOT_USABLE"),
    "429 with a 400-digit Retry-After": Rejection(
        fo.error(429, "slow down", headers={"Retry-After": "9" * 400}),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED", MAX_RETRY_AFTER.total_seconds(),
    ),
    "500": Rejection(fo.error(500, "oops"), grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE"),
}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    server = fo.FakeOpenAI().start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def openai_executor(fake: fo.FakeOpenAI, tmp_path: Path) -> AsyncIterator[str]:
    """An executor with the OpenAI provider alone, against the fake, with no retries of its
    own; yields its target."""
    async with running_service(
        "executor", "", None, tmp_path, providers=("openai",), openai_base_url=fake.base_url, openai_max_retries=0,
        telemetry=TelemetrySettings(),  # no metrics port, whose closing takes a while
    ) as running:  # fmt: skip
        yield f"127.0.0.1:{running.port}"


@contextlib.asynccontextmanager
async def targets(fake: fo.FakeOpenAI, tmp_path: Path, fresh: bool) -> AsyncIterator[Callable[[], Any]]:
    """What each try calls: one executor for all tries; or, fresh, a new executor for each
    (an executor told to wait by a 429 pauses its provider calls that long, then the next
    try would wait for it instead of reaching the provider)."""
    if not fresh:
        async with openai_executor(fake, tmp_path) as target:
            yield lambda: contextlib.nullcontext(target)
        return
    yield lambda: openai_executor(fake, tmp_path)


@pytest.fixture
async def executor(fake: fo.FakeOpenAI, tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_service(
        "executor", "", None, tmp_path, providers=("openai",), openai_base_url=fake.base_url, openai_max_retries=0
    ) as running:
        yield running


async def grpcurl_error(target: str, plan: ImageGenerationPlan) -> dict:
    """What grpcurl (default settings) reports of a failed ExecutePlan, as JSON."""
    request = json_format.MessageToJson(executor_service_pb2.ExecutePlanRequest(plan=plan))
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", "-format-error", "-d", "@", target, "imagegen.v1.ExecutorService/ExecutePlan",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(request.encode()), timeout=60)
    assert process.returncode != 0
    return json.loads(stderr)


@pytest.mark.parametrize("rejection", list(REJECTIONS))
@pytest.mark.parametrize("plan_name", list(PLANS))
async def test_a_rejected_plan_of_any_valid_size_reaches_every_client_with_its_code_and_reason(
    plan_name: str, rejection: str, fake: fo.FakeOpenAI, tmp_path: Path
) -> None:
    expected = REJECTIONS[rejection]
    fake.script_images(*[expected.reply] * (3 * TRIES))
    sent = ImageGenerationPlan()
    sent.CopyFrom(PLANS[plan_name])
    sent.ClearField("plan_id")  # as a backend sends a plan it made itself
    failures: list[ExecutionFailed] = []
    reported: list[dict] = []
    async with targets(fake, tmp_path, fresh=expected.retry_after is not None) as each_try:
        for _ in range(TRIES):
            async with each_try() as target:
                failures.append(await asyncio.to_thread(sync_failure, target, sent))
            async with each_try() as target, AsyncExecutorClient(target, timeout=30) as client:
                with pytest.raises(ExecutionFailed) as failed:
                    await client.execute_plan(sent)
                failures.append(failed.value)
            async with each_try() as target:
                reported.append(await grpcurl_error(target, sent))
    for failure in failures:
        assert (failure.code, failure.reason, failure.retry_after) == (
            expected.code, expected.reason, expected.retry_after,
        )  # fmt: skip
        assert failure.plan == with_fingerprint(sent)  # whole, or the one sent with the server's plan_id
    for error in reported:
        assert error["code"] == expected.code.value[0]
        (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert info["reason"] == expected.reason
    assert len(fake.image_requests) == 3 * TRIES


def sync_failure(target: str, sent: ImageGenerationPlan) -> ExecutionFailed:
    """The blocking client's failure (in a worker thread: the servers run on the test's loop)."""
    with ExecutorClient(target, timeout=30) as client, pytest.raises(ExecutionFailed) as failed:
        client.execute_plan(sent)
    return failed.value


async def test_a_hundred_bad_fields_stay_within_the_budget_on_both_services(executor: RunningServer) -> None:
    bad = {f"Bad Key {i}": "v" for i in range(150)}  # keys must be lowercase: each is a violation
    async with (
        running_service("planner", "", None, Path()) as planner,
        grpc.aio.insecure_channel(f"127.0.0.1:{planner.port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as planning:
            await planner_service_pb2_grpc.PlannerServiceStub(channel).CreatePlan(
                planner_service_pb2.CreatePlanRequest(prompt="x", session_id="s", context=bad)
            )
    plan = make_plan(metadata={key.lower().replace(" ", "?"): value for key, value in bad.items()})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{executor.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as executing:
            await executor_service_pb2_grpc.ExecutorServiceStub(channel).ExecutePlan(
                executor_service_pb2.ExecutePlanRequest(plan=plan)
            )
    for caught in (planning, executing):
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert trailer_size(error.details(), error.trailing_metadata()) <= ERROR_TRAILER_BUDGET_BYTES
    async with AsyncExecutorClient(f"127.0.0.1:{executor.port}") as client:
        with pytest.raises(ExecutionFailed) as failed:
            await client.execute_plan(plan)
    assert failed.value.reason == "INVALID_REQUEST" and 1 <= len(failed.value.violations) <= MAX_VIOLATIONS
    assert int(failed.value.metadata["violations_total"]) > 100
