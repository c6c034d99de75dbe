"""Plans and results as plain dicts and JSON.

Dicts follow the proto3 JSON mapping with the proto field names (snake_case)
and enum names as strings, so a plan printed here can be pasted into grpcurl
and an agent's tool payload stays plain JSON. The one departure: int64 sizes
are plain numbers, not strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from imagegen.catalogue import image_type_from_name
from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult


def _to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def plan_to_dict(plan: ImageGenerationPlan) -> dict[str, Any]:
    data = _to_dict(plan)
    if not plan.HasField("provenance"):
        data.pop("provenance", None)
    return data


def plan_to_json(plan: ImageGenerationPlan, *, indent: int | None = None) -> str:
    return json.dumps(plan_to_dict(plan), ensure_ascii=False, indent=indent)


_FIELD_NAMES = {
    key: field.name for field in ImageGenerationPlan.DESCRIPTOR.fields for key in (field.name, field.json_name)
}


def plan_from_dict(data: Any, *, path: str = "plan") -> ImageGenerationPlan:
    """Parse a plan dict by the proto3 JSON mapping; InvalidRequest naming every bad field at once.

    The protobuf library does the mapping (https://protobuf.dev/programming-guides/json/),
    so whatever grpcurl accepts is accepted here too: field names in snake_case or
    lowerCamelCase, null for a field's default, enum names or numbers. On top of it,
    image_type also takes the catalogue's short name ("portrait"). Each field is parsed
    on its own, so one INVALID_ARGUMENT lists every unknown key and every wrongly typed
    value; imagegen.validation then checks the values.
    """
    if not isinstance(data, Mapping):
        raise InvalidRequest([FieldViolation(path, "must be a JSON object")])
    plan = ImageGenerationPlan()
    violations = []
    for key, value in data.items():
        name = _FIELD_NAMES.get(key) if isinstance(key, str) else None
        if name is None:
            violations.append(FieldViolation(f"{path}.{str(key)[:64]}", "unknown field"))
            continue
        if name == "image_type":
            problem, value = _enum_value(value)
            if problem:
                violations.append(FieldViolation(f"{path}.{name}", problem))
                continue
        field = ImageGenerationPlan()
        try:
            json_format.ParseDict({name: value}, field)
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
            violations.append(FieldViolation(f"{path}.{name}", _parse_problem(exc)))
            continue
        plan.MergeFrom(field)
    if violations:
        raise InvalidRequest(violations)
    return plan


_INT32 = range(-(2**31), 2**31)


def _enum_value(value: Any) -> tuple[str, Any]:
    """(problem, value) for an image_type: the library turns 3.5, true and 2**40 into enum
    numbers silently (3, 1, 0), which no other proto3 JSON parser does; those are refused."""
    if isinstance(value, str) and not value.startswith("IMAGE_TYPE_"):
        try:
            return "", image_type_from_name(value)
        except ValueError as exc:
            return str(exc), value
    if isinstance(value, bool) or isinstance(value, float) or (isinstance(value, int) and value not in _INT32):
        return "must be an image type name or a 32-bit enum number", value
    return "", value


def _parse_problem(exc: Exception) -> str:
    """The protobuf library's complaint, without its message-type prefix, bounded."""
    text = str(exc).split(": ", 1)[-1] if isinstance(exc, json_format.ParseError) else "has the wrong JSON type"
    return text[:200]


def plan_from_json(text: str | bytes) -> ImageGenerationPlan:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's depth
        raise InvalidRequest([FieldViolation("plan", f"not valid JSON: {exc}")]) from None
    return plan_from_dict(data)


def result_to_dict(result: ImageGenerationResult) -> dict[str, Any]:
    data = _to_dict(result)
    data["byte_size"] = result.byte_size
    provider = data.setdefault("provider", {})
    provider["estimated_cost_micros"] = result.provider.estimated_cost_micros
    if result.provider.HasField("usage"):  # counts as numbers, like byte_size
        provider["usage"] = {f.name: getattr(result.provider.usage, f.name) for f in result.provider.usage.DESCRIPTOR.fields}
    else:
        provider.pop("usage", None)
    data["plan"] = plan_to_dict(result.plan)
    return data


def result_to_json(result: ImageGenerationResult, *, indent: int | None = None) -> str:
    return json.dumps(result_to_dict(result), ensure_ascii=False, indent=indent)


def result_from_dict(data: Mapping[str, Any]) -> ImageGenerationResult:
    result = ImageGenerationResult()
    try:
        json_format.ParseDict(data, result)
    except json_format.ParseError as exc:
        raise InvalidRequest([FieldViolation("result", str(exc))]) from None
    return result
