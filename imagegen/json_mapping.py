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


_STRING_FIELDS = ("plan_id", "enhanced_prompt", "style", "size", "session_id")
_PLAN_KEYS = frozenset(
    key for field in ImageGenerationPlan.DESCRIPTOR.fields for key in (field.name, field.json_name)
)


def plan_from_dict(data: Any, *, path: str = "plan") -> ImageGenerationPlan:
    """Parse a plan dict; InvalidRequest naming each unknown key or wrongly typed field.

    image_type takes the enum name, the short name ("portrait") or the number.
    Only types are checked here; imagegen.validation checks the values.
    """
    if not isinstance(data, Mapping):
        raise InvalidRequest([FieldViolation(path, "must be a JSON object")])
    violations = [
        FieldViolation(f"{path}.{key}", "unknown field") for key in data if key not in _PLAN_KEYS
    ]
    fields = {_snake(key): value for key, value in data.items() if key in _PLAN_KEYS}
    plan = ImageGenerationPlan()
    for name in _STRING_FIELDS:
        value = fields.get(name, "")
        if isinstance(value, str):
            setattr(plan, name, value)
        else:
            violations.append(FieldViolation(f"{path}.{name}", "must be a string"))
    image_type = fields.get("image_type", 0)
    if isinstance(image_type, bool) or not isinstance(image_type, (str, int)):
        violations.append(FieldViolation(f"{path}.image_type", "must be an image type name"))
    elif isinstance(image_type, int):
        plan.image_type = image_type  # out-of-range numbers are caught by validation
    else:
        try:
            plan.image_type = image_type_from_name(image_type)
        except ValueError as exc:
            violations.append(FieldViolation(f"{path}.image_type", str(exc)))
    metadata = fields.get("metadata", {})
    if isinstance(metadata, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        plan.metadata.update(metadata)
    else:
        violations.append(FieldViolation(f"{path}.metadata", "must map strings to strings"))
    provenance = fields.get("provenance")
    if provenance is not None:
        try:
            json_format.ParseDict(provenance, plan.provenance)
        except (json_format.ParseError, TypeError, AttributeError) as exc:
            violations.append(FieldViolation(f"{path}.provenance", str(exc)))
    if violations:
        raise InvalidRequest(violations)
    return plan


def plan_from_json(text: str | bytes) -> ImageGenerationPlan:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest([FieldViolation("plan", f"not valid JSON: {exc}")]) from None
    return plan_from_dict(data)


def result_to_dict(result: ImageGenerationResult) -> dict[str, Any]:
    data = _to_dict(result)
    data["byte_size"] = result.byte_size
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


def _snake(key: str) -> str:
    for field in ImageGenerationPlan.DESCRIPTOR.fields:
        if key in (field.name, field.json_name):
            return field.name
    return key
