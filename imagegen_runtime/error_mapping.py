"""Domain errors -> gRPC status with google.rpc details, in one place, within a budget.

to_status turns an ImagegenError into its status code with ErrorInfo (always),
BadRequest (invalid requests), QuotaFailure (a session over its render quota), RetryInfo
(when a retry delay is known) and the plan
(when the error carries one). Anything else becomes INTERNAL_STATUS, a generic message;
the exception text never reaches the caller. imagegen_runtime.interceptor calls these
for every failed call.

What a status carries is bounded, whatever the input, because it travels in the
trailing metadata, and a client (grpc's default for every language) refuses trailers
over 8 KiB at random and over 16 KiB always, which the caller sees as a retryable
RESOURCE_EXHAUSTED with no reason. The budget, ERROR_TRAILER_BUDGET_BYTES, is for
everything the error puts in the trailer as it goes on the wire:

- the message (grpc-message, percent-encoded: 3 bytes for each byte that is not
  printable ASCII) is cut to MAX_STATUS_MESSAGE_BYTES encoded, ending in "...";
- the serialized google.rpc.Status (grpc-status-details-bin, base64: 4/3 of it) is
  kept to MAX_DETAILS_BYTES: ErrorInfo and its reason always (its metadata bounded);
  RetryInfo, the delay capped at MAX_RETRY_AFTER; BadRequest, at most MAX_VIOLATIONS
  violations with their field and description cut, and only as many as fit (then
  ErrorInfo says violations_truncated "true" and violations_total); the plan only if
  it fits, else the plan's identity fields alone (plan_id, session_id, image_type,
  style, size) if they fit, else no plan, and then ErrorInfo says plan_truncated "true"
  (the clients then use the plan they sent);
- the rest of the budget is for the other trailers (x-request-id, the retry pushback).

to_status never raises: should anything go wrong while building the details, the
status falls back to the code and an ErrorInfo with the reason alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagegen import errors
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

log = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of wins.
_CODES: tuple[tuple[type[errors.ImagegenError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ReaderStalled, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.ExecutionsUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PlannerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.PlannerThrottled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PlannerMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ProviderUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ProviderThrottled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ProviderMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ContentRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.StorageMisconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ImagegenError, grpc.StatusCode.INTERNAL),
)

# gRPC's retry pushback (gRFC A6): a negative value tells the client's retry policy not to retry.
NO_TRANSPARENT_RETRY = ("grpc-retry-pushback-ms", "-1")
DETAILS_KEY = "grpc-status-details-bin"

# The budget (module docstring): far under gRPC's 8 KiB default, with room to spare
# for proxies that keep response headers in a few KiB.
ERROR_TRAILER_BUDGET_BYTES = 6 * 1024
MAX_STATUS_MESSAGE_BYTES = 512  # percent-encoded
_OTHER_TRAILERS_BYTES = 512  # x-request-id (128 at most), the pushback, the header names
MAX_DETAILS_BYTES = (ERROR_TRAILER_BUDGET_BYTES - MAX_STATUS_MESSAGE_BYTES - _OTHER_TRAILERS_BYTES) * 3 // 4
MAX_VIOLATIONS = 10
MAX_VIOLATION_FIELD_CHARS = 128
MAX_VIOLATION_DESCRIPTION_CHARS = 200
MAX_INFO_METADATA = 16  # entries of ErrorInfo.metadata
MAX_INFO_KEY_CHARS = 64
MAX_INFO_VALUE_CHARS = 256
_MAX_RETRY_SECONDS = MAX_RETRY_AFTER.total_seconds()
# What ErrorInfo.metadata says when the details had to leave something out.
PLAN_TRUNCATED = "plan_truncated"
VIOLATIONS_TRUNCATED = "violations_truncated"
VIOLATIONS_TOTAL = "violations_total"
_PLAN_IDENTITY = ("plan_id", "session_id", "image_type", "style", "size")
_ELLIPSIS = "..."


def status_code_for(error: errors.ImagegenError) -> grpc.StatusCode:
    return next(code for cls, code in _CODES if isinstance(error, cls))


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.ImagegenError) -> grpc.Status:
    """error's status: its code, its message and details within the budget; never raises."""
    code = _code(error)
    try:
        return _grpc_status(_details(error, code))
    except Exception:
        log.exception("cannot build the details of a %s error; sending its code and reason alone", code.name)
    try:
        return _grpc_status(
            _reason_only(code, _message(_text(getattr(error, "message", ""))), _reason(error))
        )
    except Exception:
        log.exception("cannot build a %s status at all; sending INTERNAL", code.name)
        return INTERNAL_STATUS


def status_message(error: BaseException) -> status_pb2.Status:
    """error as the google.rpc.Status a call would have ended with (an Execution's error):
    an ImagegenError's code, message and details within the budget; anything else
    INTERNAL with a generic message; never raises."""
    if not isinstance(error, errors.ImagegenError):
        return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    code = _code(error)
    try:
        return _details(error, code)
    except Exception:
        log.exception("cannot build the details of a %s error; keeping its code and reason alone", code.name)
        return status_pb2.Status(code=code.value[0], message=_message(_text(getattr(error, "message", ""))))


def _code(error: errors.ImagegenError) -> grpc.StatusCode:
    try:
        return status_code_for(error)
    except Exception:  # noqa: BLE001 - not an ImagegenError after all
        return grpc.StatusCode.INTERNAL


def _grpc_status(status: status_pb2.Status) -> grpc.Status:
    mapped = rpc_status.to_status(status)
    # The service answered for itself (and has already retried its LLM, provider or
    # store): the clients' channel retry policy, meant for UNAVAILABLE from the
    # transport (a pod going away), must not replay the call. The caller decides,
    # from the code, the reason and RetryInfo.
    return mapped._replace(trailing_metadata=(*mapped.trailing_metadata, NO_TRANSPARENT_RETRY))


def _reason_only(code: grpc.StatusCode, message: str, reason: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=errors.ERROR_DOMAIN)
    return status_pb2.Status(code=code.value[0], message=message, details=[_pack(info)])


def _reason(error: Any) -> str:
    reason = getattr(error, "reason", None)
    return _cut(reason, MAX_INFO_KEY_CHARS) if isinstance(reason, str) and reason else "INTERNAL"


def _details(error: errors.ImagegenError, code: grpc.StatusCode) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=_reason(error), domain=errors.ERROR_DOMAIN, metadata=_info_metadata(error.metadata)
    )
    status = status_pb2.Status(code=code.value[0], message=_message(_text(error.message)))
    extra: list[Message] = []
    delay = retry_delay(error.retry_after)
    if delay is not None:
        extra.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, errors.QuotaExceeded):  # AIP-193: which quota, for whom
        extra.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=_cut(_text(error.subject), MAX_INFO_VALUE_CHARS),
                        description=_cut(f"at most {error.limit} new renders", MAX_VIOLATION_DESCRIPTION_CHARS),
                    )
                ]
            )
        )

    def size(info_now: error_details_pb2.ErrorInfo, *more: Message) -> int:
        trial = status_pb2.Status()
        trial.CopyFrom(status)
        trial.details.extend(_pack(m) for m in (info_now, *extra, *more))
        return trial.ByteSize()

    if size(info) > MAX_DETAILS_BYTES:  # only metadata can make it so: drop entries until it fits
        while info.metadata and size(info) > MAX_DETAILS_BYTES:
            del info.metadata[max(info.metadata)]
    violations = getattr(error, "violations", None)
    if isinstance(error, errors.InvalidRequest) and violations is not None:
        wanted = [_violation(v) for v in list(violations)[:MAX_VIOLATIONS]]
        kept = len(wanted)
        while (
            kept
            and size(info, error_details_pb2.BadRequest(field_violations=wanted[:kept])) > MAX_DETAILS_BYTES
        ):
            kept -= 1
        if kept < len(violations):
            info.metadata[VIOLATIONS_TRUNCATED] = "true"
            info.metadata[VIOLATIONS_TOTAL] = str(len(violations))
            while (
                kept
                and size(info, error_details_pb2.BadRequest(field_violations=wanted[:kept]))
                > MAX_DETAILS_BYTES
            ):
                kept -= 1
        extra.append(error_details_pb2.BadRequest(field_violations=wanted[:kept]))
    plan = error.plan if isinstance(error.plan, ImageGenerationPlan) else None
    if plan is not None:
        if size(info, plan) <= MAX_DETAILS_BYTES:
            extra.append(plan)
        else:
            info.metadata[PLAN_TRUNCATED] = "true"
            identity = plan_identity(plan)
            if size(info, identity) <= MAX_DETAILS_BYTES:
                extra.append(identity)
    status.details.extend(_pack(m) for m in (info, *extra))
    if status.ByteSize() > MAX_DETAILS_BYTES:  # cannot happen; should it, the reason alone
        return _reason_only(code, status.message, info.reason)
    return status


def plan_identity(plan: ImageGenerationPlan) -> ImageGenerationPlan:
    """The plan with only the fields that say which plan it is and where its image goes."""
    identity = ImageGenerationPlan()
    for name in _PLAN_IDENTITY:
        setattr(identity, name, getattr(plan, name))
    return identity


def retry_delay(seconds: object) -> duration_pb2.Duration | None:
    """RetryInfo's delay for retry_after: None when there is none or it is no number (NaN,
    junk); else 0 to MAX_RETRY_AFTER, however large (or infinite) it was."""
    if seconds is None or isinstance(seconds, bool):
        return None
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float: longer than any cap
        value = math.inf
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(min(max(value, 0.0), _MAX_RETRY_SECONDS) * 1e9))
    return delay


def _violation(violation: Any) -> error_details_pb2.BadRequest.FieldViolation:
    return error_details_pb2.BadRequest.FieldViolation(
        field=_cut(_text(getattr(violation, "field", "")), MAX_VIOLATION_FIELD_CHARS),
        description=_cut(_text(getattr(violation, "description", "")), MAX_VIOLATION_DESCRIPTION_CHARS),
    )


def _info_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    entries: Iterable[tuple[Any, Any]] = metadata.items() if isinstance(metadata, Mapping) else ()
    bounded: dict[str, str] = {}
    for key, value in entries:
        if len(bounded) == MAX_INFO_METADATA:
            break
        bounded[_cut(_text(key), MAX_INFO_KEY_CHARS)] = _cut(_text(value), MAX_INFO_VALUE_CHARS)
    return bounded


def _text(value: Any) -> str:
    """value as text a protobuf string takes: lone surrogates (which UTF-8 cannot carry) replaced."""
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def _encoded_size(char: str) -> int:
    """What gRPC's percent-encoding of grpc-message makes of one character, in bytes."""
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8"))


def _message(text: str) -> str:
    """text, cut so that it is at most MAX_STATUS_MESSAGE_BYTES once percent-encoded."""
    if len(text) * 12 <= MAX_STATUS_MESSAGE_BYTES:  # 12: the most a character can become
        return text
    if len(text) <= MAX_STATUS_MESSAGE_BYTES and sum(map(_encoded_size, text)) <= MAX_STATUS_MESSAGE_BYTES:
        return text
    budget, used = MAX_STATUS_MESSAGE_BYTES - len(_ELLIPSIS), 0
    for index, char in enumerate(text):  # a character is at least 1 byte: this ends within the budget
        used += _encoded_size(char)
        if used > budget:
            return text[:index] + _ELLIPSIS
    return text  # pragma: no cover - the text was over the budget


INTERNAL_STATUS = rpc_status.to_status(
    status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=errors.ERROR_DOMAIN))],
    )
)


async def abort_with_status(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """context.abort with status, keeping trailing metadata set earlier in the call."""
    # abort() replaces the trailing metadata: keep what was set before (the x-request-id)
    # beside the status details.
    trailing = (*(context.trailing_metadata() or ()), *status.trailing_metadata)
    await context.abort(status.code, status.details, trailing)


def status_for(
    exc: BaseException, method: str, code: grpc.StatusCode | None = None
) -> tuple[grpc.Status, str]:
    """What a call that raised exc answers with, and the reason: a domain error's own
    status; anything else INTERNAL_STATUS, its traceback logged here at ERROR (the
    caller sees neither the exception's type nor its text). code is what the handler
    set with context.set_code before raising, if anything: gRPC keeps it, so this does
    too (generated servicers' unimplemented methods set UNIMPLEMENTED and raise
    NotImplementedError, which is then no error of the server's and logged at INFO)."""
    if isinstance(exc, errors.ImagegenError):
        return to_status(exc), _reason(exc)
    if code is not None and code != grpc.StatusCode.OK:
        if code == grpc.StatusCode.UNIMPLEMENTED and isinstance(exc, NotImplementedError):
            log.info("%s is not implemented", method)
        else:
            log.error("%s failed unexpectedly (it set %s)", method, code.name, exc_info=exc)
        return _code_status(code), code.name
    log.error("%s failed unexpectedly", method, exc_info=exc)
    return INTERNAL_STATUS, "INTERNAL"


def _code_status(code: grpc.StatusCode) -> grpc.Status:
    """code with a generic message and an ErrorInfo whose reason is the code's name."""
    message = code.value[1]  # "unimplemented", "not found", ...
    return rpc_status.to_status(_reason_only(code, message, code.name))
