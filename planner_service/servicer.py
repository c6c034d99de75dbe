"""PlannerService over gRPC: proto in, domain call, proto out. Errors are
mapped by the server's interceptor (imagegen_runtime.interceptor), not here."""

from __future__ import annotations

import grpc

from imagegen.v1 import planner_service_pb2, planner_service_pb2_grpc
from planner_service.planning import Planner
from planner_service.ports import PlanRequest


class PlannerServicer(planner_service_pb2_grpc.PlannerServiceServicer):
    def __init__(self, planner: Planner) -> None:
        self._planner = planner

    async def CreatePlan(
        self, request: planner_service_pb2.CreatePlanRequest, context: grpc.aio.ServicerContext
    ) -> planner_service_pb2.CreatePlanResponse:
        plan = await self._planner.create_plan(PlanRequest.from_proto(request))
        return planner_service_pb2.CreatePlanResponse(plan=plan)
