"""Per-session render quotas within one process: a sliding-window log per session (the
times of its counted renders), the in-process adapter's and what the Valkey adapter falls
back to while Valkey is down. Pure: no I/O.

A render is counted when it starts and given back when it fails, so a slot is held only
by a render that stored an image. Memory is bounded: a session keeps at most as many
entries as its largest limit, and sessions whose entries have all left every window are
dropped whenever the table has grown past MAX_TRACKED_SESSIONS.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from executor_service.ports import QuotaLimit
from imagegen.errors import QuotaExceeded

MAX_TRACKED_SESSIONS = 10_000


class SessionQuotas:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._renders: dict[str, list[tuple[float, str]]] = {}  # session -> (time, token), oldest first

    def take(self, session_id: str, limits: tuple[QuotaLimit, ...]) -> str:
        """A token for one more render of session_id; QuotaExceeded when a limit is reached."""
        now = self._clock()
        longest = max(limit.window_seconds for limit in limits)
        entries = [entry for entry in self._renders.get(session_id, ()) if entry[0] > now - longest]
        for limit in limits:
            within = [at for at, _ in entries if at > now - limit.window_seconds]
            if len(within) >= limit.renders:
                # The slot frees when the oldest render that keeps the window full leaves it.
                frees_at = within[len(within) - limit.renders] + limit.window_seconds
                self._keep(session_id, entries)
                raise QuotaExceeded(session_id, limit.text, retry_after=max(frees_at - now, 0.001))
        token = uuid.uuid4().hex
        entries.append((now, token))
        self._keep(session_id, entries)
        if len(self._renders) > MAX_TRACKED_SESSIONS:
            self._prune(now - longest)
        return token

    def give_back(self, session_id: str, token: str) -> None:
        entries = self._renders.get(session_id)
        if entries is not None:
            self._keep(session_id, [entry for entry in entries if entry[1] != token])

    def _keep(self, session_id: str, entries: list[tuple[float, str]]) -> None:
        if entries:
            self._renders[session_id] = entries
        else:
            self._renders.pop(session_id, None)

    def _prune(self, horizon: float) -> None:
        for session_id in [s for s, entries in self._renders.items() if entries[-1][0] <= horizon]:
            del self._renders[session_id]
