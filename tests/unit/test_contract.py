"""imagegen.contract: dict/JSON round-trips, strict parsing, the plan fingerprint."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from imagegen.catalogue import IMAGE_TYPE_NAMES, image_type_from_name
from imagegen.errors import InvalidRequest
from imagegen.fingerprint import plan_fingerprint, with_fingerprint
from imagegen.json_mapping import (
    plan_from_dict,
    plan_from_json,
    plan_to_dict,
    plan_to_json,
    result_from_dict,
    result_to_dict,
    result_to_json,
)
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult, ImageType, ProviderInfo

texts = st.text(min_size=1, max_size=200)
metadata = st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=6)
plans = st.builds(
    ImageGenerationPlan,
    enhanced_prompt=texts,
    image_type=st.sampled_from([v for v in ImageType.values() if v]),
    style=st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    size=st.sampled_from(["1024x1024", "1536x1024", "64x4096"]),
    session_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    metadata=metadata,
).map(with_fingerprint)


def sample_plan(**changes: object) -> ImageGenerationPlan:
    fields = dict(
        enhanced_prompt="A dwarf cleric, head and shoulders",
        image_type=ImageType.IMAGE_TYPE_PORTRAIT,
        style="painterly",
        size="1024x1024",
        session_id="campaign-7",
        metadata={"quality": "high", "seed": "3"},
    )
    fields.update(changes)
    return with_fingerprint(ImageGenerationPlan(**fields))


@given(plans)
def test_plan_round_trips_through_dict_and_json(plan: ImageGenerationPlan) -> None:
    assert plan_from_dict(plan_to_dict(plan)) == plan
    assert plan_from_json(plan_to_json(plan)) == plan
    assert json.loads(plan_to_json(plan)) == plan_to_dict(plan)


@given(plans)
def test_fingerprint_ignores_metadata_order_session_and_provenance(plan: ImageGenerationPlan) -> None:
    reordered = ImageGenerationPlan()
    reordered.CopyFrom(plan)
    reordered.metadata.clear()
    for key in reversed(list(plan.metadata)):
        reordered.metadata[key] = plan.metadata[key]
    reordered.session_id = "another-session"
    reordered.provenance.planner = "llm"
    assert plan_fingerprint(reordered) == plan.plan_id


@pytest.mark.parametrize(
    "change",
    [
        {"enhanced_prompt": "A dwarf cleric, full body"},
        {"image_type": ImageType.IMAGE_TYPE_CHARACTER},
        {"style": "watercolor"},
        {"size": "1024x1536"},
        {"metadata": {"quality": "low", "seed": "3"}},
        {"metadata": {"quality": "high"}},
    ],
)
def test_every_image_deciding_field_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert sample_plan(**change).plan_id != sample_plan().plan_id


def test_dict_uses_proto_field_names_and_enum_names() -> None:
    data = plan_to_dict(sample_plan())
    assert data["image_type"] == "IMAGE_TYPE_PORTRAIT"
    assert set(data) == {
        "plan_id", "enhanced_prompt", "image_type", "style", "size", "session_id", "metadata", "reference_images"
    }
    assert len(data["plan_id"]) == 32


def test_plan_from_dict_takes_short_and_camel_case_names() -> None:
    data = plan_to_dict(sample_plan())
    data["image_type"] = "portrait"
    data["enhancedPrompt"] = data.pop("enhanced_prompt")
    assert plan_from_dict(data) == sample_plan()


def test_plan_from_dict_names_every_unknown_key_and_wrong_type() -> None:
    data = plan_to_dict(sample_plan())
    data.update(prompt="x", size=1024, metadata={"quality": 3}, image_type="hologram")
    with pytest.raises(InvalidRequest) as caught:
        plan_from_dict(data)
    fields = {v.field for v in caught.value.violations}
    assert fields == {"plan.prompt", "plan.size", "plan.metadata", "plan.image_type"}


@pytest.mark.parametrize("text", ["[1, 2]", "not json", '"a string"', '{"plan": ' * 10_000],
                         ids=["list", "not-json", "string", "nested-past-the-parsers-depth"])
def test_plan_from_json_rejects_non_objects(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        plan_from_json(text)
    assert caught.value.violations[0].field == "plan"


def test_image_type_names() -> None:
    assert IMAGE_TYPE_NAMES == ("scene", "character", "portrait", "item", "creature", "location", "map")
    assert image_type_from_name("MAP") == image_type_from_name("IMAGE_TYPE_MAP") == ImageType.IMAGE_TYPE_MAP
    with pytest.raises(ValueError):
        image_type_from_name("unspecified")


def test_result_round_trips_with_plain_number_sizes() -> None:
    result = ImageGenerationResult(
        image_url="http://x/y.png", storage_path="imagegen/a/b.png", byte_size=5_000_000_000,
        width=1024, height=1024, provider=ProviderInfo(name="offline"), plan=sample_plan(),
    )
    result.create_time.FromSeconds(1_800_000_000)
    data = json.loads(result_to_json(result))
    assert data["byte_size"] == 5_000_000_000
    assert data["plan"]["image_type"] == "IMAGE_TYPE_PORTRAIT"
    assert result_from_dict(data) == result
    assert result_to_dict(result) == data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", None),  # the example: grpcurl accepts it
        ("provenance", None),
        ("plan_id", None),
        ("style", None),
        ("image_type", 3),  # enum numbers
        ("imageType", "IMAGE_TYPE_PORTRAIT"),
        ("sessionId", "table-1"),
    ],
)
def test_plan_from_dict_follows_the_proto3_json_mapping(field: str, value: object) -> None:
    data = plan_to_dict(sample_plan())
    data.pop("image_type" if field == "imageType" else "session_id" if field == "sessionId" else field, None)
    data[field] = value
    expected = ImageGenerationPlan()
    json_format.ParseDict(data, expected)  # what grpcurl's mapping makes of it
    assert plan_from_dict(data) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"metadata": ["a"]}, "plan.metadata"),
        ({"metadata": {"k": None}}, "plan.metadata"),
        ({"style": True}, "plan.style"),
        ({"image_type": 3.5}, "plan.image_type"),
        ({"image_type": True}, "plan.image_type"),
        ({"image_type": 2**40}, "plan.image_type"),
        ({"image_type": "IMAGE_TYPE_HOLOGRAM"}, "plan.image_type"),
        ({"image_type": None, "size": {}}, "plan.size"),
        ({"provenance": {"latency": "forever"}}, "plan.provenance"),
        ({"provenance": "llm"}, "plan.provenance"),
        ({"x" * 10_000: 1}, "plan." + "x" * 64),
    ],
)
def test_plan_from_dict_names_the_bad_field_for_any_json_value(value: dict[str, object], problem: str) -> None:
    data = {**plan_to_dict(sample_plan()), **value}
    with pytest.raises(InvalidRequest) as caught:
        plan_from_dict(data)
    assert problem in {v.field for v in caught.value.violations}
    assert all(len(v.description) <= 200 for v in caught.value.violations)
