"""ExecutorService over gRPC: proto in, domain call, proto out. Errors are
mapped by imagegen_runtime.error_mapping.ErrorMappingInterceptor, not here."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2

from executor_service.executor import Executor
from executor_service.ports import ObjectReader, SignedUrl
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

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
    ) -> AsyncIterator[executor_service_pb2.GetImageResponse]:
        reader = await self._executor.open_image(request.storage_path)
        try:
            async for message in _image_messages(reader):
                yield message
        finally:
            await reader.aclose()

    async def SignImageUrl(
        self, request: executor_service_pb2.SignImageUrlRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.SignImageUrlResponse:
        expires_in = _timedelta(request.expires_in) if request.HasField("expires_in") else None
        return _signed(await self._executor.sign_image_url(request.storage_path, expires_in))


def _plan(
    request: executor_service_pb2.ExecutePlanRequest | executor_service_pb2.StreamExecutePlanRequest,
) -> ImageGenerationPlan | None:
    return request.plan if request.HasField("plan") else None


async def _image_messages(reader: ObjectReader) -> AsyncIterator[executor_service_pb2.GetImageResponse]:
    """The image's chunks; the first message also says what the image is, even when it is empty."""
    first: executor_service_pb2.GetImageResponse | None = executor_service_pb2.GetImageResponse(
        mime_type=reader.stored.content_type, total_size=reader.stored.size
    )
    async for chunk in reader.chunks:
        if first is not None:
            first.chunk_data = chunk
            chunk_message, first = first, None
            yield chunk_message
        else:
            yield executor_service_pb2.GetImageResponse(chunk_data=chunk)
    if first is not None:
        yield first


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
