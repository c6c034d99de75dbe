"""Blocking clients, for code that is not on an event loop.

Everything but the calls themselves is in clients._common, shared with clients.aio;
tests/unit/test_client_parity.py fails when the two drift apart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Self

import grpc

from clients._common import (
    DEFAULT_EXECUTE_TIMEOUT,
    DEFAULT_IMAGE_TIMEOUT,
    DEFAULT_PLAN_TIMEOUT,
    ExecutionPage,
    Generation,
    ImagePage,
    ImageStreamBase,
    ReferenceSource,
    SignedImageUrl,
    StoredImage,
    StartedGeneration,
    both_clients,
    cancel_execution_request,
    execution_page,
    get_execution_request,
    list_executions_request,
    start_execution_request,
    watch_execution_request,
    watch_session_request,
    client_channel,
    create_plan_request,
    delete_image_request,
    delete_session_images_request,
    execute_plan_request,
    execution_errors,
    generation,
    get_image_request,
    image_page,
    list_images_request,
    planning_errors,
    reference_from,
    sign_image_url_request,
    signed_image_url,
    stream_execute_plan_request,
)
from clients.channels import ChannelOptions, sync_channel
from imagegen.v1 import executor_service_pb2_grpc, planner_service_pb2_grpc
from imagegen.v1.executor_service_pb2 import (
    Execution,
    StreamExecutePlanResponse,
    WatchExecutionResponse,
    WatchSessionExecutionsResponse,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult, ReferenceImage


class _ServiceClient:
    """What PlannerClient and ExecutorClient share: the channel to their service,
    which close() (or leaving with) closes when the client built it."""

    def __init__(self, target: str | grpc.Channel, options: ChannelOptions | None) -> None:
        self._channel, self._own_channel = client_channel(target, options, sync_channel)

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlannerClient(_ServiceClient):
    """target: "host:port", "dns:///name:port", ... (a channel built from options) or a ready
    channel; timeout: the default deadline of each call, in seconds."""

    def __init__(
        self, target: str | grpc.Channel, *, options: ChannelOptions | None = None, timeout: float = DEFAULT_PLAN_TIMEOUT
    ) -> None:
        super().__init__(target, options)
        self._stub = planner_service_pb2_grpc.PlannerServiceStub(self._channel)
        self._timeout = timeout

    def create_plan(self, prompt: str, *, session_id: str, timeout: float | None = None, **options: Any) -> ImageGenerationPlan:
        """Plan one image; PlanningFailed on any error. options: image_type, style, size, context,
        mode ("auto", "llm" or "offline"; the server's default when absent), reference_images
        (ReferenceImages; ExecutorClient.reference_image makes them)."""
        request = create_plan_request(prompt, session_id=session_id, **options)
        with planning_errors():
            return self._stub.CreatePlan(request, timeout=timeout or self._timeout).plan

class ExecutorClient(_ServiceClient):
    """As PlannerClient; timeout is the default deadline of an execution, image_timeout
    that of GetImage, SignImageUrl, ListImages and the deletes."""

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        options: ChannelOptions | None = None,
        timeout: float = DEFAULT_EXECUTE_TIMEOUT,
        image_timeout: float = DEFAULT_IMAGE_TIMEOUT,
    ) -> None:
        super().__init__(target, options)
        self._stub = executor_service_pb2_grpc.ExecutorServiceStub(self._channel)
        self._timeout = timeout
        self._image_timeout = image_timeout

    def execute_plan(
        self, plan: ImageGenerationPlan, *, request_id: str | None = None, timeout: float | None = None
    ) -> ImageGenerationResult:
        """Render and store the plan's image; ExecutionFailed (carrying the plan) on any error."""
        request = execute_plan_request(plan, request_id)
        with execution_errors(plan):
            return self._stub.ExecutePlan(request, timeout=timeout or self._timeout).result

    def stream_execute_plan(
        self, plan: ImageGenerationPlan, *, request_id: str | None = None, timeout: float | None = None
    ) -> Iterator[StreamExecutePlanResponse]:
        """Execute the plan, yielding its progress: ACCEPTED, RENDERING, STORING (both
        skipped when reused), then COMPLETED with .result; ExecutionFailed on any error.
        Closing the iterator early cancels the call."""
        call = self._stub.StreamExecutePlan(
            stream_execute_plan_request(plan, request_id), timeout=timeout or self._timeout
        )
        try:
            with execution_errors(plan):
                yield from call
        finally:
            call.cancel()  # a no-op once the call has ended

    def open_image(self, storage_path: str, *, timeout: float | None = None) -> ImageStream:
        """A stored image as a stream of chunks (mime_type and total_size known up front),
        for serving it on without holding it whole; ExecutionFailed on any error."""
        call = self._stub.GetImage(get_image_request(storage_path), timeout=timeout or self._image_timeout)
        with execution_errors(None):
            return ImageStream(call, next(call, None))

    def get_image(self, storage_path: str, *, timeout: float | None = None) -> StoredImage:
        """A stored image's bytes ("bucket/key" as in a result's storage_path)."""
        with self.open_image(storage_path, timeout=timeout) as stream:
            data = b"".join(stream)
            return StoredImage(data, stream.mime_type, stream.content_sha256, stream.reference_images)

    def reference_image(
        self, source: ReferenceSource, *, role: str | int = "subject", timeout: float | None = None
    ) -> ReferenceImage:
        """source as a plan's ReferenceImage: a result or a ReferenceImage as it is (role: the
        one it has, else role), a storage path ("[ROLE:]bucket/key") with the content_sha256
        the executor recorded, read from GetImage's first message alone (the call then ends;
        at most one chunk is sent). ExecutionFailed (NOT_FOUND) when nothing is stored there."""
        found = reference_from(source, role)
        if isinstance(found, ReferenceImage):
            return found
        ref_role, storage_path = found
        with self.open_image(storage_path, timeout=timeout) as stream:
            return ReferenceImage(storage_path=storage_path, content_sha256=stream.content_sha256, role=ref_role)

    def sign_image_url(
        self, storage_path: str, *, expires_in: float | dt.timedelta | None = None, timeout: float | None = None
    ) -> SignedImageUrl:
        """A fresh URL to a stored image, valid for expires_in seconds (default: the server's expiry)."""
        request = sign_image_url_request(storage_path, expires_in)
        with execution_errors(None):
            return signed_image_url(self._stub.SignImageUrl(request, timeout=timeout or self._image_timeout))
    def list_images(
        self,
        session_id: str,
        *,
        image_type: str | int | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> ImagePage:
        """One page of session_id's stored images, newest first (page_size 0: the server's
        default of 50, at most 100); ExecutionFailed on any error (INVALID_ARGUMENT for a
        page_token from another listing)."""
        request = list_images_request(session_id, image_type, page_size, page_token)
        with execution_errors(None):
            return image_page(self._stub.ListImages(request, timeout=timeout or self._image_timeout))

    def iter_images(
        self, session_id: str, *, image_type: str | int | None = None, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[ImageGenerationResult]:
        """Every stored image of session_id, newest first, a page at a time."""
        token = ""
        while True:
            page = self.list_images(session_id, image_type=image_type, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.images
            if not (token := page.next_page_token):
                return

    def delete_image(self, storage_path: str, *, timeout: float | None = None) -> None:
        """Delete a stored image (nothing there is no error); its plan renders again when executed."""
        with execution_errors(None):
            self._stub.DeleteImage(delete_image_request(storage_path), timeout=timeout or self._image_timeout)

    def delete_session_images(self, session_id: str, *, timeout: float | None = None) -> int:
        """Delete all of session_id's images and request and execution records (its executions
        not ended are cancelled first); how many images were deleted."""
        request = delete_session_images_request(session_id)
        with execution_errors(None):
            return self._stub.DeleteSessionImages(request, timeout=timeout or self._image_timeout).deleted_count


    def start_execution(
        self, plan: ImageGenerationPlan, *, request_id: str | None = None, timeout: float | None = None
    ) -> Execution:
        """Start executing the plan and return its Execution at once (QUEUED, or SUCCEEDED
        when the image is already stored); it runs whether or not anyone watches.
        ExecutionFailed (carrying the plan) when it cannot be started."""
        request = start_execution_request(plan, request_id)
        with execution_errors(plan):
            return self._stub.StartExecution(request, timeout=timeout or self._image_timeout).execution

    def get_execution(self, execution: str | Execution, *, timeout: float | None = None) -> Execution:
        """The execution ("executions/{id}" or the Execution) as it is now; ExecutionFailed
        (NOT_FOUND when unknown) on any error."""
        with execution_errors(None):
            return self._stub.GetExecution(get_execution_request(execution), timeout=timeout or self._image_timeout).execution

    def list_executions(
        self, session_id: str, *, page_size: int | None = None, page_token: str | None = None, timeout: float | None = None
    ) -> ExecutionPage:
        """One page of a session's executions, newest first (page_size 1 to 1000, default 50)."""
        request = list_executions_request(session_id, page_size, page_token)
        with execution_errors(None):
            return execution_page(self._stub.ListExecutions(request, timeout=timeout or self._image_timeout))

    def watch_execution(self, execution: str | Execution, *, timeout: float | None = None) -> Iterator[WatchExecutionResponse]:
        """The execution as it is, then every change (.execution, and .preview on PREVIEW
        events) until it ends; closing the iterator early ends the watch, not the execution."""
        call = self._stub.WatchExecution(watch_execution_request(execution), timeout=timeout or self._timeout)
        try:
            with execution_errors(None):
                yield from call
        finally:
            call.cancel()

    def cancel_execution(self, execution: str | Execution, *, timeout: float | None = None) -> Execution:
        """Cancel the execution (nothing is stored); it as it is then, CANCELLED unless it
        had already ended. A second cancel changes nothing."""
        with execution_errors(None):
            return self._stub.CancelExecution(
                cancel_execution_request(execution), timeout=timeout or self._image_timeout
            ).execution

    def watch_session(self, session_id: str, *, timeout: float | None = None) -> Iterator[WatchSessionExecutionsResponse]:
        """Every change of every execution of the session, started on any replica, from
        now until the iterator is closed (or timeout seconds, when given)."""
        call = self._stub.WatchSessionExecutions(watch_session_request(session_id), timeout=timeout)
        try:
            with execution_errors(None):
                yield from call
        finally:
            call.cancel()

class ImageStream(ImageStreamBase):
    """A stored image's chunks, from ExecutorClient.open_image; iterate once, then
    close (or use as a context manager) to end the call early."""

    def __iter__(self) -> Iterator[bytes]:
        with execution_errors(None):
            if first := self._take_first_chunk():
                yield first
            for message in self._call:
                yield message.chunk_data

    def close(self) -> None:
        self._cancel()

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImagegenClient:
    """Both services, and the two-stage generate(). Each service has its own channel
    options (its own token, at least) and default deadline."""

    def __init__(
        self,
        planner_target: str | grpc.Channel,
        executor_target: str | grpc.Channel,
        *,
        planner_options: ChannelOptions | None = None,
        executor_options: ChannelOptions | None = None,
        plan_timeout: float = DEFAULT_PLAN_TIMEOUT,
        execute_timeout: float = DEFAULT_EXECUTE_TIMEOUT,
    ) -> None:
        self.planner, self.executor = both_clients(
            lambda: PlannerClient(planner_target, options=planner_options, timeout=plan_timeout),
            lambda: ExecutorClient(executor_target, options=executor_options, timeout=execute_timeout),
            PlannerClient.close,
        )

    def generate(
        self,
        prompt: str,
        *,
        session_id: str,
        image_type: str | int | None = None,
        style: str | None = None,
        size: str | None = None,
        context: Mapping[str, str] | None = None,
        request_id: str | None = None,
        mode: str | None = None,
        reference_images: Sequence[ReferenceSource] = (),
        wait: bool = True,
    ) -> Generation | StartedGeneration:
        """Plan (PlanningFailed here renders nothing), then execute (ExecutionFailed carries the plan).
        reference_images: stored images the plan is to use, in order (results, ReferenceImages
        or "[ROLE:]bucket/key" paths, role subject unless said; see ExecutorClient.reference_image).
        wait=False: start the execution and return at once with the plan and the started
        execution (StartedGeneration), the plan-only answer a backend can send ahead of the image."""
        references = [self.executor.reference_image(source) for source in reference_images]
        plan = self.planner.create_plan(
            prompt, session_id=session_id, image_type=image_type, style=style, size=size, context=context, mode=mode,
            reference_images=references,
        )
        if not wait:
            return StartedGeneration(plan, self.executor.start_execution(plan, request_id=request_id))
        return generation(prompt, plan, self.executor.execute_plan(plan, request_id=request_id))

    def close(self) -> None:
        self.planner.close()
        self.executor.close()

    def __enter__(self) -> ImagegenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
