"""What an OpenAI SDK error means, for both OpenAI adapters: the planner's chat
completions and the executor's images (OpenAI, or any OpenAI-compatible server).

classify_openai_error sorts an openai.APIError into a few service-neutral kinds
with a short description; each adapter turns a kind into its own domain error
(PlanningError or ExecutionError subclasses of imagegen.errors) in a few lines.

The server's message is never kept or logged: some servers echo the API key
back. What is kept is the HTTP status, the error code when it is a plain
identifier, the request id (logged) and, on a 429, how long to wait.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import openai

# Error codes for refused content: the same input fails again, so no retry helps.
REJECTED_CONTENT_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# A 429 that is not a rate: the account has no quota left, and waiting will not help.
QUOTA_EXHAUSTED_CODE = "insufficient_quota"
_PLAIN_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class OpenAIFailureKind(enum.Enum):
    UNAVAILABLE = "unavailable"  # no answer in time, no connection, 5xx, 408, 409: a retry may help
    THROTTLED = "throttled"  # 429: retry after retry_after (when the server said)
    NOT_USABLE = "not usable"  # refused credentials, no quota, other 4xx: an operator must act
    CONTENT_REJECTED = "content rejected"  # refused content: the same input fails again
    REQUEST_REJECTED = "request rejected"  # 400/422: the server refused the request's shape


@dataclass(frozen=True)
class OpenAIFailure:
    """kind, and a description safe to return to a caller: the subject, what went
    wrong, the HTTP status and error code; never the server's own message."""

    kind: OpenAIFailureKind
    description: str
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None  # seconds; THROTTLED only


def classify_openai_error(exc: openai.APIError, subject: str, log: logging.Logger) -> OpenAIFailure:
    """Sort exc; subject names who failed ("the planning LLM") in the description and
    in the warning logged to log (type, status, code and request id)."""
    status: int | None = getattr(exc, "status_code", None)
    code = exc.code if isinstance(exc.code, str) and _PLAIN_CODE.fullmatch(exc.code) else None
    log.warning(
        "%s call failed: %s%s code=%s (request id %s)",
        subject, type(exc).__name__, f" HTTP {status}" if status else "", code, getattr(exc, "request_id", None),
    )

    def failure(kind: OpenAIFailureKind, what: str, retry_after: float | None = None) -> OpenAIFailure:
        return OpenAIFailure(kind, f"{subject} {what}", status, code, retry_after)

    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError, its base class
        return failure(OpenAIFailureKind.UNAVAILABLE, "did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return failure(OpenAIFailureKind.UNAVAILABLE, "could not be reached")
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
        return failure(OpenAIFailureKind.UNAVAILABLE, f"failed (HTTP {status})")
    rejected = f"rejected the request (HTTP {status}, {code or 'no code'})"
    if status in (400, 422):
        return failure(OpenAIFailureKind.REQUEST_REJECTED, f"{rejected}; check the model and settings")
    return failure(OpenAIFailureKind.NOT_USABLE, f"{rejected}; check the model name and base URL")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from retry-after-ms, or Retry-After as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
