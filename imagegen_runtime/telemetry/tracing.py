"""OpenTelemetry tracing: the servers' tracer provider, and the callers' side.

Servers trace in their one interceptor (imagegen_runtime.interceptor), with their
own tracer provider (nothing global is patched, so servers in one process stay
apart): a server span per call, named and described as the gRPC instrumentation's
(`/imagegen.v1.PlannerService/CreatePlan`, rpc.* attributes), continuing the trace a
caller sends in `traceparent` metadata. Health checks are not traced: probes would
drown the real calls. The instrumentation's own server interceptor is not used: it
cannot serve a handler that writes with context.write (health's Watch).

Callers (the backend, tests) trace their side with instrument_clients(),
which patches grpc.aio's channel constructors until the returned undo is
called; the clients in clients/ then need no change.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import TracerProvider as AnyTracerProvider


def otlp_tracer_provider(service_name: str, endpoint: str) -> TracerProvider:
    """Spans batched to an OTLP/gRPC collector at endpoint. The exporter also honours
    the other standard OTEL_EXPORTER_OTLP_* variables (headers, certificates, ...)."""
    # Imported here: only a traced process loads the exporter and its grpc stubs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def instrument_clients(tracer_provider: AnyTracerProvider | None = None) -> Callable[[], None]:
    """Trace every grpc.aio channel made from now on (client spans, context sent in
    metadata); returns the function that undoes it."""
    instrumentor = GrpcAioInstrumentorClient(filter_=filters.negate(filters.health_check()))
    instrumentor.instrument(tracer_provider=tracer_provider)
    return instrumentor.uninstrument
