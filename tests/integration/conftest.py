"""Fixtures the interceptor's tests share (their helpers are tests/support/calls.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.calls import ClosingLines, closing_lines, in_memory_tracing


@pytest.fixture
def lines() -> Iterator[ClosingLines]:
    """Every closing line (logger imagegen.rpc) the servers in this process log during the test."""
    with closing_lines() as handler:
        yield handler


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An in-memory tracer provider and the exporter that holds its spans."""
    with in_memory_tracing() as provider_and_exporter:
        yield provider_and_exporter
