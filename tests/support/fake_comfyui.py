"""A scriptable ComfyUI on loopback for tests: the HTTP routes and the websocket of
ComfyUI's server.py, served by aiohttp (as ComfyUI itself is), in a thread of its own
so sync and async tests use it alike.

    with FakeComfyUI() as fake:
        fake.script(fake_comfyui.renders(png, previews=[jpeg]))
        provider = ComfyUIProvider(url=fake.url, workflow=Workflow.load())
        ...
        assert fake.prompts[0]["prompt"]["6"]["inputs"]["text"] == "..."

Each POST /prompt takes the next scripted outcome: ``renders`` (the websocket tells the
run's progress, previews and end; /history and /view then give the image),
``answers`` (an HTTP answer instead, e.g. 429 or 500), ``fails`` (an execution_error on
the websocket) or ``hangs`` (progress, then nothing until /interrupt). Recorded:
``prompts`` (the bodies queued), ``uploads`` (name, bytes), ``interrupts`` and
``queue_deletes`` (the bodies posted), ``websocket_clients`` (client ids), and
``interrupted`` (an Event set by POST /interrupt).
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Renders:
    image: bytes
    previews: tuple[bytes, ...] = ()  # PNG previews sent as binary frames
    history: Any = None  # a /history answer instead of the real one
    progress: tuple[tuple[Any, Any], ...] = ()  # (value, max) of the progress messages, as given


@dataclass(frozen=True)
class Answers:
    status: int
    body: Any
    headers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fails:
    exception_type: str
    node_type: str = "KSampler"


@dataclass(frozen=True)
class Hangs:
    pass


@dataclass(frozen=True)
class SendsText:
    """Accepts the prompt, then sends text on the websocket as its one message."""

    text: str


def sends_text(text: str) -> SendsText:
    return SendsText(text)


def renders(
    image: bytes, *, previews: tuple[bytes, ...] = (), history: Any = None, progress: tuple[tuple[Any, Any], ...] = ()
) -> Renders:
    """progress: (value, max) pairs sent as "progress" messages after the previews, in place
    of the usual 1 of 2 (before the previews) and 2 of 2; any values, valid or not."""
    return Renders(image, previews, history, progress)


def answers(status: int, body: Any = None, headers: dict | None = None) -> Answers:
    return Answers(status, body if body is not None else {"error": {"type": "fake", "message": "no"}}, headers or {})


def fails(exception_type: str, node_type: str = "KSampler") -> Fails:
    return Fails(exception_type, node_type)


def hangs() -> Hangs:
    return Hangs()


class FakeComfyUI:
    def __init__(self) -> None:
        self.prompts: list[dict] = []
        self.uploads: list[tuple[str, bytes]] = []
        self.interrupts: list[Any] = []
        self.queue_deletes: list[Any] = []
        self.websocket_clients: list[str] = []
        self.interrupted = threading.Event()
        self._script: deque = deque()
        self._outputs: dict[str, bytes] = {}
        self._history: dict[str, Any] = {}
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeComfyUI:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()  # type: ignore[union-attr]

        self._thread = threading.Thread(target=run, name="fake-comfyui", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeComfyUI did not start")
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.get("/ws", self._ws),
            web.post("/prompt", self._prompt),
            web.post("/upload/image", self._upload),
            web.get("/history/{prompt_id}", self._history_of),
            web.get("/view", self._view),
            web.post("/interrupt", self._interrupt),
            web.post("/queue", self._queue),
        ])
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)  # type: ignore[union-attr]
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]
        loop.close()
        self._loop = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *outcomes: Renders | Answers | Fails | Hangs | SendsText) -> None:
        with self._lock:
            self._script.extend(outcomes)

    # -- routes ----------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        client_id = request.query.get("clientId", "")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.websocket_clients.append(client_id)
        self._sockets[client_id] = ws
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}})
        async for _ in ws:
            pass
        self._sockets.pop(client_id, None)
        return ws

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form["image"]
        self.uploads.append((image.filename, image.file.read()))  # type: ignore[union-attr]
        return web.json_response({"name": image.filename, "subfolder": "", "type": "input"})  # type: ignore[union-attr]

    async def _prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.prompts.append(body)
        with self._lock:
            outcome = self._script.popleft() if self._script else answers(500, {"error": "fake ComfyUI: no scripted outcome"})
        if isinstance(outcome, Answers) and isinstance(outcome.body, bytes):  # as is: JSON or not
            return web.Response(body=outcome.body, status=outcome.status, headers=outcome.headers,
                                content_type="application/json")
        if isinstance(outcome, Answers):
            return web.json_response(outcome.body, status=outcome.status, headers=outcome.headers)
        prompt_id = str(uuid.uuid4())
        ws = self._sockets.get(body.get("client_id", ""))
        asyncio.get_running_loop().create_task(self._run(prompt_id, outcome, ws))
        return web.json_response({"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}})

    async def _run(self, prompt_id: str, outcome: Renders | Fails | Hangs | SendsText, ws: web.WebSocketResponse | None) -> None:
        async def send(kind: str, **data: Any) -> None:
            if ws is not None and not ws.closed:
                await ws.send_json({"type": kind, "data": {**data, "prompt_id": prompt_id}})

        if isinstance(outcome, SendsText):
            if ws is not None and not ws.closed:
                await ws.send_str(outcome.text)
            return
        await send("execution_start", timestamp=0)
        await send("executing", node="3", display_node="3")
        if not (isinstance(outcome, Renders) and outcome.progress):
            await send("progress", value=1, max=2, node="3")
        if isinstance(outcome, Hangs):
            return
        if isinstance(outcome, Fails):
            await send("execution_error", node_id="3", node_type=outcome.node_type,
                       exception_type=outcome.exception_type, exception_message="fake: it failed",
                       traceback=[], executed=[])
            return
        for preview in outcome.previews:
            if ws is not None and not ws.closed:
                await ws.send_bytes(struct.pack(">II", 1, 2) + preview)
        for value, steps in outcome.progress or ((2, 2),):
            await send("progress", value=value, max=steps, node="3")
        filename = f"imagegen_{prompt_id[:8]}_.png"
        self._outputs[filename] = outcome.image
        self._history[prompt_id] = outcome.history if outcome.history is not None else {
            prompt_id: {
                "prompt": [],
                "outputs": {"9": {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}},
                "status": {"status_str": "success", "completed": True, "messages": []},
            }
        }
        await send("executed", node="9", display_node="9", output={"images": [{"filename": filename, "type": "output"}]})
        await send("executing", node=None)
        await send("execution_success", timestamp=0)

    async def _history_of(self, request: web.Request) -> web.Response:
        return web.json_response(self._history.get(request.match_info["prompt_id"], {}))

    async def _view(self, request: web.Request) -> web.Response:
        data = self._outputs.get(request.query.get("filename", ""))
        if data is None or request.query.get("type") != "output":
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def _interrupt(self, request: web.Request) -> web.Response:
        self.interrupts.append(await request.json() if request.can_read_body else None)
        self.interrupted.set()
        return web.Response(status=200)

    async def _queue(self, request: web.Request) -> web.Response:
        self.queue_deletes.append(await request.json())
        return web.Response(status=200)
