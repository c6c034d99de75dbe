"""Domain errors -> gRPC status details -> the clients' exceptions, both ways."""

from __future__ import annotations

import grpc
import pytest

from clients.errors import execution_failed, planning_failed
from imagegen import errors
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from imagegen_runtime.error_mapping import status_code_for, to_status

PLAN = ImageGenerationPlan(enhanced_prompt="x", image_type=ImageType.IMAGE_TYPE_MAP, style="s", size="64x64", session_id="s")


class FailedCall(grpc.RpcError):
    """What grpc raises for a failed call: code, details and trailing metadata."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple:
        return self._status.trailing_metadata


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (errors.InvalidRequest([errors.FieldViolation("size", "bad")]), grpc.StatusCode.INVALID_ARGUMENT, False),
        (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND, False),
        (errors.PlannerUnavailable("down"), grpc.StatusCode.UNAVAILABLE, True),
        (errors.PlannerThrottled("slow down", retry_after=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (errors.PlannerMisconfigured("bad key"), grpc.StatusCode.FAILED_PRECONDITION, False),
        (errors.PlanOutputInvalid("junk"), grpc.StatusCode.INTERNAL, False),
        (errors.ProviderUnavailable("down"), grpc.StatusCode.UNAVAILABLE, True),
        (errors.ProviderThrottled("slow down", retry_after=1), grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (errors.ProviderMisconfigured("bad key"), grpc.StatusCode.FAILED_PRECONDITION, False),
        (errors.ContentRejected("no"), grpc.StatusCode.FAILED_PRECONDITION, False),
        (errors.StorageUnavailable("down"), grpc.StatusCode.UNAVAILABLE, True),
    ],
)
def test_each_error_has_its_code_and_its_retryability_survives_the_wire(
    error: errors.ImagegenError, code: grpc.StatusCode, retryable: bool
) -> None:
    assert status_code_for(error) == code
    assert error.retryable == retryable
    parsed = planning_failed(FailedCall(to_status(error)))
    assert (parsed.code, parsed.reason, parsed.retryable, parsed.message) == (code, error.reason, retryable, error.message)


def test_details_carry_violations_retry_delay_metadata_and_plan() -> None:
    error = errors.ProviderThrottled("slow down", retry_after=2.5, metadata={"provider": "openai"}, plan=PLAN)
    parsed = execution_failed(FailedCall(to_status(error)), ImageGenerationPlan())
    assert parsed.retry_after == 2.5 and parsed.metadata == {"provider": "openai"}
    assert parsed.plan == PLAN

    invalid = errors.InvalidRequest([errors.FieldViolation("plan.size", "bad"), errors.FieldViolation("plan.style", "bad")])
    parsed = planning_failed(FailedCall(to_status(invalid)))
    assert [v.field for v in parsed.violations] == ["plan.size", "plan.style"]
    assert parsed.plan is None


def test_a_failure_without_details_still_carries_the_plan_that_was_sent() -> None:
    bare = grpc.Status()
    bare.code, bare.details, bare.trailing_metadata = grpc.StatusCode.UNAVAILABLE, "connection refused", ()
    parsed = execution_failed(FailedCall(bare), PLAN)  # type: ignore[arg-type]
    assert parsed.plan == PLAN and parsed.retryable and parsed.reason == ""
