"""Unit tests for the deterministic offline image renderer."""

from __future__ import annotations

import io
import itertools
import random
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from executor_service.providers import offline_renderer
from executor_service.providers.offline_pictures import Look, Palette, draw_picture
from executor_service.providers.offline_renderer import render_png, style_look
from imagegen import catalogue

TYPES = catalogue.IMAGE_TYPE_NAMES
STYLES = tuple(catalogue.STYLES)
PROMPT = "A dwarven cleric with a warhammer guards a crumbling mountain shrine at dusk"
PAINTERLY = Palette.from_hex(catalogue.STYLES["painterly"].palette)


def _render(prompt=PROMPT, image_type="scene", style="painterly", width=256, height=192) -> bytes:
    return render_png(prompt=prompt, image_type=image_type, style=style, width=width, height=height)


def _open(data: bytes, image_format: str = "PNG") -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == image_format
    img.load()
    return img


def _picture(image_type: str, look: Look, size: int = 256) -> Image.Image:
    """The bare picture (no caption, no label) from a fixed seed."""
    return draw_picture(image_type, look, size, size, random.Random(3), "")


@pytest.mark.parametrize("image_type", TYPES)
def test_same_arguments_give_identical_png_of_requested_size(image_type: str) -> None:
    first, second = _render(image_type=image_type), _render(image_type=image_type)
    assert first == second
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    img = _open(first)
    assert img.size == (256, 192)
    assert img.mode == "RGB"
    assert not img.text  # no text chunks (they could carry timestamps)


@pytest.mark.parametrize("image_format", catalogue.OUTPUT_FORMATS)
def test_every_output_format_is_encoded_the_same_each_time(image_format: str) -> None:
    arguments = {"prompt": PROMPT, "image_type": "item", "style": "heroic", "width": 160, "height": 96}
    data = offline_renderer._render(image_format, **arguments)
    assert data == offline_renderer._render(image_format, **arguments)
    assert _open(data, image_format.upper()).size == (160, 96)


def test_image_types_draw_different_pictures() -> None:
    # The same seed and look, no caption or label: only the drawing can tell the types apart.
    pixels = {t: _picture(t, Look(PAINTERLY, frozenset())).tobytes() for t in TYPES}
    for a, b in itertools.combinations(TYPES, 2):
        assert pixels[a] != pixels[b], (a, b)


@pytest.mark.parametrize("image_type", TYPES)
def test_every_image_type_draws_shapes_over_its_background(image_type: str) -> None:
    # The background is a top-to-bottom gradient (or a flat fill), one colour per row; shapes
    # put other colours in a row. No textures, which would vary the rows by themselves.
    img = _picture(image_type, Look(PAINTERLY, frozenset()), size=512)
    rows = (img.crop((0, y, 512, y + 1)).getcolors(512) for y in range(512))
    off_background = sum(512 - max(count for count, _ in colours) for colours in rows)
    assert off_background > 0.05 * 512 * 512


def test_styles_draw_different_pictures() -> None:
    styles = (*STYLES, "steampunk", "noir")  # unknown slugs get a derived look
    pixels = {s: _picture("creature", style_look(s)).tobytes() for s in styles}
    for a, b in itertools.combinations(styles, 2):
        assert pixels[a] != pixels[b], (a, b)


@pytest.mark.parametrize("name", STYLES)
def test_catalogue_styles_draw_in_their_catalogue_palette_and_textures(name: str) -> None:
    style = catalogue.STYLES[name]
    expected = [tuple(bytes.fromhex(colour)) for colour in style.palette]
    assert [tuple(colour) for colour in style_look(name).palette] == expected
    assert style_look(name).textures == style.textures


@pytest.mark.parametrize("texture", sorted(catalogue.TEXTURES))
def test_every_catalogue_texture_changes_the_picture(texture: str) -> None:
    plain = _picture("scene", Look(PAINTERLY, frozenset()))
    assert _picture("scene", Look(PAINTERLY, frozenset({texture}))).tobytes() != plain.tobytes()


def test_a_style_added_to_the_catalogue_is_drawn_in_its_look(monkeypatch: pytest.MonkeyPatch) -> None:
    name, colour = "test-flat", (0x20, 0x60, 0xA0)
    middle, top_bar = (0, 20, 256, 170), (128, 0, 256, 13)  # below the corner label; the letterbox's place

    def render() -> Image.Image:
        return _open(_render(prompt="", style=name, width=256, height=192))  # no caption

    before = render()  # not in the catalogue: a look derived from the slug's hash
    assert before.crop(middle).getcolors(1) is None  # more than one colour
    assert before.crop(top_bar).getcolors(1) != [(128 * 13, (0, 0, 0))]

    flat = catalogue.Style(name, "flat colour", ("2060a0",) * 6, frozenset({"letterbox"}))
    monkeypatch.setattr(catalogue, "STYLES", MappingProxyType({**catalogue.STYLES, name: flat}))
    after = render()
    # A scene in a one-colour palette is that colour throughout; the letterbox blacks out the top.
    assert after.crop(middle).getcolors(1) == [(256 * 150, colour)]
    assert after.crop(top_bar).getcolors(1) == [(128 * 13, (0, 0, 0))]


def test_the_prompt_changes_the_picture() -> None:
    a = _open(_render(prompt="A red dragon sleeping on gold", width=512, height=512))
    b = _open(_render(prompt="A frost giant crossing a glacier", width=512, height=512))
    above_caption = (0, 0, 512, 300)
    assert a.crop(above_caption).tobytes() != b.crop(above_caption).tobytes()


def _light_pixels(img: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """(x, y) of the pixels in box light enough to be caption text."""
    left, top, right, bottom = box
    pixels = img.load()
    return [(x, y) for y in range(top, bottom) for x in range(left, right) if min(pixels[x, y]) > 200]


def test_the_caption_writes_the_prompt_in_a_band_below_the_picture() -> None:
    # The same seed draws the same picture, so whatever differs between these two renders is
    # the caption: a long prompt and a short one, each one line so the bands are as tall.
    def render(prompt: str) -> Image.Image:
        return offline_renderer._render_image(
            prompt=prompt, image_type="scene", style="painterly", width=512, height=512, seed=7
        )

    short, long = render("Ox"), render("A frost giant crossing a glacier at dawn")
    rows = [(0, y, 512, y + 1) for y in range(512)]
    changed_rows = [row[1] for row in rows if short.crop(row).tobytes() != long.crop(row).tobytes()]
    assert changed_rows, "the caption text does not show"
    assert min(changed_rows) >= 512 * 0.65  # the band is at most 35% of the height; the picture is the same
    band = (0, 512 - 40, 512, 512)
    short_text, long_text = _light_pixels(short, band), _light_pixels(long, band)
    assert short_text and long_text  # light glyphs in the band
    # The glyphs run as far as the text: "Ox" stops near the left edge, the long prompt runs on.
    assert max(x for x, _ in short_text) < 60 < 250 < max(x for x, _ in long_text)


def test_caption_band_holds_light_text_on_a_dark_band() -> None:
    img = _open(_render(prompt="Caption text here", width=512, height=512))
    band = (0, 482, 512, 512)
    raw = img.crop(band).tobytes()
    sums = sorted(sum(raw[i : i + 3]) for i in range(0, len(raw), 3))
    assert sums[len(sums) // 2] < 150  # mostly dark band
    assert len(_light_pixels(img, band)) > 100  # with light glyphs on it


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
    ["", " ", "x" * 3000, "word " * 2000, "tab\tnew\nline\x00null", "Дракон 🐉 の 宝",
     "\u0301\u200b"],
)
def test_awkward_prompts_render(prompt: str) -> None:
    assert _open(_render(prompt=prompt, width=300, height=200)).size == (300, 200)


@pytest.mark.parametrize("image_type", ["Scene", "", "npc", "scene ", "maps"])
def test_unknown_image_type_raises(image_type: str) -> None:
    with pytest.raises(ValueError, match="image_type"):
        _render(image_type=image_type)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (catalogue.MIN_SIDE - 1, catalogue.MIN_SIDE),
        (catalogue.MIN_SIDE, catalogue.MAX_SIDE + 1),
        (0, 100),
        (100, -1),
        (100.0, 100),
    ],
)
def test_out_of_range_size_raises(width: float, height: int) -> None:
    with pytest.raises(ValueError, match="width and height"):
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
