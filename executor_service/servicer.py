"""ExecutorService over gRPC: proto in, domain call, proto out. Errors are
mapped by imagegen.status.ErrorMappingInterceptor, not here."""

from __future__ import annotations

import grpc

from executor_service.executor import Executor
from imagegen.v1 import executor_service_pb2, executor_service_pb2_grpc


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    async def ExecutePlan(
        self, request: executor_service_pb2.ExecutePlanRequest, context: grpc.aio.ServicerContext
    ) -> executor_service_pb2.ExecutePlanResponse:
        result = await self._executor.execute(request)
        return executor_service_pb2.ExecutePlanResponse(result=result)
