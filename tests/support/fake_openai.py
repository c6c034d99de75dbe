"""A scriptable OpenAI-compatible HTTP server for tests (stdlib only).

Runs ``http.server`` in a background thread on 127.0.0.1 (port 0 by default),
so it works the same whether the test itself runs an asyncio loop or not.

    with FakeOpenAI() as fake:
        fake.script_chat(chat_tool_call("plan_image", {"prompt": "a red dragon"}))
        fake.script_images(images_b64(make_png()))
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        ...
        assert fake.requests[0].body["model"] == "..."

Each endpoint has a FIFO queue of scripted replies.  A reply is one of the
helpers below (``chat_tool_call``, ``chat_content``, ``responses_function_call``,
``responses_text`` (POST /v1/responses), ``images_b64``,
``error``, ``delay``, ``disconnect``, ``raw``) or a callable taking the
``RecordedRequest`` and returning one of those.  Misbehaviours of a hostile or
broken upstream: ``drip`` (the body a few bytes at a time), ``redirect``,
``gzipped`` (a compressed body, e.g. a small bomb), ``raw`` with any status,
content type or body, and ``Reply(declared_length=...)`` (a Content-Length
that lies).  When a queue is empty the
server answers HTTP 500 with an OpenAI-style error whose message starts with
"fake OpenAI: no scripted reply", so an unexpected call fails loudly (note:
an SDK client with ``max_retries>0`` retries 500s, so it sees that reply
more than once).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import gzip
import itertools
import json
import select
import socket
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Sequence, Union
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
EDITS_PATH = "/v1/images/edits"  # multipart/form-data: RecordedRequest.form and .files
RESPONSES_PATH = "/v1/responses"
NO_SCRIPTED_REPLY = "fake OpenAI: no scripted reply"

_DEFAULT_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}
_DEFAULT_ERROR_CODES = {
    401: "invalid_api_key",
    429: "rate_limit_exceeded",
}


# --------------------------------------------------------------------- replies
@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, JSON-able body (or raw bytes) and extra headers."""

    status: int
    body: Any
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"
    # Sent as the Content-Length instead of the body's real length (the body is still
    # sent whole; the client decides what to make of the difference).
    declared_length: Optional[str] = None

    def encode(self) -> bytes:
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (ends early, without replying, if the server stops), then reply."""

    seconds: float
    then: "ReplySpec"


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without sending any response."""


@dataclass(frozen=True)
class Drip:
    """Send ``then``'s status and headers at once, then its body ``chunk`` bytes every
    ``interval`` seconds; stops early when the client goes away or the server stops."""

    interval: float
    then: Reply
    chunk: int = 1


@dataclass(frozen=True)
class Hang:
    """Never reply: hold the request until the client hangs up (then
    ``FakeOpenAI.hung_up`` lists it) or the server stops."""


ReplySpec = Union[Reply, Delay, Disconnect, Drip, Hang, Callable[["RecordedRequest"], Any]]

_ids = itertools.count(1)


def _now() -> int:
    return int(time.time())


def chat_completion(message: dict, *, finish_reason: str, model: str = "gpt-test") -> Reply:
    """A ``chat.completion`` object with a single choice holding ``message``."""
    return Reply(
        200,
        {
            "id": f"chatcmpl-fake{next(_ids)}",
            "object": "chat.completion",
            "created": _now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    )


def chat_tool_call(
    name: str,
    arguments: Union[dict, str],
    *,
    call_id: Optional[str] = None,
    model: str = "gpt-test",
) -> Reply:
    """Assistant message with one function tool call (``finish_reason="tool_calls"``).

    ``arguments`` may be a dict (JSON-encoded for you) or a raw string, which
    lets a test send malformed JSON arguments.
    """
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return chat_completion(
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": call_id or f"call_fake{next(_ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }
            ],
        },
        finish_reason="tool_calls",
        model=model,
    )


def chat_content(text: str, *, finish_reason: str = "stop", model: str = "gpt-test") -> Reply:
    """Assistant message with plain ``content``."""
    return chat_completion(
        {"role": "assistant", "content": text, "refusal": None},
        finish_reason=finish_reason,
        model=model,
    )


def response_object(output: list, *, model: str = "gpt-test") -> Reply:
    """A Responses API ``response`` object (POST /v1/responses) with ``output`` items."""
    return Reply(
        200,
        {
            "id": f"resp_fake{next(_ids)}",
            "object": "response",
            "created_at": _now(),
            "status": "completed",
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        },
    )


def responses_function_call(
    name: str, arguments: Union[dict, str], *, call_id: Optional[str] = None, model: str = "gpt-test"
) -> Reply:
    """A Responses API answer whose output is one ``function_call`` item."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    number = next(_ids)
    return response_object(
        [{"type": "function_call", "id": f"fc_fake{number}", "call_id": call_id or f"call_fake{number}",
          "name": name, "arguments": args, "status": "completed"}],
        model=model,
    )


def responses_text(text: str, *, model: str = "gpt-test") -> Reply:
    """A Responses API answer whose output is one assistant message of ``text``."""
    return response_object(
        [{"type": "message", "id": f"msg_fake{next(_ids)}", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        model=model,
    )


def images_b64(
    png_bytes: bytes,
    revised_prompt: Optional[str] = None,
    *,
    output_format: str = "png",
    size: str = "1024x1024",
    quality: str = "low",
) -> Reply:
    """``ImagesResponse`` with one base64 image (plus GPT-image style usage)."""
    image = {"b64_json": base64.b64encode(png_bytes).decode("ascii")}
    if revised_prompt is not None:
        image["revised_prompt"] = revised_prompt
    return Reply(
        200,
        {
            "created": _now(),
            "data": [image],
            "output_format": output_format,
            "size": size,
            "quality": quality,
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                "output_tokens": 272,
                "total_tokens": 322,
            },
        },
    )


def images_stream(png_bytes: bytes, partials: Sequence[bytes] = (), *, output_format: str = "png",
                  size: str = "1024x1024", quality: str = "low") -> Reply:
    """What ``images.generate(stream=True, partial_images=N)`` answers: server-sent events,
    one ``image_generation.partial_image`` per partial, then ``image_generation.completed``."""
    common = {"background": "opaque", "created_at": _now(), "output_format": output_format,
              "quality": quality, "size": size}
    events = [
        {"type": "image_generation.partial_image", "partial_image_index": index,
         "b64_json": base64.b64encode(partial).decode("ascii"), **common}
        for index, partial in enumerate(partials)
    ]
    events.append({"type": "image_generation.completed", "b64_json": base64.b64encode(png_bytes).decode("ascii"),
                   "usage": {"input_tokens": 50, "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                             "output_tokens": 272, "total_tokens": 322}, **common})
    body = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return Reply(200, body, content_type="text/event-stream")


def _as_stream_if_asked(spec: ReplySpec, req: "RecordedRequest") -> ReplySpec:
    """An images answer scripted with images_b64, to a request that asked for a stream
    (stream: true), goes out as the API would send it: as server-sent events."""
    asked = isinstance(req.body, dict) and req.body.get("stream") is True
    if not (asked and isinstance(spec, Reply) and spec.status == 200 and isinstance(spec.body, dict)):
        return spec
    data = spec.body.get("data")
    if not (isinstance(data, list) and data and isinstance(data[0], dict) and "b64_json" in data[0]):
        return spec
    return images_stream(base64.b64decode(data[0]["b64_json"]), output_format=spec.body.get("output_format", "png"))


def error(
    status: int,
    message: str,
    *,
    type: Optional[str] = None,  # noqa: A002 - mirrors the OpenAI field name
    code: Optional[str] = None,
    param: Optional[str] = None,
    headers: Optional[dict] = None,
) -> Reply:
    """OpenAI-style error ``{"error": {"message", "type", "param", "code"}}``.

    Defaults: ``type`` "invalid_request_error" for 4xx ("requests" for 429,
    "server_error" for 5xx); ``code`` "invalid_api_key" for 401,
    "rate_limit_exceeded" for 429.  E.g.
    ``error(429, "slow down", headers={"Retry-After": "3"})``,
    ``error(400, "blocked", type="image_generation_user_error", code="moderation_blocked")``.
    """
    if type is None:
        type = _DEFAULT_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code is None:
        code = _DEFAULT_ERROR_CODES.get(status)
    return Reply(
        status,
        {"error": {"message": message, "type": type, "param": param, "code": code}},
        headers=dict(headers or {}),
    )


def delay(seconds: float, then: ReplySpec) -> Delay:
    """Wait ``seconds`` then send ``then``; the wait ends early when the server stops."""
    return Delay(seconds, then)


def hang() -> Hang:
    """No reply at all, until the client gives up: ``FakeOpenAI.wait_for_hang_ups`` tells when it did."""
    return Hang()


def azure_images_path(deployment: str) -> str:
    """Where Azure OpenAI serves a deployment's image generations (the query carries
    ``api-version``): script it with ``fake.script(azure_images_path("d"), ...)``."""
    return f"/openai/deployments/{deployment}/images/generations"


def disconnect() -> Disconnect:
    """Drop the connection without a response (the SDK raises ``APIConnectionError``)."""
    return Disconnect()


def raw(status: int, body: Union[bytes, str], *, content_type: str = "application/json",
        headers: Optional[dict] = None) -> Reply:
    """Arbitrary body bytes, e.g. malformed JSON."""
    return Reply(status, body if isinstance(body, bytes) else body.encode(),
                 headers=dict(headers or {}), content_type=content_type)


def drip(reply: Reply, *, interval: float = 0.5, chunk: int = 1) -> Drip:
    """``reply``, its body sent ``chunk`` bytes every ``interval`` seconds: never idle
    long enough for a per-read timeout, so only a total one ends it."""
    return Drip(interval, reply, chunk)


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect, as a proxy or a misconfigured endpoint might send (the API never does)."""
    return Reply(status, b"", headers={"Location": location}, content_type="text/html")


def gzipped(reply: Reply) -> Reply:
    """``reply`` with its body gzip-compressed and ``Content-Encoding: gzip``; a body of
    zeros makes a small bomb (64 MiB compress to about 64 KiB)."""
    return Reply(reply.status, gzip.compress(reply.encode(), compresslevel=9),
                 headers={**reply.headers, "Content-Encoding": "gzip"}, content_type=reply.content_type)


def make_png(width: int = 2, height: int = 2, rgb: tuple = (200, 30, 30)) -> bytes:
    """A small valid RGB PNG (stdlib only)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ requests
@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: dict  # keys lower-cased
    body: Any  # parsed JSON, or None if the body was empty / not JSON
    raw_body: bytes
    received_at: float  # time.monotonic()
    # A multipart/form-data body (the images edit endpoint), parsed: each text field's
    # values, and each file part in the order sent.
    form: dict = field(default_factory=dict)  # name -> [str, ...]
    files: list = field(default_factory=list)  # [UploadedFile, ...]

    @property
    def endpoint(self) -> str:
        return self.path

    def files_named(self, name: str) -> list["UploadedFile"]:
        """The file parts sent under a form field name, in order ("image[]" or "image" for several)."""
        return [f for f in self.files if f.name == name]


@dataclass(frozen=True)
class UploadedFile:
    name: str  # the form field
    filename: str
    content_type: str
    data: bytes


def _multipart(content_type: str, raw_body: bytes) -> tuple[dict, list]:
    """(text fields, file parts) of a multipart/form-data body, parsed by the stdlib's email package."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw_body
    )
    form: dict = {}
    files: list = []
    if not message.is_multipart():
        return form, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.append(UploadedFile(name, filename, part.get_content_type(), data))
        else:
            form.setdefault(name, []).append(data.decode("utf-8"))
    return form, files


# -------------------------------------------------------------------- server
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, fake: "FakeOpenAI"):
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    # Track each connection's thread and socket so stop() can unblock and join them.
    def process_request(self, request, client_address):
        t = threading.Thread(
            target=self._run_request, args=(request, client_address),
            name=f"fake-openai-conn-{client_address[1]}", daemon=True,
        )
        with self._conn_lock:
            self._conns[t] = request
        t.start()

    def _run_request(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float) -> list[threading.Thread]:
        with self._conn_lock:
            items = list(self._conns.items())
        for _, sock in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t, _ in items:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t, _ in items if t.is_alive()]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server_version = "FakeOpenAI/1.0"
    timeout = 30  # bound a read on an idle connection

    def log_message(self, format, *args):  # noqa: A002 - silence stderr logging
        pass

    def do_POST(self):
        self._handle()

    def do_GET(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _handle(self):
        fake: FakeOpenAI = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        parts = urlsplit(self.path)
        content_type = self.headers.get("Content-Type") or ""
        form, files = (
            _multipart(content_type, raw_body) if content_type.startswith("multipart/form-data") else ({}, [])
        )
        req = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw_body=raw_body,
            received_at=time.monotonic(),
            form=form,
            files=files,
        )
        spec = fake._record_and_next(req)
        try:
            self._respond(spec, req, fake)
        finally:
            fake._answered(req)

    def _respond(self, spec: ReplySpec, req: RecordedRequest, fake: "FakeOpenAI"):
        while True:
            if callable(spec) and not isinstance(spec, (Reply, Delay, Disconnect, Drip, Hang)):
                spec = spec(req)
                continue
            if isinstance(spec, Delay):
                ended = self._wait_for_client(fake, spec.seconds)
                if ended:
                    self.close_connection = True
                    if ended == "hung up":
                        fake._hung_up(req)
                    return  # server stopping, or the client gone: give up without replying
                spec = spec.then
                continue
            break
        if isinstance(spec, Hang):
            self.close_connection = True
            while not fake._stopping.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            break
                    except OSError:
                        break
            else:
                return
            fake._hung_up(req)
            return
        fake._answered(req)  # before a byte goes out: the client cannot be done with it earlier
        spec = _as_stream_if_asked(spec, req)
        if isinstance(spec, Disconnect):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        drip_spec = spec if isinstance(spec, Drip) else None
        if drip_spec is not None:
            spec = drip_spec.then
        if not isinstance(spec, Reply):
            spec = error(500, f"fake OpenAI: invalid scripted reply {spec!r}", type="server_error")
        payload = spec.encode()
        try:
            self.send_response(spec.status)
            self.send_header("Content-Type", spec.content_type)
            length = spec.declared_length if spec.declared_length is not None else str(len(payload))
            if spec.declared_length is not None:
                self.close_connection = True  # the body and its length disagree: no reuse
            if spec.content_type == "text/event-stream":
                # Events go out with no length, as the API streams them: the body ends with the connection.
                self.close_connection = True
                self.send_header("Connection", "close")
            else:
                self.send_header("Content-Length", length)
            self.send_header("x-request-id", f"req_fake{next(_ids)}")
            for k, v in spec.headers.items():
                self.send_header(k, str(v))
            self.end_headers()
            if drip_spec is None:
                self.wfile.write(payload)
                self.wfile.flush()
            else:
                self.wfile.flush()
                for start in range(0, len(payload), max(1, drip_spec.chunk)):
                    if fake._stopping.wait(drip_spec.interval):
                        self.close_connection = True
                        return  # server stopping: leave the body unfinished
                    self.wfile.write(payload[start:start + drip_spec.chunk])
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client gave up (e.g. its timeout fired)


    def _wait_for_client(self, fake: "FakeOpenAI", seconds: float) -> str:
        """Wait seconds; "stopping" when the server stops first, "hung up" when the client
        closes its connection first (as the real API sees a cancelled request), else ""."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if fake._stopping.wait(min(left, 0.02)):
                return "stopping"
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return "hung up"
                except OSError:
                    return "hung up"
        return ""


class FakeOpenAI:
    """OpenAI-compatible server on 127.0.0.1 with per-endpoint reply queues."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, stop_timeout: float = 5.0):
        self.host = host
        self._port = port
        self.stop_timeout = stop_timeout
        self.requests: list[RecordedRequest] = []
        self.unscripted: list[RecordedRequest] = []  # requests answered "no scripted reply"
        # Requests received and not yet answered, now and at most at once (e.g. to check a
        # cap on concurrent calls).
        self.in_flight = 0
        self.most_in_flight = 0
        # Requests whose client closed the connection while a delay() or hang() held the reply.
        self.hung_up: list[RecordedRequest] = []
        self._unanswered: set[int] = set()
        self._queues: dict[str, deque] = {CHAT_PATH: deque(), IMAGES_PATH: deque(), RESPONSES_PATH: deque()}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> "FakeOpenAI":
        if self._server is not None:
            return self
        self._stopping.clear()
        # Re-binds the previous port after stop() so a restarted fake keeps its URL.
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{self._port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes any delay() in progress
        server.shutdown()  # stops accepting; returns once serve_forever exits
        stuck = server.close_connections(self.stop_timeout)
        server.server_close()
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            self._thread = None
        if stuck:
            raise RuntimeError(f"FakeOpenAI: connection threads did not stop: {stuck}")

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ info
    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeOpenAI has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Pass to ``openai.OpenAI(base_url=...)``."""
        return f"{self.url}/v1"

    @property
    def is_running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------- scripting
    def script(self, path: str, *replies: ReplySpec) -> None:
        """Append replies for any endpoint path (e.g. "/v1/images/edits")."""
        with self._lock:
            self._queues.setdefault(path, deque()).extend(replies)

    def script_chat(self, *replies: ReplySpec) -> None:
        self.script(CHAT_PATH, *replies)

    def script_images(self, *replies: ReplySpec) -> None:
        self.script(IMAGES_PATH, *replies)

    def script_edits(self, *replies: ReplySpec) -> None:
        """Replies for images.edit (multipart); answer with images_b64, as for generations."""
        self.script(EDITS_PATH, *replies)

    def script_responses(self, *replies: ReplySpec) -> None:
        self.script(RESPONSES_PATH, *replies)

    def pending(self, path: Optional[str] = None) -> int:
        """Scripted replies not yet consumed (for one path, or all)."""
        with self._lock:
            if path is not None:
                return len(self._queues.get(path, ()))
            return sum(len(q) for q in self._queues.values())

    def assert_all_consumed(self) -> None:
        with self._lock:
            left = {p: len(q) for p, q in self._queues.items() if q}
        if left or self.unscripted:
            raise AssertionError(
                f"FakeOpenAI: unconsumed scripted replies {left}; "
                f"unscripted requests {[(r.method, r.path) for r in self.unscripted]}"
            )

    def reset(self) -> None:
        """Forget recorded requests and drop all queued replies."""
        with self._lock:
            self.requests.clear()
            self.hung_up.clear()
            self.unscripted.clear()
            for q in self._queues.values():
                q.clear()

    # -------------------------------------------------------------- requests
    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.requests_to(CHAT_PATH)

    @property
    def image_requests(self) -> list[RecordedRequest]:
        return self.requests_to(IMAGES_PATH)

    @property
    def edit_requests(self) -> list[RecordedRequest]:
        return self.requests_to(EDITS_PATH)

    def wait_for_requests(self, count: int, *, path: Optional[str] = None,
                          timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests (to ``path``, if given) have arrived."""
        def matching():
            return [r for r in self.requests if path is None or r.path == path]

        with self._lock:
            if not self._lock.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(
                    f"FakeOpenAI: expected {count} request(s) to {path or 'any path'} "
                    f"within {timeout}s, got {len(matching())}"
                )
            return matching()

    def _hung_up(self, req: RecordedRequest) -> None:
        with self._lock:
            self.hung_up.append(req)
            self._lock.notify_all()

    def wait_for_hang_ups(self, count: int, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests were abandoned by their client while a delay() or
        hang() held the reply."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.hung_up) >= count, timeout):
                raise TimeoutError(f"FakeOpenAI: expected {count} hang-up(s) within {timeout}s, got {len(self.hung_up)}")
            return list(self.hung_up)

    def _answered(self, req: RecordedRequest) -> None:
        with self._lock:
            if id(req) in self._unanswered:
                self._unanswered.discard(id(req))
                self.in_flight -= 1

    def _record_and_next(self, req: RecordedRequest) -> ReplySpec:
        with self._lock:
            self.requests.append(req)
            self._unanswered.add(id(req))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            queue = self._queues.get(req.path)
            spec = queue.popleft() if queue else None
            if spec is None:
                self.unscripted.append(req)
            self._lock.notify_all()
        if spec is not None:
            return spec
        if req.path not in self._queues:
            return error(404, f"fake OpenAI: unknown endpoint {req.method} {req.path}",
                         type="invalid_request_error", code="unknown_url")
        return error(500, f"{NO_SCRIPTED_REPLY} for {req.method} {req.path}",
                     type="server_error", code="no_scripted_reply")
