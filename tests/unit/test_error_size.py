"""What an error carries stays within its budget, whatever the input, so that every
client reads it whole (gRPC's default client refuses trailers over 8 KiB at random,
over 16 KiB always); and mapping an error never fails."""

from __future__ import annotations

import base64
import math
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from clients.errors import execution_failed, planning_failed
from imagegen import errors
from imagegen.catalogue import (
    MAX_MAP_ENTRIES,
    MAX_MAP_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    MAX_PROMPT_CHARS,
    MAX_RETRY_AFTER,
    MAX_SESSION_ID_CHARS,
)
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import plan_violations
from imagegen_runtime.error_mapping import (
    ERROR_TRAILER_BUDGET_BYTES,
    MAX_VIOLATIONS,
    PLAN_TRUNCATED,
    plan_identity,
    status_code_for,
    to_status,
)
from tests.support.plans import make_plan
from tests.unit.test_status import FailedCall

# What a caller may send back through a request id: at most 128 characters.
REQUEST_ID_TRAILER = ("x-request-id", "r" * 128)
# Every byte gRPC percent-encodes in grpc-message: all but printable ASCII, and "%".
_PLAIN = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def trailer_size(message: str, trailing_metadata: Any) -> int:
    """An error's trailer as it goes on the wire: grpc-message percent-encoded, -bin entries
    in base64, the others as they are; names included."""
    size = len("grpc-status") + 2 + len("grpc-message") + len(quote(message.encode(), safe=_PLAIN))
    for key, value in trailing_metadata:
        raw = value if isinstance(value, bytes) else value.encode()
        size += len(key) + (len(base64.b64encode(raw)) if key.endswith("-bin") else len(raw))
    return size


def wire_size(status: grpc.Status) -> int:
    """status's trailer, with the longest request id the interceptor adds to it."""
    return trailer_size(status.details, (*status.trailing_metadata, REQUEST_ID_TRAILER))


def details(status: grpc.Status) -> status_pb2.Status:
    (raw,) = [value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"]
    return status_pb2.Status.FromString(raw)


def maximal_plans() -> dict[str, ImageGenerationPlan]:
    """Valid plans at every documented maximum, alone and together."""
    key = lambda i: f"k{i:02d}".ljust(MAX_MAP_KEY_CHARS, "x")
    plans = {
        "cjk prompt": make_plan(enhanced_prompt="竜の巣穴" * (MAX_PROMPT_CHARS // 4)),
        "emoji prompt": make_plan(enhanced_prompt="🐉" * MAX_PROMPT_CHARS),  # 4 bytes of UTF-8 each
        "metadata": make_plan(
            metadata={key(i): "🗡" * MAX_METADATA_VALUE_CHARS for i in range(MAX_MAP_ENTRIES)}
        ),
        "session id": make_plan(session_id=("t" + "able-3_.x" * 20)[:MAX_SESSION_ID_CHARS]),
    }
    everything = ImageGenerationPlan()
    for plan in plans.values():
        everything.MergeFrom(plan)
    plans["all at once"] = everything
    for name, plan in plans.items():
        assert plan_violations(plan) == [], name  # each is a plan the executor accepts
    return {name: with_fingerprint(plan) for name, plan in plans.items()}


PLANS = maximal_plans()
EXECUTION_ERRORS = [
    errors.ContentRejected("the image provider refused the content (moderation_blocked)"),
    errors.ProviderMisconfigured("the image provider refused the credentials (HTTP 401)"),
    errors.ProviderThrottled("the image provider is rate limiting requests", retry_after=math.inf),
    errors.ProviderUnavailable("the image provider failed (HTTP 500)"),
    errors.StorageUnavailable("the store failed"),
    errors.StorageMisconfigured("the store refused the credentials"),
    errors.InvalidRequest([errors.FieldViolation("request_id", "is used by another plan")]),
]


@pytest.mark.parametrize("plan_name", list(PLANS))
@pytest.mark.parametrize("error", EXECUTION_ERRORS, ids=lambda e: e.reason)
def test_an_error_with_any_valid_plan_stays_within_budget_and_the_client_gets_the_plan(
    plan_name: str, error: errors.ImagegenError
) -> None:
    plan = PLANS[plan_name]
    error.plan = plan
    status = to_status(error)
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    carried = details(status)
    (info,) = [d for d in carried.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    unpacked = error_details_pb2.ErrorInfo()
    info.Unpack(unpacked)
    assert unpacked.reason == error.reason
    truncated = unpacked.metadata.get(PLAN_TRUNCATED) == "true"
    assert truncated == (plan_name != "session id")  # the others are far over the budget
    sent = ImageGenerationPlan()
    sent.CopyFrom(plan)
    sent.ClearField("plan_id")  # what a caller sends: its plan, without the fingerprint
    failure = execution_failed(FailedCall(status), sent)
    assert (failure.code, failure.reason) == (status_code_for(error), error.reason)
    assert failure.plan == plan  # carried whole, or the sent one stamped with the server's plan_id


def test_a_truncated_plan_keeps_its_identity_fields() -> None:
    plan = PLANS["all at once"]
    status = to_status(errors.ContentRejected("no", plan=plan))
    (carried,) = [d for d in details(status).details if d.Is(ImageGenerationPlan.DESCRIPTOR)]
    identity = ImageGenerationPlan()
    carried.Unpack(identity)
    assert (
        identity == plan_identity(plan) and identity.plan_id == plan.plan_id and not identity.enhanced_prompt
    )
    assert (identity.session_id, identity.style, identity.size, identity.image_type) == (
        plan.session_id, plan.style, plan.size, plan.image_type,
    )  # fmt: skip


def test_an_invalid_plan_too_large_even_for_its_identity_is_not_attached() -> None:
    plan = ImageGenerationPlan(session_id="s" * 100_000, style="x" * 100_000, enhanced_prompt="y" * 100_000)
    error = errors.InvalidRequest(plan_violations(plan), plan=plan)
    status = to_status(error)
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    assert not [d for d in details(status).details if d.Is(ImageGenerationPlan.DESCRIPTOR)]
    sent = ImageGenerationPlan()
    sent.CopyFrom(plan)
    failure = execution_failed(FailedCall(status), sent)
    assert failure.metadata[PLAN_TRUNCATED] == "true" and failure.plan == sent


@pytest.mark.parametrize("count", [MAX_VIOLATIONS + 1, 100, 150, 5000])
@pytest.mark.parametrize("text", ["x", "語", "🐉"])
def test_many_long_violations_stay_within_budget_and_say_how_many_there_were(count: int, text: str) -> None:
    violations = [errors.FieldViolation(f"plan.metadata[{text * 200}{i}]", text * 5000) for i in range(count)]
    status = to_status(errors.InvalidRequest(violations, plan=PLANS["all at once"]))
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    failure = planning_failed(FailedCall(status))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and failure.reason == "INVALID_REQUEST"
    assert 1 <= len(failure.violations) <= MAX_VIOLATIONS
    assert failure.violations[0].field.startswith("plan.metadata[")
    assert (failure.metadata["violations_truncated"], failure.metadata["violations_total"]) == (
        "true",
        str(count),
    )


def test_a_few_short_violations_come_whole() -> None:
    violations = [errors.FieldViolation("plan.size", "bad"), errors.FieldViolation("plan.style", "bad")]
    failure = planning_failed(FailedCall(to_status(errors.InvalidRequest(violations))))
    assert failure.violations == tuple(violations) and "violations_truncated" not in failure.metadata


@pytest.mark.parametrize("text", ["a" * 100_000, "語" * 100_000, "🐉" * 100_000, "%" * 100_000, "\n" * 5000])
def test_a_long_message_is_cut_to_fit(text: str) -> None:
    status = to_status(errors.ProviderUnavailable(text))
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    assert status.details.endswith("...") and text.startswith(status.details[:-3])
    assert details(status).message == status.details  # the clients check the two agree
    assert planning_failed(FailedCall(status)).reason == "PROVIDER_UNAVAILABLE"


def test_error_metadata_is_bounded() -> None:
    metadata = {f"key-{i}-{'k' * 500}": "v" * 10_000 for i in range(1000)}
    status = to_status(errors.ProviderUnavailable("down", metadata=metadata))
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    failure = planning_failed(FailedCall(status))
    assert failure.reason == "PROVIDER_UNAVAILABLE" and 0 < len(failure.metadata) <= 16


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (2.5, 2.5),
        (0, 0.0),
        (-5, 0.0),  # a date in the past
        (math.inf, MAX_RETRY_AFTER.total_seconds()),
        (float("1" * 400), MAX_RETRY_AFTER.total_seconds()),  # a 400-digit Retry-After, as a float: inf
        (10**400, MAX_RETRY_AFTER.total_seconds()),  # as an int: too large for a float
        (1e300, MAX_RETRY_AFTER.total_seconds()),
        (-math.inf, 0.0),
        (math.nan, None),
        ("soon", None),
    ],
)
def test_retry_info_is_capped_and_a_wild_retry_after_never_breaks_the_mapping(
    retry_after: Any, expected: float | None
) -> None:
    status = to_status(
        errors.ProviderThrottled("slow down", retry_after=retry_after, plan=PLANS["session id"])
    )
    failure = execution_failed(FailedCall(status), None)
    assert (failure.code, failure.reason, failure.retry_after) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED", expected,
    )  # fmt: skip
    assert failure.plan == PLANS["session id"]  # the rest of the details are still there


class Hostile(errors.ContentRejected):
    """An error whose parts are not what they should be."""

    @property  # type: ignore[override]
    def plan(self) -> ImageGenerationPlan:
        raise RuntimeError("no plan for you")

    @plan.setter
    def plan(self, value: object) -> None:
        pass


@pytest.mark.parametrize(
    "error",
    [
        Hostile("refused"),
        errors.ContentRejected("refused", metadata={"k": object()}, plan="not a plan"),  # type: ignore[dict-item]
        errors.ContentRejected("\ud800 lone surrogate", metadata={"\udfff": "\ud800"}),
        errors.InvalidRequest([errors.FieldViolation("\ud800", None)]),  # type: ignore[arg-type]
        errors.ProviderThrottled("slow", retry_after=object()),  # type: ignore[arg-type]
    ],
    ids=["raising plan", "odd types", "surrogates", "odd violation", "odd retry_after"],
)
def test_mapping_never_raises_and_keeps_at_least_the_code_and_reason(error: errors.ImagegenError) -> None:
    status = to_status(error)
    assert wire_size(status) <= ERROR_TRAILER_BUDGET_BYTES
    failure = planning_failed(FailedCall(status))
    assert (failure.code, failure.reason) == (status_code_for(error), error.reason)
