"""The plan kept beside each image ({key}.plan.json), against the real S3 server
(SeaweedFS, or a real MinIO) and the local store: ListImages returns the full plan,
deletes and the sweep leave no plan behind, a plan that is not the executor's (corrupt,
oversized, another plan's) falls back to the image's identity, and counts and listings
never take a plan for an image. Real gRPC servers on loopback, the real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
from pathlib import Path

import grpc
import pytest

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service import library
from executor_service.bootstrap import create_server
from executor_service.executor import Executor
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_PLAN_SIDECAR_BYTES, MAX_PROMPT_CHARS
from imagegen.fingerprint import with_fingerprint
from imagegen.json_mapping import plan_to_dict
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.conftest import PUBLIC_BASE
from tests.integration.test_image_lifecycle import S3, client, minio_store, s3_settings, server  # noqa: F401 - fixtures
from tests.support.plans import make_plan

pytestmark = pytest.mark.integration

# A prompt at the limit, far over S3's 2 KiB of user metadata, with characters JSON escapes.
LONG_PROMPT = ("Thora, dwarf cleric of Moradin — \"quoted\" \\ back\tslash; ✨ " * 80)[:MAX_PROMPT_CHARS]


def rich_plan(session_id: str, **fields: object) -> ImageGenerationPlan:
    defaults: dict = dict(
        enhanced_prompt=LONG_PROMPT, image_type=ImageType.IMAGE_TYPE_PORTRAIT, style="ink-sketch",
        size="64x64", metadata={"character": "thora", "scene": "bridge"},
    )
    return make_plan(session_id=session_id, **{**defaults, **fields})


def accepted(plan: ImageGenerationPlan) -> dict:
    return plan_to_dict(with_fingerprint(plan))


def bucket_keys(s3: S3, bucket: str) -> set[str]:
    return {o.object_name for o in s3.client().list_objects(bucket, recursive=True)}


async def test_listed_images_carry_their_whole_plan_and_deletes_leave_no_plan_behind(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str
) -> None:
    plans = [rich_plan("table-p"), rich_plan("table-p", style="pixel-art", image_type=ImageType.IMAGE_TYPE_MAP)]
    results = [await client.execute_plan(plan) for plan in plans]
    keys = {r.storage_path.partition("/")[2] for r in results}
    assert bucket_keys(s3_server, s3_bucket) == keys | {key + ".plan.json" for key in keys}

    listed = (await client.list_images("table-p")).images
    assert len(listed) == 2  # the plans are not images
    by_path = {image.storage_path: image for image in listed}
    for plan, result in zip(plans, results, strict=True):
        image = by_path[result.storage_path]
        assert plan_to_dict(image.plan) == accepted(plan)
        assert image.plan.enhanced_prompt == LONG_PROMPT and image.plan.metadata["character"] == "thora"
        assert image.plan == result.plan  # the listing reads like the execution
    assert (await client.list_images("table-p", image_type="map")).images[0].plan.style == "pixel-art"

    # Neither GetImage nor SignImageUrl serves a plan as an image.
    for call in (client.get_image, client.sign_image_url):
        with pytest.raises(ExecutionFailed) as refused:
            await call(results[0].storage_path + ".plan.json")
        assert refused.value.code == grpc.StatusCode.NOT_FOUND

    await client.delete_image(results[0].storage_path)
    assert bucket_keys(s3_server, s3_bucket) == {
        results[1].storage_path.partition("/")[2], results[1].storage_path.partition("/")[2] + ".plan.json"
    }
    assert await client.delete_session_images("table-p") == 1  # the image, not its plan
    assert bucket_keys(s3_server, s3_bucket) == set()

    again = await client.execute_plan(plans[0])  # renders and keeps its plan again
    assert not again.reused
    assert plan_to_dict((await client.list_images("table-p")).images[0].plan) == accepted(plans[0])


@pytest.mark.parametrize(
    "sidecar",
    [
        b"\x89PNG not json",
        b"[" * 100_000,  # deeper than the JSON parser goes
        json.dumps({"enhanced_prompt": 5}).encode(),  # not a plan
        json.dumps(accepted(make_plan(session_id="table-q", size="64x64"))).encode(),  # another plan
        b" " * (MAX_PLAN_SIDECAR_BYTES + 1),  # larger than any plan the executor writes
    ],
    ids=["not-json", "deep", "not-a-plan", "another-plan", "oversized"],
)
async def test_a_plan_that_is_not_the_executors_falls_back_to_the_images_identity(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str, sidecar: bytes
) -> None:
    plan = rich_plan("table-q")
    result = await client.execute_plan(plan)
    key = result.storage_path.partition("/")[2]
    await asyncio.to_thread(
        s3_server.client().put_object, s3_bucket, key + ".plan.json", io.BytesIO(sidecar), len(sidecar)
    )
    (listed,) = (await client.list_images("table-q")).images
    assert listed.plan == ImageGenerationPlan(
        plan_id=result.plan.plan_id, session_id="table-q", image_type=ImageType.IMAGE_TYPE_PORTRAIT
    )
    assert listed.storage_path == result.storage_path and listed.provider.name == result.provider.name
    reused = await client.execute_plan(plan)  # a reuse has the caller's plan: no sidecar read
    assert reused.reused and reused.plan.enhanced_prompt == LONG_PROMPT


async def test_the_sweep_removes_plans_with_their_images_and_counts_images_only(s3_server: S3, s3_bucket: str) -> None:
    running = await create_server(s3_settings(s3_server, s3_bucket))
    try:
        async with AsyncExecutorClient(f"127.0.0.1:{running.port}", timeout=60) as client:
            await client.execute_plan(rich_plan("table-r"))
            await client.execute_plan(rich_plan("table-r", style="pixel-art"))
    finally:
        await running.stop(None)

    store = minio_store(s3_server, s3_bucket)
    assert len(bucket_keys(s3_server, s3_bucket)) == 4
    written = max(o.create_time for o in await store.list("", 100))
    executor = Executor(OfflineRenderer(), store, PUBLIC_BASE, now=lambda: written + dt.timedelta(days=10))
    assert await executor.sweep(dt.timedelta(days=30)) == 0
    assert await executor.sweep(dt.timedelta(days=9)) == 2
    assert bucket_keys(s3_server, s3_bucket) == set()


async def test_the_local_store_keeps_lists_deletes_and_sweeps_plans_alike(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "images")
    store.ensure_ready()
    now = {"at": dt.datetime.now(dt.timezone.utc)}
    executor = Executor(OfflineRenderer(), store, PUBLIC_BASE, now=lambda: now["at"])
    plans = [rich_plan("table-s"), rich_plan("table-s", style="pixel-art"), rich_plan("table-s", size="128x128")]
    results = [await executor.execute(plan) for plan in plans]

    images, _ = await executor.list_images("table-s")
    assert sorted(plan_to_dict(i.plan)["style"] + i.plan.size for i in images) == sorted(
        p.style + p.size for p in plans
    )
    assert {i.storage_path: plan_to_dict(i.plan) for i in images} == {
        r.storage_path: accepted(p) for r, p in zip(results, plans, strict=True)
    }

    # A corrupt plan on disk: that image lists with its identity, the others in full.
    corrupt = tmp_path / "images" / (results[1].storage_path.partition("/")[2] + ".plan.json")
    corrupt.write_bytes(b"{not json")
    images, _ = await executor.list_images("table-s")
    by_path = {i.storage_path: i.plan for i in images}
    assert by_path[results[1].storage_path].enhanced_prompt == "" and by_path[results[1].storage_path].plan_id
    assert by_path[results[0].storage_path].enhanced_prompt == LONG_PROMPT

    await executor.delete_image(results[0].storage_path)
    assert not list(tmp_path.rglob(Path(results[0].storage_path).name + "*"))  # image, plan, and their metadata

    # The sweep: the rest are past a retention of 1 day two days later; it counts images.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    for path in (tmp_path / "images").rglob("*"):
        if path.is_file():
            os.utime(path, (later.timestamp() - 3 * 86400,) * 2)
    now["at"] = later
    assert await executor.sweep(dt.timedelta(days=1)) == 2
    assert [p for p in (tmp_path / "images").rglob("*") if p.is_file()] == []


async def test_plans_do_not_use_up_the_keys_a_listing_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing reads the keys of at most MAX_LISTED_SESSION_IMAGES images; the plans beside
    them (which sort right after their image) must not halve it. The limit is lowered to 3
    here rather than storing 10,000 images."""
    monkeypatch.setattr(library, "MAX_LISTED_SESSION_IMAGES", 3)
    store = LocalObjectStore(tmp_path / "images")
    store.ensure_ready()
    executor = Executor(OfflineRenderer(), store, PUBLIC_BASE)
    styles = ["ink-sketch", "pixel-art", "painterly", "heroic"]
    for style in styles:
        await executor.execute(rich_plan("table-t", style=style))
    images, token = await executor.list_images("table-t")
    assert len(images) == 3 and token == ""  # 3 of the 4: the limit counts images, not keys
    assert all(image.plan.enhanced_prompt == LONG_PROMPT for image in images)
