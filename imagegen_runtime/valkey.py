"""The coordination engine both services share when they run as several replicas: Valkey.

Valkey (or any Redis-protocol server) is an optimisation and a cost guard, never a
correctness dependency: the store's conditional write keeps every result true without
it. So every use goes through ``Valkey.run``, which turns a connection failure, a
timeout or an error answer (out of memory under ``noeviction``, a read-only replica, a
node still loading) into ``CoordinationUnavailable``; the adapters answer that with per-process
behaviour, and the service stays SERVING. The state is tracked in one place: one
WARNING line when Valkey stops answering, one INFO line when it answers again, and an
``on_change(up)`` hook the wiring turns into a metric. While it is down, it is tried
again at most every ``retry_interval`` seconds, so a dead node costs one connect
timeout per interval, not one per call; redis-py reconnects by itself.

The client is redis-py's asyncio client (``redis.asyncio``), which speaks to Valkey
unchanged: ``redis://host:port/db``, ``rediss://`` for TLS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError, ResponseError

from imagegen_runtime.settings import ConfigError, env_float, env_str

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_TIMEOUT_SECONDS = 1.0
DEFAULT_RETRY_INTERVAL_SECONDS = 2.0
REFUSAL_LOG_INTERVAL_SECONDS = 60.0  # error answers are logged at most this often


@dataclass(frozen=True)
class CoordinationSettings:
    """Where a service coordinates with its other replicas; empty url: in-process only.

      {PREFIX}_COORDINATION_URL              redis://host:6379/0, or rediss:// for TLS; empty: in-process
      {PREFIX}_COORDINATION_PASSWORD         the password (from a Secret), instead of one in the URL
      {PREFIX}_COORDINATION_TIMEOUT_SECONDS  bound on connecting and on each command (default 1)
    """

    url: str = ""
    password: str = field(default="", repr=False)  # never printed, never logged
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> CoordinationSettings:
        name = f"{prefix}_COORDINATION_URL"
        url = env_str(env, name, "")
        if url and not url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"{name}: expected a redis:// or rediss:// URL")  # it may hold a password
        return cls(
            url=url,
            password=env_str(env, f"{prefix}_COORDINATION_PASSWORD", ""),
            timeout_seconds=env_float(
                env, f"{prefix}_COORDINATION_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS, minimum=0.001
            ),
        )

    def __repr__(self) -> str:
        # The URL may carry a password: show only where it points.
        where = self.url.rsplit("@", 1)[-1] if self.url else "in-process"
        return f"CoordinationSettings({where!r}, timeout_seconds={self.timeout_seconds})"


class CoordinationUnavailable(Exception):
    """Valkey did not answer (or is being left alone after it did not); use per-process behaviour."""


class Valkey:
    """One connection pool to Valkey for a service, and whether Valkey answers.

    url: redis://[user:password@]host:port/db or rediss://…; password, when given,
    overrides the URL's (it comes from a Secret). timeout bounds connecting and each
    command, in seconds. prefix namespaces every key this service writes, so several
    deployments can share one Valkey. on_change(up) hears every transition.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry_interval: float = DEFAULT_RETRY_INTERVAL_SECONDS,
        on_change: Callable[[bool], None] = lambda up: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        options = {"password": password} if password else {}
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
            # A connection pooled before an outage is dead after it: retry once on a fresh
            # one, so a Valkey that is back is not taken for down again, once per stale connection.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            **options,
        )
        self.prefix = prefix
        self._on_change = on_change
        self._retry_interval = retry_interval
        self._clock = clock
        self._up = True
        self._quiet_until = 0.0
        self._refusal_logged_until = 0.0

    @property
    def up(self) -> bool:
        """Whether the last use of Valkey succeeded."""
        return self._up

    def key(self, *parts: str) -> str:
        """A key in this service's namespace: prefix:part:part."""
        return ":".join((self.prefix, *parts))

    async def run(self, operation: Callable[[redis.Redis], Awaitable[_T]]) -> _T:
        """operation(client), or CoordinationUnavailable when Valkey does not answer."""
        if not self._up and self._clock() < self._quiet_until:
            raise CoordinationUnavailable("Valkey did not answer recently")
        try:
            result = await operation(self.client)
        except LockError:
            raise  # redis-py's own verdict on a lock (lost, not owned), not Valkey failing
        except ResponseError as exc:  # it answers, with an error (OOM under noeviction, READONLY, LOADING)
            self._mark(True)
            if self._clock() >= self._refusal_logged_until:
                self._refusal_logged_until = self._clock() + REFUSAL_LOG_INTERVAL_SECONDS
                log.warning("coordination: Valkey refused a command (%s); this call goes without it", type(exc).__name__)
            raise CoordinationUnavailable(str(exc)) from None
        except (RedisError, OSError) as exc:  # down or slow
            self._quiet_until = self._clock() + self._retry_interval
            self._mark(False, exc)
            raise CoordinationUnavailable(str(exc)) from None
        self._mark(True)
        return result

    async def ping(self) -> bool:
        """True when Valkey answers now (and the state says so afterwards)."""
        try:
            await self.run(lambda client: client.ping())
        except CoordinationUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        await self.client.aclose()

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("coordination: Valkey answers again; cluster-wide coordination resumes")
        else:
            log.warning(
                "coordination: Valkey does not answer (%s); serving with per-process coordination",
                type(error).__name__ if error else "unknown",
            )
        self._on_change(up)
