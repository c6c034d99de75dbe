"""The observability settings both services share, read by their config.py.

  {SERVICE}_METRICS_ADDRESS   host:port of the Prometheus endpoint; empty: none
  LOG_FORMAT                  json (default) or text
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
                              the OTLP/gRPC collector; unset: no tracing
  OTEL_SDK_DISABLED           true turns tracing off even with an endpoint
  OTEL_SERVICE_NAME           the traces' service.name (default imagegen-planner/-executor)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imagegen_runtime.settings import ConfigError, env_bool, env_choice, env_str
from imagegen_runtime.telemetry.logs import DEFAULT_LOG_FORMAT, LOG_FORMATS


@dataclass(frozen=True)
class TelemetrySettings:
    metrics_address: str = ""  # empty: no metrics endpoint
    log_format: str = DEFAULT_LOG_FORMAT
    tracing_endpoint: str = ""  # empty: no tracing
    service_name: str = "imagegen"

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str, service_name: str) -> TelemetrySettings:
        tracing_endpoint = env_str(
            env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", "")
        )
        if env_bool(env, "OTEL_SDK_DISABLED", False):
            tracing_endpoint = ""
        return cls(
            metrics_address=_address(env, f"{prefix}_METRICS_ADDRESS"),
            log_format=env_choice(env, "LOG_FORMAT", cls.log_format, LOG_FORMATS),
            tracing_endpoint=tracing_endpoint,
            service_name=env_str(env, "OTEL_SERVICE_NAME", service_name),
        )


def _address(env: Mapping[str, str], name: str) -> str:
    address = env_str(env, name, "")
    if not address:
        return ""
    _host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name}={address!r}: expected host:port (port 0 picks a free one), or empty for none")
    return address
