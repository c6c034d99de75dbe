"""How the server's interceptor names a call's final status code, and what its log
lines may take from a request."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from imagegen_runtime.telemetry.calls import (
    DEADLINE_SLACK_SECONDS,
    MAX_LOG_FIELD_CHARS,
    final_code,
    log_field,
    request_id_from,
)


class Context:
    """What final_code reads of a grpc.aio.ServicerContext."""

    def __init__(self, remaining: float | None, code: grpc.StatusCode | None = None, *, cancelled: bool = False) -> None:
        self._remaining, self._code, self._cancelled = remaining, code, cancelled

    def cancelled(self) -> bool:
        return self._cancelled

    def time_remaining(self) -> float | None:
        return self._remaining

    def code(self) -> grpc.StatusCode | None:
        return self._code


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (0.0, grpc.StatusCode.DEADLINE_EXCEEDED),  # the server's own deadline fired
        # the client's deadline fired first and its cancellation arrived a moment early
        (0.0004, grpc.StatusCode.DEADLINE_EXCEEDED),
        (DEADLINE_SLACK_SECONDS, grpc.StatusCode.DEADLINE_EXCEEDED),
        (DEADLINE_SLACK_SECONDS * 2, grpc.StatusCode.CANCELLED),  # the client gave up early
        (30.0, grpc.StatusCode.CANCELLED),
        (None, grpc.StatusCode.CANCELLED),  # no deadline: a cancellation, or the server stopping
    ],
)
def test_a_cancelled_call_is_deadline_exceeded_only_when_its_deadline_had_come(
    remaining: float | None, expected: grpc.StatusCode
) -> None:
    # a code set earlier in the call does not count: the caller got the cancellation
    context = Context(remaining, code=grpc.StatusCode.OK)
    assert final_code(context, asyncio.CancelledError()) == expected  # type: ignore[arg-type]


def test_other_endings_keep_the_code_the_call_got() -> None:
    assert final_code(Context(1.0), None) == grpc.StatusCode.OK  # type: ignore[arg-type]
    assert final_code(Context(1.0, grpc.StatusCode.NOT_FOUND), None) == grpc.StatusCode.NOT_FOUND  # type: ignore[arg-type]
    assert final_code(Context(1.0), RuntimeError()) == grpc.StatusCode.UNKNOWN  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("table-3", "table-3"),
        ("竜" * MAX_LOG_FIELD_CHARS, "竜" * MAX_LOG_FIELD_CHARS),
        ("s" * 1_000_000, "s" * (MAX_LOG_FIELD_CHARS - 3) + "..."),
        ("two\nlines\r\u2028x\x00", "two?lines??x?"),  # no forged line, in the text format either
    ],
)
def test_a_log_field_is_bounded_and_printable(value: str, expected: str) -> None:
    assert log_field(value) == expected and len(log_field(value)) <= MAX_LOG_FIELD_CHARS


def test_only_a_sane_request_id_is_kept() -> None:
    assert request_id_from((("x-request-id", "ok-1"),)) == "ok-1"
    for sent in ("r" * 129, "r" * 1_000_000, "line\nbreak", b"bytes"):
        minted = request_id_from((("x-request-id", sent),))
        assert minted != sent and len(minted) == 36


def test_an_error_in_a_call_the_caller_left_is_its_cancellation() -> None:
    assert final_code(Context(5.0, cancelled=True), RuntimeError()) == grpc.StatusCode.CANCELLED  # type: ignore[arg-type]
    assert final_code(Context(0.0, cancelled=True), RuntimeError()) == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[arg-type]


def test_a_status_already_sent_stands_when_the_caller_leaves_before_the_closing_line() -> None:
    refused = Context(5.0, grpc.StatusCode.UNAUTHENTICATED, cancelled=True)
    assert final_code(refused, grpc.aio.AbortError()) == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[arg-type]
