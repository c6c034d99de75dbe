"""What the sync and asyncio clients share: requests, default deadlines, the legacy payload."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagegen.catalogue import image_type_from_name, image_type_name
from imagegen.v1.executor_service_pb2 import (
    ExecutePlanRequest,
    SignImageUrlRequest,
    SignImageUrlResponse,
    StreamExecutePlanRequest,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult, ImageType
from imagegen.v1.planner_service_pb2 import CreatePlanRequest, PlanningMode

DEFAULT_PLAN_TIMEOUT = 60.0
DEFAULT_EXECUTE_TIMEOUT = 300.0
DEFAULT_IMAGE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Generation:
    """What generate() returns: the plan, the executor's result, and the payload
    the game's callers already expect (legacy_payload)."""

    plan: ImageGenerationPlan
    result: ImageGenerationResult
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredImage:
    """A stored image's bytes, as GetImage returned them."""

    data: bytes
    mime_type: str


@dataclass(frozen=True)
class SignedImageUrl:
    """A fresh URL to a stored image; expire_time is None when it does not expire."""

    image_url: str
    expire_time: dt.datetime | None


def create_plan_request(
    prompt: str,
    *,
    session_id: str,
    image_type: str | int | None = None,
    style: str | None = None,
    size: str | None = None,
    context: Mapping[str, str] | None = None,
    mode: str | int | None = None,
) -> CreatePlanRequest:
    if isinstance(image_type, str):
        image_type = image_type_from_name(image_type)
    return CreatePlanRequest(
        prompt=prompt,
        session_id=session_id,
        image_type=image_type or ImageType.IMAGE_TYPE_UNSPECIFIED,
        style=style or "",
        size=size or "",
        context=context or {},
        mode=planning_mode(mode),
    )


def planning_mode(mode: str | int | None) -> int:
    """The PlanningMode for "auto", "llm" or "offline" (or the enum value); None: the server's default."""
    if mode is None or isinstance(mode, int):
        return mode or PlanningMode.PLANNING_MODE_UNSPECIFIED
    name = f"PLANNING_MODE_{mode.strip().upper().removeprefix('PLANNING_MODE_')}"
    if name not in PlanningMode.keys() or name == "PLANNING_MODE_UNSPECIFIED":
        raise ValueError(f"mode={mode!r}: expected auto, llm or offline")
    return PlanningMode.Value(name)


def execute_plan_request(plan: ImageGenerationPlan, request_id: str | None) -> ExecutePlanRequest:
    return ExecutePlanRequest(plan=plan, request_id=request_id or "")


def stream_execute_plan_request(plan: ImageGenerationPlan, request_id: str | None) -> StreamExecutePlanRequest:
    return StreamExecutePlanRequest(plan=plan, request_id=request_id or "")


def sign_image_url_request(storage_path: str, expires_in: float | dt.timedelta | None) -> SignImageUrlRequest:
    request = SignImageUrlRequest(storage_path=storage_path)
    if expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, dt.timedelta) else expires_in
        request.expires_in.FromNanoseconds(round(seconds * 1e9))
    return request


def signed_image_url(response: SignImageUrlResponse) -> SignedImageUrl:
    expire_time = response.expire_time.ToDatetime(dt.timezone.utc) if response.HasField("expire_time") else None
    return SignedImageUrl(response.image_url, expire_time)


def legacy_payload(result: ImageGenerationResult, original_prompt: str = "") -> dict[str, Any]:
    """The dict the game's image callers used to get from the image agent."""
    plan = result.plan
    return {
        "success": True,
        "image_url": result.image_url,
        "proxy_url": result.proxy_url,
        "storage_path": result.storage_path,
        "image_type": image_type_name(plan.image_type),
        "style": plan.style,
        "size": plan.size,
        "prompt": plan.enhanced_prompt,
        "original_prompt": original_prompt,
        "session_id": plan.session_id,
        "plan_id": plan.plan_id,
        "mime_type": result.mime_type,
        "width": result.width,
        "height": result.height,
        "byte_size": result.byte_size,
        "content_sha256": result.content_sha256,
        "provider": result.provider.name,
        "model": result.provider.model,
        "provider_latency_ms": result.provider.latency.ToMilliseconds(),
        "revised_prompt": result.provider.revised_prompt,
        "reused": result.reused,
        "created_at": result.create_time.ToJsonString(),
    }
