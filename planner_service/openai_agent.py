"""The LLM planning agent: chat completions through the official openai SDK, against
OpenAI or any OpenAI-compatible server (gateways, local model servers).

Two ways to get a structured answer, chosen by configuration:
- tools: one function tool, create_image_plan, with a strict JSON schema derived from
  the plan contract, and tool_choice forcing it; its arguments are the draft.
- json: a json_schema response format; a server that rejects it is asked, from then
  on, for the JSON in the message content instead.
The planner checks every answer again (planner_service.drafts): a schema is a request
to the model, not a guarantee from every server.

This is the only planner module that imports the SDK; SDK errors, sorted by
imagegen_runtime.openai_errors, become the planning errors of imagegen.errors here.

The SDK client is imagegen_runtime.openai_client's: each attempt ends after `timeout`
seconds in all, a whole call (retries included) after call_budget(), and no answer is
read past MAX_ANSWER_BYTES. An answer that is not a chat completion at all (HTML, JSON
of another shape) is the LLM being unavailable; a chat completion with nothing usable
in it (no choices, no message, no tool call) is an unusable draft, which the planner
asks the model once to repair.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import openai

from imagegen import catalogue
from imagegen.catalogue import Style, image_type_name
from imagegen.errors import PlannerMisconfigured, PlannerThrottled, PlannerUnavailable, PlanningError
from imagegen.v1.image_plan_pb2 import ImageType
from imagegen_runtime import openai_client
from imagegen_runtime.openai_errors import (
    OPENAI_FAILURES,
    WRONG_SHAPE_ERRORS,
    AnswerUnreadable,
    OpenAIFailureKind,
    classify_openai_error,
)
from planner_service.drafts import draft_schema, parse_draft
from planner_service.ports import DraftUnusable, PlanDraft, PlanRequest, Repair

log = logging.getLogger(__name__)

TOOL_NAME = "create_image_plan"
SCHEMA_NAME = "image_plan"
PATHS = ("tools", "json")
# The most of an LLM's answer that is read: a plan is a few kilobytes, and even a
# server that adds reasoning text or log probabilities stays far below this.
MAX_ANSWER_BYTES = 1024 * 1024
# The most of a model's refusal kept (it reaches the logs, the repair and an error).
MAX_REFUSAL_CHARS = 200
# What the LLM is told each reference role is for (catalogue.REFERENCE_ROLES).
REFERENCE_USES: Mapping[str, str] = {
    "subject": "keep who it shows: the character's face, build and gear",
    "style": "follow its look: palette, brushwork, lighting",
    "edit": "the image to change; keep what the moment does not change",
}

class _RequestRejected(PlannerMisconfigured):
    """HTTP 400/422: the server refused the request's shape, e.g. a json_schema format."""


class OpenAIPlanningAgent:
    name = "llm"

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        styles: Mapping[str, Style],
        path: str = "tools",
        seed: int | None = 0,
        call_timeout: float | None = None,
    ) -> None:
        """call_timeout bounds one request, retries included (None: no bound beyond
        the client's own)."""
        if path not in PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)}, not {path!r}")
        self.model = model
        self._client = client
        self._path = path
        self._seed = seed
        self._schema = draft_schema(styles)
        self._instructions = _instructions(styles, path, self._schema)
        self._json_schema_accepted = True
        self._call_timeout = call_timeout

    @classmethod
    def connect(
        cls,
        *,
        base_url: str,
        api_key: str,
        model: str,
        styles: Mapping[str, Style],
        path: str = "tools",
        timeout: float = 30.0,
        max_retries: int = 2,
        seed: int | None = 0,
        call_timeout: float | None = None,
    ) -> OpenAIPlanningAgent:
        """An agent with its own SDK client. No request is made until the first plan.
        timeout is one attempt's, in all; call_timeout (default: the SDK's retries at
        that timeout and its longest waits, openai_client.call_budget) one request's."""
        client = openai_client.connect(
            base_url=base_url,
            api_key=api_key,  # local model servers often need none
            timeout=timeout,
            max_retries=max_retries,
            max_response_bytes=MAX_ANSWER_BYTES,
        )
        if call_timeout is None:
            call_timeout = openai_client.call_budget(timeout, max_retries)
        return cls(client, model=model, styles=styles, path=path, seed=seed, call_timeout=call_timeout)

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema the model is asked to answer with (planner_service.drafts.draft_schema)."""
        return self._schema

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        messages = self._messages(request, repair)
        log.debug("planning with %s: messages %s", self.model, json.dumps(messages, ensure_ascii=False))
        try:
            answer = await (
                self._ask_for_tool_call(messages) if self._path == "tools" else self._ask_for_json(messages)
            )
        except AnswerUnreadable as exc:
            raise self._planning_error(exc) from None
        log.debug("planning with %s: answer %s", self.model, answer)
        return parse_draft(answer)

    async def aclose(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------ the two paths
    async def _ask_for_tool_call(self, messages: list[dict[str, Any]]) -> str:
        tool = {
            "type": "function",
            "function": {
                "name": TOOL_NAME,
                "description": "Record the plan for one image.",
                "parameters": self._schema,
                "strict": True,
            },
        }
        completion = await self._complete(
            messages,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": TOOL_NAME}},
            parallel_tool_calls=False,  # strict schemas hold only for a single call
        )
        message = _message(completion)
        arguments = _tool_arguments(message)
        if arguments is not None:
            return arguments
        content = _text(message, "content")
        if content:  # some compatible servers answer a forced tool call in text
            return content
        refusal = _refusal(message)
        raise DraftUnusable(refusal, [f"the answer did not call {TOOL_NAME}{_refused(refusal)}"])

    async def _ask_for_json(self, messages: list[dict[str, Any]]) -> str:
        completion = None
        if self._json_schema_accepted:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": self._schema, "strict": True},
            }
            try:
                completion = await self._complete(messages, response_format=response_format)
            except _RequestRejected:
                # Remembered: the schema is in the instructions, so the content path still
                # gets it, and later plans skip the refused round trip.
                self._json_schema_accepted = False
                log.warning("the planning LLM refuses a json_schema response format; asking for JSON text instead")
        if completion is None:
            completion = await self._complete(messages)
        message = _message(completion)
        content = _text(message, "content")
        if not content:
            refusal = _refusal(message)
            raise DraftUnusable(refusal, [f"the answer was empty{_refused(refusal)}"])
        return content

    # ------------------------------------------------------------------ the request
    def _messages(self, request: PlanRequest, repair: Repair | None) -> list[dict[str, Any]]:
        moment: dict[str, Any] = {"moment": request.prompt}
        if request.image_type != ImageType.IMAGE_TYPE_UNSPECIFIED:
            moment["image_type"] = image_type_name(request.image_type)
        if request.style:
            moment["style"] = request.style
        if request.size:
            moment["size"] = request.size
        if request.context:
            moment["facts"] = dict(sorted(request.context.items()))
        if request.reference_images:
            moment["reference_images"] = [
                {"reference": n, "role": role, "use": REFERENCE_USES[role]}
                for n, role in enumerate(request.reference_roles, 1)
            ]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._instructions},
            {"role": "user", "content": json.dumps(moment, ensure_ascii=False, sort_keys=True)},
        ]
        if repair is not None:
            how = f"by calling {TOOL_NAME}" if self._path == "tools" else "as one JSON object"
            problems = "\n".join(f"- {problem}" for problem in repair.problems)
            messages += [
                {"role": "assistant", "content": repair.answer or "(no answer)"},
                {
                    "role": "user",
                    "content": f"That plan cannot be used:\n{problems}\n"
                    f"Answer again with the whole corrected plan, {how}.",
                },
            ]
        return messages

    async def _complete(self, messages: list[dict[str, Any]], **options: Any) -> Any:
        if self._seed is not None:
            options["seed"] = self._seed
        request = self._client.chat.completions.create(
            model=self.model, messages=messages, temperature=0, **options  # type: ignore[arg-type]
        )
        try:
            if self._call_timeout is None:
                return await request
            return await openai_client.within_budget(request, self._call_timeout)
        except OPENAI_FAILURES as exc:
            raise self._planning_error(exc) from None

    def _planning_error(self, exc: Exception) -> PlanningError:
        failure = classify_openai_error(exc, "the planning LLM", log)
        error_type = _PLANNING_ERRORS[failure.kind]
        return error_type(failure.description, metadata={"model": self.model}, retry_after=failure.retry_after)


# Refused content is the LLM's verdict on the moment, not on the request's shape, so it
# does not make the json path give up its json_schema format as _RequestRejected does.
_PLANNING_ERRORS: dict[OpenAIFailureKind, type[PlanningError]] = {
    OpenAIFailureKind.UNAVAILABLE: PlannerUnavailable,
    OpenAIFailureKind.THROTTLED: PlannerThrottled,
    OpenAIFailureKind.NOT_USABLE: PlannerMisconfigured,
    OpenAIFailureKind.CONTENT_REJECTED: PlannerMisconfigured,
    OpenAIFailureKind.REQUEST_REJECTED: _RequestRejected,
}


# Reading an answer. The SDK builds it without validating it, so any field may hold
# anything, or be missing: each step checks what it gets. An answer that is not a chat
# completion is AnswerUnreadable (the LLM is unavailable, _complete's caller is told so
# through _planning_error); one with nothing usable in it is DraftUnusable.
def _message(completion: Any) -> Any:
    try:
        choices = completion.choices
        if not isinstance(choices, list):
            raise AnswerUnreadable("no list of choices")
        if not choices:
            raise DraftUnusable("", ["the answer had no choices"])
        message = choices[0].message
    except WRONG_SHAPE_ERRORS as exc:
        raise AnswerUnreadable(f"an answer of another shape ({type(exc).__name__})") from None
    if message is None:
        raise DraftUnusable("", ["the answer had no message"])
    return message


def _tool_arguments(message: Any) -> str | None:
    """The arguments of the first call of TOOL_NAME, or None."""
    calls = getattr(message, "tool_calls", None)
    for call in calls if isinstance(calls, list) else ():
        function = getattr(call, "function", None)
        if getattr(call, "type", None) == "function" and getattr(function, "name", None) == TOOL_NAME:
            arguments = getattr(function, "arguments", None)
            return arguments if isinstance(arguments, str) else ""
    return None


def _text(message: Any, field: str) -> str:
    value = getattr(message, field, None)
    return value if isinstance(value, str) else ""


def _refusal(message: Any) -> str:
    return _text(message, "refusal")[:MAX_REFUSAL_CHARS]


def _refused(refusal: str) -> str:
    return f" (it refused: {refusal})" if refusal else ""


def _instructions(styles: Mapping[str, Style], path: str, schema: Mapping[str, Any]) -> str:
    types = "\n".join(f"  - {name}: {spec.summary}" for name, spec in catalogue.IMAGE_TYPES.items())
    presets = "\n".join(f"  - {name}: {style.words}" for name, style in sorted(styles.items()))
    sizes = ", ".join(f"{name} {spec.default_size}" for name, spec in catalogue.IMAGE_TYPES.items())
    answer = (
        f"Answer by calling {TOOL_NAME} once."
        if path == "tools"
        else "Answer with one JSON object and nothing else, matching this JSON schema:\n"
        + json.dumps(schema, sort_keys=True)
    )
    return (
        "You plan one image for a Dungeons & Dragons game. The user message is a JSON object: "
        "the game moment, and optionally facts (character sheet, place, mood) and the image type, "
        "style or size the game has already chosen; use those exactly.\n"
        f"- enhanced_prompt: a vivid, concrete prompt for an image model, at most {catalogue.MAX_PROMPT_CHARS} "
        "characters. The subject first, then framing, setting, lighting and mood, then the style. "
        "Use the facts; contradict none. No text, captions or watermarks, except labels on a map.\n"
        f"- image_type, one of:\n{types}\n"
        f"- style, one of these presets:\n{presets}\n"
        f"- size: WIDTHxHEIGHT in pixels, each side 64 to 4096; usually {sizes}.\n"
        "When the moment lists reference_images, the image model also receives those images, "
        "numbered from 1: write a prompt that uses each one by its number and role, for example "
        "\"keep the face and armour of the character in reference 1\" for a subject, "
        "\"follow the palette and brushwork of reference 2\" for a style, \"edit reference 1\" for an "
        "image to edit. Do not describe what a reference shows beyond the facts.\n"
        f"{answer}"
    )
