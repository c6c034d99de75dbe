"""Deterministic offline renderer: the embedded default image provider (no cloud).

A picture of the plan's image type in its style's look (offline_pictures draws it), the
prompt as a caption along the bottom and "type · style" in the top-left corner. Reference
images show, deterministically: a style reference's six dominant colours become the
palette; a subject reference's average colour becomes the subject's, and its silhouette
(a thumbnail) stands framed in the top-right corner; an edit reference is the ground the
picture is laid over, half transparent. Masks are not applied (masks=False). Image
types, styles (palette and textures) and size limits are imagegen.catalogue's, read at
call time; a style slug the catalogue does not know gets a look derived from its hash.
Same arguments -> same PNG bytes; no I/O, no global state. Sizes are in pixels.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from executor_service.capabilities import refuse_unless_capable
from executor_service.providers.image_options import output_format, output_mime_type
from executor_service.providers.offline_pictures import BLACK, WHITE, Look, Palette, blend, draw_picture
from imagegen import catalogue
from imagegen.errors import FieldViolation, InvalidRequest
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_MAX_CAPTION_CHARS = 600  # more than three caption lines can ever hold; bounds the wrapping cost
_MIN_DECORATED_SIDE = 96  # smaller canvases get neither caption nor corner label
# A style the catalogue does not know: each colour's hue offset from the slug's hue, its
# saturation and value (in catalogue order); then one of these texture sets.
_DERIVED_HSV = ((0, .55, .62), (.08, .35, .96), (.3, .3, .55), (.3, .42, .34), (.55, .4, .18), (.5, .8, .96))
_DERIVED_TEXTURES = ((), ("strokes",), ("wash",), ("bold",), ("vignette",), ("ink",))


def style_look(slug: str) -> Look:
    """The catalogue's look for a style slug, looked up now; else one derived from the slug's hash."""
    style = catalogue.STYLES.get(slug)
    if style is not None:
        return Look(Palette.from_hex(style.palette), frozenset(style.textures))
    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).digest()
    colours = (colorsys.hsv_to_rgb((digest[0] / 256 + hue) % 1, s, v) for hue, s, v in _DERIVED_HSV)
    palette = Palette(*((round(r * 255), round(g * 255), round(b * 255)) for r, g, b in colours))
    return Look(palette, frozenset(_DERIVED_TEXTURES[digest[1] % len(_DERIVED_TEXTURES)]))


# -- Caption and label ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Caption:
    """The prompt in at most three lines for a band along the bottom; no lines, no band."""

    lines: tuple[str, ...]
    font: Font
    font_size: int
    padding: float
    line_height: float

    @property
    def height(self) -> int:
        """The band's height."""
        return round(len(self.lines) * self.line_height + 2 * self.padding) if self.lines else 0


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to lines at most max_width wide; breaks over-long words, and an ellipsis
    ends the last line when the text does not fit."""
    def fits(line: str) -> bool:
        return font.getlength(line) <= max_width

    lines = [""]
    for word in text[:_MAX_CAPTION_CHARS].split():
        while word and len(lines) <= max_lines:
            candidate = f"{lines[-1]} {word}".lstrip()
            if fits(candidate):
                lines[-1], word = candidate, ""
            elif lines[-1]:
                lines.append("")
            else:  # a single word wider than the line
                cut = 1
                while cut < len(word) and fits(word[:cut + 1]):
                    cut += 1
                lines[-1], word = word[:cut], word[cut:]
        if len(lines) > max_lines:
            break
    truncated = len(lines) > max_lines or len(text) > _MAX_CAPTION_CHARS
    lines = [line for line in lines[:max_lines] if line]
    if truncated and lines:
        while lines[-1] and not fits(lines[-1] + "…"):
            lines[-1] = lines[-1][:-1]
        lines[-1] = lines[-1].rstrip() + "…"
    return lines


def _layout_caption(text: str, width: int, height: int) -> Caption:
    """The caption for a width x height canvas, in at most 35% of its height; none on tiny canvases."""
    font_size = max(10, min(56, round(min(width, height) / 30)))
    padding, line_height = font_size * 0.5, font_size * 1.25
    max_lines = min(3, int((height * 0.35 - 2 * padding) // line_height))
    font = ImageFont.load_default(size=font_size)
    shown = min(width, height) >= _MIN_DECORATED_SIDE and max_lines > 0
    lines = _wrap(text, font, width - 2 * padding, max_lines) if shown else []
    return Caption(tuple(lines), font, font_size, padding, line_height)


def _draw_caption(canvas: Image.Image, caption: Caption, palette: Palette) -> None:
    """An accent rule over the band at the bottom of the canvas, and the lines in a light colour."""
    if not caption.lines:
        return
    width, height = canvas.size
    top, draw = height - caption.height, ImageDraw.Draw(canvas, "RGBA")
    draw.line([(0, top), (width, top)], fill=palette.accent, width=max(1, round(caption.font_size / 10)))
    for i, line in enumerate(caption.lines):
        position = (caption.padding, top + caption.padding + i * caption.line_height)
        draw.text(position, line, font=caption.font, fill=blend(palette.horizon, WHITE, 0.65))


def _draw_label(canvas: Image.Image, label: str, font_size: int) -> None:
    """The label in white on a translucent dark box in the top-left corner, when it fits."""
    width, height = canvas.size
    font = ImageFont.load_default(size=font_size)
    text_width, padding = font.getlength(label), font_size * 0.4
    if min(width, height) < _MIN_DECORATED_SIDE or text_width + 3 * padding > width * 0.9:
        return
    draw = ImageDraw.Draw(canvas, "RGBA")
    box = (padding, padding, padding * 3 + text_width, padding * 3 + font_size * 1.1)
    draw.rectangle(box, fill=BLACK + (120,))
    draw.text((padding * 2, padding * 2), label, font=font, fill=WHITE)


# -- Rendering -----------------------------------------------------------------------------------


def _seed(prompt: str, image_type: str, style: str, width: int, height: int) -> int:
    """The picture's random seed, from all the arguments (never the global RNG)."""
    key = "\x1f".join((prompt, image_type, style, f"{width}x{height}")).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


# -- Reference images ----------------------------------------------------------------------------

_REFERENCE_THUMB = 256  # a reference is looked at no larger than this (each side)


def _decode_reference(data: bytes) -> Image.Image:
    """An RGB thumbnail (at most _REFERENCE_THUMB a side) of a reference image's bytes;
    ValueError when they are not an image of at most MAX_SIDE x MAX_SIDE pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > catalogue.MAX_SIDE * catalogue.MAX_SIDE:
                raise ValueError(f"is {image.width}x{image.height} pixels, more than any image the executor stores")
            image.draft("RGB", (_REFERENCE_THUMB, _REFERENCE_THUMB))  # JPEG: decode at a fraction of the size
            thumb = image.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"is not an image the renderer can read ({type(exc).__name__})") from None
    thumb.thumbnail((_REFERENCE_THUMB, _REFERENCE_THUMB), Image.Resampling.BILINEAR)
    return thumb


def _dominant_palette(image: Image.Image) -> Palette:
    """Six dominant colours (median cut), lightest first: sky, horizon, far, near, subject, accent
    (the accent is the most saturated of the six)."""
    quantized = image.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    flat = quantized.getpalette() or []
    used = sorted({index for _, index in quantized.getcolors(256) or []})
    colours = [tuple(flat[3 * i:3 * i + 3]) for i in used] or [(128, 128, 128)]
    while len(colours) < 6:
        colours.append(colours[-1])
    ranked = sorted(colours[:6], key=lambda c: -(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]))
    accent = max(ranked, key=lambda c: max(c) - min(c))
    ranked.remove(accent)
    return Palette(*ranked[:5], accent)  # type: ignore[arg-type]


def _average(image: Image.Image) -> tuple[int, int, int]:
    r, g, b = image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    return r, g, b


def _with_references(look: Look, references: Sequence[tuple[str, Image.Image]]) -> Look:
    """The look with a style reference's palette and a subject reference's colour."""
    palette = look.palette
    style = next((image for role, image in references if role == "style"), None)
    if style is not None:
        palette = _dominant_palette(style)
    subject = next((image for role, image in references if role == "subject"), None)
    if subject is not None:
        palette = palette._replace(subject=_average(subject))
    return Look(palette, look.textures)


def _draw_subjects(canvas: Image.Image, subjects: Sequence[Image.Image], room: int, palette: Palette) -> None:
    """Each subject reference as a framed inset along the top-right corner, within room pixels of height."""
    width, _ = canvas.size
    side = max(16, min(room // 3, width // 5))
    margin = max(2, side // 12)
    right = width - margin
    for image in subjects:
        inset = image.copy()
        inset.thumbnail((side, side), Image.Resampling.BILINEAR)
        left = right - inset.width
        if left < width // 2:
            break
        ImageDraw.Draw(canvas).rectangle(
            (left - margin, margin, right + margin - 1, margin * 2 + inset.height), fill=palette.accent
        )
        canvas.paste(inset, (left, margin + margin // 2))
        right = left - 3 * margin


def _render_image(
    *, prompt: str, image_type: str, style: str, width: int, height: int, seed: int,
    references: Sequence[tuple[str, Image.Image]] = (),
) -> Image.Image:
    """The RGB canvas: the picture drawn from seed above the caption band, and the corner label;
    references ((role, thumbnail), in plan order) change it as the module says."""
    slug = style.strip().lower()
    look = _with_references(style_look(slug), references)
    text = " ".join("".join(c if c.isprintable() else " " for c in prompt).split())
    caption = _layout_caption(text, width, height)  # first, so the picture gets the remaining height
    picture = draw_picture(image_type, look, width, height - caption.height, random.Random(seed), text)
    edit = next((image for role, image in references if role == "edit"), None)
    if edit is not None:
        ground = edit.resize(picture.size, Image.Resampling.BILINEAR)
        picture = Image.blend(ground, picture.convert("RGB"), 0.5)
    canvas = Image.new("RGB", (width, height), blend(look.palette.subject, BLACK, 0.45))
    canvas.paste(picture, (0, 0))
    subjects = [image for role, image in references if role == "subject"]
    if subjects and min(width, height) >= _MIN_DECORATED_SIDE:
        _draw_subjects(canvas, subjects, height - caption.height, look.palette)
    _draw_caption(canvas, caption, look.palette)
    label = f"{image_type} · {slug}" if slug else image_type
    _draw_label(canvas, label, font_size=max(8, round(caption.font_size * 0.6)))
    return canvas


def render_png(
    *, prompt: str, image_type: str, style: str, width: int, height: int,
    references: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """PNG bytes of a width x height picture of a catalogue image type (each side within the
    catalogue's limits, else ValueError); the same bytes for the same arguments. references
    are (role, image bytes) in plan order, roles of catalogue.REFERENCE_ROLES; ValueError
    naming the index of one that is not a readable image."""
    if image_type not in catalogue.IMAGE_TYPES:
        expected = ", ".join(catalogue.IMAGE_TYPES)
        raise ValueError(f"unknown image_type {image_type!r}; expected one of {expected}")
    low, high = catalogue.MIN_SIDE, catalogue.MAX_SIDE
    if not all(isinstance(side, int) and low <= side <= high for side in (width, height)):
        raise ValueError(f"width and height must be ints in [{low}, {high}], got {width}x{height}")
    seed = _seed(prompt, image_type, style, width, height)
    decoded = []
    for index, (role, data) in enumerate(references):
        try:
            decoded.append((role, _decode_reference(data)))
        except ValueError as exc:
            raise ValueError(f"reference {index} {exc}") from None
    image = _render_image(
        prompt=prompt, image_type=image_type, style=style, width=width, height=height, seed=seed,
        references=decoded,
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)  # fixed options, no text chunks
    return buffer.getvalue()


# The one preview it reports: the same picture drawn this many times smaller (at least
# the catalogue's smallest side), before the full render.
PREVIEW_SCALE = 8


class OfflineRenderer:
    """render_png behind the ImageProvider port; rendering runs in a worker thread
    so the event loop keeps serving other calls meanwhile. The output format is the
    plan's metadata "output_format" or the configured default, like the OpenAI
    provider's, so either can stand in for the other in a provider chain."""

    name = "offline"
    model = "offline-renderer-1"

    def __init__(self, output_format: str = catalogue.DEFAULT_OUTPUT_FORMAT) -> None:
        self._output_format = output_format

    def capabilities(self, plan: ImageGenerationPlan) -> catalogue.ProviderCapabilities:
        return catalogue.provider_capabilities(self.name, self.model)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return output_mime_type(plan, self._output_format)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        refuse_unless_capable(self, plan, inputs)
        width, height = parse_size(plan.size)
        image_format = output_format(plan, self._output_format)
        if inputs.on_preview is not None:
            preview = await asyncio.to_thread(
                render_png,
                prompt=plan.enhanced_prompt,
                image_type=catalogue.image_type_name(plan.image_type),
                style=plan.style,
                width=max(catalogue.MIN_SIDE, width // PREVIEW_SCALE),
                height=max(catalogue.MIN_SIDE, height // PREVIEW_SCALE),
            )
            inputs.on_preview(preview, catalogue.MIME_TYPES["png"])
        if inputs.on_progress is not None:  # halfway, so the embedded mode shows progress too
            inputs.on_progress(0.5)
        try:
            data = await asyncio.to_thread(
                _render,
                image_format,
                prompt=plan.enhanced_prompt,
                image_type=catalogue.image_type_name(plan.image_type),
                style=plan.style,
                width=width,
                height=height,
                references=tuple((ref.role, ref.data) for ref in inputs.references),
            )
        except ValueError as exc:  # a reference it cannot read (the plan's size was checked above)
            raise InvalidRequest([FieldViolation("plan.reference_images", str(exc))]) from None
        if inputs.on_progress is not None:
            inputs.on_progress(1.0)
        return RenderedImage(data, catalogue.MIME_TYPES[image_format], width, height, model=self.model)


def _render(
    image_format: str, *, prompt: str, image_type: str, style: str, width: int, height: int,
    references: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """render_png's picture in image_format ("png", "jpeg" or "webp"), with fixed encoder options."""
    png = render_png(
        prompt=prompt, image_type=image_type, style=style, width=width, height=height, references=references
    )
    if image_format == "png":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(out, format=image_format.upper(), quality=90)  # fixed options: same bytes each time
    return out.getvalue()
