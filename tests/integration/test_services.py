"""Both services as real grpc.aio servers on port 0, called through clients/."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from clients import (
    AsyncExecutorClient,
    AsyncImagegenClient,
    AsyncPlannerClient,
    ExecutionFailed,
    ImagegenClient,
    PlanningFailed,
)
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.image_plan_pb2 import ImageType
from tests.conftest import PUBLIC_BASE, Services
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_generate_plans_then_executes_and_returns_the_legacy_payload(services: Services) -> None:
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as client:
        generation = await client.generate(
            "Portrait of our dwarf cleric",
            session_id="campaign-1",
            image_type="portrait",
            context={"race": "dwarf", "class": "cleric"},
        )
    payload, result, plan = generation.payload, generation.result, generation.plan
    key = f"campaign-1/portrait/{plan.plan_id}.png"
    assert payload["storage_path"] == f"imagegen/{key}" == result.storage_path
    assert payload["proxy_url"] == f"{PUBLIC_BASE}/{key}"
    assert payload["image_type"] == "portrait" and payload["style"] == "painterly"
    assert payload["original_prompt"] == "Portrait of our dwarf cleric"
    assert "dwarf cleric" in payload["prompt"] and payload["provider"] == "offline"
    assert payload["reused"] is False and payload["success"] is True
    # image_url opens exactly the stored bytes, and they are the PNG the result describes
    with urlopen(payload["image_url"]) as response:
        data = response.read()
    assert Path(urlparse(payload["image_url"]).path) == services.store_dir.resolve() / key
    assert hashlib.sha256(data).hexdigest() == result.content_sha256
    assert len(data) == result.byte_size
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("PNG", (result.width, result.height)) == ("PNG", (1024, 1024))


async def test_sync_client_generates_and_the_second_run_is_reused(services: Services) -> None:
    # The servers run on this test's event loop, so the blocking client runs in a thread.
    def twice() -> tuple[dict, dict]:
        with ImagegenClient(services.planner_target, services.executor_target) as client:
            first = client.generate("A map of the sunken temple", session_id="s1")
            second = client.generate("A map of the sunken temple", session_id="s1")
        return first.payload, second.payload

    first, second = await asyncio.to_thread(twice)
    assert first["image_type"] == "map" and not first["reused"]
    assert second["reused"] and second["storage_path"] == first["storage_path"]
    assert second["content_sha256"] == first["content_sha256"]
    assert len(files_under(services.store_dir)) == 4  # one image, its plan, and the store's metadata of each


async def test_same_request_gives_the_same_plan_byte_for_byte(services: Services) -> None:
    async with AsyncPlannerClient(services.planner_target) as planner:
        plans = [
            await planner.create_plan("The party ambushes goblins on a bridge", session_id="s", style="cinematic")
            for _ in range(2)
        ]
    for plan in plans:
        plan.ClearField("provenance")  # latency differs; it is not part of the plan's content
    assert plans[0].SerializeToString(deterministic=True) == plans[1].SerializeToString(deterministic=True)
    assert plans[0].image_type == ImageType.IMAGE_TYPE_SCENE
    assert plans[0].size == "1536x1024"


async def test_plan_provenance_says_which_planner_made_it(services: Services) -> None:
    async with AsyncPlannerClient(services.planner_target) as planner:
        plan = await planner.create_plan("A potion of healing", session_id="s")
    assert plan.provenance.planner == "offline"
    assert plan.plan_id == with_fingerprint(plan).plan_id


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"size": "1024by1024"}, "size"),
        ({"size": "8192x8192"}, "size"),
        ({"style": "baroque"}, "style"),
        ({"image_type": 99}, "image_type"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "../../etc"}, "session_id"),
        ({"session_id": "s" * 129}, "session_id"),
        ({"context": {f"k{i}": "v" for i in range(33)}}, "context"),
        ({"context": {"backstory": "x" * 501}}, "context['backstory']"),
    ],
)
async def test_planner_rejects_bad_input_with_field_violations(
    services: Services, options: dict, field: str
) -> None:
    request = {"prompt": "A tavern", "session_id": "s", **options}
    async with AsyncPlannerClient(services.planner_target) as planner:
        with pytest.raises(PlanningFailed) as caught:
            await planner.create_plan(request.pop("prompt"), **request)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST" and not error.retryable
    assert [v.field for v in error.violations] == [field]


valid_plan = plan_maker(enhanced_prompt="A gelatinous cube in a corridor", style="dark-fantasy", size="512x512", session_id="s2")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"enhanced_prompt": " "}, "plan.enhanced_prompt"),
        ({"enhanced_prompt": "x" * 4001}, "plan.enhanced_prompt"),
        ({"image_type": ImageType.IMAGE_TYPE_UNSPECIFIED}, "plan.image_type"),
        ({"image_type": 1234}, "plan.image_type"),
        ({"style": "no spaces allowed"}, "plan.style"),
        ({"size": "512"}, "plan.size"),
        ({"size": "63x512"}, "plan.size"),
        ({"session_id": ""}, "plan.session_id"),
        ({"session_id": ".hidden"}, "plan.session_id"),
        ({"session_id": "x" * 129}, "plan.session_id"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "plan.metadata"),
        ({"metadata": {"quality": "x" * 1025}}, "plan.metadata['quality']"),
        ({"plan_id": "f" * 32}, "plan.plan_id"),
    ],
)
async def test_executor_rejects_bad_plans_writes_nothing_and_returns_the_plan(
    services: Services, changes: dict, field: str
) -> None:
    plan = valid_plan(**changes)
    async with AsyncExecutorClient(services.executor_target) as executor:
        with pytest.raises(ExecutionFailed) as caught:
            await executor.execute_plan(plan)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == [field]
    assert error.plan == plan and not error.retryable
    assert files_under(services.store_dir) == []


async def test_planning_failure_means_nothing_is_executed(services: Services) -> None:
    async with AsyncImagegenClient(services.planner_target, services.executor_target) as client:
        with pytest.raises(PlanningFailed):
            await client.generate("", session_id="s3")
    assert files_under(services.store_dir) == []


async def test_health_and_reflection_are_served(services: Services) -> None:
    for target, name in (
        (services.planner_target, "imagegen.v1.PlannerService"),
        (services.executor_target, "imagegen.v1.ExecutorService"),
    ):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", name):
                response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(service="imagegen.v1.Nope"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unreachable_executor_is_a_retryable_execution_failure_with_the_plan() -> None:
    plan = valid_plan()
    async with AsyncExecutorClient("127.0.0.1:1", timeout=5) as executor:
        with pytest.raises(ExecutionFailed) as caught:
            await executor.execute_plan(plan)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.retryable and caught.value.plan == plan
