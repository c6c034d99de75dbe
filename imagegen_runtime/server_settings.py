"""The settings every service has, whatever it serves: what imagegen_runtime.bootstrap
needs to start and stop its server. PlannerSettings and ExecutorSettings extend
ServerSettings with their own fields (and their own defaults for these), and read
these from the environment with server_fields:

  {PREFIX}_ADDRESS                 host:port to listen on (port 0 picks a free one)
  {PREFIX}_REFLECTION              serve gRPC reflection: true or false
  {PREFIX}_SHUTDOWN_GRACE_SECONDS  how long a stop lets the calls in flight finish
  LOG_LEVEL                        DEBUG, INFO, WARNING, ...
  telemetry's variables            {PREFIX}_METRICS_ADDRESS, LOG_FORMAT, OTEL_* (imagegen_runtime.telemetry.settings)
  security's variables             {PREFIX}_TLS_*, {PREFIX}_AUTH_TOKEN, {PREFIX}_HEALTH_ADDRESS (imagegen_runtime.security)
  coordination's variables         {PREFIX}_COORDINATION_URL, _PASSWORD, _TIMEOUT_SECONDS (imagegen_runtime.valkey)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.settings import env_bool, env_float, env_str
from imagegen_runtime.telemetry.settings import TelemetrySettings
from imagegen_runtime.valkey import CoordinationSettings


@dataclass(frozen=True)
class ServerSettings:
    address: str = "127.0.0.1:0"
    reflection: bool = True
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    telemetry: TelemetrySettings = TelemetrySettings()
    security: ServerSecurity = ServerSecurity()
    coordination: CoordinationSettings = CoordinationSettings()

    @classmethod
    def server_fields(cls, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
        """These fields as env sets them for the service whose variables start with
        prefix ("PLANNER"), cls's defaults where it does not: keyword arguments for cls."""
        return {
            "address": env_str(env, f"{prefix}_ADDRESS", cls.address),
            "reflection": env_bool(env, f"{prefix}_REFLECTION", cls.reflection),
            "shutdown_grace_seconds": env_float(env, f"{prefix}_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
            "log_level": env_str(env, "LOG_LEVEL", cls.log_level).upper(),
            "telemetry": TelemetrySettings.from_env(env, prefix, cls.telemetry.service_name),
            "security": ServerSecurity.from_env(env, prefix),
            "coordination": CoordinationSettings.from_env(env, prefix),
        }
