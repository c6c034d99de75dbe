"""The plan_image tool's definition follows the contract and the catalogue; its arguments are checked."""

from __future__ import annotations

import pytest

from clients import agent_tool
from imagegen import catalogue
from imagegen.errors import InvalidRequest
from imagegen.v1.planner_service_pb2 import CreatePlanRequest


def test_every_request_field_is_a_tool_parameter_or_filled_by_the_backend() -> None:
    fields = {f.name for f in CreatePlanRequest.DESCRIPTOR.fields}
    properties = agent_tool.parameters()["properties"]
    assert set(properties) | agent_tool.BACKEND_FIELDS == fields
    assert not set(properties) & agent_tool.BACKEND_FIELDS
    assert "session_id" not in properties  # the model never files an image in another session


def test_the_parameters_carry_the_catalogues_enums_and_limits() -> None:
    schema = agent_tool.parameters()
    properties = schema["properties"]
    assert properties["image_type"]["enum"] == list(catalogue.IMAGE_TYPE_NAMES)
    assert properties["style"]["enum"] == sorted(catalogue.STYLES)
    assert properties["prompt"]["maxLength"] == catalogue.MAX_PROMPT_CHARS
    assert properties["context"]["maxProperties"] == catalogue.MAX_MAP_ENTRIES
    assert properties["context"]["additionalProperties"]["maxLength"] == catalogue.MAX_CONTEXT_VALUE_CHARS
    for spec in catalogue.IMAGE_TYPES.values():
        assert spec.summary in properties["image_type"]["description"]
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False


def test_both_openai_shapes_hold_the_same_definition() -> None:
    chat, responses = agent_tool.chat_tool(), agent_tool.responses_tool()
    assert chat["type"] == responses["type"] == "function"
    assert chat["function"]["name"] == responses["name"] == "plan_image"
    assert chat["function"]["parameters"] == responses["parameters"] == agent_tool.parameters()
    assert chat["function"]["description"] == responses["description"]


def test_arguments_parse_from_the_models_json() -> None:
    parsed = agent_tool.parse_arguments('{"prompt": "A red dragon", "image_type": "creature", "style": null,'
                                        ' "context": {"mood": "grim"}}')
    assert parsed == {"prompt": "A red dragon", "image_type": "creature", "context": {"mood": "grim"}}


@pytest.mark.parametrize(("arguments", "field"), [
    ("not json", "arguments"), ("[1]", "arguments"), ('{"image_type": "scene"}', "arguments.prompt"),
    ('{"prompt": "x", "session_id": "other"}', "arguments.session_id"),
    ('{"prompt": "x", "image_type": "selfie"}', "arguments.image_type"),
    ('{"prompt": 3}', "arguments.prompt"), ('{"prompt": "x", "context": {"a": 1}}', "arguments.context"),
    ('{"prompt": "' + "x" * agent_tool.MAX_ARGUMENTS_CHARS + '"}', "arguments"),
    pytest.param("[" * 50_000, "arguments", id="nested-past-the-parsers-depth"),
    pytest.param('{"prompt": "x", "context": ' + '{"a": ' * 20_000, "arguments", id="nested-object"),
])  # fmt: skip
def test_bad_arguments_are_an_invalid_request_naming_the_field(arguments: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        agent_tool.parse_arguments(arguments)
    assert [v.field for v in raised.value.violations] == [field]


def test_the_no_tools_answer_is_read_from_a_fence_or_after_a_sentence() -> None:
    text = 'Here is the plan:\n```json\n{"prompt": "A map of the sunken temple", "image_type": "map"}\n```\nEnjoy!'
    assert agent_tool.arguments_from_text(text) == {"prompt": "A map of the sunken temple", "image_type": "map"}
    with pytest.raises(InvalidRequest):
        agent_tool.arguments_from_text("I would rather not draw that.")
    with pytest.raises(InvalidRequest):
        agent_tool.arguments_from_text('{"prompt": "unterminated')
    with pytest.raises(InvalidRequest):  # nested past the parser's depth: not a RecursionError
        agent_tool.arguments_from_text("Sure: " + '{"a": ' * 20_000)
