"""request_id records stay within their count and byte budgets, least recently used out first."""

from __future__ import annotations

import pytest

from executor_service.coordination.request_records import RequestRecords
from imagegen.errors import InvalidRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationResult
from tests.support.plans import make_plan


def result(prompt_chars: int) -> ImageGenerationResult:
    return ImageGenerationResult(plan=make_plan(enhanced_prompt="x" * prompt_chars), storage_path="b/k")


def test_memory_is_bounded_by_bytes_not_only_by_count() -> None:
    records = RequestRecords(max_records=10_000, max_bytes=100_000)
    for i in range(100):  # 100 results of ~4 KB each: 400 KB if kept by count alone
        assert records.claim(f"r-{i}", "s", f"p{i}") is None
        records.complete(f"r-{i}", result(4000))
    assert records.bytes <= 100_000
    assert 10 < len(records) < 30
    assert records.claim("r-99", "s", "p99") is not None  # the newest are kept
    assert records.claim("r-0", "s", "p0") is None  # the oldest went first


def test_count_bound_and_recency() -> None:
    records = RequestRecords(max_records=2)
    for i in range(2):
        records.claim(f"r-{i}", "s", "p")
        records.complete(f"r-{i}", result(10))
    records.claim("r-0", "s", "p")  # used again: now the most recent
    records.claim("r-2", "s", "p")
    assert len(records) == 2 and records.claim("r-0", "s", "p") is not None
    assert records.claim("r-1", "s", "p") is None  # evicted, so claimed afresh


@pytest.mark.parametrize(("session", "plan", "where"), [("s2", "p1", "session"), ("s1", "p2", "plan")])
def test_a_mismatch_names_request_id_and_what_differs(session: str, plan: str, where: str) -> None:
    records = RequestRecords()
    records.claim("turn-42", "s1", "p1")
    with pytest.raises(InvalidRequest) as caught:
        records.claim("turn-42", session, plan)
    (violation,) = caught.value.violations
    assert violation.field == "request_id" and where in violation.description


def test_release_frees_only_a_pending_claim() -> None:
    records = RequestRecords()
    records.claim("a", "s", "p")
    records.release("a")
    assert len(records) == 0 and records.bytes == 0
    records.claim("b", "s", "p")
    records.complete("b", result(10))
    records.release("b")
    assert records.claim("b", "s", "p") is not None
