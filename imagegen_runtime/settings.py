"""Typed readers for environment variables, shared by both services' config.

Each raises ConfigError naming the variable, so a bad deployment fails at
start with a message an operator can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TypeVar


class ConfigError(ValueError):
    pass


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def env_url(env: Mapping[str, str], name: str) -> str:
    """An http:// or https:// URL without a trailing slash; empty when unset."""
    url = env_str(env, name, "")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={url!r}: expected an http:// or https:// URL")
    return url.rstrip("/")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: Collection[str]) -> str:
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(sorted(choices))}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(env, name, default, float, "a number", minimum)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _env_number(env, name, default, int, "a whole number", 0)


N = TypeVar("N", int, float)


def _env_number(
    env: Mapping[str, str], name: str, default: N, parse: Callable[[str], N], expected: str, minimum: N
) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected {expected}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value
