"""Google's generative AI REST API on loopback, for the google-genai SDK pointed at it
(http_options base_url): the scripted server of fake_openai (any path, FIFO replies,
delays, hang-ups) with Google's paths and answer shapes.

    with FakeGoogle() as fake:
        fake.script(gemini_path("gemini-2.5-flash-image"), gemini_image(png))
        provider = GoogleImageProvider.connect(kind="gemini", model=..., api_key="k", base_url=fake.url)

Answer shapes (ai.google.dev/api/generate-content, cloud.google.com/vertex-ai/generative-ai/
docs/model-reference/imagen-api): generateContent {"candidates": [{"content": {"parts":
[{"inlineData": {"mimeType", "data"}}]}, "finishReason"}], "promptFeedback"}; predict
{"predictions": [{"bytesBase64Encoded", "mimeType"} or {"raiFilteredReason"}]}; errors
{"error": {"code", "message", "status"}}.
"""

from __future__ import annotations

import base64
from typing import Optional

from tests.support.fake_openai import FakeOpenAI, Reply


class FakeGoogle(FakeOpenAI):
    """The scripted loopback server, for Google's API."""


def gemini_path(model: str) -> str:
    """The Gemini API's generateContent, as the SDK calls it with an API key."""
    return f"/v1/models/{model}:generateContent"


def vertex_path(project: str, location: str, model: str, method: str = "predict") -> str:
    """Vertex AI's publisher model method, as the SDK calls it with a project."""
    return f"/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}"


def gemini_image(png: bytes, *, mime_type: str = "image/png", text: Optional[str] = "Here it is.") -> Reply:
    parts: list = [{"text": text}] if text else []
    parts.append({"inlineData": {"mimeType": mime_type, "data": base64.b64encode(png).decode()}})
    return Reply(200, {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
        "modelVersion": "gemini-2.5-flash-image",
    })


def gemini_blocked(reason: str = "PROHIBITED_CONTENT") -> Reply:
    return Reply(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 12}})


def gemini_finished(reason: str = "IMAGE_SAFETY") -> Reply:
    return Reply(200, {"candidates": [{"content": {"role": "model"}, "finishReason": reason, "index": 0}]})


def imagen_image(png: bytes) -> Reply:
    return Reply(200, {"predictions": [{"bytesBase64Encoded": base64.b64encode(png).decode(), "mimeType": "image/png"}]})


def imagen_filtered(reason: str = "56562880: the prompt could not be submitted") -> Reply:
    return Reply(200, {"predictions": [{"raiFilteredReason": reason}]})


def google_error(code: int, status: str, message: str = "fake Google error", headers: Optional[dict] = None) -> Reply:
    return Reply(code, {"error": {"code": code, "message": message, "status": status}}, headers=dict(headers or {}))
