"""Providers mixed in one chain, through the executor service: a self-hosted ComfyUI
first with OpenAI behind it, and a seed that reaches the result's provider info."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from PIL import Image

from clients import AsyncExecutorClient
from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.stores.local_store import LocalObjectStore
from tests.conftest import PUBLIC_BASE
from tests.support import fake_comfyui as fc
from tests.support import fake_openai as fo
from tests.support.executor_server import running_executor
from tests.support.plans import plan_maker
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.integration

make_plan = plan_maker(enhanced_prompt="A gelatinous cube in a corridor", session_id="table-4")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (40, 160, 90)).save(out, format="PNG")
    return out.getvalue()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_with_comfyui_down_the_openai_provider_renders_and_says_so(
    fake_openai: fo.FakeOpenAI, tmp_path: Path
) -> None:
    image = png()
    fake_openai.script_images(fo.images_b64(image))
    env = {
        "EXECUTOR_PROVIDER": "comfyui,openai",
        "EXECUTOR_COMFYUI_URL": f"http://127.0.0.1:{closed_port()}",
        "EXECUTOR_COMFYUI_REQUEST_TIMEOUT_SECONDS": "2",
        "EXECUTOR_OPENAI_BASE_URL": fake_openai.base_url,
        "EXECUTOR_OPENAI_API_KEY": "sk-test-mix",
        "EXECUTOR_OPENAI_MAX_RETRIES": "0",
        "EXECUTOR_LOCAL_STORE_DIR": str(tmp_path / "images"),
    }
    executor = ServiceProcess("executor", "executor", env, tmp_path).spawn()
    try:
        await executor.serving()
        async with AsyncExecutorClient(executor.target) as client:
            result = await client.execute_plan(make_plan())
    finally:
        executor.stop()
    assert (result.provider.name, result.provider.model) == ("openai", "gpt-image-2")
    assert not result.provider.HasField("seed")  # OpenAI takes none
    assert (tmp_path / "images" / result.storage_path.partition("/")[2]).read_bytes() == image
    assert len(fake_openai.image_requests) == 1
    assert any("comfyui" in line for line in executor.messages("trying the next one"))


async def test_the_seed_a_provider_used_is_in_the_result_and_stays_with_the_stored_image(tmp_path: Path) -> None:
    with fc.FakeComfyUI() as comfyui:
        comfyui.script(fc.renders(png()))
        provider = build_provider(ExecutorSettings(providers=("comfyui", "offline"), comfyui_url=comfyui.url))
        store = LocalObjectStore(tmp_path, bucket="images")
        plan = make_plan(metadata={"seed": "1234567"})
        async with running_executor(Executor(provider, store, PUBLIC_BASE)) as target:
            async with AsyncExecutorClient(target) as client:
                first = await client.execute_plan(plan)
                again = await client.execute_plan(plan)
    assert (first.provider.name, first.provider.seed) == ("comfyui", 1234567)
    assert comfyui.prompts[0]["prompt"]["3"]["inputs"]["seed"] == 1234567
    assert again.reused and again.provider.seed == 1234567  # read back from the stored object's metadata
