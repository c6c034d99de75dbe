"""The gallery's JSON endpoints over real services, through HTTP: the generation stream's
events (a success with its states, stages and a preview as a data: URL, a planning
failure, an execution failure that surfaces the plan), a render that runs on when the
browser leaves, the listing (the executor's ListImages, with the estimated cost in
dollars), and what a request may not be."""

from __future__ import annotations

import asyncio
import contextlib
import base64
import io
import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from clients import AsyncImagegenClient
from clients.web import create_app
from clients.web.gallery import MAX_BODY_BYTES, Gallery, dollars, preview_event
from clients.web.server import WebServer
from executor_service.bootstrap import create_server as create_executor_server
from executor_service.config import ExecutorSettings
from executor_service.pricing import PriceTable
from imagegen.catalogue import MAX_PREVIEW_BYTES, MAX_PREVIEW_SIDE
from imagegen.v1.executor_service_pb2 import Execution, ExecutionPreview
from planner_service.bootstrap import create_server as create_planner_server
from planner_service.config import PlannerSettings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, error, images_stream, make_png
from tests.support.s3_server import free_ports

pytestmark = pytest.mark.integration

PRICES = {"openai/gpt-image-2": {"input_per_million": 5, "output_per_million": 40}}
# The loopback server reports 50 input and 272 output tokens per image: USD per 1M tokens x tokens.
COST_MICROS = 50 * 5 + 272 * 40


@pytest.fixture
async def http(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a planner and an executor rendering with OpenAI Images (the loopback server)."""
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
    executor = await create_executor_server(ExecutorSettings(
        address="127.0.0.1:0", local_store_dir=tmp_path / "store", public_base_url="http://game.test/images",
        providers=("openai",), openai_base_url=fake_openai.base_url, openai_api_key="test", openai_max_retries=0,
        openai_model="gpt-image-2", price_table=PriceTable.from_json(json.dumps(PRICES)),
    ))  # fmt: skip
    client = AsyncImagegenClient(f"127.0.0.1:{planner.port}", f"127.0.0.1:{executor.port}")
    web = await WebServer(create_app(client), "127.0.0.1", 0).start()
    try:
        async with httpx.AsyncClient(base_url=web.url, trust_env=False, timeout=30) as http:
            yield http
    finally:
        await web.stop()
        await client.close()
        await planner.stop(None)
        await executor.stop(None)


async def _events(http: httpx.AsyncClient, session: str, body: dict, *, running: threading.Event | None = None) -> list[dict]:
    """The stream's events; running (when given) is set once an event says RUNNING."""
    events = []
    async with http.stream("POST", f"/sessions/{session}/generations", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        async for line in response.aiter_lines():
            if line:
                events.append(json.loads(line))
                if running is not None and events[-1].get("state") == "RUNNING":
                    running.set()
    return events


def _runs(values: Iterable[str]) -> list[str]:
    """values with each run of equal ones as one."""
    return [value for value, _ in itertools.groupby(values)]


def _held_render(release: threading.Event, partials: tuple[bytes, ...] = ()) -> Callable[[RecordedRequest], Reply]:
    """An images answer that waits for release (the watch is open by then), streamed
    with partial images when the executor asked for them."""

    def answer(request: RecordedRequest) -> Reply:
        assert release.wait(30), "the test never released the render"
        return images_stream(make_png(1024, 1024), partials)

    return answer


async def test_a_generation_streams_its_states_stages_and_preview_then_the_listing_shows_it(
    http: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    running = threading.Event()
    fake_openai.script_images(_held_render(running, partials=(make_png(512, 512, rgb=(30, 90, 200)),)))
    events = await _events(
        http, "t1", {"prompt": "A rusty longsword", "image_type": "item", "style": "heroic"}, running=running
    )
    # Each change once: the stages in order (a worker taking it is RUNNING still ACCEPTED, when
    # the watch catches that), the states in order and never going back; one execution throughout.
    assert _runs(e["stage"] for e in events) == [
        "PLANNING", "PLANNED", "ACCEPTED", "RENDERING", "PREVIEW", "STORING", "COMPLETED"]
    assert _runs(e["state"] for e in events[2:]) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert len(events) == len({(e["stage"], e.get("state")) for e in events})
    assert len({e["execution"] for e in events[2:]}) == 1 and events[2]["execution"].startswith("executions/")
    preview = next(e["preview"] for e in events if e["stage"] == "PREVIEW")
    assert fake_openai.image_requests[0].body["stream"] is True  # someone listened: previews were asked for

    head, _, data = preview["url"].partition(",")
    assert head == "data:image/webp;base64"
    image_bytes = base64.b64decode(data, validate=True)
    assert len(image_bytes) <= MAX_PREVIEW_BYTES
    with Image.open(io.BytesIO(image_bytes)) as shown:
        assert shown.format == "WEBP" and shown.size == (preview["width"], preview["height"])
        assert max(shown.size) <= MAX_PREVIEW_SIDE

    image = events[-1]["image"]
    assert (image["image_type"], image["style"], image["provider"], image["prompt"]) == (
        "item", "heroic", "openai", "A rusty longsword")
    assert image["plan_id"] == events[1]["plan"]["plan_id"]
    assert (image["cost"], image["cost_micros"]) == ("$0.01113", COST_MICROS) == (dollars(COST_MICROS), COST_MICROS)
    assert image["proxy_url"].startswith("http://game.test/images/t1/item/")
    listed = (await http.get("/sessions/t1/images")).json()["images"]
    # The listing is the executor's: the plan kept beside the image, not the words typed.
    assert listed == [{**image, "prompt": events[1]["plan"]["enhanced_prompt"]}]
    assert listed[0]["enhanced_prompt"] == image["enhanced_prompt"] != "A rusty longsword"
    assert (await http.get("/sessions/t2/images")).json()["images"] == []

    # The same plan again: stored already, so the image at once, nothing rendered.
    again = await _events(http, "t1", {"prompt": "A rusty longsword", "image_type": "item", "style": "heroic"})
    assert [e["stage"] for e in again] == ["PLANNING", "PLANNED", "COMPLETED"]
    assert again[-1]["image"]["reused"] is True and again[-1]["image"]["proxy_url"] == image["proxy_url"]
    assert len(fake_openai.image_requests) == 1


async def test_the_render_runs_on_when_the_browser_leaves(http: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    running = threading.Event()
    fake_openai.script_images(_held_render(running))
    seen = []
    async with http.stream("POST", "/sessions/t3/generations", json={"prompt": "A lantern", "image_type": "item"}) as response:
        async for line in response.aiter_lines():
            if line:
                seen.append(json.loads(line)["stage"])
            if "RENDERING" in seen:
                break  # the browser leaves mid-render
    running.set()
    assert _runs(seen) == ["PLANNING", "PLANNED", "ACCEPTED", "RENDERING"]
    async with asyncio.timeout(30):  # the image is stored all the same, and listed
        while not (listed := (await http.get("/sessions/t3/images")).json()["images"]):
            await asyncio.sleep(0.05)
    assert listed[0]["image_type"] == "item" and listed[0]["provider"] == "openai"
    assert fake_openai.hung_up == []  # the provider call was never abandoned


def test_a_preview_over_the_bound_or_of_another_type_is_not_forwarded() -> None:
    execution = Execution(name="executions/" + "a" * 32)
    assert preview_event(execution, ExecutionPreview(image_data=b"x" * MAX_PREVIEW_BYTES, mime_type="image/webp"))
    assert preview_event(execution, ExecutionPreview(image_data=b"x" * (MAX_PREVIEW_BYTES + 1), mime_type="image/webp")) is None
    assert preview_event(execution, ExecutionPreview(image_data=b"<svg/>", mime_type="image/svg+xml")) is None


async def test_an_execution_failure_surfaces_the_plan(http: httpx.AsyncClient, fake_openai: FakeOpenAI) -> None:
    fake_openai.script_images(error(400, "blocked by moderation", code="moderation_blocked"))
    events = await _events(http, "t1", {"prompt": "A rusty longsword", "image_type": "item"})
    assert events[0]["stage"] == "PLANNING" and events[-1]["stage"] == "FAILED"
    failed = events[-1]
    assert failed["failed"] == "execution" and failed["error"]["reason"] == "CONTENT_REJECTED"
    assert failed["plan"]["plan_id"] == events[1]["plan"]["plan_id"]  # what was asked, to show or retry
    assert failed["execution"].startswith("executions/") and failed["error"]["retryable"] is False
    assert (await http.get("/sessions/t1/images")).json()["images"] == []


async def test_a_planning_failure_ends_before_anything_is_executed(
    http: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    events = await _events(http, "t1", {"prompt": "A sword", "style": "no-such-style"})
    assert [e["stage"] for e in events] == ["PLANNING", "FAILED"]
    assert events[-1]["failed"] == "planning" and events[-1]["error"]["field_violations"][0]["field"] == "style"
    assert "plan" not in events[-1] and fake_openai.image_requests == []


async def test_an_image_type_the_catalogue_lacks_is_named_before_anything_is_planned(
    http: httpx.AsyncClient, fake_openai: FakeOpenAI
) -> None:
    for image_type in ("selfie", "PORTRAIT", "x" * 4000):
        events = await _events(http, "t1", {"prompt": "A sword", "image_type": image_type})
        assert [e["stage"] for e in events] == ["PLANNING", "FAILED"]
        error = events[-1]["error"]
        assert events[-1]["failed"] == "planning" and error["code"] == "INVALID_ARGUMENT"
        assert [v["field"] for v in error["field_violations"]] == ["image_type"]
    assert fake_openai.image_requests == []


async def test_what_a_generation_request_may_not_be(http: httpx.AsyncClient) -> None:
    assert (await http.post("/sessions/t1/generations", content=b"[1]")).status_code == 400
    # Nested past the JSON parser's depth: refused like any other body that is not the object.
    assert (await http.post("/sessions/t1/generations", content=b"[" * 17_000)).status_code == 400
    assert (await http.post("/sessions/t1/generations", content=b'{"prompt": ' + b"[" * 16_000)).status_code == 400
    assert (await http.post("/sessions/t1/generations", json={"prompt": 3})).status_code == 400
    big = json.dumps({"prompt": "x" * (MAX_BODY_BYTES + 1)})
    assert (await http.post("/sessions/t1/generations", content=big)).status_code == 413
    assert (await http.post("/sessions/..%2Fx/generations", json={"prompt": "x"})).status_code == 404
    assert (await http.get("/sessions/-bad")).status_code == 404
    page = await http.get("/sessions/t1")
    assert page.status_code == 200 and "/static/gallery.js" in page.text
    assert (await http.get("/static/gallery.js")).status_code == 200


@pytest.mark.parametrize(
    ("micros", "shown"),
    [(0, None), (1, "$0.000001"), (10_000, "$0.01"), (COST_MICROS, "$0.01113"), (250_000, "$0.25"),
     (1_000_000, "$1.00"), (12_345_678, "$12.345678")],
)
def test_a_cost_is_shown_in_dollars_exactly_and_nothing_for_zero(micros: int, shown: str | None) -> None:
    assert dollars(micros) == shown


async def test_a_listing_the_executor_cannot_give_is_an_error_not_an_empty_gallery() -> None:
    (nobody,) = free_ports(1)  # nothing listens there: the executor is down
    client = AsyncImagegenClient(f"127.0.0.1:{nobody}", f"127.0.0.1:{nobody}")
    web = await WebServer(create_app(client), "127.0.0.1", 0).start()
    try:
        async with httpx.AsyncClient(base_url=web.url, trust_env=False, timeout=30) as http:
            response = await http.get("/sessions/t1/images")
            events = await http.get("/sessions/t1/events")  # the watch fails at once: one error, the end
    finally:
        await web.stop()
        await client.close()
    assert response.status_code == 503 and response.headers["cache-control"] == "no-store"
    error = response.json()["error"]
    assert (error["code"], error["retryable"]) == ("UNAVAILABLE", True) and "images" not in response.json()
    assert events.status_code == 200 and events.text.startswith("retry: 5000\n\n")
    (line,) = [line for line in events.text.splitlines() if line.startswith("data: ")]
    assert json.loads(line.removeprefix("data: "))["error"]["code"] == "UNAVAILABLE"


@pytest.fixture
async def offline_site(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncImagegenClient, Gallery]]:
    """The app over a planner and an executor with the offline renderer (one preview a
    render), and another client of the same services: the game backend, or the DM agent."""
    planner = await create_planner_server(PlannerSettings(address="127.0.0.1:0"))
    executor = await create_executor_server(ExecutorSettings(
        address="127.0.0.1:0", local_store_dir=tmp_path / "store", public_base_url="http://game.test/images"
    ))  # fmt: skip
    client = AsyncImagegenClient(f"127.0.0.1:{planner.port}", f"127.0.0.1:{executor.port}")
    backend = AsyncImagegenClient(f"127.0.0.1:{planner.port}", f"127.0.0.1:{executor.port}")
    app = create_app(client)
    web = await WebServer(app, "127.0.0.1", 0).start()
    try:
        async with httpx.AsyncClient(base_url=web.url, trust_env=False, timeout=30) as http:
            yield http, backend, app.state.gallery
    finally:
        await web.stop()
        await client.close()
        await backend.close()
        await planner.stop(None)
        await executor.stop(None)


async def test_the_session_events_carry_an_execution_started_elsewhere_live(offline_site) -> None:
    http, backend, _ = offline_site
    heard: list[dict] = []
    changed = asyncio.Condition()

    async def listen() -> None:
        async with http.stream("GET", "/sessions/t5/events") as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    async with changed:
                        heard.append(json.loads(line.removeprefix("data: ")))
                        changed.notify_all()
                else:
                    assert line in ("", "retry: 5000")

    listener = asyncio.ensure_future(listen())
    try:
        # The watch is open once it hears something: probe the session until it does.
        async with asyncio.timeout(30):
            probe = 0
            while not heard:
                probe += 1
                await backend.generate(f"A probe, {probe}", session_id="t5", image_type="item", wait=False)
                async with changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait_for(lambda: bool(heard)), 1)
        started = await backend.generate("Thora's war hammer", session_id="t5", image_type="item", wait=False)
        name = started.execution.name

        def ended() -> bool:
            return any(e["execution"] == name and e["state"] == "SUCCEEDED" for e in heard)

        async with asyncio.timeout(30), changed:
            await changed.wait_for(ended)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    mine = [e for e in heard if e["execution"] == name]
    assert [e["state"] for e in mine] == sorted((e["state"] for e in mine), key=STATE_ORDER.index)
    assert {e["prompt"] for e in mine} == {started.plan.enhanced_prompt}
    assert {e["plan_id"] for e in mine} == {started.plan.plan_id}
    (preview,) = [e["preview"] for e in mine if e["stage"] == "PREVIEW"]
    head, _, data = preview["url"].partition(",")
    assert head == "data:image/webp;base64" and len(base64.b64decode(data, validate=True)) <= MAX_PREVIEW_BYTES
    image = mine[-1]["image"]
    assert image["plan_id"] == started.plan.plan_id and image["prompt"] == started.plan.enhanced_prompt
    assert image["proxy_url"].startswith("http://game.test/images/t5/item/")
    assert (await http.get("/sessions/-bad/events")).status_code == 404


async def test_a_quiet_event_stream_keeps_alive_and_event_streams_are_bounded(offline_site) -> None:
    http, _, gallery = offline_site
    gallery.keepalive_seconds, gallery.max_event_streams = 0.05, 1
    async with http.stream("GET", "/sessions/t6/events") as first:
        lines = first.aiter_lines()
        assert [await anext(lines) for _ in range(4)] == ["retry: 5000", "", ": keep-alive", ""]
        over = await http.get("/sessions/t6/events")  # one stream too many: an error, and the end
    assert over.text.startswith("retry: 5000\n\ndata: ")
    error = json.loads(over.text.split("data: ", 1)[1])["error"]
    assert (error["code"], error["reason"], error["retryable"]) == ("RESOURCE_EXHAUSTED", "TOO_MANY_EVENT_STREAMS", True)
    # The first has left: once the app has noticed, a stream is served again.
    async with asyncio.timeout(30):
        while True:
            async with http.stream("GET", "/sessions/t6/events") as again:
                lines = again.aiter_lines()
                if [await anext(lines) for _ in range(3)][-1] == ": keep-alive":
                    break
            await asyncio.sleep(0.05)


STATE_ORDER = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
