"""Per-session render quotas across replicas: two `python -m executor_service` processes
sharing a real Valkey and a real S3 server count one session's renders together."""

from __future__ import annotations

import grpc
import pytest

from clients import ExecutionFailed
from tests.integration.test_cluster_executor import Cluster, clients, cluster  # noqa: F401 - the fixture
from tests.integration.test_openai_images import image_bytes, make_plan
from tests.support import fake_openai as fo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_session_over_its_quota_on_either_replica_is_resource_exhausted_with_quota_failure(
    cluster: Cluster, fake_openai: fo.FakeOpenAI  # noqa: F811 - the fixture imported above
) -> None:
    png = image_bytes()
    blocked = fo.error(400, "blocked", type="image_generation_user_error", code="moderation_blocked")
    fake_openai.script_images(fo.images_b64(png), blocked, fo.images_b64(png), fo.images_b64(png))
    replicas = await cluster(2, EXECUTOR_SESSION_QUOTA="2/hour,100/day")
    plans = [make_plan(enhanced_prompt=f"A beholder, take {n}", session_id="table-q") for n in range(4)]
    async with clients(replicas) as (a, b):
        first = await a.execute_plan(plans[0])
        with pytest.raises(ExecutionFailed) as rejected:
            await b.execute_plan(plans[1])  # a failed render gives its slot back
        assert rejected.value.code == grpc.StatusCode.FAILED_PRECONDITION
        await b.execute_plan(plans[2])  # the second slot of the hour

        with pytest.raises(ExecutionFailed) as over:
            await a.execute_plan(plans[3])
        error = over.value
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "SESSION_QUOTA_EXCEEDED"
        assert error.quota_violations == (("session:table-q", "at most 2/hour new renders"),)
        assert error.retry_after is not None and 3000 < error.retry_after <= 3600  # when the first render leaves the hour
        assert error.plan is not None and error.plan.session_id == "table-q"
        with pytest.raises(ExecutionFailed) as still_over:
            await b.execute_plan(plans[3])  # the other replica counts the same renders
        assert still_over.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

        reused = await b.execute_plan(plans[0])  # a stored image costs nothing and counts nothing
        assert reused.reused and reused.storage_path == first.storage_path
        other = await a.execute_plan(make_plan(enhanced_prompt="A beholder, take 1", session_id="table-r"))
        assert not other.reused  # another session has its own quota
    assert len(fake_openai.image_requests) == 4  # refused executions never reached the provider


async def test_a_page_token_from_one_replica_opens_on_another(cluster: Cluster) -> None:  # noqa: F811
    replicas = await cluster(2, EXECUTOR_PROVIDER="offline")  # no EXECUTOR_PAGE_TOKEN_KEY: derived alike
    async with clients(replicas) as (a, b):
        for n in range(3):
            await a.execute_plan(make_plan(enhanced_prompt=f"A lantern, take {n}", session_id="table-p", size="64x64"))
        first = await a.list_images("table-p", page_size=2)
        rest = await b.list_images("table-p", page_size=2, page_token=first.next_page_token)
    assert len(first.images) == 2 and len(rest.images) == 1 and rest.next_page_token == ""
    assert len({i.storage_path for i in [*first.images, *rest.images]}) == 3
