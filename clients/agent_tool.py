"""The planner as an agent's tool: `plan_image`, for an LLM that decides when a moment
deserves a picture (the DM agent), in the OpenAI function-calling formats.

    tools=[chat_tool()]                    Chat Completions: {"type": "function", "function": {...}}
    tools=[responses_tool()]               Responses API:    {"type": "function", "name": ..., ...}
    plan = await aplan_image(planner, tool_call.function.arguments, session_id="table-1")
    plan = plan_image(sync_planner, arguments, session_id="table-1")   # the same, blocking

The tool's parameters are derived from the contract: one property per CreatePlanRequest
field the model may choose (PARAMETER_FIELDS), typed by the field, with the catalogue's
image types, styles and limits; the fields the backend fills itself (session_id, which
the model never picks, mode, and reference_images) are BACKEND_FIELDS. A field added to the request and to
neither set fails tests/unit/test_agent_tool.py. The handler returns the plan as a plain
dict (imagegen.json_mapping, proto3 JSON): the tool result to give back to the model and
what the executor takes (plan_from_dict). For a model without tools, ask for JSON with
chat_response_format() and read its answer with arguments_from_text().

Errors: InvalidRequest (imagegen.errors) when the model's arguments are not an object of
these parameters, before any call; PlanningFailed when the planner refuses or fails. Both
mean nothing was rendered; tool_error() turns either into a tool result the model can act on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from clients.aio import AsyncPlannerClient
from clients.errors import PlanningFailed
from clients.sync import PlannerClient
from imagegen import catalogue
from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.json_mapping import plan_to_dict
from imagegen.v1.image_plan_pb2 import ReferenceImage
from imagegen.v1.planner_service_pb2 import CreatePlanRequest

TOOL_NAME = "plan_image"
TOOL_DESCRIPTION = (
    "Plan one picture of the current moment of the game: a scene, a character, a portrait, an item, "
    "a creature, a location or a map. Describe what to show in the players' words; the planner writes "
    "the image prompt. Returns the plan (nothing is drawn yet)."
)
# Fields of CreatePlanRequest the backend sets, never the model: the session, the planner,
# and the stored images to keep (a character's portrait: only the backend knows their
# storage paths and hashes).
BACKEND_FIELDS = frozenset({"session_id", "mode", "reference_images"})
# The longest tool arguments or JSON answer read (the limits below, in 4-byte UTF-8, and room).
MAX_ARGUMENTS_CHARS = 4 * (catalogue.MAX_PROMPT_CHARS
                           + catalogue.MAX_MAP_ENTRIES * (catalogue.MAX_MAP_KEY_CHARS + catalogue.MAX_CONTEXT_VALUE_CHARS)) + 4096  # fmt: skip

_DESCRIPTIONS = {
    "prompt": "What to picture, in the players' or game master's words.",
    "image_type": "The kind of picture; leave it out to let the planner infer it. "
    + "; ".join(f"{spec.name}: {spec.summary}" for spec in catalogue.IMAGE_TYPES.values()) + ".",
    "style": "A style preset; leave it out for the campaign's default.",
    "size": "WIDTHxHEIGHT in pixels; leave it out for the image type's default.",
    "context": "Facts to weave in: character sheet fields (race, class, equipment), location, mood.",
}


def _property(name: str) -> dict[str, Any]:
    """The JSON schema of one CreatePlanRequest field, from its type and the catalogue."""
    field = CreatePlanRequest.DESCRIPTOR.fields_by_name[name]
    schema: dict[str, Any]
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        schema = {
            "type": "object",
            "maxProperties": catalogue.MAX_MAP_ENTRIES,
            "propertyNames": {"pattern": f"^{catalogue.CONTEXT_KEY_PATTERN}$"},
            "additionalProperties": {"type": "string", "maxLength": catalogue.MAX_CONTEXT_VALUE_CHARS},
        }
    elif field.enum_type is not None and field.enum_type.name == "ImageType":
        schema = {"type": "string", "enum": list(catalogue.IMAGE_TYPE_NAMES)}
    elif name == "style":
        schema = {"type": "string", "enum": sorted(catalogue.STYLES)}
    elif name == "size":
        schema = {"type": "string", "pattern": r"^[0-9]{2,4}x[0-9]{2,4}$"}
    elif name == "prompt":
        schema = {"type": "string", "minLength": 1, "maxLength": catalogue.MAX_PROMPT_CHARS}
    else:
        raise LookupError(f"CreatePlanRequest.{name} has no tool parameter yet: add it here or to BACKEND_FIELDS")
    return {**schema, "description": _DESCRIPTIONS[name]}


PARAMETER_FIELDS: tuple[str, ...] = tuple(
    f.name for f in CreatePlanRequest.DESCRIPTOR.fields if f.name not in BACKEND_FIELDS
)


def parameters() -> dict[str, Any]:
    """The tool's JSON schema: an object of PARAMETER_FIELDS, prompt required, nothing else."""
    return {
        "type": "object",
        "properties": {name: _property(name) for name in PARAMETER_FIELDS},
        "required": ["prompt"],
        "additionalProperties": False,
    }


def chat_tool() -> dict[str, Any]:
    """plan_image for Chat Completions' tools=[...]."""
    return {"type": "function", "function": {"name": TOOL_NAME, "description": TOOL_DESCRIPTION,
                                             "parameters": parameters()}}  # fmt: skip


def responses_tool() -> dict[str, Any]:
    """plan_image for the Responses API's tools=[...]."""
    return {"type": "function", "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": parameters(),
            "strict": False}  # fmt: skip


def chat_response_format() -> dict[str, Any]:
    """response_format for a model without tools: answer with the tool's arguments as JSON."""
    return {"type": "json_schema", "json_schema": {"name": TOOL_NAME, "schema": parameters()}}


def parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """The model's tool arguments (the JSON string it sent, or a parsed dict) as keyword
    arguments of create_plan; InvalidRequest naming every unknown or wrongly typed one."""
    if isinstance(arguments, str):
        if len(arguments) > MAX_ARGUMENTS_CHARS:
            raise InvalidRequest([FieldViolation("arguments", f"longer than {MAX_ARGUMENTS_CHARS} characters")])
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            raise InvalidRequest([FieldViolation("arguments", "not valid JSON")]) from None
    if not isinstance(arguments, Mapping):
        raise InvalidRequest([FieldViolation("arguments", "must be a JSON object")])
    violations, options = [], {}
    for key, value in arguments.items():
        if key not in PARAMETER_FIELDS:
            violations.append(FieldViolation(f"arguments.{str(key)[:64]}", "unknown parameter"))
        elif value is None:
            continue  # some models send null for a parameter they leave out
        elif key == "context":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                violations.append(FieldViolation("arguments.context", "must be an object of strings"))
            else:
                options[key] = dict(value)
        elif not isinstance(value, str):
            violations.append(FieldViolation(f"arguments.{key}", "must be a string"))
        elif key == "image_type" and value.strip().lower() not in catalogue.IMAGE_TYPES:
            violations.append(FieldViolation("arguments.image_type", f"must be one of {', '.join(catalogue.IMAGE_TYPE_NAMES)}"))
        elif value.strip() or key == "prompt":
            options[key] = value
    if "prompt" not in options and not violations:
        violations.append(FieldViolation("arguments.prompt", "is required"))
    if violations:
        raise InvalidRequest(violations)
    return options


def arguments_from_text(text: str) -> dict[str, Any]:
    """The no-tools path: the JSON object a model wrote as its answer (alone, in a ```json
    fence, or after a sentence) as create_plan's keyword arguments; InvalidRequest if none."""
    start = text.find("{", 0, MAX_ARGUMENTS_CHARS)
    if start < 0:
        raise InvalidRequest([FieldViolation("arguments", "the answer holds no JSON object")])
    try:
        found, _ = json.JSONDecoder().raw_decode(text[start : start + MAX_ARGUMENTS_CHARS])
    except (ValueError, RecursionError):
        raise InvalidRequest([FieldViolation("arguments", "the answer's JSON object does not parse")]) from None
    return parse_arguments(found)


def plan_image(
    planner: PlannerClient,
    arguments: str | Mapping[str, Any],
    *,
    session_id: str,
    mode: str | None = None,
    reference_images: Sequence[ReferenceImage] = (),
) -> dict[str, Any]:
    """Handle a plan_image call: the plan as a dict (the tool result, and what execute takes).
    reference_images: stored images the plan is to keep (ExecutorClient.reference_image)."""
    return plan_to_dict(planner.create_plan(
        session_id=session_id, mode=mode, reference_images=list(reference_images), **parse_arguments(arguments)
    ))


async def aplan_image(
    planner: AsyncPlannerClient,
    arguments: str | Mapping[str, Any],
    *,
    session_id: str,
    mode: str | None = None,
    reference_images: Sequence[ReferenceImage] = (),
) -> dict[str, Any]:
    """plan_image for the asyncio client."""
    return plan_to_dict(await planner.create_plan(
        session_id=session_id, mode=mode, reference_images=list(reference_images), **parse_arguments(arguments)
    ))


def tool_error(error: InvalidRequest | PlanningFailed) -> dict[str, Any]:
    """A failed plan_image as the tool result the model gets instead of a plan: what was
    wrong with which argument, and whether trying again later may work."""
    if isinstance(error, InvalidRequest):
        return {"error": {"code": "INVALID_ARGUMENT", "retryable": False,
                          "field_violations": [{"field": v.field, "description": v.description} for v in error.violations]}}  # fmt: skip
    return {"error": {"code": error.code.name, "reason": error.reason, "retryable": error.retryable,
                      "field_violations": [{"field": v.field, "description": v.description} for v in error.violations]}}  # fmt: skip
