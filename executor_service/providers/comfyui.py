"""ComfyUI over its own HTTP and websocket API: a table's own GPU (Stable Diffusion, SDXL,
Flux...) rendering a workflow template.

The API (github.com/comfyanonymous/ComfyUI, server.py and
script_examples/websockets_api_example.py):

- GET  /ws?clientId=ID         a websocket: JSON text messages {"type", "data"} (status,
                               execution_start, executing, progress, executed,
                               execution_cached, execution_success, execution_error,
                               execution_interrupted) and binary preview frames (a big-endian
                               u32 event type, 1 for a preview image; a u32 image type,
                               1 JPEG, 2 PNG; the image bytes);
- POST /upload/image           multipart "image" (type "input"): a reference image, answered
                               {"name", "subfolder", "type"};
- POST /prompt                 {"prompt": workflow, "client_id": ID}: {"prompt_id", "number",
                               "node_errors"}; HTTP 400 with "error"/"node_errors" when the
                               workflow does not validate (a node or a model it lacks);
- GET  /history/{prompt_id}    {prompt_id: {"outputs": {node: {"images": [{"filename",
                               "subfolder", "type"}]}}, "status": {...}}};
- GET  /view?filename=&subfolder=&type=   the image's bytes;
- POST /interrupt              {"prompt_id"}: stops the running prompt; POST /queue
                               {"delete": [prompt_id]} drops it while it still waits.

A render: the websocket is opened first (so no message about the prompt can be missed),
the references are uploaded, the workflow is queued with this render's client id, the
websocket is followed until the prompt has run (its previews passed on to
inputs.on_preview, its "progress" messages, {"value": steps done, "max": steps}, to
inputs.on_progress as value / max, when someone listens), then the output's name is read from /history and its
bytes from /view. A render cancelled or over its time sends /interrupt and deletes the
prompt from the queue, so the GPU stops working for nobody.

Every read is bounded: one websocket message (MAX_MESSAGE_BYTES; previews included), the
JSON answers (MAX_JSON_BYTES), the image (max_image_bytes); each HTTP request by
request_timeout, the whole render by render_timeout.

Failures fall into the families of imagegen.errors: not reachable, 5xx, a broken answer,
an execution error, a run over time -> ProviderUnavailable; HTTP 429 (a gateway in front)
-> ProviderThrottled; 401/403 and a workflow ComfyUI refuses (HTTP 400: a missing
checkpoint or node) -> ProviderMisconfigured; an execution error raised by a safety
checker node (an exception type naming NSFW, safety or content policy) -> ContentRejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import websockets
from websockets.asyncio.client import connect as ws_connect

from executor_service.capabilities import plan_seed, refuse_unless_capable
from executor_service.ports import NO_INPUTS, ReferenceInput, RenderedImage, RenderInputs
from executor_service.providers.verify import DEFAULT_MAX_IMAGE_BYTES
from imagegen import catalogue
from imagegen.catalogue import MAX_SEED, ProviderCapabilities
from imagegen.errors import (
    ContentRejected,
    ExecutionError,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderUnavailable,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size
from imagegen_runtime.openai_errors import retry_after_seconds

log = logging.getLogger(__name__)

NAME = "comfyui"
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # one websocket message: JSON or a preview frame
# The most steps a progress message may count (value / max as floats stays exact below it).
_MAX_PROGRESS_STEPS = 2**31 - 1
MAX_JSON_BYTES = 4 * 1024 * 1024  # /prompt, /upload/image and /history answers
MAX_WORKFLOW_BYTES = 1024 * 1024
NEGATIVE_PROMPT_KEY = "negative_prompt"  # plan metadata: what the image must not show
SHIPPED_WORKFLOW = "sdxl.json"
_PREVIEW_EVENT = 1
_PREVIEW_TYPES = {1: "image/jpeg", 2: "image/png"}
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+(?:_[0-9]+)?)\}\}")
_REFERENCE = re.compile(r"reference_([1-9][0-9]?)")
_SCALARS = frozenset({"prompt", "negative_prompt", "width", "height", "seed", "checkpoint"})
_REJECTING_EXCEPTIONS = re.compile(r"nsfw|safety|content.?policy|content.?rejected", re.IGNORECASE)
_CLEANUP_TIMEOUT = 5.0
_PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")


def _identifier(value: object) -> str:
    """A peer's class or node name, when it is plainly one (else ""): safe to pass on."""
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else ""


@dataclass(frozen=True)
class Workflow:
    """A ComfyUI workflow in API format (File > Export (API)) whose string values may be
    placeholders, each a whole value: {{prompt}}, {{negative_prompt}}, {{width}},
    {{height}}, {{seed}} (numbers once filled), {{checkpoint}}, and {{reference_1}} ...
    {{reference_N}} (the uploaded reference images' names, for LoadImage nodes; N is how
    many the workflow takes)."""

    nodes: Mapping[str, Any]
    reference_slots: int
    source: str

    @classmethod
    def parse(cls, text: str, source: str) -> Workflow:
        """ValueError saying what is wrong with text as a template."""
        if len(text.encode()) > MAX_WORKFLOW_BYTES:
            raise ValueError(f"{source}: larger than {MAX_WORKFLOW_BYTES} bytes")
        try:
            nodes = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source}: not JSON ({exc})") from None
        if not isinstance(nodes, dict) or not nodes or not all(
            isinstance(node, dict) and "class_type" in node for node in nodes.values()
        ):
            raise ValueError(f"{source}: not a workflow in API format (node id -> {{class_type, inputs}})")
        found = set(_placeholders(nodes))
        unknown = {p for p in found if p not in _SCALARS and not _REFERENCE.fullmatch(p)}
        if unknown:
            raise ValueError(f"{source}: unknown placeholders {', '.join(sorted(unknown))}")
        if "prompt" not in found:
            raise ValueError(f"{source}: no {{{{prompt}}}} placeholder")
        slots = sorted(int(m.group(1)) for p in found if (m := _REFERENCE.fullmatch(p)))
        if slots != list(range(1, len(slots) + 1)):
            raise ValueError(f"{source}: reference placeholders must be reference_1 to reference_N")
        return cls(nodes, len(slots), source)

    @classmethod
    def load(cls, path: str = "") -> Workflow:
        """The template at path; empty: the shipped SDXL text-to-image workflow."""
        if not path:
            text = resources.files(__package__).joinpath("comfyui_workflows", SHIPPED_WORKFLOW).read_text("utf-8")
            return cls.parse(text, f"the shipped {SHIPPED_WORKFLOW}")
        file = Path(path)
        if file.stat().st_size > MAX_WORKFLOW_BYTES:
            raise ValueError(f"{path}: larger than {MAX_WORKFLOW_BYTES} bytes")
        return cls.parse(file.read_text("utf-8"), path)

    def uses(self, placeholder: str) -> bool:
        return placeholder in _placeholders(self.nodes)

    def fill(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy with every placeholder replaced by its value."""
        return _filled(self.nodes, values)  # type: ignore[no-any-return]


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str):
        match = _PLACEHOLDER.fullmatch(value)
        return [match.group(1)] if match else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in _placeholders(item)]
    if isinstance(value, list):
        return [p for item in value for p in _placeholders(item)]
    return []


def _filled(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        match = _PLACEHOLDER.fullmatch(value)
        return values[match.group(1)] if match else value
    if isinstance(value, dict):
        return {key: _filled(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, values) for item in value]
    return value


class _Failed(Exception):
    """Inside a render: the ExecutionError to raise, built where the failure was seen."""

    def __init__(self, error: ExecutionError) -> None:
        super().__init__(str(error))
        self.error = error


class ComfyUIProvider:
    name = NAME

    def __init__(
        self,
        *,
        url: str,
        workflow: Workflow,
        checkpoint: str = "sd_xl_base_1.0.safetensors",
        negative_prompt: str = "",
        request_timeout: float = 30.0,
        render_timeout: float = 600.0,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> None:
        """url: the ComfyUI server ("http://gpu-box:8188", a path prefix allowed behind a
        proxy); request_timeout bounds each HTTP request and the websocket's opening,
        render_timeout a whole render (queue wait included)."""
        # What provider info names: the checkpoint the workflow loads, else the workflow's file.
        self.model = checkpoint if workflow.uses("checkpoint") else Path(workflow.source).stem
        self._url = url.rstrip("/")
        parts = urlsplit(self._url)
        self._ws_url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))
        self._workflow = workflow
        self._checkpoint = checkpoint
        self._negative_prompt = negative_prompt
        self._request_timeout = request_timeout
        self._render_timeout = render_timeout
        self._max_image_bytes = max_image_bytes
        self._http = httpx2.AsyncClient(timeout=request_timeout, follow_redirects=False)
        row = catalogue.provider_capabilities(NAME, self.model)
        self._capabilities = ProviderCapabilities(
            max_reference_images=min(row.max_reference_images, workflow.reference_slots),
            masks=row.masks,
            seeds=row.seeds,
            previews=row.previews,
            output_formats=row.output_formats,
            max_prompt_chars=row.max_prompt_chars,
            sizes=row.sizes,
            size_step=row.size_step,
        )

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self._capabilities

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"  # SaveImage writes PNG

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        refuse_unless_capable(self, plan, inputs)
        width, height = parse_size(plan.size)
        seed = plan_seed(plan)
        if seed is None:  # the same plan renders alike, and says which seed it used
            seed = int.from_bytes(hashlib.sha256(plan.SerializeToString(deterministic=True)).digest()[:4]) & MAX_SEED
        client_id = uuid.uuid4().hex
        prompt_id: str | None = None
        budget = asyncio.timeout(self._render_timeout)
        try:
            async with budget:
                async with ws_connect(
                    f"{self._ws_url}/ws?clientId={client_id}",
                    max_size=MAX_MESSAGE_BYTES,
                    open_timeout=self._request_timeout,
                    proxy=None,
                    compression=None,
                ) as ws:
                    names = [await self._upload(ref) for ref in inputs.references]
                    values: dict[str, Any] = {
                        "prompt": plan.enhanced_prompt,
                        "negative_prompt": plan.metadata.get(NEGATIVE_PROMPT_KEY, self._negative_prompt),
                        "width": width,
                        "height": height,
                        "seed": seed,
                        "checkpoint": self._checkpoint,
                        **{f"reference_{i}": name for i, name in enumerate(names, start=1)},
                    }
                    prompt_id = await self._queue(self._workflow.fill(values), client_id)
                    await self._follow(ws, prompt_id, inputs)
                image = await self._output(prompt_id)
        except _Failed as failed:
            raise failed.error from None
        except TimeoutError:
            if prompt_id is not None:
                await self._stop(prompt_id)
            if budget.expired():
                raise self._unavailable(f"did not finish within {self._render_timeout:g} s") from None
            raise self._unavailable("did not open its websocket in time") from None
        except asyncio.CancelledError:
            if prompt_id is not None:
                await self._stop(prompt_id)
            raise
        except (OSError, httpx2.TransportError, websockets.exceptions.WebSocketException) as exc:
            if prompt_id is not None:
                await self._stop(prompt_id)
            raise self._unavailable(f"could not be reached or hung up ({type(exc).__name__})") from None
        return RenderedImage(image, "image/png", width, height, self.model, seed=seed)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the API ------------------------------------------------------------------------

    async def _upload(self, reference: ReferenceInput) -> str:
        """Upload one reference image; the name a LoadImage node reads it by."""
        suffix = catalogue.EXTENSIONS.get(reference.mime_type, "png")
        name = f"imagegen-{hashlib.sha256(reference.data).hexdigest()[:32]}.{suffix}"
        answer = await self._json(
            "POST", "/upload/image",
            files={"image": (name, reference.data, reference.mime_type)},
            data={"type": "input", "overwrite": "true"},
        )
        stored, subfolder = answer.get("name"), answer.get("subfolder", "")
        if not isinstance(stored, str) or not stored or not isinstance(subfolder, str):
            raise _Failed(self._unavailable("answered an upload without the image's name"))
        return f"{subfolder}/{stored}" if subfolder else stored

    async def _queue(self, workflow: dict[str, Any], client_id: str) -> str:
        answer = await self._json("POST", "/prompt", json={"prompt": workflow, "client_id": client_id})
        prompt_id = answer.get("prompt_id")
        # It goes into a URL path (/history/{prompt_id}): a UUID or the like, nothing else.
        if not isinstance(prompt_id, str) or not _PROMPT_ID.fullmatch(prompt_id):
            raise _Failed(self._unavailable("queued the prompt without a prompt id"))
        return prompt_id

    async def _follow(self, ws: Any, prompt_id: str, inputs: RenderInputs) -> None:
        """Read the websocket until prompt_id has run; previews to inputs.on_preview,
        progress to inputs.on_progress."""
        async for message in ws:
            if isinstance(message, bytes):
                self._preview(message, inputs)
                continue
            try:
                event = json.loads(message)
                kind, data = event["type"], event.get("data") or {}
                if not isinstance(data, dict):
                    continue
            except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: nested past the parser's depth
                raise _Failed(self._unavailable("sent a websocket message that is not ComfyUI's")) from None
            if data.get("prompt_id") != prompt_id:
                continue  # the queue's status, or another client's work
            if kind == "progress":
                self._progress(data, inputs)
            elif kind == "execution_error":
                raise _Failed(self._execution_error(data))
            elif kind == "execution_interrupted":
                raise _Failed(self._unavailable("interrupted the prompt (someone pressed cancel on the server)"))
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                return
        raise _Failed(self._unavailable("closed the websocket before the prompt had run"))

    @staticmethod
    def _progress(data: dict[str, Any], inputs: RenderInputs) -> None:
        """A sampler's {"value": steps done, "max": steps} as value / max; anything else
        (not integers, max not above 0, value outside 0..max) is ignored."""
        value, steps = data.get("value"), data.get("max")
        if inputs.on_progress is None or type(value) is not int or type(steps) is not int:
            return  # type() is: a bool is an int, and no sampler counts in booleans
        if 0 < steps <= _MAX_PROGRESS_STEPS and 0 <= value <= steps:
            inputs.on_progress(value / steps)

    def _preview(self, frame: bytes, inputs: RenderInputs) -> None:
        if inputs.on_preview is None or len(frame) < 8:
            return
        event, image_type = struct.unpack(">II", frame[:8])
        mime_type = _PREVIEW_TYPES.get(image_type)
        if event == _PREVIEW_EVENT and mime_type is not None:
            inputs.on_preview(frame[8:], mime_type)

    async def _output(self, prompt_id: str) -> bytes:
        history = await self._json("GET", f"/history/{prompt_id}")
        try:
            outputs = history[prompt_id]["outputs"]
            images = [
                image for node in outputs.values() for image in node.get("images", ())
                if image.get("type", "output") == "output"
            ]
            first = images[0]
            params = {"filename": first["filename"], "subfolder": first.get("subfolder", ""), "type": "output"}
            if not all(isinstance(value, str) for value in params.values()):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Failed(self._unavailable("kept no output image for the prompt (does the workflow save one?)")) from None
        return await self._bytes("GET", "/view", self._max_image_bytes, params=params)

    async def _stop(self, prompt_id: str) -> None:
        """Interrupt prompt_id if it runs and drop it from the queue if it waits; best
        effort, and shielded: the render is ending either way."""

        async def stop() -> None:
            for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
                try:
                    async with asyncio.timeout(_CLEANUP_TIMEOUT):
                        await self._http.post(f"{self._url}{path}", json=body)
                except (OSError, httpx2.HTTPError, TimeoutError):
                    log.warning("could not reach ComfyUI to stop prompt %s (%s)", prompt_id, path)

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(stop())

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = await self._bytes(method, path, MAX_JSON_BYTES, **kwargs)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            raise _Failed(self._unavailable(f"answered {path} with something that is not JSON")) from None
        if not isinstance(answer, dict):
            raise _Failed(self._unavailable(f"answered {path} with JSON of another shape"))
        return answer

    async def _bytes(self, method: str, path: str, limit: int, **kwargs: Any) -> bytes:
        """The body of a 2xx answer, read up to limit bytes; _Failed for anything else."""
        async with self._http.stream(method, f"{self._url}{path}", **kwargs) as response:
            if response.status_code != 200:
                raise _Failed(self._http_error(response, path))
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _Failed(self._unavailable(f"answered {path} with more than {limit} bytes"))
            parts, size = [], 0
            async for part in response.aiter_bytes():
                size += len(part)
                if size > limit:
                    raise _Failed(self._unavailable(f"answered {path} with more than {limit} bytes"))
                parts.append(part)
        return b"".join(parts)

    # -- errors -------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        return {"provider": self.name, "model": self.model}

    def _unavailable(self, what: str) -> ProviderUnavailable:
        log.warning("ComfyUI (%s) %s", self._url, what)
        return ProviderUnavailable(f"the image provider (ComfyUI) {what}", metadata=self._meta())

    def _http_error(self, response: httpx2.Response, path: str) -> ExecutionError:
        status = response.status_code
        log.warning("ComfyUI (%s) answered %s with HTTP %s", self._url, path, status)
        subject = "the image provider (ComfyUI)"
        if status == 429:
            return ProviderThrottled(
                f"{subject} is rate limiting requests", metadata=self._meta(),
                retry_after=retry_after_seconds(response.headers),
            )
        if status in (401, 403):
            return ProviderMisconfigured(f"{subject} refused the credentials (HTTP {status})", metadata=self._meta())
        if status == 400 and path == "/prompt":
            return ProviderMisconfigured(
                f"{subject} refused the workflow (HTTP 400): check its nodes and that the server has "
                "the models it loads",
                metadata=self._meta(),
            )
        return ProviderUnavailable(f"{subject} failed (HTTP {status} on {path})", metadata=self._meta())

    def _execution_error(self, data: Mapping[str, Any]) -> ExecutionError:
        kind = _identifier(data.get("exception_type")) or "unknown"
        where = _identifier(data.get("node_type")) or "a node"
        log.warning("ComfyUI (%s) execution error in %s: %s", self._url, where, kind)
        if _REJECTING_EXCEPTIONS.search(kind):
            return ContentRejected(
                f"the image provider (ComfyUI) refused the content ({where}: {kind})", metadata=self._meta()
            )
        return ProviderUnavailable(
            f"the image provider (ComfyUI) failed while running the workflow ({where}: {kind})", metadata=self._meta()
        )
