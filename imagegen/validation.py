"""The request rules both services enforce, in one place.

Each check returns FieldViolations rather than raising on the first one, so a
caller learns every bad field from one INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from imagegen.catalogue import (
    CONTEXT_KEY_PATTERN,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_MAP_ENTRIES,
    MAX_METADATA_VALUE_CHARS,
    MAX_PROMPT_CHARS,
    MAX_REFERENCE_IMAGES,
    MAX_REQUEST_ID_CHARS,
    MAX_SEED,
    MAX_SESSION_ID_CHARS,
    MAX_SIDE,
    MAX_STORAGE_PATH_CHARS,
    MAX_STYLE_CHARS,
    METADATA_KEY_PATTERN,
    MIN_SIDE,
    SEED_KEY,
    SESSION_ID,
    STYLE_PATTERN,
)
from imagegen.errors import FieldViolation, InvalidRequest, map_entry
from imagegen.fingerprint import plan_fingerprint
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType, ReferenceImage, ReferenceRole

# Enum numbers as sets, once: ImageType.values() builds a new list on every call.
_IMAGE_TYPES = frozenset(ImageType.values())
_REFERENCE_ROLES = frozenset(ReferenceRole.values()) - {ReferenceRole.REFERENCE_ROLE_UNSPECIFIED}
_SHA256 = re.compile(r"[0-9a-f]{64}")

_SIZE = re.compile(r"([0-9]{2,4})x([0-9]{2,4})")
_STYLE = re.compile(STYLE_PATTERN)
_METADATA_KEY = re.compile(METADATA_KEY_PATTERN)
_CONTEXT_KEY = re.compile(CONTEXT_KEY_PATTERN)


def parse_size(size: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height); ValueError naming the rule it breaks."""
    match = _SIZE.fullmatch(size)
    if not match:
        raise ValueError('must be "WIDTHxHEIGHT", for example "1024x1024"')
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    return width, height


def _prompt(field: str, text: str) -> list[FieldViolation]:
    if not text.strip():
        return [FieldViolation(field, "must not be empty")]
    if len(text) > MAX_PROMPT_CHARS:
        return [FieldViolation(field, f"must be at most {MAX_PROMPT_CHARS} characters")]
    return []


def _size(field: str, size: str) -> list[FieldViolation]:
    try:
        parse_size(size)
    except ValueError as exc:
        return [FieldViolation(field, str(exc))]
    return []


def session_id_violations(field: str, session_id: str) -> list[FieldViolation]:
    """What is wrong with session_id as the field named field (nothing: an empty list)."""
    return _session_id(field, session_id)


def _session_id(field: str, session_id: str) -> list[FieldViolation]:
    if not session_id:
        return [FieldViolation(field, "must not be empty")]
    if len(session_id) > MAX_SESSION_ID_CHARS:
        return [FieldViolation(field, f"must be at most {MAX_SESSION_ID_CHARS} characters")]
    if not SESSION_ID.fullmatch(session_id):
        return [
            FieldViolation(
                field,
                "must be letters, digits, '_', '-' and '.', starting with a letter or digit",
            )
        ]
    return []


def _string_map(
    field: str, entries: Mapping[str, str], key_pattern: re.Pattern[str], max_value: int
) -> list[FieldViolation]:
    violations = []
    if len(entries) > MAX_MAP_ENTRIES:
        violations.append(FieldViolation(field, f"must have at most {MAX_MAP_ENTRIES} entries"))
    for key in sorted(entries):
        if not key_pattern.fullmatch(key):
            violations.append(
                FieldViolation(map_entry(field, key), f"key must match {key_pattern.pattern}")
            )
        if len(entries[key]) > max_value:
            violations.append(
                FieldViolation(map_entry(field, key), f"value must be at most {max_value} characters")
            )
    return violations


def _reference(field: str, ref: ReferenceImage, session_id: str, *, mask: bool = False) -> list[FieldViolation]:
    """The shape of one reference (or the mask): what can be checked without the store."""
    violations = []
    path = ref.storage_path
    _, _, key = path.partition("/")
    if not path:
        violations.append(FieldViolation(f"{field}.storage_path", "is required"))
    elif len(path) > MAX_STORAGE_PATH_CHARS:
        violations.append(FieldViolation(f"{field}.storage_path", f"must be at most {MAX_STORAGE_PATH_CHARS} characters"))
    elif (
        path.startswith("/")
        or any(segment in ("", ".", "..") for segment in key.split("/"))
        or "\\" in path
        or not path.isprintable()
    ):
        violations.append(FieldViolation(f"{field}.storage_path", 'must be "bucket/key" as in a result\'s storage_path'))
    elif session_id and not key.startswith(f"{session_id}/"):
        violations.append(FieldViolation(
            f"{field}.storage_path", "must be an image of the plan's session (its key starts with the session_id)"
        ))
    if not _SHA256.fullmatch(ref.content_sha256):
        violations.append(FieldViolation(f"{field}.content_sha256", "must be 64 lowercase hex digits (SHA-256)"))
    if mask:
        if ref.role != ReferenceRole.REFERENCE_ROLE_UNSPECIFIED:
            violations.append(FieldViolation(f"{field}.role", "must be unspecified for a mask"))
    elif ref.role == ReferenceRole.REFERENCE_ROLE_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.role", "must be specified: subject, style or edit"))
    elif ref.role not in _REFERENCE_ROLES:
        violations.append(FieldViolation(f"{field}.role", f"unknown reference role {ref.role}"))
    return violations


def reference_violations(
    references: Sequence[ReferenceImage], session_id: str, field: str = "reference_images"
) -> list[FieldViolation]:
    """Shape problems of a list of references in session_id: how many (at most
    MAX_REFERENCE_IMAGES), each one's storage_path, content_sha256 and role. Whether
    each is stored, and holds those bytes, is the executor's to check."""
    if len(references) > MAX_REFERENCE_IMAGES:
        return [FieldViolation(field, f"must have at most {MAX_REFERENCE_IMAGES} entries")]
    violations = []
    for index, ref in enumerate(references):
        violations += _reference(f"{field}[{index}]", ref, session_id)
    return violations


class PlanRequestFields(Protocol):
    """What a request to plan carries: a CreatePlanRequest, or the planner's PlanRequest."""

    @property
    def prompt(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def image_type(self) -> int: ...
    @property
    def style(self) -> str: ...
    @property
    def size(self) -> str: ...
    @property
    def context(self) -> Mapping[str, str]: ...
    @property
    def reference_images(self) -> Sequence[ReferenceImage]: ...


def validate_plan_request(request: PlanRequestFields, styles: Collection[str]) -> None:
    """Raise InvalidRequest unless the request keeps every rule; styles are the known presets."""
    violations = [
        *_prompt("prompt", request.prompt),
        *_session_id("session_id", request.session_id),
        *_string_map("context", request.context, _CONTEXT_KEY, MAX_CONTEXT_VALUE_CHARS),
        *reference_violations(request.reference_images, request.session_id),
    ]
    if request.image_type not in _IMAGE_TYPES:
        violations.append(FieldViolation("image_type", f"unknown image type {request.image_type}"))
    if request.style and request.style not in styles:
        violations.append(
            FieldViolation("style", f"unknown style preset; expected one of {', '.join(sorted(styles))}")
        )
    if request.size:
        violations += _size("size", request.size)
    if violations:
        raise InvalidRequest(violations)


def plan_violations(plan: ImageGenerationPlan, path: str = "plan") -> list[FieldViolation]:
    violations = [
        *_prompt(f"{path}.enhanced_prompt", plan.enhanced_prompt),
        *_size(f"{path}.size", plan.size),
        *_session_id(f"{path}.session_id", plan.session_id),
        *_string_map(f"{path}.metadata", plan.metadata, _METADATA_KEY, MAX_METADATA_VALUE_CHARS),
        *reference_violations(plan.reference_images, plan.session_id, f"{path}.reference_images"),
    ]
    if plan.HasField("mask"):
        violations += _reference(f"{path}.mask", plan.mask, plan.session_id, mask=True)
        if not plan.reference_images:
            violations.append(FieldViolation(f"{path}.mask", "needs a reference image to apply to"))
    seed = plan.metadata.get(SEED_KEY)
    # Digits counted before int(): Python refuses to convert more than 4300 (CVE-2020-10735).
    if seed is not None and not (
        seed.isascii() and seed.isdigit() and len(seed.lstrip("0")) <= len(str(MAX_SEED)) and int(seed) <= MAX_SEED
    ):
        violations.append(
            FieldViolation(map_entry(f"{path}.metadata", SEED_KEY), f"must be a decimal integer from 0 to {MAX_SEED}")
        )
    if plan.image_type == ImageType.IMAGE_TYPE_UNSPECIFIED:
        violations.append(FieldViolation(f"{path}.image_type", "must be specified"))
    elif plan.image_type not in _IMAGE_TYPES:
        violations.append(FieldViolation(f"{path}.image_type", f"unknown image type {plan.image_type}"))
    if not _STYLE.fullmatch(plan.style):
        violations.append(
            FieldViolation(f"{path}.style", f"must be 1 to {MAX_STYLE_CHARS} lowercase letters, digits and hyphens")
        )
    if plan.plan_id and not violations and plan.plan_id != plan_fingerprint(plan):
        violations.append(
            FieldViolation(f"{path}.plan_id", "does not match the plan's content; leave it empty to compute it")
        )
    return violations


def validate_plan(plan: ImageGenerationPlan, path: str = "plan") -> None:
    violations = plan_violations(plan, path)
    if violations:
        raise InvalidRequest(violations, plan=plan)


def validate_execution(plan: ImageGenerationPlan | None, request_id: str) -> None:
    """Raise InvalidRequest unless an execution of plan (None: absent) under request_id keeps every rule."""
    violations = [FieldViolation("plan", "is required")] if plan is None else plan_violations(plan)
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        violations.append(
            FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} characters")
        )
    if violations:
        raise InvalidRequest(violations, plan=plan)
