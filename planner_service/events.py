"""What the planning use case tells an observer (metrics, in the wiring).
The default does nothing."""

from __future__ import annotations

from typing import Protocol


class PlanningEvents(Protocol):
    def llm_fell_back(self, reason: str) -> None:
        """The LLM could not plan (reason: the error's, e.g. LLM_UNAVAILABLE); the
        offline planner did."""
        ...


class NoPlanningEvents:
    def llm_fell_back(self, reason: str) -> None:
        pass
