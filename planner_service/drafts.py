"""An LLM's answer -> a checked plan: the answer's JSON schema, parsing, normalisation
and the problems a repair round trip reports back to the model.

Pure: no I/O. The schema is derived from the contract (image type names, the style
presets, the size rule, the prompt limit), so the model is asked for exactly what the
planner will accept, and every answer is checked again here because not every
OpenAI-compatible server enforces a schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from imagegen.catalogue import (
    IMAGE_TYPE_NAMES,
    MAX_PROMPT_CHARS,
    MAX_SIDE,
    MIN_SIDE,
    image_type_from_name,
    image_type_name,
)
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType, ReferenceImage
from imagegen.validation import plan_violations
from planner_service.ports import DraftUnusable, PlanDraft, PlanRequest

DRAFT_FIELDS = ("enhanced_prompt", "image_type", "style", "size")
SIZE_PATTERN = r"^[0-9]{2,4}x[0-9]{2,4}$"

_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def draft_schema(styles: Collection[str]) -> dict[str, Any]:
    """A strict JSON schema for one draft: every field required, nothing else allowed.

    Length limits are left to the description and to our own validation (with
    its repair round trip): strict mode rejects keywords such as maxLength on
    some servers, which would turn every request into an error."""
    return {
        "type": "object",
        "properties": {
            "enhanced_prompt": {
                "type": "string",
                "description": f"The prompt for the image model, at most {MAX_PROMPT_CHARS} characters.",
            },
            "image_type": {"type": "string", "enum": list(IMAGE_TYPE_NAMES)},
            "style": {"type": "string", "enum": sorted(styles)},
            "size": {
                "type": "string",
                "pattern": SIZE_PATTERN,
                "description": f"WIDTHxHEIGHT in pixels, each side {MIN_SIDE} to {MAX_SIDE}, for example 1024x1024.",
            },
        },
        "required": list(DRAFT_FIELDS),
        "additionalProperties": False,
    }


def _json_text(answer: str) -> str:
    """The JSON inside an answer: models without structured output often fence it
    in ``` or wrap it in a sentence, which says nothing about the plan itself."""
    fenced = _FENCED.search(answer)
    if fenced:
        return fenced.group(1).strip()
    start, end = answer.find("{"), answer.rfind("}")
    return answer[start : end + 1] if 0 <= start < end else answer.strip()


# A repair message names at most this many unknown fields, each cut to this length:
# the model's answer is not ours to echo unbounded.
MAX_UNKNOWN_FIELDS_NAMED = 8
MAX_ECHOED_CHARS = 80


def parse_draft(answer: str) -> PlanDraft:
    """The model's answer as a draft. DraftUnusable when it is not one JSON object; unknown,
    missing and wrongly typed fields are kept in the draft's problems, so plan_from_draft
    reports them with every problem of the values in the same repair."""
    try:
        data = json.loads(_json_text(answer))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise DraftUnusable(answer, [f"the answer is not valid JSON: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise DraftUnusable(answer, ["the answer must be one JSON object"])
    unknown = [str(key)[:MAX_ECHOED_CHARS] for key in data if key not in DRAFT_FIELDS]
    problems = [f"{key}: unknown field" for key in unknown[:MAX_UNKNOWN_FIELDS_NAMED]]
    if len(unknown) > MAX_UNKNOWN_FIELDS_NAMED:
        problems.append(f"and {len(unknown) - MAX_UNKNOWN_FIELDS_NAMED} more unknown fields")
    problems += [f"{key}: is required" for key in DRAFT_FIELDS if key not in data]
    problems += [
        f"{key}: must be a string" for key in DRAFT_FIELDS if key in data and not isinstance(data[key], str)
    ]
    values = {key: data[key] if isinstance(data.get(key), str) else "" for key in DRAFT_FIELDS}
    return PlanDraft(**values, answer=answer, problems=tuple(problems))


def normalise_draft(draft: PlanDraft, request: PlanRequest) -> PlanDraft:
    """Tidy what a model gets loosely right, and let the caller's explicit choices win:
    a request that names an image type, style or size gets exactly that."""
    return PlanDraft(
        enhanced_prompt=" ".join(draft.enhanced_prompt.split()),
        image_type=(
            image_type_name(request.image_type)
            if request.image_type != ImageType.IMAGE_TYPE_UNSPECIFIED
            else draft.image_type.strip().lower()
        ),
        style=request.style or draft.style.strip().lower(),
        size=request.size or draft.size.strip().lower().replace(" ", ""),
        metadata=draft.metadata,
        answer=draft.answer,
        problems=draft.problems,
    )


def plan_from_draft(
    draft: PlanDraft, session_id: str, styles: Collection[str], references: Sequence[ReferenceImage] = ()
) -> ImageGenerationPlan:
    """The fingerprinted plan, with the request's references, checked by the same rules
    as every plan; DraftUnusable naming each bad field and the value the model gave, so
    a repair can fix it. The references were validated with the request."""
    problems = list(draft.problems)
    explained = {problem.split(":", 1)[0] for problem in problems}
    try:
        image_type = image_type_from_name(draft.image_type)
    except ValueError:
        image_type = ImageType.IMAGE_TYPE_UNSPECIFIED
        if "image_type" not in explained:
            problems.append(
                f"image_type: unknown image type {_echo(draft.image_type)}; expected one of {', '.join(IMAGE_TYPE_NAMES)}"
            )
    if draft.style not in styles and "style" not in explained:
        problems.append(
            f"style: unknown style preset {_echo(draft.style)}; expected one of {', '.join(sorted(styles))}"
        )
    plan = ImageGenerationPlan(
        enhanced_prompt=draft.enhanced_prompt,
        image_type=image_type,
        style=draft.style,
        size=draft.size,
        session_id=session_id,
        metadata=draft.metadata,
        reference_images=references,
    )
    explained = {problem.split(":", 1)[0] for problem in problems}
    for violation in plan_violations(plan):
        field = violation.field.removeprefix("plan.")
        if field in explained:
            continue  # already said above, with the value the model gave
        problems.append(f"{field}: {violation.description}{_given(field, draft)}")
    if problems:
        raise DraftUnusable(draft.answer, problems)
    return with_fingerprint(plan)


def _given(field: str, draft: PlanDraft) -> str:
    if field == "enhanced_prompt":
        return f" (it has {len(draft.enhanced_prompt)} characters)"
    if field == "size":
        return f" (got {_echo(draft.size)})"
    return ""


def _echo(value: str) -> str:
    """A value the model gave, quoted and cut to MAX_ECHOED_CHARS."""
    return repr(value[:MAX_ECHOED_CHARS] + ("…" if len(value) > MAX_ECHOED_CHARS else ""))
