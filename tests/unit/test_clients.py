"""The clients' invocation side, without a network: grpc_testing's channel
shows the request the client sends and lets each test answer with any status
to check which exception comes out. (It drops the timeout, so deadlines are
tested against real servers.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
import grpc_testing
import pytest

from clients import ExecutionFailed, ExecutorClient, PlannerClient, PlanningFailed
from imagegen import errors
from imagegen.v1 import executor_service_pb2, planner_service_pb2
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen_runtime.error_mapping import to_status

PLANNER = planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"]
EXECUTOR = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"]
PLAN = ImageGenerationPlan(
    plan_id="a" * 32, enhanced_prompt="A lich on a throne", image_type=ImageType.IMAGE_TYPE_CREATURE,
    style="dark-fantasy", size="1024x1024", session_id="s",
)


@pytest.fixture
def channel() -> grpc_testing.Channel:
    return grpc_testing.channel(
        [planner_service_pb2.DESCRIPTOR.services_by_name["PlannerService"],
         executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"]],
        grpc_testing.strict_real_time(),
    )


def in_background(call: Callable[[], Any]) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def test_create_plan_sends_the_request_and_returns_the_plan(channel: grpc_testing.Channel) -> None:
    client = PlannerClient(channel)
    pending = in_background(
        lambda: client.create_plan(
            "A portrait of Vex", session_id="s-9", image_type="portrait", size="512x512", context={"race": "tiefling"}
        )
    )
    _, request, rpc = channel.take_unary_unary(PLANNER.methods_by_name["CreatePlan"])
    assert request == planner_service_pb2.CreatePlanRequest(
        prompt="A portrait of Vex", session_id="s-9", image_type=ImageType.IMAGE_TYPE_PORTRAIT,
        size="512x512", context={"race": "tiefling"},
    )
    rpc.terminate(planner_service_pb2.CreatePlanResponse(plan=PLAN), (), grpc.StatusCode.OK, "")
    assert pending.result(timeout=10) == PLAN


def test_execute_plan_sends_the_plan_and_request_id(channel: grpc_testing.Channel) -> None:
    pending = in_background(lambda: ExecutorClient(channel).execute_plan(PLAN, request_id="r-1"))
    _, request, rpc = channel.take_unary_unary(EXECUTOR.methods_by_name["ExecutePlan"])
    assert request == executor_service_pb2.ExecutePlanRequest(plan=PLAN, request_id="r-1")
    result = executor_service_pb2.ExecutePlanResponse().result
    result.storage_path = "imagegen/s/creature/x.png"
    rpc.terminate(executor_service_pb2.ExecutePlanResponse(result=result), (), grpc.StatusCode.OK, "")
    assert pending.result(timeout=10).storage_path == "imagegen/s/creature/x.png"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (errors.InvalidRequest([errors.FieldViolation("prompt", "must not be empty")]), False),
        (errors.PlannerUnavailable("llm down"), True),
        (errors.PlannerThrottled("slow down", retry_after=3), True),
        (errors.PlannerMisconfigured("bad key"), False),
    ],
)
def test_planner_statuses_become_planning_failed(
    channel: grpc_testing.Channel, error: errors.ImagegenError, retryable: bool
) -> None:
    pending = in_background(lambda: PlannerClient(channel).create_plan("x", session_id="s"))
    _, _, rpc = channel.take_unary_unary(PLANNER.methods_by_name["CreatePlan"])
    status = to_status(error)
    rpc.terminate(None, status.trailing_metadata, status.code, status.details)
    with pytest.raises(PlanningFailed) as caught:
        pending.result(timeout=10)
    assert (caught.value.code, caught.value.reason, caught.value.retryable) == (status.code, error.reason, retryable)
    assert caught.value.retry_after == error.retry_after


@pytest.mark.parametrize(
    "error",
    [errors.ProviderThrottled("slow", retry_after=1.5, plan=PLAN), errors.ContentRejected("no", plan=PLAN),
     errors.StorageUnavailable("s3 down", plan=PLAN)],
)
def test_executor_statuses_become_execution_failed_with_the_plan(
    channel: grpc_testing.Channel, error: errors.ImagegenError
) -> None:
    pending = in_background(lambda: ExecutorClient(channel).execute_plan(PLAN))
    _, _, rpc = channel.take_unary_unary(EXECUTOR.methods_by_name["ExecutePlan"])
    status = to_status(error)
    rpc.terminate(None, status.trailing_metadata, status.code, status.details)
    with pytest.raises(ExecutionFailed) as caught:
        pending.result(timeout=10)
    assert caught.value.plan == PLAN and caught.value.reason == error.reason
    assert caught.value.retryable == error.retryable


def test_a_bare_status_still_gives_the_right_exception(channel: grpc_testing.Channel) -> None:
    pending = in_background(lambda: ExecutorClient(channel).execute_plan(PLAN))
    _, _, rpc = channel.take_unary_unary(EXECUTOR.methods_by_name["ExecutePlan"])
    rpc.terminate(None, (), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    with pytest.raises(ExecutionFailed) as caught:
        pending.result(timeout=10)
    assert caught.value.retryable and caught.value.plan == PLAN and caught.value.reason == ""


def test_the_details_survive_a_status_message_changed_on_the_way(channel: grpc_testing.Channel) -> None:
    """rpc_status.from_call drops every detail when the call's message differs from the
    Status proto's (a hop re-encoded it); the code still agrees, so the details count."""
    pending = in_background(lambda: ExecutorClient(channel).execute_plan(PLAN))
    _, _, rpc = channel.take_unary_unary(EXECUTOR.methods_by_name["ExecutePlan"])
    status = to_status(errors.ContentRejected("refusé: «trop sombre»", plan=PLAN))
    rpc.terminate(None, status.trailing_metadata, status.code, "refus%C3%A9: re-encoded on the way")
    with pytest.raises(ExecutionFailed) as caught:
        pending.result(timeout=10)
    assert (caught.value.reason, caught.value.plan) == ("CONTENT_REJECTED", PLAN)


def test_details_whose_code_disagrees_with_the_call_are_not_believed(channel: grpc_testing.Channel) -> None:
    pending = in_background(lambda: ExecutorClient(channel).execute_plan(PLAN))
    _, _, rpc = channel.take_unary_unary(EXECUTOR.methods_by_name["ExecutePlan"])
    status = to_status(errors.ContentRejected("no", plan=PLAN))  # FAILED_PRECONDITION's details
    rpc.terminate(None, status.trailing_metadata, grpc.StatusCode.UNAVAILABLE, "something else")
    with pytest.raises(ExecutionFailed) as caught:
        pending.result(timeout=10)
    assert caught.value.reason == "" and caught.value.code == grpc.StatusCode.UNAVAILABLE
