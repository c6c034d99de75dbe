"""Unit tests for the deterministic offline image renderer."""

from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from executor_service.providers.offline_renderer import render_png

TYPES = ("scene", "character", "portrait", "item", "creature", "location", "map")
STYLES = ("painterly", "ink-sketch", "watercolor", "dark-fantasy", "cinematic", "pixel-art", "heroic")
PROMPT = "A dwarven cleric with a warhammer guards a crumbling mountain shrine at dusk"


def _render(prompt=PROMPT, image_type="scene", style="painterly", width=256, height=192) -> bytes:
    return render_png(prompt=prompt, image_type=image_type, style=style, width=width, height=height)


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img


@pytest.mark.parametrize("image_type", TYPES)
def test_same_arguments_give_identical_png_of_requested_size(image_type: str) -> None:
    first, second = _render(image_type=image_type), _render(image_type=image_type)
    assert first == second
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    img = _open(first)
    assert img.size == (256, 192)
    assert img.mode == "RGB"
    assert not img.text  # no text chunks (they could carry timestamps)


def test_image_types_render_different_pictures() -> None:
    pixels = {t: _open(_render(image_type=t)).tobytes() for t in TYPES}
    for a, b in itertools.combinations(TYPES, 2):
        assert pixels[a] != pixels[b], (a, b)


def test_styles_render_different_pictures() -> None:
    styles = (*STYLES, "steampunk", "noir")  # unknown slugs get a derived look
    pixels = {s: _open(_render(image_type="creature", style=s)).tobytes() for s in styles}
    for a, b in itertools.combinations(styles, 2):
        assert pixels[a] != pixels[b], (a, b)


def test_prompt_changes_the_picture_and_the_caption_band() -> None:
    a = _open(_render(prompt="A red dragon sleeping on gold", width=512, height=512))
    b = _open(_render(prompt="A frost giant crossing a glacier", width=512, height=512))
    assert a.tobytes() != b.tobytes()
    band = (0, 512 - 40, 512, 512)  # the caption sits along the bottom
    assert a.crop(band).tobytes() != b.crop(band).tobytes()


def test_caption_band_holds_light_text_on_a_dark_band() -> None:
    img = _open(_render(prompt="Caption text here", width=512, height=512))
    raw = img.crop((0, 482, 512, 512)).tobytes()
    sums = sorted(sum(raw[i : i + 3]) for i in range(0, len(raw), 3))
    assert sums[len(sums) // 2] < 150  # mostly dark band
    assert sums[-1] > 600  # with light glyphs on it


@pytest.mark.parametrize("image_type", TYPES)
def test_large_render_is_a_real_picture_not_a_flat_fill(image_type: str) -> None:
    img = _open(_render(image_type=image_type, width=1024, height=1024))
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20
    # No single colour covers most of the canvas.
    assert max(count for count, _ in colours) < 0.6 * 1024 * 1024


@pytest.mark.parametrize(
    ("width", "height"), [(64, 64), (64, 512), (512, 64), (64, 4096), (4096, 64), (95, 97), (100, 100)]
)
@pytest.mark.parametrize("image_type", TYPES)
def test_extreme_and_tiny_sizes_work(image_type: str, width: int, height: int) -> None:
    img = _open(_render(image_type=image_type, width=width, height=height))
    assert img.size == (width, height)


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_every_type(style: str) -> None:
    for image_type in TYPES:
        assert _open(_render(image_type=image_type, style=style, width=160, height=120)).size == (160, 120)


@pytest.mark.parametrize(
    "prompt",
    ["", " ", "x" * 3000, "word " * 2000, "tab\tnew\nline\x00null", "Дракон 🐉 の 宝", "\u0301\u200b"],
)
def test_awkward_prompts_render(prompt: str) -> None:
    assert _open(_render(prompt=prompt, width=300, height=200)).size == (300, 200)


@pytest.mark.parametrize("image_type", ["Scene", "", "npc", "scene ", "maps"])
def test_unknown_image_type_raises(image_type: str) -> None:
    with pytest.raises(ValueError):
        _render(image_type=image_type)


@pytest.mark.parametrize(("width", "height"), [(63, 64), (64, 4097), (0, 100), (100, -1)])
def test_out_of_range_size_raises(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        _render(width=width, height=height)


@settings(max_examples=15, deadline=None)
@given(
    prompt=st.one_of(st.just(" "), st.just(""), st.text(max_size=120)),
    image_type=st.sampled_from(TYPES),
    style=st.one_of(st.sampled_from(STYLES), st.text(max_size=12)),
    width=st.integers(64, 160),
    height=st.integers(64, 160),
)
def test_any_prompt_is_deterministic_and_sized(
    prompt: str, image_type: str, style: str, width: int, height: int
) -> None:
    args = {"prompt": prompt, "image_type": image_type, "style": style, "width": width, "height": height}
    data = render_png(**args)
    assert data == render_png(**args)
    img = _open(data)
    assert img.size == (width, height) and img.mode == "RGB"
