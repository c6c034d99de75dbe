"""What the game backend imports to plan and execute images."""

from clients._common import Generation, legacy_payload
from clients.aio import AsyncExecutorClient, AsyncImagegenClient, AsyncPlannerClient
from clients.errors import ExecutionFailed, ImagegenCallError, PlanningFailed
from clients.sync import ExecutorClient, ImagegenClient, PlannerClient

__all__ = [
    "AsyncExecutorClient",
    "AsyncImagegenClient",
    "AsyncPlannerClient",
    "ExecutionFailed",
    "ExecutorClient",
    "Generation",
    "ImagegenCallError",
    "ImagegenClient",
    "PlannerClient",
    "PlanningFailed",
    "legacy_payload",
]
