"""The one OpenAI error classifier both adapters use, and Retry-After, bounded; the adapters'
mapping onto their own errors is tested against a fake server in
tests/integration/test_openai_agent.py and test_openai_images.py."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace

import openai
import pytest

from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen_runtime.openai_client import BUDGET_GRACE, SDK_LONGEST_WAIT, call_budget
from imagegen_runtime.openai_errors import AnswerTooLarge, AnswerUnreadable, CallTimedOut, classify_openai_error
from imagegen_runtime.openai_errors import OpenAIFailureKind as Kind
from imagegen_runtime.openai_errors import retry_after_seconds

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


# ---------------------------------------------------------------- answers that are not the API's
def response_of(status: int, headers: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(request=None, status_code=status, headers={"x-request-id": "req-1", **(headers or {})})


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (openai.APIStatusError("Error code: 302", response=response_of(302), body=""),  # type: ignore[arg-type]
         "unexpected HTTP 302"),
        (openai.NotFoundError("Error code: 404", response=response_of(404), body=f"<html>{KEY}</html>"),  # type: ignore[arg-type]
         "HTTP 404 with a page that is not an API error"),
        (openai.BadRequestError("Error code: 400", response=response_of(400), body="Bad Gateway"),  # type: ignore[arg-type]
         "HTTP 400 with a page that is not an API error"),
        (openai.APIResponseValidationError(response_of(200), body=KEY), "not an API answer"),  # type: ignore[arg-type]
        (AnswerTooLarge(1024, request=None), "more than 1024 bytes"),
        (AnswerUnreadable("no list of images"), "not an API answer: no list of images"),
        (CallTimedOut(2.5), "did not answer within 2.5 s"),
        (json.JSONDecodeError("Expecting value", KEY, 0), "not valid JSON"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not valid JSON"),
    ],
    ids=["302", "404 html", "400 text", "validation", "too large", "unreadable", "call budget", "json", "utf-8"],
)
def test_answers_that_are_not_the_apis_are_unavailable(
    error: Exception, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    failure = classify_openai_error(error, "the test LLM", log)
    assert failure.kind == Kind.UNAVAILABLE and failure.retry_after is None
    assert what in failure.description
    assert KEY not in failure.description and KEY not in caplog.text


def test_the_apis_own_json_errors_keep_their_meaning() -> None:
    # The same statuses as above, with the API's JSON error body: the API itself refused.
    assert classify_openai_error(status_error(openai.NotFoundError, 404), "x", log).kind == Kind.NOT_USABLE
    assert classify_openai_error(status_error(openai.BadRequestError, 400), "x", log).kind == Kind.REQUEST_REJECTED
    # Credentials and rate limits mean what they say whoever sent them.
    html = "<html>denied</html>"
    denied = openai.PermissionDeniedError("Error code: 403", response=response_of(403), body=html)  # type: ignore[arg-type]
    assert classify_openai_error(denied, "x", log).kind == Kind.NOT_USABLE
    limited = openai.RateLimitError("429", response=response_of(429, {"retry-after": "5"}), body=html)  # type: ignore[arg-type]
    assert classify_openai_error(limited, "x", log).retry_after == 5.0


MAX = MAX_RETRY_AFTER.total_seconds()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "9" * 400}, MAX),  # too large for a float: inf
        ({"retry-after": "9" * 10_000}, MAX),  # longer still: not even parsed
        ({"retry-after": "1e308"}, MAX),
        ({"retry-after": "inf"}, MAX),
        ({"retry-after": "Infinity"}, MAX),
        ({"retry-after": "3601"}, MAX),
        ({"retry-after": "3599.5"}, 3599.5),
        ({"retry-after": "-inf"}, 0.0),
        ({"retry-after": "-1e308"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-NaN"}, None),
        ({"retry-after": "x" * 10_000}, None),
        ({"retry-after-ms": "9" * 400}, MAX),
        ({"retry-after-ms": "-5"}, 0.0),
        ({"retry-after-ms": "nan", "retry-after": "4"}, 4.0),  # NaN is not said: the next header counts
        ({"retry-after-ms": "1e400", "retry-after": "4"}, MAX),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX),  # far future
        ({"retry-after": "Mon, 01 Jan 1900 00:00:00 GMT"}, 0.0),  # far past
        ({"retry-after": "Sun, 99 Foo 99999 99:99:99 GMT"}, None),  # a date that is none
        ({"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"}, None),  # beyond any datetime
    ],
)
def test_retry_after_is_always_finite_and_bounded(headers: dict[str, str], seconds: float | None) -> None:
    found = retry_after_seconds(headers)
    assert found == seconds
    assert found is None or (math.isfinite(found) and 0 <= found <= MAX)


def test_a_rate_limit_with_an_absurd_retry_after_is_throttled_with_the_bounded_wait() -> None:
    failure = classify_openai_error(
        status_error(openai.RateLimitError, 429, headers={"retry-after": "9" * 400}), "x", log
    )
    assert (failure.kind, failure.retry_after) == (Kind.THROTTLED, MAX)


def test_the_call_budget_covers_the_sdks_longest_wait() -> None:
    from openai._constants import MAX_RETRY_AFTER_DELAY

    assert SDK_LONGEST_WAIT >= MAX_RETRY_AFTER_DELAY
    assert call_budget(2.0, 0) == 2.0 + BUDGET_GRACE
    assert call_budget(2.0, 2) == 6.0 + 2 * SDK_LONGEST_WAIT + BUDGET_GRACE
