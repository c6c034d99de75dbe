"""Domain errors shared by both services and the clients.

Plain exceptions with no transport in them: imagegen_runtime.error_mapping turns them into
gRPC statuses in one place, and the clients turn statuses back into
PlanningFailed / ExecutionFailed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ERROR_DOMAIN = "imagegen"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: a dotted path such as "plan.size" and what is wrong."""

    field: str
    description: str


# How a map entry's key shows in a field path, its first characters only (so a path
# stays short whatever the key): plan.metadata['quality'], context['race'].
MAX_KEY_IN_PATH = 70


def map_entry(field: str, key: str) -> str:
    """The path of the entry key of the map field: f"{field}[{key!r}]", key cut to MAX_KEY_IN_PATH."""
    return f"{field}[{key[:MAX_KEY_IN_PATH]!r}]"


class ImagegenError(Exception):
    """Base of every error the services report on purpose.

    reason is the ErrorInfo reason (UPPER_SNAKE_CASE); retry_after, when set,
    becomes a RetryInfo; plan, when set, is attached to the status details so
    a caller can retry it or show it.
    """

    reason = "INTERNAL"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        plan: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.plan = plan


class InvalidRequest(ImagegenError):
    """The request breaks a documented rule; nothing was done."""

    reason = "INVALID_REQUEST"

    def __init__(self, violations: Sequence[FieldViolation], **kwargs: Any) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}", **kwargs)


class NotFound(ImagegenError):
    reason = "NOT_FOUND"


class ExecutionsUnavailable(ImagegenError):
    """Executions (StartExecution and friends) cannot be recorded or read right now:
    the coordination engine that holds them across replicas does not answer."""

    reason = "EXECUTIONS_UNAVAILABLE"
    retryable = True


class ReaderStalled(ImagegenError):
    """A streaming caller took no message within the server's write timeout; the server
    ended the call to free what it held for it (GetImage's buffer budget)."""

    reason = "READER_STALLED"


class Unauthenticated(ImagegenError):
    """The call carries no valid credentials (the service's bearer token)."""

    reason = "INVALID_CREDENTIALS"


# Planning errors: raised by the planner.
class PlanningError(ImagegenError):
    reason = "PLANNING_FAILED"


class PlannerUnavailable(PlanningError):
    """The LLM cannot be reached or timed out; a retry may help."""

    reason = "LLM_UNAVAILABLE"
    retryable = True


class PlannerThrottled(PlanningError):
    """The LLM rate-limited the planner; retry after retry_after."""

    reason = "LLM_RATE_LIMITED"
    retryable = True


class PlannerMisconfigured(PlanningError):
    """The planner cannot use its LLM as configured (bad credentials, no LLM
    configured for mode=llm); no retry helps until an operator acts."""

    reason = "LLM_NOT_USABLE"


class PlanOutputInvalid(PlanningError):
    """The LLM's answer stayed unusable after a repair round trip."""

    reason = "LLM_OUTPUT_INVALID"


# Execution errors: raised by the executor; they carry the plan.
class ExecutionError(ImagegenError):
    reason = "EXECUTION_FAILED"


class ProviderUnavailable(ExecutionError):
    reason = "PROVIDER_UNAVAILABLE"
    retryable = True


class ProviderThrottled(ExecutionError):
    """The image provider rate-limited the executor; retry after retry_after."""

    reason = "PROVIDER_RATE_LIMITED"
    retryable = True


class ProviderMisconfigured(ExecutionError):
    """The image provider refuses the executor's credentials or settings."""

    reason = "PROVIDER_NOT_USABLE"


class ProviderNotCapable(ProviderMisconfigured):
    """The provider cannot render this plan (it names more reference images than the
    provider takes, a mask it cannot apply, ...): checked against its declared
    capabilities before any call. A provider chain moves on to the next provider."""


class ContentRejected(ExecutionError):
    """The provider refused the prompt's content; the same plan will fail again."""

    reason = "CONTENT_REJECTED"


class StorageUnavailable(ExecutionError):
    reason = "STORAGE_UNAVAILABLE"
    retryable = True


class StorageMisconfigured(ExecutionError):
    """The store refuses the executor's credentials or settings (wrong keys, no
    access to the bucket); no retry helps until an operator acts."""

    reason = "STORAGE_NOT_USABLE"


class QuotaExceeded(ExecutionError):
    """A session reached one of its render limits (EXECUTOR_SESSION_QUOTA); retry_after
    says when the window frees a slot. subject ("session:<id>") and limit ("10/hour")
    become the QuotaFailure's violation."""

    reason = "SESSION_QUOTA_EXCEEDED"
    retryable = True

    def __init__(self, session_id: str, limit: str, retry_after: float, **kwargs: Any) -> None:
        self.subject = f"session:{session_id}"
        self.limit = limit
        super().__init__(
            f"session {session_id} reached its render quota of {limit}; retry in {retry_after:.0f} s",
            retry_after=retry_after,
            metadata={"session_id": session_id, "limit": limit},
            **kwargs,
        )
