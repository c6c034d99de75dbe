"""One trace from the caller through both services: client spans and server
spans of the planner and the executor, all under the caller's span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from clients import AsyncImagegenClient
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from imagegen_runtime.telemetry.tracing import instrument_clients
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.integration.test_logs import JsonLines, json_logs  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    undo = instrument_clients(provider)
    yield provider, exporter
    undo()
    provider.shutdown()


@pytest.fixture
async def targets(spans: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    provider, _ = spans
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"), tracer_provider=provider)
    executor = await create_executor_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path), tracer_provider=provider
    )
    yield f"127.0.0.1:{planner.port}", f"127.0.0.1:{executor.port}"
    await planner.stop(None)
    await executor.stop(None)


async def test_one_generate_is_one_trace_across_client_planner_and_executor(
    spans: tuple[TracerProvider, InMemorySpanExporter], targets: tuple[str, str], json_logs: JsonLines
) -> None:
    provider, exporter = spans
    async with AsyncImagegenClient(*targets) as client:
        with provider.get_tracer("backend").start_as_current_span("chat turn") as parent:
            await client.generate("A wyvern over the salt marshes", session_id="trace-1")
    finished = exporter.get_finished_spans()
    by_kind = {(span.kind, span.name) for span in finished}
    assert {
        (SpanKind.CLIENT, "/imagegen.v1.PlannerService/CreatePlan"),
        (SpanKind.SERVER, "/imagegen.v1.PlannerService/CreatePlan"),
        (SpanKind.CLIENT, "/imagegen.v1.ExecutorService/ExecutePlan"),
        (SpanKind.SERVER, "/imagegen.v1.ExecutorService/ExecutePlan"),
    } <= by_kind
    trace_id = parent.get_span_context().trace_id
    assert {span.context.trace_id for span in finished} == {trace_id}
    clients = {span.name: span for span in finished if span.kind == SpanKind.CLIENT}
    for span in finished:
        if span.kind == SpanKind.SERVER:  # each server span is the child of its client span
            assert span.parent is not None and span.parent.span_id == clients[span.name].context.span_id
        elif span.kind == SpanKind.CLIENT:
            assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    # each call's log lines name its trace and its server span
    servers = {span.name.lstrip("/"): span for span in finished if span.kind == SpanKind.SERVER}
    lines = [line for line in json_logs.records() if line["logger"] == "imagegen.rpc"]
    assert sorted(line["method"] for line in lines) == sorted(servers)
    for line in lines:
        assert line["trace_id"] == format(trace_id, "032x")
        assert line["span_id"] == format(servers[line["method"]].context.span_id, "016x")


async def test_untraced_servers_and_undone_clients_make_no_spans(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_clients(provider)()  # instrumented, then undone at once
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
    try:
        async with AsyncImagegenClient(f"127.0.0.1:{planner.port}", "127.0.0.1:1") as client:
            with provider.get_tracer("backend").start_as_current_span("chat turn"):
                await client.planner.create_plan("A quiet tavern", session_id="t")
    finally:
        await planner.stop(None)
    assert [span.name for span in exporter.get_finished_spans()] == ["chat turn"]
