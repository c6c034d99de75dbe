"""The offline planner behind the PlanningAgent port."""

from __future__ import annotations

from imagegen.catalogue import image_type_name
from imagegen.v1.image_plan_pb2 import ImageType
from planner_service.offline_rules import plan_offline
from planner_service.ports import PlanDraft, PlanRequest, Repair


class OfflinePlanningAgent:
    name = "offline"
    model = ""

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        # Deterministic and valid by construction, so a repair would change nothing.
        image_type = (
            image_type_name(request.image_type)
            if request.image_type != ImageType.IMAGE_TYPE_UNSPECIFIED
            else None
        )
        plan = plan_offline(
            request.prompt,
            image_type=image_type,
            style=request.style or None,
            size=request.size or None,
            context=dict(request.context),
            references=request.reference_roles,
        )
        return PlanDraft(plan.enhanced_prompt, plan.image_type, plan.style, plan.size)

    async def aclose(self) -> None:
        pass
