"""Plans that reference stored images (character consistency), through real servers:
the executor with the OpenAI provider (the real openai SDK against the loopback
OpenAI-compatible server) and the local store, then both services end to end with the
LLM planner on the same fake and the image in S3 (the session's S3 server)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients import AsyncExecutorClient, AsyncImagegenClient, ExecutionFailed, PlanningFailed
from executor_service.bootstrap import build_executor, build_provider
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_REFERENCE_IMAGE_BYTES
from imagegen.v1.image_plan_pb2 import (
    ImageGenerationPlan,
    ImageGenerationResult,
    ImageType,
    ReferenceImage,
    ReferenceRole,
)
from planner_service.openai_agent import TOOL_NAME
from tests.conftest import PUBLIC_BASE
from tests.integration.test_minio_store import http_get
from tests.support import fake_openai as fo
from tests.support.executor_server import running_executor
from tests.support.llm_planner import running_llm_planner
from tests.support.plans import plan_maker
from tests.support.s3_server import ExternalS3, S3Server

pytestmark = pytest.mark.integration

API_KEY = "sk-test-executor-0123456789"
SUBJECT = ReferenceRole.REFERENCE_ROLE_SUBJECT
STYLE = ReferenceRole.REFERENCE_ROLE_STYLE

make_plan = plan_maker(session_id="table-7", size="1024x1024")


def image_bytes(colour: tuple[int, ...], size: tuple[int, int] = (1024, 1024), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def mask_bytes() -> bytes:
    """A 1024x1024 mask: opaque, with a fully transparent square where the edit may paint."""
    mask = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (256, 256, 768, 768))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def reference(result: ImageGenerationResult, role: int = SUBJECT) -> ReferenceImage:
    return ReferenceImage(storage_path=result.storage_path, content_sha256=result.content_sha256, role=role)


def as_mask(result: ImageGenerationResult) -> ReferenceImage:
    return ReferenceImage(storage_path=result.storage_path, content_sha256=result.content_sha256)


@pytest.fixture
async def executor(fake_openai: fo.FakeOpenAI, tmp_path: Path) -> AsyncIterator[AsyncExecutorClient]:
    """An executor server with the OpenAI provider (as the service builds it) and a local store."""
    provider = build_provider(ExecutorSettings(
        providers=("openai",), openai_base_url=fake_openai.base_url, openai_api_key=API_KEY,
        openai_max_retries=0, openai_timeout_seconds=5.0,
    ))
    store = LocalObjectStore(tmp_path / "images", bucket="images")
    async with running_executor(Executor(provider, store, PUBLIC_BASE)) as target:
        async with AsyncExecutorClient(target) as client:
            yield client


async def stored(client: AsyncExecutorClient, fake: fo.FakeOpenAI, data: bytes, **fields: object) -> ImageGenerationResult:
    """data stored by the executor as the image of a plan of fields (rendered by the fake)."""
    fake.script_images(fo.images_b64(data))
    return await client.execute_plan(make_plan(**fields))


async def test_the_edit_request_carries_exactly_the_referenced_bytes_and_the_mask(
    executor: AsyncExecutorClient, fake_openai: fo.FakeOpenAI
) -> None:
    portrait_png, armour_png, mask_png = image_bytes((150, 60, 40)), image_bytes((40, 60, 150)), mask_bytes()
    portrait = await stored(executor, fake_openai, portrait_png, enhanced_prompt="Portrait of Thora",
                            image_type=ImageType.IMAGE_TYPE_PORTRAIT)
    armour = await stored(executor, fake_openai, armour_png, enhanced_prompt="Thora's armour",
                          image_type=ImageType.IMAGE_TYPE_ITEM)
    mask = await stored(executor, fake_openai, mask_png, enhanced_prompt="A mask", image_type=ImageType.IMAGE_TYPE_ITEM)
    scene_png = image_bytes((10, 120, 10))
    fake_openai.script_edits(fo.images_b64(scene_png, revised_prompt="Thora at the gate"))
    refs = [reference(portrait), reference(armour, STYLE)]
    plan = make_plan(enhanced_prompt="Thora holds the gate. Keep the face of reference 1.",
                     image_type=ImageType.IMAGE_TYPE_SCENE, reference_images=refs, mask=as_mask(mask))

    result = await executor.execute_plan(plan)

    (edit,) = fake_openai.edit_requests
    assert edit.headers["content-type"].startswith("multipart/form-data")
    images = [f for f in edit.files if f.name.startswith("image")]
    assert [f.data for f in images] == [portrait_png, armour_png]  # exactly those bytes, in plan order
    assert [f.data for f in edit.files_named("mask")] == [mask_png]
    assert edit.form["prompt"] == [plan.enhanced_prompt]
    assert (edit.form["model"], edit.form["size"], edit.form["n"]) == (["gpt-image-2"], ["1024x1024"], ["1"])
    assert len(fake_openai.image_requests) == 3  # the three stored images; the scene went to edits only
    assert not result.reused and result.provider.revised_prompt == "Thora at the gate"
    assert list(result.reference_images) == refs
    image = await executor.get_image(result.storage_path)
    assert image.data == scene_png and image.content_sha256 == result.content_sha256
    assert list(image.reference_images) == refs

    again = await executor.execute_plan(plan)  # stored: nothing sent, the references listed still
    assert again.reused and list(again.reference_images) == refs
    assert len(fake_openai.edit_requests) == 1


async def test_bad_references_are_invalid_argument_naming_the_field_and_nothing_is_sent(
    executor: AsyncExecutorClient, fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    portrait = await stored(executor, fake_openai, image_bytes((150, 60, 40)), enhanced_prompt="Portrait of Thora",
                            image_type=ImageType.IMAGE_TYPE_PORTRAIT)
    elsewhere = await stored(executor, fake_openai, image_bytes((1, 2, 3)), enhanced_prompt="Portrait of Bram",
                             image_type=ImageType.IMAGE_TYPE_PORTRAIT, session_id="table-8")
    sent = len(fake_openai.requests)
    not_stored = ReferenceImage(
        storage_path=f"images/table-7/portrait/{'0' * 32}.png", content_sha256=portrait.content_sha256, role=SUBJECT
    )
    other_bytes = reference(portrait)
    other_bytes.content_sha256 = "f" * 64
    cases = {
        "another session": ([reference(portrait), reference(elsewhere)], "plan.reference_images[1].storage_path"),
        "not stored": ([reference(portrait), not_stored], "plan.reference_images[1].storage_path"),
        "other bytes": ([other_bytes], "plan.reference_images[0].content_sha256"),
        "another bucket": ([ReferenceImage(storage_path="other/" + portrait.storage_path.partition("/")[2],
                                           content_sha256=portrait.content_sha256, role=SUBJECT)],
                           "plan.reference_images[0].storage_path"),
    }
    for name, (refs, field) in cases.items():
        plan = make_plan(enhanced_prompt=f"Thora, {name}", image_type=ImageType.IMAGE_TYPE_SCENE, reference_images=refs)
        with pytest.raises(ExecutionFailed) as caught:
            await executor.execute_plan(plan)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert [v.field for v in caught.value.violations] == [field], name
    assert len(fake_openai.requests) == sent  # the provider was never called
    scenes = [p for p in (tmp_path / "images").rglob("*") if "scene" in p.parts]
    assert scenes == []  # and nothing was written


async def test_a_mask_is_refused_by_a_provider_that_cannot_apply_one(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "images", bucket="images")
    executor = Executor(build_provider(ExecutorSettings(providers=("offline",))), store, PUBLIC_BASE)
    async with running_executor(executor) as target, AsyncExecutorClient(target) as client:
        portrait = await client.execute_plan(make_plan(image_type=ImageType.IMAGE_TYPE_PORTRAIT, size="256x256"))
        plan = make_plan(image_type=ImageType.IMAGE_TYPE_SCENE, size="256x256", reference_images=[reference(portrait)])
        scene = await client.execute_plan(plan)  # the offline renderer takes references...
        assert list(scene.reference_images) == [reference(portrait)]
        with pytest.raises(ExecutionFailed) as caught:  # ...but applies no mask
            await client.execute_plan(make_plan(
                image_type=ImageType.IMAGE_TYPE_SCENE, size="256x256", reference_images=[reference(portrait)],
                mask=as_mask(portrait),
            ))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["plan.mask"]


# -- End to end: both services, the LLM planner, S3 -------------------------------------------------

PORTRAIT_ANSWER = {
    "enhanced_prompt": "Head-and-shoulders portrait of Thora, a dwarf cleric with a braided red beard.",
    "image_type": "portrait", "style": "painterly", "size": "1024x1024",
}
SCENE_PROMPT = "Thora holds the bridge against goblins"
SCENE_ANSWER = {
    "enhanced_prompt": "Thora holds a rope bridge against goblins; keep the face and armour of the character "
    "in reference 1.",
    "image_type": "scene", "style": "painterly", "size": "1536x1024",
}


@pytest.fixture
async def both_services(
    fake_openai: fo.FakeOpenAI, s3_server: S3Server | ExternalS3, s3_bucket: str
) -> AsyncIterator[AsyncImagegenClient]:
    settings = ExecutorSettings(
        address="127.0.0.1:0", providers=("openai",), openai_base_url=fake_openai.base_url,
        openai_api_key=API_KEY, openai_max_retries=0, store="minio", minio_endpoint=s3_server.endpoint,
        minio_access_key=s3_server.access_key, minio_secret_key=s3_server.secret_key,
        minio_secure=s3_server.secure, minio_region=s3_server.region, bucket=s3_bucket,
        public_base_url=PUBLIC_BASE,
    )
    async with running_llm_planner(fake_openai, mode="llm", llm_timeout_seconds=5.0) as planner_target:
        async with running_executor(build_executor(settings)) as executor_target:
            async with AsyncImagegenClient(planner_target, executor_target) as client:
                yield client


async def test_a_scene_keeps_the_character_of_a_stored_portrait_end_to_end(
    both_services: AsyncImagegenClient, fake_openai: fo.FakeOpenAI
) -> None:
    client = both_services
    portrait_png, scene_png = image_bytes((150, 60, 40)), image_bytes((10, 120, 10), (1536, 1024))
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, PORTRAIT_ANSWER), fo.chat_tool_call(TOOL_NAME, SCENE_ANSWER))
    fake_openai.script_images(fo.images_b64(portrait_png))
    fake_openai.script_edits(fo.images_b64(scene_png))

    portrait = await client.generate("Portrait of Thora, our dwarf cleric", session_id="table-1")
    scene = await client.generate(SCENE_PROMPT, session_id="table-1", reference_images=[portrait.result])

    # The LLM was told which reference exists and what it is for.
    (_, scene_chat) = fake_openai.chat_requests
    moment = json.loads(scene_chat.body["messages"][1]["content"])
    assert moment["reference_images"][0]["reference"] == 1 and moment["reference_images"][0]["role"] == "subject"
    assert "reference_images" in scene_chat.body["messages"][0]["content"]
    # The image provider got the portrait's bytes through the edit endpoint.
    (edit,) = fake_openai.edit_requests
    assert [f.data for f in edit.files if f.name.startswith("image")] == [portrait_png]
    # Both are stored; the scene lists its reference, and so does GetImage.
    expected = reference(portrait.result)
    assert list(scene.plan.reference_images) == [expected]
    assert list(scene.result.reference_images) == [expected]
    assert scene.payload["reference_images"] == [portrait.result.storage_path]
    assert http_get(portrait.result.image_url) == (200, portrait_png)
    assert http_get(scene.result.image_url) == (200, scene_png)
    fetched = await client.executor.get_image(scene.result.storage_path)
    assert list(fetched.reference_images) == [expected]
    # A bare storage path works too: the executor tells its content_sha256.
    assert await client.executor.reference_image(portrait.result.storage_path) == expected
    assert await client.executor.reference_image("style:" + portrait.result.storage_path) == reference(
        portrait.result, STYLE
    )


async def test_a_changed_portrait_makes_a_new_plan_and_other_sessions_cannot_reference_it(
    both_services: AsyncImagegenClient, fake_openai: fo.FakeOpenAI
) -> None:
    client = both_services
    fake_openai.script_chat(
        fo.chat_tool_call(TOOL_NAME, PORTRAIT_ANSWER),
        fo.chat_tool_call(TOOL_NAME, SCENE_ANSWER),
        fo.chat_tool_call(TOOL_NAME, {**PORTRAIT_ANSWER, "enhanced_prompt": "Thora, older, a scar over one eye."}),
        fo.chat_tool_call(TOOL_NAME, SCENE_ANSWER),  # the same answer: only the portrait differs
    )
    fake_openai.script_images(fo.images_b64(image_bytes((150, 60, 40))), fo.images_b64(image_bytes((90, 60, 40))))
    fake_openai.script_edits(*(fo.images_b64(image_bytes((10, 120, 10), (1536, 1024))) for _ in range(2)))
    first = await client.generate("Portrait of Thora", session_id="table-1")
    scene = await client.generate(SCENE_PROMPT, session_id="table-1", reference_images=[first.result])
    older = await client.generate("Portrait of Thora, years later", session_id="table-1")
    rescene = await client.generate(SCENE_PROMPT, session_id="table-1", reference_images=[older.result])
    assert older.result.content_sha256 != first.result.content_sha256
    assert rescene.plan.enhanced_prompt == scene.plan.enhanced_prompt
    assert rescene.plan.plan_id != scene.plan.plan_id  # a changed portrait is a new plan (and image)
    assert rescene.result.storage_path != scene.result.storage_path

    sent = len(fake_openai.requests)
    with pytest.raises(PlanningFailed) as caught:  # another table's portrait: refused, nothing rendered
        await client.generate(SCENE_PROMPT, session_id="table-2", reference_images=[first.result])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["reference_images[0].storage_path"]
    forged = ImageGenerationPlan()
    forged.CopyFrom(scene.plan)
    forged.session_id, forged.plan_id = "table-2", ""
    with pytest.raises(ExecutionFailed) as refused:  # nor can a plan made by hand reach it
        await client.executor.execute_plan(forged)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == ["plan.reference_images[0].storage_path"]
    assert len(fake_openai.requests) == sent


async def test_a_mask_the_edit_endpoint_cannot_take_is_refused_before_any_request(
    executor: AsyncExecutorClient, fake_openai: fo.FakeOpenAI
) -> None:
    portrait = await stored(executor, fake_openai, image_bytes((150, 60, 40)), enhanced_prompt="Portrait of Thora",
                            image_type=ImageType.IMAGE_TYPE_PORTRAIT)
    webp = io.BytesIO()
    Image.new("RGBA", (1024, 1024), (0, 0, 0, 0)).save(webp, format="WEBP")
    fake_openai.script_images(fo.images_b64(webp.getvalue()))
    not_png = await executor.execute_plan(make_plan(enhanced_prompt="A mask", image_type=ImageType.IMAGE_TYPE_ITEM,
                                                    metadata={"output_format": "webp"}))
    plan = make_plan(image_type=ImageType.IMAGE_TYPE_SCENE, reference_images=[reference(portrait)],
                     mask=as_mask(not_png))
    with pytest.raises(ExecutionFailed) as caught:
        await executor.execute_plan(plan)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["plan.mask.storage_path"]
    assert fake_openai.edit_requests == []


async def test_a_reference_over_the_byte_limit_is_refused_unread(tmp_path: Path) -> None:
    """The store holds an image over MAX_REFERENCE_IMAGE_BYTES (written by an executor with
    a larger image limit); a plan may not reference it."""
    store = LocalObjectStore(tmp_path / "images", bucket="images")
    data = b"\x89PNG" + bytes(MAX_REFERENCE_IMAGE_BYTES)
    key = f"table-7/portrait/{'a' * 32}.png"
    await store.put(key, data, "image/png", {"sha256": hashlib.sha256(data).hexdigest()})
    executor = Executor(build_provider(ExecutorSettings(providers=("offline",))), store, PUBLIC_BASE)
    big = ReferenceImage(storage_path=f"images/{key}", content_sha256=hashlib.sha256(data).hexdigest(), role=SUBJECT)
    async with running_executor(executor) as target, AsyncExecutorClient(target) as client:
        with pytest.raises(ExecutionFailed) as caught:
            await client.execute_plan(make_plan(image_type=ImageType.IMAGE_TYPE_SCENE, reference_images=[big]))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = caught.value.violations
    assert violation.field == "plan.reference_images[0].storage_path"
    assert str(MAX_REFERENCE_IMAGE_BYTES) in violation.description
