"""The planning use case: validate the request, choose the planner, ask it for a
draft, check the draft by the contract's rules, fingerprint the plan. No I/O of its own.

The LLM path adds what an LLM needs around it: one repair round trip for an
unusable answer, a fall back to the offline planner (when configured), and a cache
so the same request gets the same plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from functools import partial

from imagegen.catalogue import DEFAULT_PLANNING_MODE, PLANNING_MODES, planning_mode_name
from imagegen.errors import (
    FieldViolation,
    InvalidRequest,
    PlannerMisconfigured,
    PlannerUnavailable,
    PlanOutputInvalid,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, PlanProvenance
from imagegen.validation import validate_plan_request
from planner_service.coordination.in_process import InProcessPlans
from planner_service.drafts import normalise_draft, plan_from_draft
from planner_service.plan_cache import request_fingerprint
from planner_service.ports import (
    DraftUnusable,
    NoPlanningObserver,
    PlanCoordination,
    PlanningAgent,
    PlanningObserver,
    PlanRequest,
    Repair,
)

log = logging.getLogger(__name__)



class Planner:
    """offline is always there; llm only when one is configured.

    mode is the default for requests that name none. With fallback on, an LLM
    that cannot be reached or whose answer stays unusable after a repair is
    replaced by the offline planner (provenance.fell_back); a rate limit or
    refused credentials are never hidden that way: the caller is told.
    """

    def __init__(
        self,
        offline: PlanningAgent,
        styles: Collection[str],
        clock: Callable[[], float] = time.perf_counter,
        *,
        llm: PlanningAgent | None = None,
        mode: str = DEFAULT_PLANNING_MODE,
        fallback: bool = True,
        plans: PlanCoordination | None = None,
        observer: PlanningObserver | None = None,
    ) -> None:
        if mode not in PLANNING_MODES:
            raise ValueError(f"mode must be one of {', '.join(PLANNING_MODES)}, not {mode!r}")
        self._offline = offline
        self._llm = llm
        self._styles = frozenset(styles)
        self._clock = clock
        self._mode = mode
        self._fallback = fallback
        self._observer: PlanningObserver = observer or NoPlanningObserver()
        self._plans: PlanCoordination = plans or InProcessPlans()

    async def create_plan(self, request: PlanRequest) -> ImageGenerationPlan:
        validate_plan_request(request, self._styles)
        if self._uses_llm(request):
            return await self._llm_plan(request)
        return await self._offline_plan(request)

    async def aclose(self) -> None:
        await self._plans.aclose()
        await self._offline.aclose()
        if self._llm is not None:
            await self._llm.aclose()

    def _uses_llm(self, request: PlanRequest) -> bool:
        try:
            mode = planning_mode_name(request.mode) or self._mode
        except ValueError as exc:
            raise InvalidRequest([FieldViolation("mode", str(exc))]) from None
        if mode == "offline":
            return False
        if self._llm is None and mode == "llm":
            raise PlannerMisconfigured(
                "planning mode llm was asked for, but this planner has no LLM configured",
                reason="LLM_NOT_CONFIGURED",
            )
        return self._llm is not None

    async def _offline_plan(self, request: PlanRequest, *, fell_back: bool = False,
                            started: float | None = None) -> ImageGenerationPlan:
        started = self._clock() if started is None else started
        draft = await self._offline.draft(request)
        try:
            plan = plan_from_draft(draft, request.session_id, self._styles, request.reference_images)
        except DraftUnusable as unusable:  # a bug in the offline planner, not the caller's fault
            raise PlanOutputInvalid(f"the offline planner produced an invalid plan: {unusable}") from None
        return self._stamped(plan, PlanProvenance(planner=self._offline.name, fell_back=fell_back), started)

    async def _llm_plan(self, request: PlanRequest) -> ImageGenerationPlan:
        # Identical requests share one LLM round trip and its plan (plan_once).
        plan = await self._plans.plan_once(request_fingerprint(request, "llm"), partial(self._plan_with_llm, request))
        plan.session_id = request.session_id  # not in the key, nor in plan_id
        # The key has each reference's sha256 and role, not where it is stored: the caller's
        # own storage paths (in its session) go into its copy, plan_id unchanged.
        for ref, asked in zip(plan.reference_images, request.reference_images, strict=True):
            ref.storage_path = asked.storage_path
        return plan

    async def _plan_with_llm(self, request: PlanRequest) -> ImageGenerationPlan:
        assert self._llm is not None
        started = self._clock()
        try:
            plan = await self._draft_with_repair(self._llm, request)
        except (PlannerUnavailable, PlanOutputInvalid) as exc:
            if not self._fallback:
                raise
            log.warning("LLM planning failed (%s); planning offline instead", exc.reason)
            self._observer.llm_fell_back(exc.reason)
            plan = await self._offline_plan(request, fell_back=True, started=started)
        else:
            plan = self._stamped(plan, PlanProvenance(planner="llm", model=self._llm.model), started)
            log.info(
                "planned %s with the LLM (%s) in %d ms",
                plan.plan_id, self._llm.model, plan.provenance.latency.ToMilliseconds(),
            )
        return plan

    async def _draft_with_repair(self, llm: PlanningAgent, request: PlanRequest) -> ImageGenerationPlan:
        repair: Repair | None = None
        while True:
            try:
                draft = await llm.draft(request, repair)
                return plan_from_draft(
                    normalise_draft(draft, request), request.session_id, self._styles, request.reference_images
                )
            except DraftUnusable as unusable:
                problems = "; ".join(unusable.problems)
                if repair is not None:
                    raise PlanOutputInvalid(
                        f"the LLM's plan was still unusable after a repair: {problems}"
                    ) from None
                log.warning("the LLM's plan is unusable, asking it once to repair it: %s", problems)
                repair = Repair(unusable.answer, unusable.problems)

    def _stamped(self, plan: ImageGenerationPlan, provenance: PlanProvenance, started: float) -> ImageGenerationPlan:
        plan.provenance.CopyFrom(provenance)
        plan.provenance.latency.FromNanoseconds(int((self._clock() - started) * 1e9))
        return plan
