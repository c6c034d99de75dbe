"""ExecutorService over gRPC: proto in, domain call, proto out. Errors are
mapped by the server's interceptor (imagegen_runtime.interceptor), not here."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2

from executor_service.config import DEFAULT_IMAGE_BUFFER_BYTES, DEFAULT_IMAGE_WRITE_TIMEOUT_SECONDS
from executor_service.executions import Executions
from executor_service.executor import Executor
from imagegen.errors import ReaderStalled
from executor_service.ports import SignedUrl
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

# GetImage reads a stored image in chunks of this size (each one message, well under
# IMAGE_CHUNK_BYTES), so what a call holds while its caller is not reading is small.
IMAGE_READ_BYTES = 256 * 1024


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    """image_buffer_bytes bounds the image bytes all GetImage calls together hold between
    reading them from the store and gRPC taking them under HTTP/2 flow control: each call
    holds at most one chunk (IMAGE_READ_BYTES) at a time, and a call finding the budget
    spent waits for a chunk slot before it reads more (EXECUTOR_GETIMAGE_BUFFER_BYTES)."""

    def __init__(
        self,
        executor: Executor,
        executions: Executions,
        *,
        image_buffer_bytes: int = DEFAULT_IMAGE_BUFFER_BYTES,
        image_write_timeout: float = DEFAULT_IMAGE_WRITE_TIMEOUT_SECONDS,
    ) -> None:
        self._executor = executor
        self._executions = executions
        self._image_slots = asyncio.Semaphore(max(1, image_buffer_bytes // IMAGE_READ_BYTES))
        self._image_write_timeout = image_write_timeout

    async def ExecutePlan(
        self, request: executor_service_pb2.ExecutePlanRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.ExecutePlanResponse:
        result = await self._executor.execute(_plan(request), request_id=request.request_id)
        return executor_service_pb2.ExecutePlanResponse(result=result)

    async def StreamExecutePlan(
        self, request: executor_service_pb2.StreamExecutePlanRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_service_pb2.StreamExecutePlanResponse]:
        async for stage, result in self._executor.execute_stream(_plan(request), request_id=request.request_id):
            yield executor_service_pb2.StreamExecutePlanResponse(stage=stage, result=result)

    async def GetImage(
        self, request: executor_service_pb2.GetImageRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # context.write returns once HTTP/2 flow control has taken the message, that is as
        # the caller reads (grpc.aio writes a yielded message the same way). A chunk is read
        # from the store only inside a slot, which its write gives back: one chunk ahead of
        # the caller per call, and the slots' worth across calls.
        reader = await self._executor.open_image(request.storage_path, IMAGE_READ_BYTES)
        try:
            first: executor_service_pb2.GetImageResponse | None = executor_service_pb2.GetImageResponse(
                mime_type=reader.stored.content_type,
                total_size=reader.stored.size,
                content_sha256=reader.stored.metadata.get("sha256", ""),
                reference_images=self._executor.recorded_references(reader.stored),
            )
            chunks = aiter(reader.chunks)
            while True:
                async with self._image_slots:
                    chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    message = first if first is not None else executor_service_pb2.GetImageResponse()
                    first = None
                    message.chunk_data = chunk
                    del chunk  # the message holds the bytes now; one reference fewer while gRPC waits
                    await self._write_or_give_up(context, message)
                    del message
            if first is not None:  # an empty image: still say what it is
                await context.write(first)
        finally:
            await reader.aclose()

    async def _write_or_give_up(
        self, context: grpc.aio.ServicerContext, message: executor_service_pb2.GetImageResponse
    ) -> None:
        """Write message, or end the call when the caller has not taken it within the write
        timeout: a caller that stops reading must not keep its slot of the budget for good."""
        try:
            async with asyncio.timeout(self._image_write_timeout):
                await context.write(message)
        except TimeoutError:
            raise ReaderStalled(
                f"the caller read nothing for {self._image_write_timeout:g} s; GetImage gave up"
            ) from None

    async def SignImageUrl(
        self, request: executor_service_pb2.SignImageUrlRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.SignImageUrlResponse:
        expires_in = _timedelta(request.expires_in) if request.HasField("expires_in") else None
        return _signed(await self._executor.sign_image_url(request.storage_path, expires_in))

    async def StartExecution(
        self, request: executor_service_pb2.StartExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.StartExecutionResponse:
        execution = await self._executions.start(_plan(request), request_id=request.request_id)
        return executor_service_pb2.StartExecutionResponse(execution=execution)

    async def GetExecution(
        self, request: executor_service_pb2.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.GetExecutionResponse:
        return executor_service_pb2.GetExecutionResponse(execution=await self._executions.get(request.name))

    async def ListExecutions(
        self, request: executor_service_pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.ListExecutionsResponse:
        page, token = await self._executions.list(request.session_id, request.page_size, request.page_token)
        return executor_service_pb2.ListExecutionsResponse(executions=page, next_page_token=token)

    async def WatchExecution(
        self, request: executor_service_pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_service_pb2.WatchExecutionResponse]:
        async for event in self._executions.watch(request.name):
            yield executor_service_pb2.WatchExecutionResponse(execution=event.execution, preview=event.preview)

    async def CancelExecution(
        self, request: executor_service_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.CancelExecutionResponse:
        return executor_service_pb2.CancelExecutionResponse(execution=await self._executions.cancel(request.name))

    async def WatchSessionExecutions(
        self, request: executor_service_pb2.WatchSessionExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_service_pb2.WatchSessionExecutionsResponse]:
        async for event in self._executions.watch_session(request.session_id):
            yield executor_service_pb2.WatchSessionExecutionsResponse(execution=event.execution, preview=event.preview)


    async def ListImages(
        self, request: executor_service_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.ListImagesResponse:
        images, next_page_token = await self._executor.list_images(
            request.session_id, request.image_type, request.page_size, request.page_token
        )
        return executor_service_pb2.ListImagesResponse(images=images, next_page_token=next_page_token)

    async def DeleteImage(
        self, request: executor_service_pb2.DeleteImageRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.DeleteImageResponse:
        await self._executor.delete_image(request.storage_path)
        return executor_service_pb2.DeleteImageResponse()

    async def DeleteSessionImages(
        self, request: executor_service_pb2.DeleteSessionImagesRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.DeleteSessionImagesResponse:
        deleted = await self._executions.delete_session(request.session_id)
        return executor_service_pb2.DeleteSessionImagesResponse(deleted_count=deleted)


def _plan(
    request: executor_service_pb2.ExecutePlanRequest
    | executor_service_pb2.StreamExecutePlanRequest
    | executor_service_pb2.StartExecutionRequest,
) -> ImageGenerationPlan | None:
    return request.plan if request.HasField("plan") else None


def _timedelta(duration: duration_pb2.Duration) -> dt.timedelta:
    """A Duration as a timedelta. Seconds beyond what a timedelta holds (a Duration off
    its documented range) become the largest timedelta, which the use case refuses with
    its usual INVALID_ARGUMENT on expires_in like any other too-long expiry."""
    try:
        return duration.ToTimedelta()
    except (OverflowError, ValueError):
        return dt.timedelta.max if duration.seconds > 0 else dt.timedelta.min


def _signed(signed: SignedUrl) -> executor_service_pb2.SignImageUrlResponse:
    response = executor_service_pb2.SignImageUrlResponse(image_url=signed.url)
    if signed.expire_time is not None:
        response.expire_time.FromDatetime(signed.expire_time)
    return response
