"""The session gallery: /sessions/{session_id}, a page of the session's images, newest
first, and a form that plans and executes a prompt and shows its stages and previews live.

The page (static/gallery.html, .css, .js: no build step) reads two JSON endpoints:

  GET  /sessions/{session_id}/images       {"images": [card, ...]}, newest first
  POST /sessions/{session_id}/generations  {"prompt", "image_type"?, "style"?} ->
       application/x-ndjson, one event a line, as it happens:
       {"stage": "PLANNING"}, {"stage": "PLANNED", "plan": {...}}, then the execution's
       changes (StartExecution, then WatchExecution), each {"stage", "state", "execution",
       "queue_position", "progress_percent"}: {"stage": "ACCEPTED", "state": "QUEUED", ...}, RENDERING,
       {"stage": "PREVIEW", ..., "preview": {"url": "data:image/webp;base64,...", "width",
       "height"}} (at most MAX_PREVIEW_BYTES), STORING, then {"stage": "COMPLETED", "state":
       "SUCCEEDED", ..., "image": card} or {"stage": "FAILED", "failed": "planning" |
       "execution", "error": {...}, "plan": {...}?, "execution": name?}

The execution is detached: a browser that leaves ends its watch, not the render, and the
image is listed once stored. A plan stored already answers COMPLETED at once.

  GET  /sessions/{session_id}/events       text/event-stream (server-sent events): every
       change of every execution of the session, whoever started it (WatchSessionExecutions),
       one "data:" line each: the change as above plus "prompt" (the plan's enhanced prompt),
       "plan_id", "image" once SUCCEEDED and "error" once FAILED or CANCELLED. From the moment
       it opens; when the executor cannot be watched, or MAX_EVENT_STREAMS are open, one
       {"error": {...}} and the end (an EventSource reconnects after the "retry:" delay).
       A quiet stream sends ": keep-alive" every SSE_KEEPALIVE_SECONDS.

A card is {prompt, enhanced_prompt, image_type, style, provider, model, cost, cost_micros,
proxy_url, plan_id, created_at, reused}. prompt is what was asked when this app asked it
(the generation's own card), else the plan's enhanced prompt: the listing has the plan the
executor keeps beside each image, not the words typed. cost is the executor's estimate
in US dollars ("$0.01113"), null when it estimated nothing (0 micros).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from google.rpc import code_pb2, status_pb2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from clients._common import legacy_payload
from clients.aio import AsyncImagegenClient
from clients.errors import ExecutionFailed, ImagegenCallError, PlanningFailed, execution_error
from imagegen.catalogue import IMAGE_TYPE_NAMES, MAX_PREVIEW_BYTES, MAX_PROMPT_CHARS, SESSION_ID
from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.json_mapping import plan_to_dict
from imagegen.v1.executor_service_pb2 import Execution, ExecutionPreview, ExecutionStage, ExecutionState
from imagegen.v1.image_plan_pb2 import ImageGenerationResult

log = logging.getLogger(__name__)

# The states an execution ends in; its watch ends after them.
ENDED = frozenset({ExecutionState.EXECUTION_STATE_SUCCEEDED, ExecutionState.EXECUTION_STATE_FAILED,
                   ExecutionState.EXECUTION_STATE_CANCELLED})  # fmt: skip
# What a watch that closes before its execution ends is taken for (the execution may run on).
WATCH_ENDED_EARLY = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="the watch ended before the execution did")
# The preview media types forwarded as data: URLs (the executor writes WebP previews; the rest is room).
PREVIEW_MIME_TYPES = frozenset({"image/webp", "image/png", "image/jpeg"})

# How long an EventSource waits before it reconnects to /events (the SSE "retry:" field).
SSE_RETRY_MILLISECONDS = 5000
# /events streams open at once, each a WatchSessionExecutions call; one more gets an error
# event (RESOURCE_EXHAUSTED) and the end, and its EventSource tries again after the retry.
MAX_EVENT_STREAMS = 256
# A quiet /events stream sends a comment line this often (proxies close idle connections).
SSE_KEEPALIVE_SECONDS = 15.0
# Changes a stream holds for a slow reader before the watch waits for it.
SSE_QUEUED_CHANGES = 16

# What a generation request's body may be: a prompt at the limit in 4-byte UTF-8, and room.
MAX_BODY_BYTES = 4 * MAX_PROMPT_CHARS + 1024


async def list_session_images(client: AsyncImagegenClient, session_id: str) -> list[dict[str, Any]]:
    """The session's image cards, newest first: the first page of the executor's
    ListImages (its default size, 50), every image the session has, whoever stored it.
    ExecutionFailed when the executor cannot list."""
    page = await client.executor.list_images(session_id)
    return [card(result) for result in page.images]


def dollars(micros: int) -> str | None:
    """An estimate in millionths of a US dollar as dollars, exactly ("$0.01113", "$0.25",
    "$1.00"); None for 0 (nothing estimated, or free)."""
    if micros <= 0:
        return None
    whole, fraction = divmod(micros, 1_000_000)
    cents = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"${whole}.{cents}"


def card(result: ImageGenerationResult, original_prompt: str = "") -> dict[str, Any]:
    """What the page shows of one image; original_prompt: what was asked, when known."""
    payload = legacy_payload(result, original_prompt)
    return {
        "prompt": original_prompt or payload["prompt"],
        "enhanced_prompt": payload["prompt"],
        "image_type": payload["image_type"],
        "style": payload["style"],
        "provider": payload["provider"],
        "model": payload["model"],
        "cost": dollars(result.provider.estimated_cost_micros),
        "cost_micros": result.provider.estimated_cost_micros,
        "proxy_url": payload["proxy_url"],
        "plan_id": payload["plan_id"],
        "created_at": payload["created_at"],
        "reused": payload["reused"],
    }


class Gallery:
    """The page and its endpoints, over the app's client. max_event_streams and
    keepalive_seconds bound /events (MAX_EVENT_STREAMS, SSE_KEEPALIVE_SECONDS)."""

    def __init__(self, client: AsyncImagegenClient) -> None:
        self._client = client
        self.max_event_streams = MAX_EVENT_STREAMS
        self.keepalive_seconds = SSE_KEEPALIVE_SECONDS
        self._event_streams = 0

    async def page(self, request: Request) -> Response:
        if not SESSION_ID.fullmatch(request.path_params["session_id"]):
            return Response("no such session", status_code=404, media_type="text/plain")
        return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})

    async def images(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not SESSION_ID.fullmatch(session_id):
            return JSONResponse({"error": "no such session"}, status_code=404)
        try:
            images = await list_session_images(self._client, session_id)
        except ExecutionFailed as error:
            log.warning("gallery: cannot list session %s: %s %s", session_id, error.code.name, error.reason)
            return JSONResponse({"error": _error(error)}, status_code=503 if error.retryable else 502,
                                headers={"Cache-Control": "no-store"})  # fmt: skip
        return JSONResponse({"images": images}, headers={"Cache-Control": "no-store"})

    async def generate(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not SESSION_ID.fullmatch(session_id):
            return JSONResponse({"error": "no such session"}, status_code=404)
        body = await _bounded_body(request)
        if body is None:
            return JSONResponse({"error": f"the request body is over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            form = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            form = None
        if not isinstance(form, dict) or not isinstance(form.get("prompt"), str):
            return JSONResponse({"error": 'expected a JSON object with a "prompt" string'}, status_code=400)
        options = {name: form[name] for name in ("image_type", "style") if isinstance(form.get(name), str) and form[name]}
        return StreamingResponse(
            _ndjson(self._events(session_id, form["prompt"], options)),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        if not SESSION_ID.fullmatch(session_id):
            return JSONResponse({"error": "no such session"}, status_code=404)
        return StreamingResponse(
            self._session_events(session_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _session_events(self, session_id: str) -> AsyncIterator[bytes]:
        yield f"retry: {SSE_RETRY_MILLISECONDS}\n\n".encode()
        if self._event_streams >= self.max_event_streams:  # each holds a watch on the executor
            yield _sse({"error": {"code": "RESOURCE_EXHAUSTED", "reason": "TOO_MANY_EVENT_STREAMS",
                                  "message": f"this app serves at most {self.max_event_streams} event streams",
                                  "retryable": True, "field_violations": []}})  # fmt: skip
            return
        self._event_streams += 1
        # The watch feeds a small queue, so that a quiet session still sends a comment line
        # every keepalive_seconds (proxies close idle connections) and a slow reader holds
        # the watch back rather than piling changes up.
        changes: asyncio.Queue[bytes] = asyncio.Queue(maxsize=SSE_QUEUED_CHANGES)
        watch = asyncio.create_task(self._watch_session(session_id, changes))
        try:
            while not (watch.done() and changes.empty()):
                try:
                    async with asyncio.timeout(self.keepalive_seconds):
                        chunk = await changes.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield chunk
        finally:
            self._event_streams -= 1
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _watch_session(self, session_id: str, changes: asyncio.Queue[bytes]) -> None:
        try:
            async with contextlib.aclosing(self._client.executor.watch_session(session_id)) as watch:
                async for change in watch:
                    event = session_change(change.execution, change.preview if change.HasField("preview") else None)
                    if event is not None:
                        await changes.put(_sse(event))
        except ExecutionFailed as error:
            log.warning("gallery: cannot watch session %s: %s %s", session_id, error.code.name, error.reason)
            await changes.put(_sse({"error": _error(error)}))

    async def _events(self, session_id: str, prompt: str, options: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        yield {"stage": "PLANNING"}
        if options.get("image_type", IMAGE_TYPE_NAMES[0]) not in IMAGE_TYPE_NAMES:
            problem = FieldViolation("image_type", f"must be one of {', '.join(IMAGE_TYPE_NAMES)}")
            yield {"stage": "FAILED", "failed": "planning", "error": _error(InvalidRequest([problem]))}
            return
        try:
            plan = await self._client.planner.create_plan(prompt, session_id=session_id, **options)
        except PlanningFailed as error:
            yield {"stage": "FAILED", "failed": "planning", "error": _error(error)}
            return
        except ValueError as error:  # what the client refuses before sending (its own checks)
            refused = InvalidRequest([FieldViolation("request", str(error)[:512])])
            yield {"stage": "FAILED", "failed": "planning", "error": _error(refused)}
            return
        yield {"stage": "PLANNED", "plan": plan_to_dict(plan)}
        execution = Execution()
        try:
            # Detached: the execution runs on when the browser leaves (closing the watch ends
            # the watch, not the execution), and the listing shows its image once stored.
            execution = await self._client.executor.start_execution(plan)
            if execution.state != ExecutionState.EXECUTION_STATE_SUCCEEDED:  # else stored already: no watch
                yield execution_event(execution)
                seen = (execution.state, execution.stage, execution.progress_percent)
                async with contextlib.aclosing(self._client.executor.watch_execution(execution)) as changes:
                    async for change in changes:
                        execution = change.execution
                        if change.HasField("preview"):
                            if (preview := preview_event(execution, change.preview)) is not None:
                                yield preview
                        elif execution.state in ENDED:
                            break
                        elif (execution.state, execution.stage, execution.progress_percent) != seen:
                            # the watch opens with it as it is; a progress step is a change
                            seen = (execution.state, execution.stage, execution.progress_percent)
                            yield execution_event(execution)
            if execution.state != ExecutionState.EXECUTION_STATE_SUCCEEDED:
                status = execution.error if execution.state in ENDED else WATCH_ENDED_EARLY
                raise execution_error(status, execution.plan if execution.HasField("plan") else plan)
            yield {**execution_event(execution), "image": card(execution.result, prompt)}
        except ExecutionFailed as error:
            # The plan stays on screen: what was asked for, to retry or to show.
            # An execution the watch lost (execution names it) may still end and be listed.
            yield {"stage": "FAILED", "failed": "execution", "error": _error(error),
                   "plan": plan_to_dict(error.plan or plan), "execution": execution.name}  # fmt: skip


def execution_event(execution: Execution) -> dict[str, Any]:
    """One change of an execution as the page reads it: {"stage", "state", "execution",
    "queue_position", "progress_percent"} (stage and state without their enum prefixes)."""
    return {
        "stage": ExecutionStage.Name(execution.stage).removeprefix("EXECUTION_STAGE_"),
        "state": ExecutionState.Name(execution.state).removeprefix("EXECUTION_STATE_"),
        "execution": execution.name,
        "queue_position": execution.queue_position,
        "progress_percent": execution.progress_percent,
    }


def preview_event(execution: Execution, preview: ExecutionPreview) -> dict[str, Any] | None:
    """A PREVIEW change with its image as a data: URL (RFC 2397), {"stage": "PREVIEW", ...,
    "preview": {"url", "width", "height"}}; None (not forwarded) for a preview over the
    catalogue's MAX_PREVIEW_BYTES, or in a media type the executor does not write."""
    if len(preview.image_data) > MAX_PREVIEW_BYTES or preview.mime_type not in PREVIEW_MIME_TYPES:
        return None
    data = base64.b64encode(preview.image_data).decode("ascii")
    return {**execution_event(execution), "stage": "PREVIEW",
            "preview": {"url": f"data:{preview.mime_type};base64,{data}", "width": preview.width,
                        "height": preview.height}}  # fmt: skip


def session_change(execution: Execution, preview: ExecutionPreview | None) -> dict[str, Any] | None:
    """One change heard by the session watch, as /events sends it; None for a preview not
    forwarded (see preview_event)."""
    if preview is not None:
        event = preview_event(execution, preview)
        if event is None:
            return None
    else:
        event = execution_event(execution)
    event.update(prompt=execution.plan.enhanced_prompt, plan_id=execution.plan.plan_id)
    if execution.state == ExecutionState.EXECUTION_STATE_SUCCEEDED:
        event["image"] = card(execution.result)
    elif execution.state in ENDED:
        event["error"] = _error(execution_error(execution.error, None))
    return event


def _sse(event: dict[str, Any]) -> bytes:
    """One server-sent event: a single "data:" line (JSON escapes every newline)."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def _error(error: ImagegenCallError | InvalidRequest) -> dict[str, Any]:
    violations = [{"field": v.field, "description": v.description} for v in error.violations]
    if isinstance(error, ImagegenCallError):
        return {"code": error.code.name, "reason": error.reason, "message": error.message[:512],
                "retryable": error.retryable, "field_violations": violations}  # fmt: skip
    return {"code": "INVALID_ARGUMENT", "reason": error.reason, "message": error.message[:512],
            "retryable": False, "field_violations": violations}  # fmt: skip


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield (json.dumps(event, ensure_ascii=False) + "\n").encode()


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY_BYTES (whatever Content-Length said)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _page() -> str:
    """gallery.html with the catalogue's image types as the form's choices."""
    options = "".join(f"<option>{name}</option>" for name in IMAGE_TYPE_NAMES)
    html = resources.files("clients.web").joinpath("static", "gallery.html").read_text("utf-8")
    return html.replace("<!-- image-type-options: filled from the catalogue by clients.web.gallery -->", options)
