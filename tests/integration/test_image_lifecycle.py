"""Image lifecycle against the real S3 server (SeaweedFS, or a real MinIO): ListImages
paging, DeleteImage, DeleteSessionImages, retention (the bucket's lifecycle rule, and
the sweep with an injected clock), and the cost of an image from the usage the
OpenAI-compatible server reports. Real gRPC servers on loopback, the real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients import AsyncExecutorClient, ExecutionFailed
from executor_service.bootstrap import create_server
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.pricing import PriceTable
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from executor_service.stores.minio_store import RETENTION_RULE_ID, MinioObjectStore
from imagegen.catalogue import image_type_name
from imagegen.v1.image_plan_pb2 import ImageType
from imagegen_runtime.serving import RunningServer
from tests.conftest import PUBLIC_BASE
from tests.integration.test_metrics import METRICS, scrape, value
from tests.integration.test_openai_images import image_bytes
from tests.support import fake_openai as fo
from tests.support.plans import make_plan
from tests.support.s3_server import ExternalS3, S3Server

pytestmark = pytest.mark.integration

S3 = S3Server | ExternalS3
PNG = image_bytes(size=(64, 64))


def s3_settings(s3: S3, bucket: str, **overrides: object) -> ExecutorSettings:
    fields: dict = dict(
        address="127.0.0.1:0", store="minio", minio_endpoint=s3.endpoint, minio_access_key=s3.access_key,
        minio_secret_key=s3.secret_key, minio_secure=s3.secure, minio_region=s3.region, bucket=bucket,
        public_base_url=PUBLIC_BASE, minio_timeout_seconds=10.0,
    )
    fields.update(overrides)
    return ExecutorSettings(**fields)


def minio_store(s3: S3, bucket: str) -> MinioObjectStore:
    store = MinioObjectStore.connect(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, bucket=bucket,
        secure=s3.secure, region=s3.region, timeout=10.0, retries=0,
    )
    store.ensure_ready()
    return store


@pytest.fixture
async def server(s3_server: S3, s3_bucket: str) -> AsyncIterator[RunningServer]:
    running = await create_server(s3_settings(s3_server, s3_bucket))
    yield running
    await running.stop(None)


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[AsyncExecutorClient]:
    async with AsyncExecutorClient(f"127.0.0.1:{server.port}", timeout=60) as executor:
        yield executor


async def seed(store: MinioObjectStore, session_id: str, image_type: int, count: int) -> set[str]:
    """count images of session_id filed as the executor files them; their storage paths."""
    folder = image_type_name(image_type)

    async def put(_: int) -> str:
        plan_id = uuid.uuid4().hex
        key = f"{session_id}/{folder}/{plan_id}.png"
        metadata = {"plan-id": plan_id, "provider": "offline", "model": "m", "width": "64", "height": "64"}
        await store.put(key, PNG, "image/png", metadata)
        return store.storage_path(key)

    paths: set[str] = set()
    for start in range(0, count, 25):  # a few writes at a time: the S3 server is shared
        paths.update(await asyncio.gather(*(put(i) for i in range(start, min(start + 25, count)))))
    return paths


async def all_pages(
    client: AsyncExecutorClient, session_id: str, page_size: int, image_type: str | None = None
) -> list[list]:
    pages, token = [], ""
    while True:
        page = await client.list_images(session_id, image_type=image_type, page_size=page_size, page_token=token)
        pages.append(page.images)
        if not (token := page.next_page_token):
            return pages


def invalid_field(error: ExecutionFailed) -> list[str]:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    return [v.field for v in error.violations]


async def test_list_images_pages_250_images_of_3_sessions_newest_first_and_by_type(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str
) -> None:
    store = minio_store(s3_server, s3_bucket)
    portraits = await seed(store, "table-a", ImageType.IMAGE_TYPE_PORTRAIT, 100)
    scenes = await seed(store, "table-a", ImageType.IMAGE_TYPE_SCENE, 50)
    others = {
        "table-b": await seed(store, "table-b", ImageType.IMAGE_TYPE_MAP, 60),
        "table-c": await seed(store, "table-c", ImageType.IMAGE_TYPE_ITEM, 40),
    }

    pages = await all_pages(client, "table-a", page_size=40)
    assert [len(page) for page in pages] == [40, 40, 40, 30]
    listed = [image for page in pages for image in page]
    assert [image.storage_path for image in listed].count(listed[0].storage_path) == 1
    assert {image.storage_path for image in listed} == portraits | scenes  # each once, nothing else
    assert [image.create_time.ToNanoseconds() for image in listed] == sorted(
        (image.create_time.ToNanoseconds() for image in listed), reverse=True
    )  # newest first
    first = listed[0]
    assert (first.mime_type, first.byte_size, first.width, first.provider.name) == ("image/png", len(PNG), 64, "offline")
    assert first.plan.session_id == "table-a" and first.plan.plan_id in first.storage_path
    assert first.image_url and first.proxy_url.startswith(PUBLIC_BASE)

    by_type = await all_pages(client, "table-a", page_size=100, image_type="scene")
    assert [len(page) for page in by_type] == [50]
    assert {image.storage_path for image in by_type[0]} == scenes
    assert {image.plan.image_type for image in by_type[0]} == {ImageType.IMAGE_TYPE_SCENE}

    for session_id, paths in others.items():
        default_pages = await all_pages(client, session_id, page_size=0)  # the default: 50
        assert [len(page) for page in default_pages] == ([50, 10] if len(paths) == 60 else [40])
        assert {image.storage_path for page in default_pages for image in page} == paths
    assert (await client.list_images("table-nobody")).images == []


async def test_a_tampered_or_foreign_page_token_is_invalid_argument(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str
) -> None:
    store = minio_store(s3_server, s3_bucket)
    await seed(store, "table-a", ImageType.IMAGE_TYPE_PORTRAIT, 3)
    await seed(store, "table-b", ImageType.IMAGE_TYPE_PORTRAIT, 3)
    token = (await client.list_images("table-a", page_size=1)).next_page_token
    assert token
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for session_id, image_type, bad in [
        ("table-a", None, flipped),  # modified
        ("table-a", None, token + "AA"),  # extended
        ("table-a", None, "not-a-token"),
        ("table-b", None, token),  # another session's listing
        ("table-a", "portrait", token),  # the same session filtered otherwise
    ]:
        with pytest.raises(ExecutionFailed) as failed:
            await client.list_images(session_id, image_type=image_type, page_token=bad)
        assert invalid_field(failed.value) == ["page_token"], (session_id, image_type, bad)
    assert len((await client.list_images("table-a", page_size=1, page_token=token)).images) == 1  # the real one works


async def test_bad_list_requests_are_invalid_argument_naming_the_field(client: AsyncExecutorClient) -> None:
    for kwargs, field in [
        (dict(session_id="../etc"), "session_id"),
        (dict(session_id=""), "session_id"),
        (dict(session_id="t", page_size=101), "page_size"),
        (dict(session_id="t", page_size=-1), "page_size"),
        (dict(session_id="t", image_type=99), "image_type"),
    ]:
        session_id = kwargs.pop("session_id")
        with pytest.raises(ExecutionFailed) as failed:
            await client.list_images(session_id, **kwargs)
        assert invalid_field(failed.value) == [field]
    with pytest.raises(ExecutionFailed) as failed:
        await client.delete_session_images("a/b")
    assert invalid_field(failed.value) == ["session_id"]
    with pytest.raises(ExecutionFailed) as failed:
        await client.delete_image("")
    assert invalid_field(failed.value) == ["storage_path"]


async def test_delete_image_removes_it_and_the_next_execution_renders_again(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str
) -> None:
    plan = make_plan(session_id="table-d", size="64x64")
    first = await client.execute_plan(plan)
    assert not first.reused and (await client.execute_plan(plan)).reused
    await client.delete_image(first.storage_path)
    assert (await client.list_images("table-d")).images == []
    with pytest.raises(ExecutionFailed) as gone:
        await client.get_image(first.storage_path)
    assert gone.value.code == grpc.StatusCode.NOT_FOUND
    await client.delete_image(first.storage_path)  # again: nothing there is no error
    again = await client.execute_plan(plan)
    assert not again.reused and again.storage_path == first.storage_path
    with pytest.raises(ExecutionFailed) as outside:
        await client.delete_image(f"another-bucket/{first.storage_path.partition('/')[2]}")
    assert outside.value.code == grpc.StatusCode.NOT_FOUND


async def test_delete_session_images_leaves_other_sessions_and_is_idempotent(
    client: AsyncExecutorClient, s3_server: S3, s3_bucket: str
) -> None:
    store = minio_store(s3_server, s3_bucket)
    await seed(store, "table-e", ImageType.IMAGE_TYPE_MAP, 30)
    kept = await seed(store, "table-f", ImageType.IMAGE_TYPE_MAP, 5)
    kept |= await seed(store, "table-e2", ImageType.IMAGE_TYPE_MAP, 2)  # shares table-e as a string prefix
    plan = make_plan(session_id="table-e", size="64x64")
    rendered = await client.execute_plan(plan, request_id="turn-1")
    assert (await client.execute_plan(plan, request_id="turn-1")).create_time == rendered.create_time

    assert await client.delete_session_images("table-e") == 31
    assert await client.delete_session_images("table-e") == 0  # safe to repeat
    client_objects = {f"{s3_bucket}/{o.object_name}" for o in s3_server.client().list_objects(s3_bucket, recursive=True)}
    assert client_objects == kept
    # Its request records went too: the same request_id executes (and renders) again.
    again = await client.execute_plan(plan, request_id="turn-1")
    assert not again.reused


async def test_retention_is_a_lifecycle_rule_on_the_bucket(s3_server: S3, s3_bucket: str) -> None:
    store = minio_store(s3_server, s3_bucket)
    assert await store.set_retention(30)
    rules = s3_server.client().get_bucket_lifecycle(s3_bucket).rules
    assert [(r.rule_id, r.expiration.days) for r in rules] == [(RETENTION_RULE_ID, 30)]


async def test_the_sweep_deletes_images_older_than_the_retention_from_s3(s3_server: S3, s3_bucket: str) -> None:
    # SeaweedFS accepts the lifecycle rule above but expires nothing in a test's time,
    # so the sweep (which also serves stores without rules) runs with an injected clock.
    store = minio_store(s3_server, s3_bucket)
    paths = await seed(store, "table-g", ImageType.IMAGE_TYPE_ITEM, 3)
    await store.put("not-ours.txt", b"x", "text/plain", {})  # not a key the executor writes: left alone
    written = max(o.create_time for o in await store.list("", 100))
    later = {"now": written + dt.timedelta(days=10)}
    executor = Executor(OfflineRenderer(), store, PUBLIC_BASE, now=lambda: later["now"])
    assert await executor.sweep(dt.timedelta(days=30)) == 0
    assert {store.storage_path(o.key) for o in await store.list("table-g/", 100)} == paths
    assert await executor.sweep(dt.timedelta(days=9)) == 3
    assert [o.key for o in await store.list("", 100)] == ["not-ours.txt"]


async def test_the_local_store_is_swept_too(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "images")
    store.ensure_ready()
    now = dt.datetime(2030, 1, 31, tzinfo=dt.timezone.utc)
    for name, age_days in (("old", 40), ("new", 5)):
        key = f"table-h/item/{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex}.png"
        await store.put(key, PNG, "image/png", {"plan-id": name})
        when = (now - dt.timedelta(days=age_days)).timestamp()
        os.utime(tmp_path / "images" / key, (when, when))
    executor = Executor(OfflineRenderer(), store, PUBLIC_BASE, now=lambda: now)
    assert await executor.sweep(dt.timedelta(days=30)) == 1
    left = await store.list("", 10)
    assert [o.metadata.get("plan-id") for o in left] == ["new"]
    assert sorted(p.name for p in (tmp_path / "images" / "table-h" / "item").iterdir()) == sorted(
        [left[0].key.rpartition("/")[2], left[0].key.rpartition("/")[2] + ".meta.json"]
    )  # the sidecar of the old one went with it


async def test_the_cost_comes_from_the_usage_the_provider_reports(
    fake_openai: fo.FakeOpenAI, s3_server: S3, s3_bucket: str
) -> None:
    prices = {"openai/gpt-image-2": {"input_per_million": 5, "output_per_million": 40}}
    settings = s3_settings(
        s3_server, s3_bucket, providers=("openai",), openai_base_url=fake_openai.base_url, openai_max_retries=0,
        openai_model="gpt-image-2", price_table=PriceTable.from_json(json.dumps(prices)), telemetry=METRICS,
    )
    fake_openai.script_images(fo.images_b64(image_bytes()))  # usage: 50 input, 272 output tokens
    running = await create_server(settings)
    try:
        async with AsyncExecutorClient(f"127.0.0.1:{running.port}", timeout=60) as client:
            plan = make_plan(session_id="table-i")
            result = await client.execute_plan(plan)
            expected = 50 * 5 + 272 * 40  # USD per 1M tokens x tokens = micros
            usage = result.provider.usage
            assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (50, 272, 322)
            assert result.provider.estimated_cost_micros == expected
            reused = await client.execute_plan(plan)  # the cost is kept beside the image
            assert reused.reused and reused.provider.estimated_cost_micros == expected
            assert reused.provider.usage == usage
            listed = (await client.list_images("table-i")).images
            assert [i.provider.estimated_cost_micros for i in listed] == [expected]
        samples = await scrape(running)
        assert value(samples, "imagegen_executor_cost_micros_total", provider="openai", model="gpt-image-2") == expected
        assert not [name for name, labels in samples if "cost" in name and "session_id" in dict(labels)]
    finally:
        await running.stop(None)


async def test_a_server_with_a_retention_sweeps_its_local_store_from_the_start(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "images")
    store.ensure_ready()
    old, new = (f"table-j/item/{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex}.png" for name in ("old", "new"))
    for key in (old, new):
        await store.put(key, PNG, "image/png", {})
    long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).timestamp()
    os.utime(tmp_path / "images" / old, (long_ago, long_ago))
    running = await create_server(
        ExecutorSettings(address="127.0.0.1:0", local_store_dir=tmp_path / "images", retention_days=2)
    )
    try:
        async with asyncio.timeout(20):
            while (tmp_path / "images" / old).exists():
                await asyncio.sleep(0.05)  # a bounded poll of the sweep's effect
        assert (tmp_path / "images" / new).exists()
    finally:
        await running.stop(None)


async def test_a_server_with_a_retention_sets_the_lifecycle_rule_on_its_bucket(s3_server: S3, s3_bucket: str) -> None:
    running = await create_server(s3_settings(s3_server, s3_bucket, retention_days=14))
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    rules = await asyncio.to_thread(s3_server.client().get_bucket_lifecycle, s3_bucket)
                except Exception:  # noqa: BLE001 - none yet
                    rules = None
                if rules is not None:
                    break
                await asyncio.sleep(0.05)
        assert [(r.rule_id, r.expiration.days) for r in rules.rules] == [(RETENTION_RULE_ID, 14)]
    finally:
        await running.stop(None)
