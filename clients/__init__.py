"""What the game backend imports to plan and execute images."""

from clients._common import (
    ExecutionPage,
    Generation,
    ImagePage,
    ReferenceSource,
    SignedImageUrl,
    StartedGeneration,
    StoredImage,
    legacy_payload,
    reference_path,
)
from clients.aio import AsyncExecutorClient, AsyncImagegenClient, AsyncImageStream, AsyncPlannerClient
from clients.channels import ChannelOptions, RetryPolicy, aio_channel, sync_channel
from clients.errors import ExecutionFailed, ImagegenCallError, PlanningFailed
from clients.sync import ExecutorClient, ImagegenClient, ImageStream, PlannerClient

__all__ = [
    "AsyncExecutorClient",
    "AsyncImageStream",
    "AsyncImagegenClient",
    "AsyncPlannerClient",
    "ChannelOptions",
    "ExecutionFailed",
    "ExecutionPage",
    "ExecutorClient",
    "Generation",
    "ImagegenCallError",
    "ImagePage",
    "ImageStream",
    "ImagegenClient",
    "PlannerClient",
    "PlanningFailed",
    "ReferenceSource",
    "RetryPolicy",
    "SignedImageUrl",
    "StartedGeneration",
    "StoredImage",
    "aio_channel",
    "legacy_payload",
    "reference_path",
    "sync_channel",
]
