"""What an OpenAI SDK failure means, for both OpenAI adapters: the planner's chat
completions and the executor's images (OpenAI, or any OpenAI-compatible server).

classify_openai_error sorts a failure into a few service-neutral kinds with a short
description; each adapter turns a kind into its own domain error (PlanningError or
ExecutionError subclasses of imagegen.errors) in a few lines. A failure is anything in
OPENAI_FAILURES: an error the SDK raised (openai.APIError), a body the SDK could not
decode, an answer the adapter could not read (AnswerUnreadable), an answer over the
size limit (AnswerTooLarge) or a call over its time budget (CallTimedOut).

The rule for answers that are not the API's: the upstream answered, but not as the
API does (HTML or invalid JSON with status 200, JSON of another shape, a redirect, a
4xx page that is not the API's JSON error, a body over the limit). Whatever sent it (a
proxy, a captive portal, a half-deployed gateway) may well answer properly next time,
and nothing says the request was wrong, so it is UNAVAILABLE: the caller may retry and
the fallbacks (the executor's provider chain, the planner's offline plan) run.

The server's message is never kept or logged: some servers echo the API key back.
What is kept is the HTTP status, the error code when it is a plain identifier, the
request id (logged) and, on a 429, how long to wait, bounded (retry_after_seconds).
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import openai

from imagegen.catalogue import MAX_RETRY_AFTER

# Error codes for refused content: the same input fails again, so no retry helps.
REJECTED_CONTENT_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# A 429 that is not a rate: the account has no quota left, and waiting will not help.
QUOTA_EXHAUSTED_CODE = "insufficient_quota"
_PLAIN_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_RETRY_AFTER_SECONDS = MAX_RETRY_AFTER.total_seconds()
_MAX_HEADER_CHARS = 64  # a Retry-After longer than this is no number or date anyone sends
_DIGITS = re.compile(r"[0-9]+")


class OpenAIFailureKind(enum.Enum):
    UNAVAILABLE = "unavailable"  # no answer in time, no connection, 5xx, 408, 409, not the API's answer
    THROTTLED = "throttled"  # 429: retry after retry_after (when the server said)
    NOT_USABLE = "not usable"  # refused credentials, no quota, other 4xx: an operator must act
    CONTENT_REJECTED = "content rejected"  # refused content: the same input fails again
    REQUEST_REJECTED = "request rejected"  # 400/422: the server refused the request's shape


class AnswerUnreadable(Exception):
    """The upstream answered, but not with what the API answers (another JSON shape, a
    value of the wrong type, no JSON at all). what says so briefly, in words safe to
    return to a caller: never the answer's own text."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class AnswerTooLarge(openai.APIError):
    """The answer's body was over limit bytes (declared or read), and was not read on.
    An openai.APIError so that the SDK passes it on at once rather than retrying."""

    def __init__(self, limit: int, request: object) -> None:
        super().__init__(f"the answer is larger than {limit} bytes", request, body=None)  # type: ignore[arg-type]
        self.limit = limit


class CallTimedOut(Exception):
    """A whole call, every attempt and the waits between them, took longer than seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds


# What the SDK raises when a body labelled JSON is not JSON (it decodes it outside its
# own error handling); RecursionError: JSON nested deeper than the parser goes (the json
# module raises it, not JSONDecodeError, from about a thousand levels).
UNDECODABLE_BODY_ERRORS: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)
# Everything classify_openai_error sorts: an adapter catches these around a call and
# the reading of its answer, and nothing else (its own bugs stay INTERNAL).
OPENAI_FAILURES: tuple[type[Exception], ...] = (openai.APIError, AnswerUnreadable, CallTimedOut,
                                                *UNDECODABLE_BODY_ERRORS)
# What walking a parsed answer of an unexpected shape raises (construct() does not
# validate, so a field may hold anything); the adapters turn these into AnswerUnreadable
# around the walk alone.
WRONG_SHAPE_ERRORS: tuple[type[Exception], ...] = (
    AttributeError, TypeError, KeyError, IndexError, ValueError,
)


@dataclass(frozen=True)
class OpenAIFailure:
    """kind, and a description safe to return to a caller: the subject, what went
    wrong, the HTTP status and error code; never the server's own message."""

    kind: OpenAIFailureKind
    description: str
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None  # seconds, finite, 0 to MAX_RETRY_AFTER; THROTTLED only


def classify_openai_error(exc: Exception, subject: str, log: logging.Logger) -> OpenAIFailure:
    """Sort exc (one of OPENAI_FAILURES); subject names who failed ("the planning LLM")
    in the description and in the warning logged to log (type, status, code, request id)."""
    status: int | None = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    raw_code = getattr(exc, "code", None)
    code = raw_code if isinstance(raw_code, str) and _PLAIN_CODE.fullmatch(raw_code) else None
    log.warning(
        "%s call failed: %s%s code=%s (request id %s)",
        subject, type(exc).__name__, f" HTTP {status}" if status else "", code, _request_id(exc),
    )

    def failure(kind: OpenAIFailureKind, what: str, retry_after: float | None = None) -> OpenAIFailure:
        return OpenAIFailure(kind, f"{subject} {what}", status, code, retry_after)

    unavailable = OpenAIFailureKind.UNAVAILABLE
    if isinstance(exc, CallTimedOut):
        return failure(unavailable, f"did not answer within {exc.seconds:g} s, retries included")
    if isinstance(exc, AnswerUnreadable):
        return failure(unavailable, f"answered with something that is not an API answer: {exc.what}")
    if isinstance(exc, UNDECODABLE_BODY_ERRORS):
        return failure(unavailable, "answered with a body that is not valid JSON")
    if isinstance(exc, AnswerTooLarge):
        return failure(unavailable, f"answered with more than {exc.limit} bytes")
    if isinstance(exc, openai.APIResponseValidationError):
        return failure(unavailable, "answered with something that is not an API answer")
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError, its base class
        return failure(unavailable, "did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return failure(unavailable, "could not be reached")
    if code in REJECTED_CONTENT_CODES:
        return failure(OpenAIFailureKind.CONTENT_REJECTED, f"refused the content ({code})")
    if isinstance(exc, openai.RateLimitError):
        if code == QUOTA_EXHAUSTED_CODE:
            return failure(OpenAIFailureKind.NOT_USABLE, f"has no quota left ({code}); waiting will not help")
        return failure(
            OpenAIFailureKind.THROTTLED, "is rate limiting requests", retry_after_seconds(exc.response.headers)
        )
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return failure(OpenAIFailureKind.NOT_USABLE, f"refused the credentials (HTTP {status})")
    if status is None or status >= 500 or status in (408, 409):
        return failure(unavailable, f"failed (HTTP {status})")
    if status < 400:  # a redirect (never followed: the API does not send them) or stranger
        return failure(unavailable, f"answered with an unexpected HTTP {status}")
    if not isinstance(getattr(exc, "body", None), Mapping):
        # Not the API's JSON error: a proxy's or web server's page.
        return failure(unavailable, f"answered HTTP {status} with a page that is not an API error")
    rejected = f"rejected the request (HTTP {status}, {code or 'no code'})"
    if status in (400, 422):
        return failure(OpenAIFailureKind.REQUEST_REJECTED, f"{rejected}; check the model and settings")
    return failure(OpenAIFailureKind.NOT_USABLE, f"{rejected}; check the model name and base URL")


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from retry-after-ms, or Retry-After as seconds or an HTTP date;
    None when neither says. Always finite and 0 to MAX_RETRY_AFTER: a negative wait or a
    date in the past is 0, a longer one (a number too large for a float included) is
    MAX_RETRY_AFTER; NaN, junk and over-long values count as not said."""
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return _bounded(millis / 1000)
    value = headers.get("retry-after")
    seconds = _number(value)
    if seconds is not None:
        return _bounded(seconds)
    if value is None or len(value) > _MAX_HEADER_CHARS:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
        wait = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return _bounded(wait)


def _number(value: str | None) -> float | None:
    """A decimal number, inf for one too large for a float; None for anything else."""
    if value is None:
        return None
    text = value.strip()
    if len(text) > _MAX_HEADER_CHARS:
        # Only digits can mean anything this long: a wait longer than any limit.
        return math.inf if _DIGITS.fullmatch(text) else None
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _bounded(seconds: float) -> float:
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def _request_id(exc: Exception) -> str | None:
    request_id = getattr(exc, "request_id", None)
    return request_id[:128] if isinstance(request_id, str) else None
