"""The clients' exceptions: planning and execution failures are different types.

Both are built from the server's google.rpc.Status details: reason from
ErrorInfo, field violations from BadRequest, retry_after from RetryInfo,
quota_violations from QuotaFailure, and
(for execution) the plan, so a caller can retry it or show it. The server bounds
what an error carries: a plan too large for it comes as its identity fields or not
at all (ErrorInfo says plan_truncated), and then .plan is the plan the caller sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagegen.errors import FieldViolation
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

# What ErrorInfo.metadata says when an error's details could not carry its whole plan
# (the server keeps every error's trailer small enough for any client to read it).
PLAN_TRUNCATED = "plan_truncated"

# Codes where the same call may succeed later.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True)
class _Details:
    reason: str
    metadata: dict[str, str]
    violations: tuple[FieldViolation, ...]
    retry_after: float | None
    plan: ImageGenerationPlan | None
    # QuotaFailure's violations: (subject, description), e.g. ("session:table-7", "at most 10/hour new renders").
    quota_violations: tuple[tuple[str, str], ...] = ()


class ImagegenCallError(Exception):
    """A call to a service failed; code, reason and message say why."""

    def __init__(self, code: grpc.StatusCode, message: str, details: _Details) -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({details.reason})" if details.reason else ""))
        self.code = code
        self.message = message
        self.reason = details.reason
        self.metadata = details.metadata
        self.violations = details.violations
        self.retry_after = details.retry_after
        self.plan = details.plan
        self.quota_violations = details.quota_violations

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class PlanningFailed(ImagegenCallError):
    """The planner could not make a plan; nothing was rendered or stored."""


class ExecutionFailed(ImagegenCallError):
    """The executor could not render or store the plan (.plan is the plan it was
    given), or could not serve a stored image (.plan is None)."""


def _status_proto(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status the server sent in grpc-status-details-bin, or None.

    rpc_status.from_call also insists that the status message equal the call's details,
    and drops everything when a hop re-encodes the message (gRPC percent-encodes it on
    the wire); the code must still agree, the message need not."""
    try:
        return rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        pass
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                return None
            return status if status.code == error.code().value[0] else None  # type: ignore[attr-defined]
    return None


def _details(error: grpc.RpcError) -> _Details:
    return _status_details(_status_proto(error))


def _status_details(status: status_pb2.Status | None) -> _Details:
    reason, metadata, violations, retry_after, plan = "", {}, (), None, None
    quota: tuple[tuple[str, str], ...] = ()
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            quota = tuple((v.subject, v.description) for v in failure.violations)
        elif detail.Is(ImageGenerationPlan.DESCRIPTOR):
            plan = ImageGenerationPlan()
            detail.Unpack(plan)
    return _Details(reason, metadata, violations, retry_after, plan, quota)


def planning_failed(error: grpc.RpcError) -> PlanningFailed:
    return PlanningFailed(error.code(), error.details() or "", _details(error))  # type: ignore[attr-defined]


def execution_failed(error: grpc.RpcError, plan: ImageGenerationPlan | None) -> ExecutionFailed:
    """The failure of an executor call given plan (None: GetImage, SignImageUrl, ListImages,
    the deletes). Its .plan is the one in the status details when they carry it whole;
    else the plan sent."""
    details = _details(error)
    if details.plan is None or details.metadata.get(PLAN_TRUNCATED) == "true":
        details = replace(details, plan=_sent_plan(plan, details.plan))
    return ExecutionFailed(error.code(), error.details() or "", details)  # type: ignore[attr-defined]


def execution_error(status: status_pb2.Status, plan: ImageGenerationPlan | None) -> ExecutionFailed:
    """The error an Execution ended with (its .error: FAILED, or CANCELLED) as the
    ExecutionFailed ExecutePlan would have raised: the same code, reason, violations and
    retry_after. plan: the execution's plan, the .plan when the details carry none (or a
    truncated one)."""
    try:
        code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    except StopIteration:
        code = grpc.StatusCode.UNKNOWN
    details = _status_details(status)
    if details.plan is None or details.metadata.get(PLAN_TRUNCATED) == "true":
        details = replace(details, plan=_sent_plan(plan, details.plan))
    return ExecutionFailed(code, status.message, details)


def _sent_plan(
    sent: ImageGenerationPlan | None, server: ImageGenerationPlan | None
) -> ImageGenerationPlan | None:
    """The plan a caller sent, when the details carry no plan (a transport failure: the
    server never saw it) or too large a one to carry whole: then the server sends its
    identity fields alone, or nothing, and says plan_truncated. The plan_id the server
    worked out (the fingerprint it filed the plan under) replaces the sent one."""
    if sent is None or server is None or not server.plan_id or server.plan_id == sent.plan_id:
        return sent if sent is not None else server
    stamped = ImageGenerationPlan()
    stamped.CopyFrom(sent)
    stamped.plan_id = server.plan_id
    return stamped
