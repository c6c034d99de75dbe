"""clients.generate through both services as production wires them: the planner's
LLM and the executor's images on the loopback OpenAI-compatible server (real
openai SDK), the image in S3 (the session's S3 server), the executor built from
settings exactly as `python -m executor_service` builds it."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from clients import AsyncImagegenClient
from executor_service.bootstrap import build_executor
from executor_service.config import ExecutorSettings
from planner_service.openai_agent import TOOL_NAME
from tests.conftest import PUBLIC_BASE
from tests.integration.test_minio_store import http_get
from tests.support import fake_openai as fo
from tests.support.executor_server import running_executor
from tests.support.llm_planner import ANSWER, API_KEY, PROMPT, running_llm_planner
from tests.support.s3_server import ExternalS3, S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
async def planner_target(fake_openai: fo.FakeOpenAI) -> AsyncIterator[str]:
    async with running_llm_planner(fake_openai, mode="llm", llm_timeout_seconds=5.0) as target:
        yield target


def noisy_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: over 4 MiB at 1536x1024."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def test_generate_returns_an_image_url_that_downloads_exactly_the_stored_bytes(
    fake_openai: fo.FakeOpenAI, planner_target: str, s3_server: S3Server | ExternalS3, s3_bucket: str
) -> None:
    png = noisy_png(1536, 1024)
    assert len(png) > 4 * 1024 * 1024
    fake_openai.script_chat(fo.chat_tool_call(TOOL_NAME, ANSWER))
    fake_openai.script_images(fo.images_b64(png, revised_prompt="Goblins on a rope bridge, ambushed"))
    settings = ExecutorSettings(
        address="127.0.0.1:0", providers=("openai", "offline"), openai_base_url=fake_openai.base_url,
        openai_api_key=API_KEY, openai_max_retries=0, store="minio", minio_endpoint=s3_server.endpoint,
        minio_access_key=s3_server.access_key, minio_secret_key=s3_server.secret_key,
        minio_secure=s3_server.secure, minio_region=s3_server.region, bucket=s3_bucket,
        public_base_url=PUBLIC_BASE, url_expiry_seconds=600,
    )
    async with running_executor(build_executor(settings)) as executor_target:
        async with AsyncImagegenClient(planner_target, executor_target) as client:
            generation = await client.generate(PROMPT, session_id="table-1")
            fetched = await client.executor.get_image(generation.payload["storage_path"])
    payload = generation.payload
    key = f"table-1/scene/{generation.plan.plan_id}.png"
    assert payload["storage_path"] == f"{s3_bucket}/{key}"
    assert payload["proxy_url"] == f"{PUBLIC_BASE}/{key}"
    assert (payload["provider"], payload["model"]) == ("openai", "gpt-image-2")
    assert payload["revised_prompt"] == "Goblins on a rope bridge, ambushed"
    assert (payload["width"], payload["height"], payload["byte_size"]) == (1536, 1024, len(png))
    assert payload["prompt"] == ANSWER["enhanced_prompt"]
    assert http_get(payload["image_url"]) == (200, png)
    assert "X-Amz-Expires=600" in payload["image_url"]
    assert fetched.data == png and hashlib.sha256(png).hexdigest() == payload["content_sha256"]
    assert fake_openai.image_requests[0].body["size"] == "1536x1024"
