"""Observability settings: what each variable does, and the ConfigError a bad one gives."""

from __future__ import annotations

import pytest

from executor_service.config import ExecutorSettings
from imagegen.v1.executor_service_pb2 import ExecutePlanRequest, ExecutePlanResponse
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult
from imagegen_runtime.settings import ConfigError
from imagegen_runtime.telemetry.calls import message_ids, request_id_from
from imagegen_runtime.telemetry.metrics import RpcMetrics
from imagegen_runtime.telemetry.server_telemetry import ServerTelemetry
from imagegen_runtime.telemetry.settings import TelemetrySettings
from planner_service.config import PlannerSettings


def test_defaults_serve_no_metrics_log_json_and_trace_nothing() -> None:
    planner, executor = PlannerSettings.from_env({}), ExecutorSettings.from_env({})
    assert planner.telemetry == TelemetrySettings(service_name="imagegen-planner")
    assert executor.telemetry == TelemetrySettings(service_name="imagegen-executor")
    assert (executor.telemetry.metrics_address, executor.telemetry.log_format, executor.telemetry.tracing_endpoint) == (
        "", "json", "",
    )
    assert (executor.health_interval_seconds, executor.health_timeout_seconds) == (5.0, 3.0)


def test_each_variable_is_read() -> None:
    planner = PlannerSettings.from_env(
        {"PLANNER_METRICS_ADDRESS": "0.0.0.0:9464", "LOG_FORMAT": "TEXT",
         "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SERVICE_NAME": "planner-eu"}
    )
    assert planner.telemetry == TelemetrySettings("0.0.0.0:9464", "text", "http://collector:4317", "planner-eu")
    executor = ExecutorSettings.from_env(
        {"EXECUTOR_METRICS_ADDRESS": "[::]:9465", "EXECUTOR_HEALTH_INTERVAL_SECONDS": "0.5",
         "EXECUTOR_HEALTH_TIMEOUT_SECONDS": "1.5", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
         "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317"}
    )
    assert executor.telemetry.metrics_address == "[::]:9465"
    assert executor.telemetry.tracing_endpoint == "http://traces:4317"  # the traces-specific one wins
    assert (executor.health_interval_seconds, executor.health_timeout_seconds) == (0.5, 1.5)


def test_the_sdk_switch_turns_tracing_off() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}
    assert PlannerSettings.from_env(env).telemetry.tracing_endpoint == ""


@pytest.mark.parametrize(
    ("settings", "name", "value"),
    [
        (PlannerSettings, "PLANNER_METRICS_ADDRESS", "9464"),
        (PlannerSettings, "PLANNER_METRICS_ADDRESS", "host:http"),
        (PlannerSettings, "PLANNER_METRICS_ADDRESS", "host:70000"),
        (PlannerSettings, "LOG_FORMAT", "yaml"),
        (PlannerSettings, "OTEL_SDK_DISABLED", "maybe"),
        # the health check's timing must be positive
        (ExecutorSettings, "EXECUTOR_HEALTH_INTERVAL_SECONDS", "0"),
        (ExecutorSettings, "EXECUTOR_HEALTH_TIMEOUT_SECONDS", "0"),
    ],
)
def test_a_bad_value_names_its_variable(
    settings: type[PlannerSettings] | type[ExecutorSettings], name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        settings.from_env({name: value})


def test_an_otlp_endpoint_makes_a_tracer_provider_and_metrics_always_observe() -> None:
    traced = ServerTelemetry(TelemetrySettings(tracing_endpoint="http://127.0.0.1:1", service_name="x"))
    try:
        assert traced.tracer_provider.resource.attributes["service.name"] == "x"  # type: ignore[union-attr]
        (observer,) = traced.observers
        assert isinstance(observer, RpcMetrics)
    finally:
        traced.tracer_provider.shutdown()  # type: ignore[union-attr]
    untraced = ServerTelemetry(TelemetrySettings())
    assert untraced.tracer_provider is None and isinstance(untraced.observers[0], RpcMetrics)


@pytest.mark.parametrize(
    ("metadata", "kept"),
    [
        ((("x-request-id", "abc-123"),), True),
        ((("other", "v"), ("x-request-id", "trace:1/2+3=")), True),
        ((("x-request-id", "two words"),), False),
        ((("x-request-id", "a" * 129),), False),
        ((("x-request-id", ""),), False),
        (None, False),
    ],
)
def test_a_request_id_is_kept_only_when_it_is_a_sane_token(metadata: tuple | None, kept: bool) -> None:
    request_id = request_id_from(metadata)
    sent = dict(metadata or ()).get("x-request-id")
    assert (request_id == sent) is kept and request_id


def test_session_and_plan_ids_come_from_wherever_the_contract_puts_them() -> None:
    plan = ImageGenerationPlan(session_id="s-1", plan_id="p" * 32)
    assert message_ids(ExecutePlanRequest(plan=plan)) == {"session_id": "s-1", "plan_id": "p" * 32}
    assert message_ids(ExecutePlanResponse(result=ImageGenerationResult(plan=plan))) == {
        "session_id": "s-1", "plan_id": "p" * 32,
    }
    assert message_ids(ExecutePlanRequest()) == {}
