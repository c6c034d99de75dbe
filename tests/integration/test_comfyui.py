"""ComfyUI: the provider's HTTP client (httpx2) and websocket client (websockets) against
a loopback ComfyUI that serves the same routes and websocket messages as ComfyUI's
server.py, built from the executor's settings as the service builds it."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from executor_service.bootstrap import build_provider
from executor_service.config import ExecutorSettings
from executor_service.ports import ImageProvider, ReferenceInput, RenderInputs
from executor_service.providers.comfyui import ComfyUIProvider, Workflow
from imagegen.errors import (
    ContentRejected,
    ProviderMisconfigured,
    ProviderNotCapable,
    ProviderThrottled,
    ProviderUnavailable,
)
from tests.support import fake_comfyui as fc
from tests.support.plans import plan_maker

pytestmark = pytest.mark.integration

make_plan = plan_maker(enhanced_prompt="A mimic pretending to be a chest", session_id="table-5")


def png(size: tuple[int, int] = (1024, 1024), colour: tuple[int, int, int] = (90, 60, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def fake() -> Iterator[fc.FakeComfyUI]:
    with fc.FakeComfyUI() as server:
        yield server


def comfyui(fake: fc.FakeComfyUI, **overrides: object) -> ImageProvider:
    settings: dict = dict(providers=("comfyui",), comfyui_url=fake.url, comfyui_request_timeout_seconds=5.0,
                          comfyui_timeout_seconds=10.0, comfyui_checkpoint="juggernaut-xl.safetensors")
    settings.update(overrides)
    return build_provider(ExecutorSettings(**settings))


def reference_workflow(tmp_path: Path) -> Path:
    nodes = json.loads(Path("executor_service/providers/comfyui_workflows/sdxl.json").read_text())
    nodes["10"] = {"class_type": "LoadImage", "inputs": {"image": "{{reference_1}}"}}
    path = tmp_path / "ipadapter.json"
    path.write_text(json.dumps(nodes))
    return path


async def test_renders_the_shipped_workflow_and_passes_previews_on(fake: fc.FakeComfyUI) -> None:
    image, preview = png(), png((64, 64))
    fake.script(fc.renders(image, previews=(preview,)))
    previews: list[tuple[bytes, str]] = []
    rendered = await comfyui(fake).render(
        make_plan(metadata={"negative_prompt": "gold coins"}),
        RenderInputs(on_preview=lambda data, mime: previews.append((data, mime))),
    )
    (queued,) = fake.prompts
    nodes = queued["prompt"]
    assert queued["client_id"] == fake.websocket_clients[0]
    assert nodes["6"]["inputs"]["text"] == "A mimic pretending to be a chest"
    assert nodes["7"]["inputs"]["text"] == "gold coins"
    assert (nodes["5"]["inputs"]["width"], nodes["5"]["inputs"]["height"]) == (1024, 1024)
    assert nodes["4"]["inputs"]["ckpt_name"] == "juggernaut-xl.safetensors"
    assert isinstance(nodes["3"]["inputs"]["seed"], int) and nodes["3"]["inputs"]["seed"] == rendered.seed
    assert rendered.data == image and rendered.mime_type == "image/png"
    assert rendered.model == "juggernaut-xl.safetensors"
    assert previews == [(preview, "image/png")]


async def test_the_samplers_progress_is_passed_on_as_fractions_and_bad_values_are_ignored(fake: fc.FakeComfyUI) -> None:
    bad = ((3, 0), (-1, 20), (21, 20), (1.5, 20), ("5", 20), (True, 20), (5, None), (None, None), (5, -20), (5, 2**40))
    fake.script(fc.renders(png(), progress=((5, 20), *bad, (10, 20), (20, 20))))
    fractions: list[float] = []
    await comfyui(fake).render(make_plan(), RenderInputs(on_progress=fractions.append))
    # Only the valid ones, in order.
    assert fractions == [0.25, 0.5, 1.0]


async def test_a_plans_seed_is_used_and_reported(fake: fc.FakeComfyUI) -> None:
    fake.script(fc.renders(png()), fc.renders(png()))
    provider = comfyui(fake)
    seeded = await provider.render(make_plan(metadata={"seed": "4242"}))
    unseeded = await provider.render(make_plan())
    assert fake.prompts[0]["prompt"]["3"]["inputs"]["seed"] == 4242 and seeded.seed == 4242
    # Without one, the plan itself chooses it: the same plan renders alike.
    assert unseeded.seed == await _seed_of_a_second_render(fake, provider)


async def _seed_of_a_second_render(fake: fc.FakeComfyUI, provider: ImageProvider) -> int | None:
    fake.script(fc.renders(png()))
    return (await provider.render(make_plan())).seed


async def test_reference_images_are_uploaded_and_named_in_the_workflow(fake: fc.FakeComfyUI, tmp_path: Path) -> None:
    fake.script(fc.renders(png()))
    reference = ReferenceInput("subject", "images/t/hero.png", png((32, 32), (1, 2, 3)), "image/png")
    provider = comfyui(fake, comfyui_workflow=str(reference_workflow(tmp_path)))
    assert provider.capabilities(make_plan()).max_reference_images == 1
    await provider.render(make_plan(), RenderInputs(references=(reference,)))
    ((name, data),) = fake.uploads
    assert data == reference.data
    assert fake.prompts[0]["prompt"]["10"]["inputs"]["image"] == name


@pytest.mark.parametrize(
    ("outcome", "error", "words"),
    [
        (fc.answers(429, headers={"Retry-After": "3"}), ProviderThrottled, "rate limiting"),
        (fc.answers(502), ProviderUnavailable, "HTTP 502"),
        (fc.answers(400, {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {}}),
         ProviderMisconfigured, "refused the workflow"),
        (fc.fails("NSFWContentDetected", "SafetyChecker"), ContentRejected, "refused the content"),
        (fc.fails("torch.OutOfMemoryError"), ProviderUnavailable, "OutOfMemoryError"),
        (fc.renders(png(), history={"x": {}}), ProviderUnavailable, "no output image"),
        (fc.answers(200, b"[" * 10_000 + b"]" * 10_000), ProviderUnavailable, "not JSON"),
        (fc.sends_text("[" * 10_000 + "]" * 10_000), ProviderUnavailable, "websocket message that is not ComfyUI's"),
    ],
    ids=["rate-limit", "5xx", "bad-workflow", "content-rejected", "execution-error", "no-output",
         "json-nested-past-the-parsers-depth", "websocket-json-nested-past-the-parsers-depth"],
)
async def test_failures_fall_into_the_shared_families(
    fake: fc.FakeComfyUI, outcome: object, error: type[Exception], words: str
) -> None:
    fake.script(outcome)  # type: ignore[arg-type]
    with pytest.raises(error, match=words) as caught:
        await comfyui(fake).render(make_plan())
    assert caught.value.metadata["provider"] == "comfyui"  # type: ignore[attr-defined]
    if error is ProviderThrottled:
        assert caught.value.retry_after == 3.0  # type: ignore[attr-defined]


async def test_a_render_over_its_time_is_interrupted_on_the_server(fake: fc.FakeComfyUI) -> None:
    fake.script(fc.hangs())
    with pytest.raises(ProviderUnavailable, match="did not finish within 0.5 s"):
        await comfyui(fake, comfyui_timeout_seconds=0.5).render(make_plan())
    assert fake.interrupted.is_set()
    assert fake.queue_deletes and fake.queue_deletes[0]["delete"] == [fake.interrupts[0]["prompt_id"]]


async def test_cancelling_a_render_interrupts_it_on_the_server(fake: fc.FakeComfyUI) -> None:
    fake.script(fc.hangs())
    render = asyncio.create_task(comfyui(fake).render(make_plan()))
    async with asyncio.timeout(10):
        while not fake.prompts:
            await asyncio.sleep(0.01)
    render.cancel()
    with pytest.raises(asyncio.CancelledError):
        await render
    assert await asyncio.to_thread(fake.interrupted.wait, 10)


async def test_a_plan_beyond_the_workflow_is_refused_without_a_request(fake: fc.FakeComfyUI) -> None:
    reference = ReferenceInput("subject", "images/a.png", png((8, 8)), "image/png")
    provider = comfyui(fake)  # the shipped workflow takes no reference image
    with pytest.raises(ProviderNotCapable, match="reference_images"):
        await provider.render(make_plan(), RenderInputs(references=(reference,)))
    with pytest.raises(ProviderNotCapable, match="multiples of 8"):
        await provider.render(make_plan(size="1020x1020"))
    assert fake.prompts == [] and fake.websocket_clients == []


async def test_a_server_that_is_down_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = ComfyUIProvider(url=f"http://127.0.0.1:{port}", workflow=Workflow.load(), request_timeout=2.0)
    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        await provider.render(make_plan())
    await provider.aclose()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"1": {"class_type": "X", "inputs": {"text": "{{prompt}}", "n": "{{steps}}"}}}', "unknown placeholders steps"),
        ('{"1": {"class_type": "X", "inputs": {"text": "hello"}}}', "no {{prompt}}"),
        ('{"1": {"class_type": "X", "inputs": {"text": "{{prompt}}", "i": "{{reference_2}}"}}}', "reference_1 to"),
        ("[1, 2]", "API format"),
    ],
)
def test_a_template_that_cannot_work_is_refused_at_start(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Workflow.parse(text, "t.json")


async def test_a_prompt_id_that_is_not_one_is_not_put_in_a_url(fake: fc.FakeComfyUI) -> None:
    fake.script(fc.answers(200, {"prompt_id": "../../etc/passwd", "number": 1}))
    with pytest.raises(ProviderUnavailable, match="without a prompt id"):
        await comfyui(fake).render(make_plan())
