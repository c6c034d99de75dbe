"""What the execution use case tells an observer (metrics, in the wiring).

A port like the provider and the store, pointing outwards: the domain says
what happened, the wiring decides what to count. The default does nothing.
"""

from __future__ import annotations

from typing import Literal, Protocol

# How an execution got its image without rendering it:
#   stored      the plan's image was already in the store
#   in_flight   it joined an identical execution already rendering
#   request_id  a retried call (same request_id) got the first call's result
ReuseKind = Literal["stored", "in_flight", "request_id"]


class ExecutionEvents(Protocol):
    def reused(self, kind: ReuseKind) -> None:
        """An execution was answered without a render of its own."""
        ...

    def stored(self, byte_size: int) -> None:
        """A rendered image of byte_size bytes was written to the store."""
        ...


class NoExecutionEvents:
    def reused(self, kind: ReuseKind) -> None:
        pass

    def stored(self, byte_size: int) -> None:
        pass
