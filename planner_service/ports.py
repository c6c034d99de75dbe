"""What the planner needs from a planning agent (the offline planner or an LLM)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from imagegen.catalogue import reference_role_name
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ReferenceImage
from imagegen.v1.planner_service_pb2 import CreatePlanRequest


@dataclass(frozen=True)
class PlanRequest:
    """What the planner is asked: a moment of the game to picture.

    image_type is an imagegen.v1.ImageType number (0: the planner chooses); style and
    size are empty when the planner chooses; mode is a PlanningMode number (0: the
    configured default); reference_images are stored images the plan is to use, in
    order (the prompt calls them "reference 1", ...). The planner validates every
    field (imagegen.validation).
    """

    prompt: str
    session_id: str
    image_type: int = 0
    style: str = ""
    size: str = ""
    context: Mapping[str, str] = field(default_factory=dict)
    mode: int = 0
    reference_images: tuple[ReferenceImage, ...] = ()

    @property
    def reference_roles(self) -> tuple[str, ...]:
        """Each reference's role name ("subject", "style", "edit"), in order."""
        return tuple(reference_role_name(ref.role) for ref in self.reference_images)

    @classmethod
    def from_proto(cls, request: CreatePlanRequest) -> PlanRequest:
        return cls(
            prompt=request.prompt,
            session_id=request.session_id,
            image_type=request.image_type,
            style=request.style,
            size=request.size,
            context=dict(request.context),
            mode=request.mode,
            reference_images=tuple(request.reference_images),
        )


@dataclass(frozen=True)
class PlanDraft:
    """An agent's proposal, before the planner validates and fingerprints it.

    image_type is a short name ("portrait"); the planner checks every field
    against the contract, so an agent's mistake never becomes a bad plan.
    answer is the agent's raw answer (an LLM's JSON), kept so that a repair
    round trip can show the model what it said; empty for the offline planner.
    A field the answer lacked or gave with the wrong type is "" and named in problems.
    """

    enhanced_prompt: str
    image_type: str
    style: str
    size: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    answer: str = ""
    # What was wrong with the answer's shape (unknown, missing or wrongly typed fields);
    # the planner reports these together with the values' problems in one repair.
    problems: Sequence[str] = ()


@dataclass(frozen=True)
class Repair:
    """A second chance: the agent's previous answer and exactly what was wrong with it."""

    answer: str
    problems: Sequence[str]


class DraftUnusable(Exception):
    """The agent's answer could not even be read as a draft (not JSON, wrong fields).

    Raised by an agent; the planner answers it with a repair round trip, like a
    draft whose values break the contract.
    """

    def __init__(self, answer: str, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.answer = answer
        self.problems = tuple(problems)


class PlanningAgent(Protocol):
    name: str  # recorded as provenance.planner
    model: str  # recorded as provenance.model; empty when there is none

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        """Propose a plan; with repair, propose it again, fixing repair.problems.

        Raises DraftUnusable for an unreadable answer and the planning errors of
        imagegen.errors (PlannerUnavailable, PlannerThrottled, PlannerMisconfigured)
        when the agent's backend fails.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the agent is not used afterwards."""
        ...


# What the planning use case tells an observer (metrics, in the wiring); the default does nothing.
class PlanningObserver(Protocol):
    def llm_fell_back(self, reason: str) -> None:
        """The LLM could not plan (reason: the error's, e.g. LLM_UNAVAILABLE); the
        offline planner did."""
        ...


class NoPlanningObserver:
    def llm_fell_back(self, reason: str) -> None:
        pass


class PlanCoordination(Protocol):
    """Where the same request gets the same plan: the LLM plan cache and the single
    flight of identical requests. The in-process adapter is the embedded default; the
    Valkey adapter shares both across replicas and falls back to in-process behaviour
    while Valkey is down."""

    async def plan_once(
        self, key: str, make: Callable[[], Awaitable[ImageGenerationPlan]]
    ) -> ImageGenerationPlan:
        """The plan cached under key, else make()'s: made once for every identical caller
        (of this process; of every replica with Valkey), then cached for the TTL. Each
        caller gets its own copy; a caller that gives up does not cancel the others'."""
        ...

    async def aclose(self) -> None:
        ...
