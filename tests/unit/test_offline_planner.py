"""Unit tests for the deterministic offline planner."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegen.catalogue import DEFAULT_STYLE, IMAGE_TYPES, STYLES
from imagegen.catalogue import MAX_PROMPT_CHARS as MAX_ENHANCED_PROMPT_CHARS
from planner_service.offline_rules import (
    OfflinePlan,
    infer_image_type,
    plan_offline,
)

SHEET = {
    "name": "Thora Ironbrow",
    "race": "dwarf",
    "class": "cleric",
    "gender": "female",
    "age": "142",
    "armor": "battered chain mail",
    "weapon": "warhammer",
    "equipment": "a silver holy symbol",
    "appearance": "braided copper beard",
    "location": "Waterdeep",
    "campaign_setting": "Forgotten Realms",
    "time_of_day": "dusk",
    "weather": "drizzle",
    "mood": "tense",
    "lighting": "torchlit",
    "faction": "Harpers",
    "patron": "Moradin",
}

FRAMING_MARKERS = {
    "scene": "wide establishing shot",
    "character": "full-body",
    "portrait": "head-and-shoulders",
    "item": "single object centred on a plain",
    "creature": "anatomy clearly readable",
    "location": "no prominent characters",
    "map": "top-down",
}


def _plan(prompt: str = "a quiet moment", **kwargs) -> OfflinePlan:
    return plan_offline(prompt, **kwargs)


# --- determinism -----------------------------------------------------------------


def test_same_call_twice_is_equal() -> None:
    first = _plan("the rogue picks the lock", context=SHEET)
    assert first == _plan("the rogue picks the lock", context=SHEET)


def test_context_order_is_irrelevant() -> None:
    reversed_sheet = dict(reversed(list(SHEET.items())))
    assert list(reversed_sheet) != list(SHEET)
    for image_type in IMAGE_TYPES:
        plan = _plan(image_type=image_type, context=SHEET)
        assert plan == _plan(image_type=image_type, context=reversed_sheet)


# --- framing, style, defaults ----------------------------------------------------


@pytest.mark.parametrize("image_type", IMAGE_TYPES)
def test_framing_per_type(image_type: str) -> None:
    plan = _plan("Thora at the gates", image_type=image_type)
    assert plan.image_type == image_type
    assert FRAMING_MARKERS[image_type] in plan.enhanced_prompt.lower()


def test_item_and_map_framing_details() -> None:
    item = _plan("a flaming sword", image_type="item").enhanced_prompt.lower()
    assert "studio lighting" in item and "no hands" in item and "no people" in item
    map_prompt = _plan("the goblin warrens", image_type="map").enhanced_prompt.lower()
    assert "no perspective" in map_prompt and "minimal labels" in map_prompt


def test_style_presets_are_slugs_and_include_the_required_ones() -> None:
    assert 6 <= len(STYLES) <= 8
    required = {"painterly", "ink-sketch", "watercolor", "dark-fantasy", "cinematic", "pixel-art", "heroic"}
    assert required <= set(STYLES)
    for name, fragment in ((name, style.words) for name, style in STYLES.items()):
        assert re.fullmatch(r"[a-z0-9-]+", name)
        assert fragment.strip()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_style_fragment_appears(style: str) -> None:
    plan = _plan("a bridge over the chasm", style=style)
    assert plan.style == style
    assert STYLES[style].words in plan.enhanced_prompt


def test_default_style() -> None:
    assert DEFAULT_STYLE == "painterly"
    plan = _plan("a bridge over the chasm")
    assert plan.style == DEFAULT_STYLE
    assert STYLES[DEFAULT_STYLE].words in plan.enhanced_prompt


def test_default_sizes_per_type() -> None:
    assert {name: spec.default_size for name, spec in IMAGE_TYPES.items()} == {
        "scene": "1536x1024",
        "location": "1536x1024",
        "character": "1024x1536",
        "portrait": "1024x1024",
        "item": "1024x1024",
        "creature": "1024x1024",
        "map": "1024x1024",
    }
    for image_type in IMAGE_TYPES:
        assert _plan(image_type=image_type).size == IMAGE_TYPES[image_type].default_size


def test_explicit_size_and_style_win() -> None:
    plan = _plan("a portrait of the queen", size="512x768", style="ink-sketch")
    assert (plan.image_type, plan.size, plan.style) == ("portrait", "512x768", "ink-sketch")


# --- context -----------------------------------------------------------------------


def test_context_woven_into_character_plan() -> None:
    text = _plan("standing on the walls", image_type="character", context=SHEET).enhanced_prompt
    for phrase in (
        "Thora Ironbrow",
        "a female dwarf cleric",
        "aged 142",
        "wearing battered chain mail",
        "wielding a warhammer",
        "carrying a silver holy symbol",
        "braided copper beard",
        "set in Waterdeep",
        "Forgotten Realms",
        "at dusk",
        "Mood: tense",
        "Lighting: torchlit",
    ):
        assert phrase.lower() in text.lower(), phrase
    # Unknown keys: "key: value", in sorted key order.
    assert "faction: Harpers; patron: Moradin" in text


def test_minimal_sheet_reads_naturally() -> None:
    text = _plan("x", image_type="character", context={"race": "elf", "class": "wizard"}).enhanced_prompt
    assert "an elf wizard" in text


def test_irrelevant_context_is_dropped_for_maps_and_items() -> None:
    map_text = _plan("the keep", image_type="map", context=SHEET).enhanced_prompt
    assert "warhammer" not in map_text and "chain mail" not in map_text and "dwarf cleric" not in map_text
    assert "Waterdeep" in map_text and "faction: Harpers" in map_text
    item_text = _plan("a holy symbol", image_type="item", context=SHEET).enhanced_prompt
    assert "wielding" not in item_text and "Thora" not in item_text


def test_location_plan_has_no_character_sheet() -> None:
    text = _plan("the old temple", image_type="location", context=SHEET).enhanced_prompt
    assert "Thora" not in text and "wielding" not in text
    assert "Set in Waterdeep" in text and "Weather: drizzle" in text


def test_whitespace_is_normalised() -> None:
    text = _plan("  a   goblin\n\n\tlurking  ", image_type="creature").enhanced_prompt
    assert "A goblin lurking." in text
    assert "  " not in text and "\n" not in text


# --- the cap ------------------------------------------------------------------------


def test_cap_keeps_framing_and_style_and_cuts_on_word_boundaries() -> None:
    # Tokens of a fixed width: a mid-word cut would leave a shorter one behind.
    words = [f"w{i:04d}" for i in range(1000)]
    prompt = " ".join(words)[:4000].rsplit(" ", 1)[0]
    assert len(prompt) <= 4000
    context = {f"key{i:02d}": " ".join(f"v{j:04d}" for j in range(99)) for i in range(32)}
    context.update(race="dwarf", **{"class": "cleric"})
    for image_type in IMAGE_TYPES:
        for style in STYLES:
            plan = plan_offline(prompt, image_type=image_type, style=style, context=context)
            text = plan.enhanced_prompt
            assert len(text) <= MAX_ENHANCED_PROMPT_CHARS
            assert text.startswith("W0000 w0001")  # the subject leads, cut at its end
            assert plan_offline("x", image_type=image_type).enhanced_prompt.split(". ")[1] in text
            assert FRAMING_MARKERS[image_type] in text.lower()
            assert f"Style: {STYLES[style].words}." in text
            assert text.endswith("no watermark.")
            assert all(len(tok) == 5 for tok in re.findall(r"\b[WwVv]\d+\b", text))
            assert "W0000 w0001" in text  # the description keeps its (capitalised) head
            assert "Details: key00: v0000" in text  # and the context keeps some room
            assert len(text) > MAX_ENHANCED_PROMPT_CHARS - 50  # and the room is actually used


def test_long_context_keeps_some_context_under_the_cap() -> None:
    prompt = ("word " * 800).strip()
    plan = plan_offline(prompt, image_type="character", context={"race": "dwarf", "class": "cleric"})
    assert "a dwarf cleric" in plan.enhanced_prompt
    assert len(plan.enhanced_prompt) <= MAX_ENHANCED_PROMPT_CHARS


# --- inference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "context", "expected"),
    [
        ("a portrait of a dragon", None, "portrait"),
        ("a map of the castle", None, "map"),
        ("the party fights a dragon in the tavern", None, "scene"),
        ("a battle map of the goblin warrens", None, "map"),
        ("the dungeon layout of the sunken temple", None, "map"),
        ("close-up headshot of the elven queen", None, "portrait"),
        ("a map of the kingdom with a portrait of the king in a corner", None, "map"),
        ("goblins ambush the caravan on the forest road", None, "scene"),
        ("the wizard casts fireball at the charging orcs", None, "scene"),
        ("a glowing potion in a crystal vial", None, "item"),
        ("an ancient amulet etched with runes", None, "item"),
        ("a dragon-shaped amulet", None, "item"),
        ("a beholder lurking in a dark cave", None, "creature"),
        ("a goblin with a rusty dagger", None, "creature"),
        ("a half-orc barbarian with a greataxe", None, "character"),
        ("my character standing on the city walls", None, "character"),
        ("a battle-scarred tiefling warlock", None, "character"),
        ("standing in the rain looking over the harbor", {"race": "elf", "class": "ranger"}, "character"),
        ("a map of the harbor", {"race": "elf", "class": "ranger"}, "map"),
        ("the ruined castle on the hill at dusk", None, "location"),
        ("a misty forest clearing", None, "location"),
        ("something strange happens", None, "scene"),
    ],
)
def test_infer_image_type(prompt: str, context: dict[str, str] | None, expected: str) -> None:
    assert infer_image_type(prompt, context) == expected
    assert plan_offline(prompt, context=context).image_type == expected


def test_inference_is_word_bounded() -> None:
    assert infer_image_type("the party faces a swordsman") == "scene"  # "faces" is not "face"
    assert infer_image_type("a dragonborn") == "character"  # not a dragon
    assert infer_image_type("unmapped wilderness") == "scene"  # no "map" inside a word


# --- property ----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    prompt=st.text(min_size=1, max_size=4000).filter(lambda s: s.strip()),
    context=st.dictionaries(
        st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), st.text(max_size=500), max_size=32
    ),
    style=st.none() | st.sampled_from(sorted(STYLES)),
)
def test_property_valid_bounded_deterministic(
    prompt: str, context: dict[str, str], style: str | None
) -> None:
    plan = plan_offline(prompt, style=style, context=context)
    assert plan.image_type in IMAGE_TYPES
    assert plan.style in STYLES
    assert re.fullmatch(r"[0-9]{2,4}x[0-9]{2,4}", plan.size)
    assert 0 < len(plan.enhanced_prompt) <= MAX_ENHANCED_PROMPT_CHARS
    assert STYLES[plan.style].words in plan.enhanced_prompt
    assert plan == plan_offline(prompt, style=style, context=dict(reversed(list(context.items()))))
