"""What the tests of the server's interceptor share: the calls' closing log lines,
waited for without sleeping; both services started with tokens, metrics, tracing and
the plaintext health port; an in-memory tracer provider."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.serving import RunningServer
from imagegen_runtime.telemetry.settings import TelemetrySettings
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings

TOKEN = "interceptor-token-0123456789abcdef"
AUTHORIZED = (("authorization", f"Bearer {TOKEN}"),)


class ClosingLines(logging.Handler):
    """Every closing line (logger imagegen.rpc) the servers in this process log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._added = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._added.set()  # the servers log on the test's event loop thread

    def of(self, method: str) -> list[logging.LogRecord]:
        """The lines of calls to method ("grpc.health.v1.Health/Watch")."""
        return [r for r in self.records if getattr(r, "method", None) == method]

    async def wait_for(self, ready: Callable[[list[logging.LogRecord]], bool], timeout: float = 10) -> None:
        """Until ready(records). A call's line is logged, and its metrics counted, as it ends."""
        async with asyncio.timeout(timeout):
            while not ready(self.records):
                self._added.clear()
                await self._added.wait()


@contextlib.contextmanager
def closing_lines() -> Iterator[ClosingLines]:
    logger = logging.getLogger("imagegen.rpc")
    handler, saved = ClosingLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def codes(records: list[logging.LogRecord]) -> list[str]:
    return [getattr(r, "code", "") for r in records]


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider, exporter
    finally:
        provider.shutdown()


@contextlib.asynccontextmanager
async def running_service(
    kind: str, token: str, provider: TracerProvider | None, tmp_path: Path, **settings: Any
) -> AsyncIterator[RunningServer]:
    """The planner or the executor (local store under tmp_path) with token (empty: none),
    metrics, tracing to provider and the plaintext health port; settings add to them."""
    common: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "telemetry": TelemetrySettings(metrics_address="127.0.0.1:0"),
        "security": ServerSecurity(auth_token=token, health_address="127.0.0.1:0"),
        **settings,
    }
    if kind == "planner":
        running = await create_planner_server(PlannerSettings(**common), tracer_provider=provider)
    else:
        common.setdefault("local_store_dir", tmp_path / "images")
        running = await create_executor_server(ExecutorSettings(**common), tracer_provider=provider)
    try:
        yield running
    finally:
        await running.stop(None)
