"""The planner's settings: read from the environment once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from imagegen import catalogue
from imagegen_runtime.security import ServerSecurity
from imagegen_runtime.server_settings import ServerSettings
from imagegen_runtime.settings import ConfigError, env_bool, env_choice, env_float, env_int, env_str, env_url
from imagegen_runtime.telemetry.settings import TelemetrySettings

DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
PLAN_LOCK_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class PlannerSettings(ServerSettings):
    # What every server has, with this service's defaults (imagegen_runtime.server_settings:
    # PLANNER_ADDRESS, ..., telemetry as in docs/operations.md, TLS and the token).
    address: str = "127.0.0.1:50051"
    telemetry: TelemetrySettings = TelemetrySettings(service_name="imagegen-planner")
    security: ServerSecurity = ServerSecurity(prefix="PLANNER")
    # Planning: which planner by default, and the LLM when there is one.
    mode: str = catalogue.DEFAULT_PLANNING_MODE  # catalogue.PLANNING_MODES
    llm_base_url: str = ""  # empty: OpenAI's, when an API key is set
    llm_api_key: str = field(default="", repr=False)  # never printed, never logged
    llm_model: str = "gpt-4.1-mini"
    llm_path: str = "tools"  # tools | json
    llm_timeout_seconds: float = 30.0
    llm_max_retries: int = 2
    llm_seed: int | None = 0  # None: send no seed
    fallback: bool = True
    cache_size: int = 1024
    cache_ttl_seconds: float = 3600.0

    @property
    def llm_configured(self) -> bool:
        """An API key (OpenAI) or a base URL (a compatible server, which may need no key)."""
        return bool(self.llm_api_key or self.llm_base_url)

    @property
    def effective_llm_base_url(self) -> str:
        return self.llm_base_url or DEFAULT_LLM_BASE_URL

    @property
    def plan_lock_seconds(self) -> float:
        """With Valkey (PLANNER_COORDINATION_URL): the lifetime of a replica's lock on a
        request it plans, renewed while it plans, and how long the other replicas wait
        for that plan. Long enough for one LLM planning: every SDK attempt of the draft
        and of its repair, and a margin for the retries' back-off and an offline fallback."""
        return self.llm_timeout_seconds * (self.llm_max_retries + 1) * 2 + PLAN_LOCK_MARGIN_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlannerSettings:
        env = os.environ if env is None else env
        settings = cls(
            **cls.server_fields(env, "PLANNER"),
            mode=env_choice(env, "PLANNER_MODE", cls.mode, catalogue.PLANNING_MODES),
            llm_base_url=env_url(env, "PLANNER_LLM_BASE_URL"),
            # OPENAI_API_KEY as well, so a deployment that already sets it just works.
            llm_api_key=env_str(env, "PLANNER_LLM_API_KEY", env_str(env, "OPENAI_API_KEY", "")),
            llm_model=env_str(env, "PLANNER_LLM_MODEL", cls.llm_model),
            llm_path=env_choice(env, "PLANNER_LLM_PATH", cls.llm_path, ("tools", "json")),
            llm_timeout_seconds=env_float(env, "PLANNER_LLM_TIMEOUT_SECONDS", cls.llm_timeout_seconds, minimum=0.001),
            llm_max_retries=env_int(env, "PLANNER_LLM_MAX_RETRIES", cls.llm_max_retries),
            llm_seed=_env_seed(env, "PLANNER_LLM_SEED", cls.llm_seed),
            fallback=env_bool(env, "PLANNER_LLM_FALLBACK", cls.fallback),
            cache_size=env_int(env, "PLANNER_CACHE_SIZE", cls.cache_size),
            cache_ttl_seconds=env_float(env, "PLANNER_CACHE_TTL_SECONDS", cls.cache_ttl_seconds),
        )
        if settings.mode == "llm" and not settings.llm_configured:
            raise ConfigError(
                "PLANNER_MODE='llm': set PLANNER_LLM_API_KEY (or OPENAI_API_KEY) or PLANNER_LLM_BASE_URL"
            )
        return settings


def _env_seed(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip().lower()
    if raw in ("off", "none"):
        return None
    return env_int(env, name, 0) if raw else default
