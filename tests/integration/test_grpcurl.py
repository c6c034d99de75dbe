"""The real grpcurl binary against both running services, through reflection."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import Services

pytestmark = pytest.mark.integration

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(*args: str, data: str | None = None) -> str:
    # A subprocess, awaited, so the servers on this loop keep serving meanwhile.
    argv = [str(GRPCURL), "-plaintext", *(["-d", data] if data is not None else []), *args]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_list_shows_services_health_and_reflection(services: Services) -> None:
    for target, name in (
        (services.planner_target, "imagegen.v1.PlannerService"),
        (services.executor_target, "imagegen.v1.ExecutorService"),
    ):
        listed = set((await grpcurl(target, "list")).split())
        assert {name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


async def test_describe_shows_the_contract(services: Services) -> None:
    described = await grpcurl(services.planner_target, "describe", "imagegen.v1.PlannerService")
    assert "rpc CreatePlan ( .imagegen.v1.CreatePlanRequest ) returns ( .imagegen.v1.CreatePlanResponse )" in described
    message = await grpcurl(services.executor_target, "describe", "imagegen.v1.ImageGenerationPlan")
    assert "string enhanced_prompt = 2;" in message and "map<string, string> metadata = 7;" in message


async def test_create_plan_then_execute_plan_with_json(services: Services) -> None:
    request = {"prompt": "A rusty longsword", "session_id": "grpcurl-1", "image_type": "IMAGE_TYPE_ITEM"}
    planned = json.loads(
        await grpcurl(services.planner_target, "imagegen.v1.PlannerService/CreatePlan", data=json.dumps(request))
    )
    plan = planned["plan"]
    assert plan["image_type"] == "IMAGE_TYPE_ITEM" and len(plan["plan_id"]) == 32
    executed = json.loads(
        await grpcurl(
            services.executor_target,
            "imagegen.v1.ExecutorService/ExecutePlan",
            data=json.dumps({"plan": plan}),
        )
    )
    result = executed["result"]
    assert result["storage_path"] == f"imagegen/grpcurl-1/item/{plan['plan_id']}.png"
    assert (services.store_dir / result["storage_path"].removeprefix("imagegen/")).is_file()


async def test_health_check_over_grpcurl(services: Services) -> None:
    answer = json.loads(
        await grpcurl(
            services.executor_target, "grpc.health.v1.Health/Check",
            data='{"service": "imagegen.v1.ExecutorService"}',
        )
    )
    assert answer == {"status": "SERVING"}
