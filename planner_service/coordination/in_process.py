"""The same plan for the same request within one process: the embedded default, and
what the Valkey adapter does locally in front of Valkey (and alone while it is down).

Identical requests in flight share one LLM round trip (single flight), and the plan
lands in a bounded, expiring cache (planner_service.plan_cache) so a repeat within its
lifetime gets the same plan, and so the same plan_id, which the executor dedups on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from planner_service.plan_cache import PlanCache

log = logging.getLogger(__name__)

MakePlan = Callable[[], Awaitable[ImageGenerationPlan]]


class InProcessPlans:
    def __init__(self, cache: PlanCache | None = None) -> None:
        self._cache = cache if cache is not None else PlanCache(0, 0)
        self._in_flight: dict[str, asyncio.Future[ImageGenerationPlan]] = {}

    async def plan_once(self, key: str, make: MakePlan) -> ImageGenerationPlan:
        """The plan cached under key, else make()'s, made once for every identical caller
        in flight and cached. Each caller gets its own copy. A caller that gives up does
        not cancel the others' plan, which still lands in the cache for its retry."""
        plan = self._cache.get(key)
        if plan is not None:
            log.debug("planning: cache hit for plan %s", plan.plan_id)
            return plan
        flight = self._in_flight.get(key)
        if flight is None:
            flight = self._in_flight[key] = asyncio.ensure_future(self._made_and_cached(key, make))
            flight.add_done_callback(partial(self._landed, key))
        plan = ImageGenerationPlan()
        plan.CopyFrom(await asyncio.shield(flight))
        return plan

    async def aclose(self) -> None:
        pass

    async def _made_and_cached(self, key: str, make: MakePlan) -> ImageGenerationPlan:
        plan = await make()
        self._cache.put(key, plan)
        return plan

    def _landed(self, key: str, flight: asyncio.Future[ImageGenerationPlan]) -> None:
        self._in_flight.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here too, in case every caller gave up
