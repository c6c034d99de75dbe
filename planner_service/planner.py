"""The planning use case: validate the request, ask an agent, check its draft,
fingerprint the plan. No I/O of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from imagegen.contract import image_type_from_name, with_fingerprint
from imagegen.errors import PlanOutputInvalid
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, PlanProvenance
from imagegen.v1.planner_service_pb2 import CreatePlanRequest
from imagegen.validation import plan_violations, validate_create_plan_request
from planner_service.ports import PlanDraft, PlanningAgent


class Planner:
    def __init__(
        self,
        agent: PlanningAgent,
        styles: Collection[str],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._agent = agent
        self._styles = frozenset(styles)
        self._clock = clock

    async def create_plan(self, request: CreatePlanRequest) -> ImageGenerationPlan:
        validate_create_plan_request(request, self._styles)
        started = self._clock()
        draft = await self._agent.draft(request)
        plan = self._plan_from_draft(draft, request.session_id)
        plan.provenance.CopyFrom(PlanProvenance(planner=self._agent.name, model=self._agent.model))
        plan.provenance.latency.FromNanoseconds(int((self._clock() - started) * 1e9))
        return plan

    def _plan_from_draft(self, draft: PlanDraft, session_id: str) -> ImageGenerationPlan:
        try:
            image_type = image_type_from_name(draft.image_type)
        except ValueError as exc:
            raise PlanOutputInvalid(str(exc)) from None
        plan = ImageGenerationPlan(
            enhanced_prompt=draft.enhanced_prompt,
            image_type=image_type,
            style=draft.style,
            size=draft.size,
            session_id=session_id,
            metadata=draft.metadata,
        )
        violations = plan_violations(plan)
        if violations:
            summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise PlanOutputInvalid(f"the planning agent produced an invalid plan: {summary}")
        return with_fingerprint(plan)
