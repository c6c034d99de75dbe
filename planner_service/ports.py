"""What the planner needs from a planning agent (the offline planner or an LLM)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from imagegen.v1.planner_service_pb2 import CreatePlanRequest


@dataclass(frozen=True)
class PlanDraft:
    """An agent's proposal, before the planner validates and fingerprints it.

    image_type is a short name ("portrait"); the planner checks every field
    against the contract, so an agent's mistake never becomes a bad plan.
    """

    enhanced_prompt: str
    image_type: str
    style: str
    size: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class PlanningAgent(Protocol):
    name: str  # recorded as provenance.planner
    model: str  # recorded as provenance.model; empty when there is none

    async def draft(self, request: CreatePlanRequest) -> PlanDraft: ...
