"""The executor's settings: read from the environment once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imagegen.settings import env_bool, env_choice, env_float, env_str


@dataclass(frozen=True)
class ExecutorSettings:
    address: str = "127.0.0.1:50052"
    reflection: bool = True
    shutdown_grace_seconds: float = 30.0
    log_level: str = "INFO"
    provider: str = "offline"
    store: str = "local"
    local_store_dir: Path = Path("var/images")
    bucket: str = "imagegen"
    public_base_url: str = "http://127.0.0.1:8000/images"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorSettings:
        env = os.environ if env is None else env
        return cls(
            address=env_str(env, "EXECUTOR_ADDRESS", cls.address),
            reflection=env_bool(env, "EXECUTOR_REFLECTION", cls.reflection),
            shutdown_grace_seconds=env_float(env, "EXECUTOR_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds),
            log_level=env_str(env, "LOG_LEVEL", cls.log_level).upper(),
            provider=env_choice(env, "EXECUTOR_PROVIDER", cls.provider, {"offline"}),
            store=env_choice(env, "EXECUTOR_STORE", cls.store, {"local"}),
            local_store_dir=Path(env_str(env, "EXECUTOR_LOCAL_STORE_DIR", str(cls.local_store_dir))),
            bucket=env_str(env, "EXECUTOR_BUCKET", cls.bucket),
            public_base_url=env_str(env, "EXECUTOR_PUBLIC_BASE_URL", cls.public_base_url),
        )
