"""The planner's settings: read from the environment once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imagegen.settings import env_bool, env_float, env_str


@dataclass(frozen=True)
class PlannerSettings:
    address: str = "127.0.0.1:50051"
    reflection: bool = True
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannerSettings:
        env = os.environ if env is None else env
        return cls(
            address=env_str(env, "PLANNER_ADDRESS", cls.address),
            reflection=env_bool(env, "PLANNER_REFLECTION", cls.reflection),
            shutdown_grace_seconds=env_float(env, "PLANNER_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
            log_level=env_str(env, "LOG_LEVEL", cls.log_level).upper(),
        )
