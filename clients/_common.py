"""What the sync and asyncio clients share: everything that is not a blocking call or
an await. Requests, default deadlines, the channel a client owns, error translation,
the image stream's first message, and the legacy payload; sync.py and aio.py keep only
the calls themselves (tests/unit/test_client_parity.py keeps the two in step)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from clients.channels import ChannelOptions
from clients.errors import execution_failed, planning_failed
from imagegen.catalogue import image_type_from_name, image_type_name, planning_mode_value, reference_role_value
from imagegen.v1.executor_service_pb2 import (
    CancelExecutionRequest,
    DeleteImageRequest,
    DeleteSessionImagesRequest,
    ExecutePlanRequest,
    Execution,
    GetExecutionRequest,
    ListExecutionsRequest,
    ListExecutionsResponse,
    StartExecutionRequest,
    WatchExecutionRequest,
    WatchSessionExecutionsRequest,
    GetImageRequest,
    GetImageResponse,
    ListImagesRequest,
    ListImagesResponse,
    SignImageUrlRequest,
    SignImageUrlResponse,
    StreamExecutePlanRequest,
)
from imagegen.v1.image_plan_pb2 import (
    ImageGenerationPlan,
    ImageGenerationResult,
    ImageType,
    ReferenceImage,
    ReferenceRole,
)
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
class StartedGeneration:
    """What generate(..., wait=False) returns at once: the plan (for a plan-only answer
    ahead of the image) and its started execution, to watch or look up later."""

    plan: ImageGenerationPlan
    execution: Execution


@dataclass(frozen=True)
class ExecutionPage:
    """One page of ListExecutions: the executions, newest first, and the token of the
    next page ("" on the last)."""

    executions: list[Execution]
    next_page_token: str


@dataclass(frozen=True)
class StoredImage:
    """A stored image's bytes, as GetImage returned them, with the SHA-256 the executor
    recorded for them and the reference images it was rendered with."""

    data: bytes
    mime_type: str
    content_sha256: str = ""
    reference_images: tuple[ReferenceImage, ...] = ()


# What generate() and create_plan() take as a reference image: a result (its storage_path
# and content_sha256), a ReferenceImage, or a bare storage path, optionally "ROLE:" first
# (role subject unless said; the executor is asked for the path's content_sha256).
ReferenceSource = ImageGenerationResult | ReferenceImage | str


def reference_from(source: ReferenceSource, role: str | int = "subject") -> ReferenceImage | tuple[int, str]:
    """The ReferenceImage for a result or a ReferenceImage (role: the one it has, else
    role); for a storage path, (role, storage_path), whose content_sha256 only the
    executor knows. "style:images/t1/portrait/....png" names the role of a path."""
    default = role if isinstance(role, int) else reference_role_value(role)
    if isinstance(source, ImageGenerationResult):
        return ReferenceImage(storage_path=source.storage_path, content_sha256=source.content_sha256, role=default)
    if isinstance(source, ReferenceImage):
        ref = ReferenceImage()
        ref.CopyFrom(source)
        ref.role = ref.role or default
        return ref
    if not isinstance(source, str):
        raise TypeError(f"a reference image is a result, a ReferenceImage or a storage path, not {type(source).__name__}")
    return reference_path(source, default)


def reference_path(text: str, role: int = ReferenceRole.REFERENCE_ROLE_SUBJECT) -> tuple[int, str]:
    """"[ROLE:]STORAGE_PATH" -> (role number, storage path); ROLE is subject, style or edit.
    A storage path never holds ":" (bucket names and the executor's keys cannot), so the
    first ":" can only end a role."""
    head, colon, rest = text.partition(":")
    if colon:
        return reference_role_value(head), rest
    return role, text


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
    reference_images: Sequence[ReferenceImage] = (),
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
        reference_images=reference_images,
    )


def planning_mode(mode: str | int | None) -> int:
    """The PlanningMode for "auto", "llm" or "offline" (or the enum value); None: the server's default."""
    if mode is None or isinstance(mode, int):
        return mode or PlanningMode.PLANNING_MODE_UNSPECIFIED
    return planning_mode_value(mode)


def execute_plan_request(plan: ImageGenerationPlan, request_id: str | None) -> ExecutePlanRequest:
    return ExecutePlanRequest(plan=plan, request_id=request_id or "")


@dataclass(frozen=True)
class ImagePage:
    """One page of a session's stored images, newest first; next_page_token is empty on
    the last page (pass it to list_images for the next)."""

    images: list[ImageGenerationResult]
    next_page_token: str


def list_images_request(
    session_id: str, image_type: str | int | None, page_size: int, page_token: str
) -> ListImagesRequest:
    """image_type: a name ("portrait", "IMAGE_TYPE_PORTRAIT"), an enum number, or None for every type."""
    value = image_type_from_name(image_type) if isinstance(image_type, str) else (image_type or 0)
    return ListImagesRequest(session_id=session_id, image_type=value, page_size=page_size, page_token=page_token)


def image_page(response: ListImagesResponse) -> ImagePage:
    return ImagePage(list(response.images), response.next_page_token)


def delete_image_request(storage_path: str) -> DeleteImageRequest:
    return DeleteImageRequest(storage_path=storage_path)


def delete_session_images_request(session_id: str) -> DeleteSessionImagesRequest:
    return DeleteSessionImagesRequest(session_id=session_id)


def stream_execute_plan_request(plan: ImageGenerationPlan, request_id: str | None) -> StreamExecutePlanRequest:
    return StreamExecutePlanRequest(plan=plan, request_id=request_id or "")


def start_execution_request(plan: ImageGenerationPlan, request_id: str | None) -> StartExecutionRequest:
    return StartExecutionRequest(plan=plan, request_id=request_id or "")


def execution_name(execution: str | Execution) -> str:
    """An execution's name, from the name or the Execution itself."""
    return execution if isinstance(execution, str) else execution.name


def get_execution_request(execution: str | Execution) -> GetExecutionRequest:
    return GetExecutionRequest(name=execution_name(execution))


def watch_execution_request(execution: str | Execution) -> WatchExecutionRequest:
    return WatchExecutionRequest(name=execution_name(execution))


def cancel_execution_request(execution: str | Execution) -> CancelExecutionRequest:
    return CancelExecutionRequest(name=execution_name(execution))


def list_executions_request(session_id: str, page_size: int | None, page_token: str | None) -> ListExecutionsRequest:
    return ListExecutionsRequest(session_id=session_id, page_size=page_size or 0, page_token=page_token or "")


def execution_page(response: ListExecutionsResponse) -> ExecutionPage:
    return ExecutionPage(list(response.executions), response.next_page_token)


def watch_session_request(session_id: str) -> WatchSessionExecutionsRequest:
    return WatchSessionExecutionsRequest(session_id=session_id)


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
        # The stored images the render used, in the plan's order: their storage paths.
        "reference_images": [ref.storage_path for ref in result.reference_images],
    }


# ---- what both clients do alike, sync or not ------------------------------------

C = TypeVar("C")  # grpc.Channel or grpc.aio.Channel
P = TypeVar("P")
E = TypeVar("E")


def client_channel(
    target: str | C, options: ChannelOptions | None, build: Callable[[str, ChannelOptions | None], C]
) -> tuple[C, bool]:
    """(channel, owned): a channel built from options for a target string, which the
    client owns and closes; else the ready channel given, which takes no options."""
    if isinstance(target, str):
        return build(target, options), True
    if options is not None:
        raise ValueError("options build a channel from a target; a ready channel takes none")
    return target, False


def both_clients(planner: Callable[[], P], executor: Callable[[], E], discard: Callable[[P], object]) -> tuple[P, E]:
    """The planner's client, then the executor's; when the executor's cannot be built
    (bad options, an unreadable certificate), discard closes the planner's first."""
    first = planner()
    try:
        return first, executor()
    except BaseException:
        discard(first)
        raise


@contextmanager
def planning_errors() -> Iterator[None]:
    """A failed planner call's grpc.RpcError becomes PlanningFailed."""
    try:
        yield
    except grpc.RpcError as error:
        raise planning_failed(error) from None


@contextmanager
def execution_errors(plan: ImageGenerationPlan | None) -> Iterator[None]:
    """A failed executor call's grpc.RpcError becomes ExecutionFailed, carrying plan
    (None for GetImage and SignImageUrl) unless the status details carry one."""
    try:
        yield
    except grpc.RpcError as error:
        raise execution_failed(error, plan) from None


def get_image_request(storage_path: str) -> GetImageRequest:
    return GetImageRequest(storage_path=storage_path)


class ImageStreamBase:
    """What ImageStream and AsyncImageStream share: the GetImage call, and its first
    message, which open_image reads so that mime_type, total_size and content_sha256 (the
    image's SHA-256 in hex, "" when the store has none) are known up front (None, or
    grpc.aio.EOF, when the stream ended at once)."""

    def __init__(self, call: Any, first: GetImageResponse | None) -> None:
        if not isinstance(first, GetImageResponse):
            first = GetImageResponse()
        self._call = call
        self._first: GetImageResponse | None = first
        self.mime_type = first.mime_type
        self.total_size = first.total_size
        self.content_sha256 = first.content_sha256
        self.reference_images = tuple(first.reference_images)

    def _take_first_chunk(self) -> bytes:
        """The first message's bytes, once; b"" when it had none, and every time after."""
        first, self._first = self._first, None
        return first.chunk_data if first is not None else b""

    def _cancel(self) -> None:
        self._call.cancel()  # a no-op once the call has ended


def generation(prompt: str, plan: ImageGenerationPlan, result: ImageGenerationResult) -> Generation:
    """What generate() returns, once both stages have succeeded."""
    return Generation(plan, result, legacy_payload(result, prompt))
