"""The catalogue is the one source: the contract's enums, the docs and every consumer agree with it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from executor_service.providers import offline_renderer
from executor_service.providers.image_options import FIXED_SIZES
from imagegen import catalogue
from imagegen.v1.image_plan_pb2 import ImageType
from imagegen.v1.planner_service_pb2 import PlanningMode
from imagegen.validation import parse_size, validate_plan_request
from planner_service.bootstrap import build_llm_agent, build_planner
from planner_service.config import PlannerSettings
from planner_service.offline_rules import plan_offline
from planner_service.ports import PlanRequest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import catalogue_doc  # noqa: E402

NEW_STYLE = catalogue.Style(
    "stained-glass",
    "stained glass window, bold lead lines, jewel-toned translucent panes",
    ("ff0000", "00ff00", "0000ff", "ffff00", "ff00ff", "00ffff"),
    frozenset({"bold"}),
)


def test_every_image_type_of_the_contract_is_in_the_catalogue_once() -> None:
    enum = {ImageType.Name(v).removeprefix("IMAGE_TYPE_").lower(): v for v in ImageType.values() if v}
    assert {name: spec.value for name, spec in catalogue.IMAGE_TYPES.items()} == enum
    for spec in catalogue.IMAGE_TYPES.values():
        assert catalogue.image_type_name(spec.value) == spec.name
        assert catalogue.image_type_from_name(ImageType.Name(spec.value)) == spec.value


def test_every_default_size_is_valid_and_one_every_image_model_takes() -> None:
    for spec in catalogue.IMAGE_TYPES.values():
        parse_size(spec.default_size)
        assert spec.default_size in FIXED_SIZES, spec.name


def test_every_style_is_complete() -> None:
    assert catalogue.DEFAULT_STYLE in catalogue.STYLES
    for style in catalogue.STYLES.values():
        assert re.fullmatch(catalogue.STYLE_PATTERN, style.name)
        assert all(re.fullmatch("[0-9a-f]{6}", colour) for colour in style.palette)
        assert style.textures and style.textures <= catalogue.TEXTURES, style.name
        assert style.words.strip()


def test_every_catalogue_style_has_its_own_look_in_the_renderer() -> None:
    looks = {name: offline_renderer.style_look(name) for name in catalogue.STYLES}
    for name, look in looks.items():
        assert look.textures == catalogue.STYLES[name].textures
        assert look.palette.sky == tuple(bytes.fromhex(catalogue.STYLES[name].palette[0]))
    assert len({look.palette for look in looks.values()}) == len(looks)


def test_planning_modes_match_the_contract() -> None:
    for mode in catalogue.PLANNING_MODES:
        value = catalogue.planning_mode_value(mode)
        assert catalogue.planning_mode_name(value) == mode
    named = {PlanningMode.Name(v) for v in PlanningMode.values() if v}
    assert named == {f"PLANNING_MODE_{mode.upper()}" for mode in catalogue.PLANNING_MODES}
    with pytest.raises(ValueError):
        catalogue.planning_mode_name(99)


def test_a_style_added_to_the_catalogue_reaches_planner_renderer_and_llm_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(catalogue, "STYLES", MappingProxyType({**catalogue.STYLES, NEW_STYLE.name: NEW_STYLE}))
    # The offline planner writes its words.
    plan = plan_offline("A chapel at dawn", style=NEW_STYLE.name)
    assert f"Style: {NEW_STYLE.words}." in plan.enhanced_prompt
    # The planner accepts it, as the wiring builds it.
    validate_plan_request(PlanRequest(prompt="x", session_id="s", style=NEW_STYLE.name), catalogue.STYLES)
    build_planner(PlannerSettings())  # builds with the catalogue's styles
    # The renderer paints with its palette and textures, not a derived look.
    look = offline_renderer.style_look(NEW_STYLE.name)
    assert look.palette.sky == (255, 0, 0) and look.textures == NEW_STYLE.textures
    # The LLM is offered it.
    agent = build_llm_agent(PlannerSettings(llm_base_url="http://127.0.0.1:9/v1"))
    assert agent is not None
    assert NEW_STYLE.name in agent.schema["properties"]["style"]["enum"]  # type: ignore[attr-defined]


async def test_the_wired_planner_plans_in_an_added_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "STYLES", MappingProxyType({**catalogue.STYLES, NEW_STYLE.name: NEW_STYLE}))
    planner = build_planner(PlannerSettings(mode="offline"))
    plan = await planner.create_plan(PlanRequest(prompt="A chapel at dawn", session_id="s", style=NEW_STYLE.name))
    assert plan.style == NEW_STYLE.name and NEW_STYLE.words in plan.enhanced_prompt


def test_docs_catalogue_page_is_generated_from_the_catalogue() -> None:
    assert (ROOT / "docs" / "catalogue.md").read_text(encoding="utf-8") == catalogue_doc.render(), (
        "docs/catalogue.md is stale: run python scripts/catalogue_doc.py"
    )


@pytest.mark.parametrize(
    ("proto", "phrase"),
    [
        ("image_plan.proto", f"at most {catalogue.MAX_PROMPT_CHARS}"),
        ("image_plan.proto", f"each side {catalogue.MIN_SIDE} to {catalogue.MAX_SIDE}"),
        ("image_plan.proto", f"1 to {catalogue.MAX_SESSION_ID_CHARS} characters"),
        ("image_plan.proto", f"most {catalogue.MAX_STYLE_CHARS} characters"),
        ("image_plan.proto", f"at most {catalogue.MAX_METADATA_VALUE_CHARS} characters"),
        ("planner_service.proto", f"{catalogue.MAX_PROMPT_CHARS} characters"),
        ("planner_service.proto", f"each side {catalogue.MIN_SIDE} to {catalogue.MAX_SIDE}"),
        ("planner_service.proto", f"At most {catalogue.MAX_MAP_ENTRIES} entries"),
        ("planner_service.proto", f"values are at most {catalogue.MAX_CONTEXT_VALUE_CHARS} characters"),
        ("planner_service.proto", f"keys are 1 to {catalogue.MAX_MAP_KEY_CHARS} characters"),
        ("executor_service.proto", f"at most {catalogue.MAX_REQUEST_ID_CHARS} characters"),
        ("executor_service.proto", "1 second to 7 days"),
        ("image_plan.proto", f"at most {catalogue.MAX_REFERENCE_IMAGES}."),
        ("image_plan.proto", f"larger than {catalogue.MAX_REFERENCE_IMAGE_BYTES} bytes"),
        ("image_plan.proto", f"at most {catalogue.MAX_STORAGE_PATH_CHARS} characters"),
        ("planner_service.proto", f"at most {catalogue.MAX_REFERENCE_IMAGES}."),
        ("executor_service.proto", f"1 to {catalogue.MAX_EXECUTIONS_PAGE_SIZE}; {catalogue.DEFAULT_EXECUTIONS_PAGE_SIZE} when unset"),
        ("executor_service.proto", f"at most {catalogue.MAX_PREVIEW_SIDE} pixels on the long side and {catalogue.MAX_PREVIEW_BYTES // 1024} KiB"),
        ("executor_service.proto", f"moving in steps of at least {catalogue.PROGRESS_STEP_PERCENT};"),
    ],
)
def test_the_proto_comments_state_the_catalogue_limits(proto: str, phrase: str) -> None:
    text = " ".join((ROOT / "protos" / "imagegen" / "v1" / proto).read_text(encoding="utf-8").replace("//", " ").split())
    assert phrase in text
    assert catalogue.MAX_URL_EXPIRY.days == 7 and catalogue.MIN_URL_EXPIRY.total_seconds() == 1
