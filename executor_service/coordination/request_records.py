"""Idempotency records for request_id: the first call's result, bound to what it did.

In the style of Stripe's idempotency keys (https://docs.stripe.com/api/idempotent_requests):
a request_id is bound to the identity of its first request — here the session the image
is filed in and the plan that decides it — and a reuse with anything else is refused
rather than answered with someone else's result. Records are kept in memory, least
recently used first out, bounded both by count and by the bytes of the results they
hold (a result carries its plan, up to tens of KB). Pure: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationResult

DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_RECORD_OVERHEAD_BYTES = 256  # the key, the binding and the bookkeeping of one record, roughly


def check_binding(bound_session: str, bound_plan: str, session_id: str, plan_id: str) -> None:
    """InvalidRequest on request_id unless a call is for the session and plan its
    request_id was first used for (every adapter's records give the same error)."""
    if (bound_session, bound_plan) != (session_id, plan_id):
        where = "session" if bound_session != session_id else "plan"
        raise InvalidRequest(
            [FieldViolation("request_id", f"was already used for a different {where}; use a new request_id")]
        )


@dataclass
class _Record:
    session_id: str
    plan_id: str
    result: ImageGenerationResult | None = None  # None while the first call runs
    size: int = _RECORD_OVERHEAD_BYTES


class RequestRecords:
    """request_id -> the first call's binding and, once it succeeded, its result."""

    def __init__(self, max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        """What the records hold, in bytes (results' serialized size plus a fixed overhead each)."""
        return self._bytes

    def claim(self, request_id: str, session_id: str, plan_id: str) -> ImageGenerationResult | None:
        """The first result for request_id, or None when this call is to produce it.

        Raises InvalidRequest on request_id when the id was first used in another
        session or for another plan. A call that finds the first one still running
        gets None too, and joins that render through the plan's single flight."""
        record = self._records.get(request_id)
        if record is None:
            self._add(request_id, _Record(session_id, plan_id))
            return None
        check_binding(record.session_id, record.plan_id, session_id, plan_id)
        self._records.move_to_end(request_id)
        return record.result

    def complete(self, request_id: str, result: ImageGenerationResult) -> None:
        """Keep result as the answer for every later call with request_id."""
        record = self._records.get(request_id)
        if record is None or record.result is not None:
            return  # evicted meanwhile, or completed by a call that shared the render
        record.result = result
        grown = _RECORD_OVERHEAD_BYTES + result.ByteSize()
        self._bytes += grown - record.size
        record.size = grown
        self._evict()

    def release(self, request_id: str) -> None:
        """Forget a claim whose call failed, so a retry runs again."""
        record = self._records.get(request_id)
        if record is not None and record.result is None:
            self._remove(request_id)

    def forget_session(self, session_id: str) -> int:
        """Forget every record of session_id (finished or not); how many there were. A walk
        of the records: at most max_records."""
        gone = [request_id for request_id, record in self._records.items() if record.session_id == session_id]
        for request_id in gone:
            self._remove(request_id)
        return len(gone)

    def _add(self, request_id: str, record: _Record) -> None:
        self._records[request_id] = record
        self._bytes += record.size
        self._evict()

    def _evict(self) -> None:
        while self._records and (len(self._records) > self._max_records or self._bytes > self._max_bytes):
            self._remove(next(iter(self._records)))

    def _remove(self, request_id: str) -> None:
        self._bytes -= self._records.pop(request_id).size
