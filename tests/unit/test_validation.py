"""One test per request rule: the code path raises InvalidRequest naming the field."""

from __future__ import annotations

import pytest

from imagegen.errors import InvalidRequest
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.image_plan_pb2 import ImageType
from imagegen.v1.planner_service_pb2 import CreatePlanRequest
from imagegen.validation import parse_size, validate_execution, validate_plan_request
from tests.support.plans import plan_maker

STYLES = {"painterly", "watercolor"}


plan = plan_maker(enhanced_prompt="A goblin market at dusk", image_type=ImageType.IMAGE_TYPE_SCENE, size="1536x1024", session_id="s-1")


def violated_fields(call, *args) -> set[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest) as caught:
        call(*args)
    return {v.field for v in caught.value.violations}


def test_valid_requests_pass() -> None:
    validate_plan_request(CreatePlanRequest(prompt="x", session_id="s"), STYLES)
    validate_execution(with_fingerprint(plan()), "r" * 128)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"size": "1024"}, "size"),
        ({"size": "32x1024"}, "size"),
        ({"size": "1024x5000"}, "size"),
        ({"image_type": 99}, "image_type"),
        ({"style": "baroque"}, "style"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "s" * 129}, "session_id"),
        ({"session_id": "../etc"}, "session_id"),
        ({"session_id": "a/b"}, "session_id"),
        ({"context": {f"k{i}": "v" for i in range(33)}}, "context"),
        ({"context": {"race": "x" * 501}}, "context['race']"),
        ({"context": {"bad key": "v"}}, "context['bad key']"),
    ],
)
def test_create_plan_request_rules(changes: dict[str, object], field: str) -> None:
    request = CreatePlanRequest(prompt="A tavern brawl", session_id="s-1")
    for name, value in changes.items():
        if name == "context":
            request.context.update(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    assert violated_fields(validate_plan_request, request, STYLES) == {field}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"enhanced_prompt": ""}, "plan.enhanced_prompt"),
        ({"enhanced_prompt": "x" * 4001}, "plan.enhanced_prompt"),
        ({"image_type": ImageType.IMAGE_TYPE_UNSPECIFIED}, "plan.image_type"),
        ({"image_type": 42}, "plan.image_type"),
        ({"style": "Bold Style"}, "plan.style"),
        ({"size": "wide"}, "plan.size"),
        ({"session_id": ".."}, "plan.session_id"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "plan.metadata"),
        ({"metadata": {"Quality": "high"}}, "plan.metadata['Quality']"),
        ({"metadata": {"quality": "x" * 1025}}, "plan.metadata['quality']"),
        ({"plan_id": "0" * 32}, "plan.plan_id"),
    ],
)
def test_plan_rules(changes: dict[str, object], field: str) -> None:
    assert violated_fields(validate_execution, plan(**changes), "") == {field}


def test_execute_request_needs_a_plan_and_a_short_request_id() -> None:
    assert violated_fields(validate_execution, None, "") == {"plan"}
    assert violated_fields(validate_execution, plan(), "r" * 129) == {"request_id"}


def test_every_violation_is_reported_at_once() -> None:
    request = CreatePlanRequest(prompt="", session_id="", size="huge")
    assert violated_fields(validate_plan_request, request, STYLES) == {"prompt", "session_id", "size"}


def test_invalid_plan_error_carries_the_plan() -> None:
    bad = plan(size="tiny")
    with pytest.raises(InvalidRequest) as caught:
        validate_execution(bad, "")
    assert caught.value.plan == bad


def test_parse_size() -> None:
    assert parse_size("1536x1024") == (1536, 1024)
    with pytest.raises(ValueError):
        parse_size("1536X1024")
