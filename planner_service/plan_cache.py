"""A bounded, expiring in-memory cache of plans, keyed by the request's fingerprint.

It is what makes an LLM planner repeatable: temperature 0 and a seed are only
best-effort, so the same request within the cache's lifetime returns the plan
made the first time, and with it the same plan_id, which the executor dedups on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from imagegen.fingerprint import canonical_digest
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from planner_service.ports import PlanRequest


def request_fingerprint(request: PlanRequest, path: str) -> str:
    """SHA-256 over the request fields that decide the plan, and the planning path.

    session_id is left out, as it is from plan_id: it says where the image is
    filed, not what it shows, so two sessions asking for the same moment share
    one plan (each gets its own session_id back). Reference images count by
    content and role, like session_id their storage paths do not.
    """
    decided: dict[str, Any] = {
        "v": 1,
        "path": path,
        "prompt": request.prompt,
        "image_type": request.image_type,
        "style": request.style,
        "size": request.size,
        "context": dict(request.context),
    }
    if request.reference_images:  # by content, as in plan_id; absent, the key is as before
        decided["reference_images"] = [
            {"sha256": ref.content_sha256, "role": ref.role} for ref in request.reference_images
        ]
    return canonical_digest(decided)


class PlanCache:
    """At most max_entries plans, each for ttl_seconds; least recently used goes first.

    max_entries or ttl_seconds of 0 turns caching off. clock is injectable so
    tests move time instead of sleeping.
    """

    def __init__(
        self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_entries = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0 and self._ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> ImageGenerationPlan | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, data = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        # Stored serialized so no caller can change a cached plan through its copy.
        return ImageGenerationPlan.FromString(data)

    def put(self, key: str, plan: ImageGenerationPlan, ttl_seconds: float | None = None) -> None:
        """Keep plan for ttl_seconds, at most the cache's TTL (a plan another cache holds
        for less: only as long as it does there)."""
        if not self.enabled:
            return
        ttl = self._ttl if ttl_seconds is None else min(ttl_seconds, self._ttl)
        self._entries[key] = (self._clock() + ttl, plan.SerializeToString(deterministic=True))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
