"""The one OpenAI error classifier both adapters use, and Retry-After; the adapters'
mapping onto their own errors is tested against a fake server in
tests/integration/test_openai_agent.py and test_openai_images.py."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace

import openai
import pytest

from imagegen_runtime.openai_errors import OpenAIFailureKind as Kind
from imagegen_runtime.openai_errors import classify_openai_error, retry_after_seconds

KEY = "sk-secret-0123456789"
log = logging.getLogger("test_openai_errors")


def status_error(
    error_type: type[openai.APIStatusError], status: int, code: str | None = None, headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    response = SimpleNamespace(request=None, status_code=status, headers={"x-request-id": "req-1", **(headers or {})})
    body = {"message": f"Incorrect API key provided: {KEY}", "code": code}
    return error_type(f"Error code: {status} - {KEY}", response=response, body=body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind", "retry_after"),
    [
        (openai.APITimeoutError(request=None), Kind.UNAVAILABLE, None),  # type: ignore[arg-type]
        (openai.APIConnectionError(request=None), Kind.UNAVAILABLE, None),  # type: ignore[arg-type]
        (status_error(openai.InternalServerError, 503), Kind.UNAVAILABLE, None),
        (status_error(openai.APIStatusError, 408), Kind.UNAVAILABLE, None),
        (status_error(openai.ConflictError, 409), Kind.UNAVAILABLE, None),
        (status_error(openai.RateLimitError, 429, headers={"retry-after": "7"}), Kind.THROTTLED, 7.0),
        (status_error(openai.RateLimitError, 429), Kind.THROTTLED, None),
        (status_error(openai.RateLimitError, 429, "insufficient_quota"), Kind.NOT_USABLE, None),
        (status_error(openai.AuthenticationError, 401), Kind.NOT_USABLE, None),
        (status_error(openai.PermissionDeniedError, 403), Kind.NOT_USABLE, None),
        (status_error(openai.NotFoundError, 404), Kind.NOT_USABLE, None),
        (status_error(openai.BadRequestError, 400), Kind.REQUEST_REJECTED, None),
        (status_error(openai.UnprocessableEntityError, 422), Kind.REQUEST_REJECTED, None),
        (status_error(openai.BadRequestError, 400, "moderation_blocked"), Kind.CONTENT_REJECTED, None),
        (status_error(openai.BadRequestError, 400, "content_policy_violation"), Kind.CONTENT_REJECTED, None),
    ],
    ids=["timeout", "connection", "503", "408", "409", "429", "429 no header", "429 quota", "401", "403", "404",
         "400", "422", "moderation", "content policy"],
)
def test_sdk_errors_are_sorted_into_kinds(
    error: openai.APIError, kind: Kind, retry_after: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    failure = classify_openai_error(error, "the test LLM", log)
    assert (failure.kind, failure.retry_after) == (kind, retry_after)
    assert failure.description.startswith("the test LLM ")
    assert failure.status == getattr(error, "status_code", None)
    assert KEY not in failure.description and KEY not in caplog.text  # the server's text goes nowhere
    assert [r.name for r in caplog.records] == [log.name]  # logged once, under the adapter's logger


def test_only_plain_error_codes_are_kept() -> None:
    assert classify_openai_error(status_error(openai.BadRequestError, 400, "invalid_value"), "x", log).code == (
        "invalid_value"
    )
    failure = classify_openai_error(status_error(openai.BadRequestError, 400, f"bad key {KEY}"), "x", log)
    assert failure.code is None and KEY not in failure.description


def test_retry_after_reads_milliseconds_seconds_and_dates() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert 110 < retry_after_seconds({"retry-after": later}) <= 120  # type: ignore[operator]
