"""The offline renderer's pictures: one simple but recognisable drawing per image type
(landscape, castle, figure, portrait, object, beast, map) in a style's palette, with the
style's textures over it. Pure Pillow drawing from a seeded random.Random: the same
arguments draw the same pixels. offline_renderer chooses the look and adds the caption.

Unless a docstring says otherwise, coordinates and sizes are pixels (x right, y down) and
colours are RGB tuples of 0..255, with a fourth value for alpha to blend.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
Colour = tuple[int, ...]  # RGB, or RGBA to blend
Point = tuple[float, float]
Box = tuple[float, float, float, float]  # left, top, right, bottom

WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
_BOLD_INK: RGB = (20, 16, 14)
_ITEM_WORDS = {  # the object an item prompt names
    "sword": ("sword", "blade", "dagger", "axe", "spear"),
    "chest": ("chest", "box", "treasure", "coin", "gold", "crate"),
    "potion": ("potion", "flask", "vial", "bottle", "elixir", "brew"),
}


class Palette(NamedTuple):
    """A style's six colours, in the catalogue's order."""

    sky: RGB
    horizon: RGB
    far: RGB
    near: RGB
    subject: RGB
    accent: RGB

    @classmethod
    def from_hex(cls, colours: Sequence[str]) -> Palette:
        """Six "rrggbb" strings -> a Palette."""
        return cls(*((rgb[0], rgb[1], rgb[2]) for rgb in map(bytes.fromhex, colours)))


@dataclass(frozen=True)
class Look:
    """How a style draws: its palette and its texture treatments (catalogue.TEXTURES)."""

    palette: Palette
    textures: frozenset[str]


@dataclass(frozen=True)
class Pen:
    """Draws on one image with alpha blending. The shape methods outline in the style's ink
    (outline None: no outline); `draw` is there for lines and shapes without it."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    palette: Palette
    outline: RGB | None = None
    outline_width: int = 1

    @classmethod
    def on(
        cls, image: Image.Image, palette: Palette, outline: RGB | None = None, outline_width: int = 1
    ) -> Pen:
        return cls(image, ImageDraw.Draw(image, "RGBA"), palette, outline, outline_width)

    def onto(self, image: Image.Image) -> Pen:
        """The same palette and outline, drawing on another image."""
        return Pen.on(image, self.palette, self.outline, self.outline_width)

    def polygon(self, points: Sequence[Point], fill: Colour) -> None:
        self.draw.polygon(points, fill=fill, outline=self.outline, width=self.outline_width)

    def ellipse(self, box: Box, fill: Colour) -> None:
        self.draw.ellipse(box, fill=fill, outline=self.outline, width=self.outline_width)

    def rectangle(self, box: Box, fill: Colour) -> None:
        self.draw.rectangle(box, fill=fill, outline=self.outline, width=self.outline_width)

    def chord(self, box: Box, start: float, end: float, fill: Colour) -> None:
        """Angles in degrees, clockwise from 3 o'clock."""
        self.draw.chord(box, start, end, fill=fill, outline=self.outline, width=self.outline_width)


@dataclass(frozen=True)
class Frame:
    """A figure's own coordinates: x right and y up, in units of `unit` pixels from the canvas
    point (origin_x, origin_y); facing -1 mirrors x."""

    origin_x: float
    origin_y: float
    unit: float
    facing: int = 1

    def points(self, *coordinates: float) -> list[Point]:
        """Flat x0, y0, x1, y1, ... in frame units -> canvas points."""
        pairs = zip(coordinates[::2], coordinates[1::2])
        scale_x = self.facing * self.unit
        return [(self.origin_x + x * scale_x, self.origin_y - y * self.unit) for x, y in pairs]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> Box:
        """Two opposite corners in frame units -> a canvas box, never inverted (ImageDraw rejects those)."""
        (ax, ay), (bx, by) = self.points(x0, y0, x1, y1)
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def blend(first: Colour, second: Colour, amount: float) -> RGB:
    """The colour `amount` (0..1) of the way from first to second, without alpha."""
    red, green, blue = (round(a + (b - a) * amount) for a, b in zip(first[:3], second[:3]))
    return red, green, blue


def _around(centre_x: float, centre_y: float, radius_x: float, radius_y: float | None = None) -> Box:
    """The box of the ellipse (circle when radius_y is None) with these centre and radii."""
    radius_x, radius_y = abs(radius_x), abs(radius_x if radius_y is None else radius_y)
    return centre_x - radius_x, centre_y - radius_y, centre_x + radius_x, centre_y + radius_y


def _gradient(width: int, height: int, top: Colour, bottom: Colour) -> Image.Image:
    """An RGB image shading from top to bottom."""
    column = Image.new("RGB", (1, height))
    column.putdata([blend(top, bottom, y / max(1, height - 1)) for y in range(height)])
    return column.resize((width, height), Image.Resampling.NEAREST)


# -- The drawers: each draws one image type over the sky gradient of a width x height image.


def _draw_landscape(
    pen: Pen, rng: random.Random, width: int, height: int, prompt: str, *, castle: bool
) -> None:
    """A sun or moon, far and near hills, then trees and birds, or a castle between the hills."""
    unit, palette = min(width, height), pen.palette
    sun_x, sun_y = width * rng.uniform(0.15, 0.85), height * rng.uniform(0.1, 0.3)
    sun_radius = unit * rng.uniform(0.05, 0.09)
    pen.draw.ellipse(_around(sun_x, sun_y, sun_radius * 1.9), fill=palette.accent + (50,))  # soft halo
    pen.draw.ellipse(_around(sun_x, sun_y, sun_radius), fill=blend(palette.accent, palette.horizon, 0.4))
    skyline = height * rng.uniform(0.5, 0.6)
    for row, (amplitude, colour) in enumerate(((0.14, palette.far), (0.07, palette.near))):
        if castle and row == 1:
            _draw_castle(pen, rng, width, height, ground=skyline + height * 0.1)
        peaks, foot = rng.randint(3, 8), skyline + row * height * 0.2
        ridge = [(width * k / peaks, foot - rng.uniform(0, amplitude * height)) for k in range(peaks + 1)]
        pen.polygon([*ridge, (width, height), (0, height)], colour)
    if castle:
        return
    trees = [(rng.uniform(0, width), rng.uniform(skyline + 0.2 * height, 0.98 * height))
             for _ in range(rng.randint(4, 10))]
    for x, y in sorted(trees, key=lambda tree: tree[1]):  # far trees first so nearer ones overlap them
        size = unit * rng.uniform(0.08, 0.16) * (0.6 + y / height)
        tree = [(x, y - size), (x - size * 0.32, y), (x + size * 0.32, y)]
        pen.polygon(tree, blend(palette.near, palette.subject, 0.6))
    for _ in range(rng.randint(2, 5)):  # birds: small "v" strokes in the sky
        x, y = width * rng.uniform(0.1, 0.9), height * rng.uniform(0.08, 0.4)
        bird = Frame(x, y, unit * rng.uniform(0.012, 0.025)).points(-1, 0.5, 0, 0, 1, 0.5)
        pen.draw.line(bird, fill=palette.subject, width=max(1, round(unit / 300)))


def _draw_castle(pen: Pen, rng: random.Random, width: int, height: int, *, ground: float) -> None:
    """A crenellated curtain wall standing at y=ground, 3-5 towers with conical roofs and pennants
    or battlements, lit windows, and a gate."""
    unit, palette = min(width, height), pen.palette
    towers, span = rng.randint(3, 5), min(width * 0.75, unit * 0.95)
    centre_x, tower_width = width * rng.uniform(0.4, 0.6), span / (towers * 1.7)
    left, wall_top = centre_x - span / 2, ground - unit * 0.12
    pen.rectangle((left, wall_top, left + span, height), palette.subject)
    for i in range(int(span / tower_width * 2)):  # crenellations
        pen.draw.rectangle(Frame(left + i * tower_width / 2, wall_top, tower_width).box(0, 0, 0.25, 0.25),
                           fill=palette.subject)
    for i in range(towers):
        tower = Frame(left + (i + 0.5) * span / towers, ground - unit * rng.uniform(0.22, 0.45), tower_width)
        pen.rectangle(tower.box(-0.5, 0, 0.5, -height / tower_width), palette.subject)
        if rng.random() < 0.55:  # conical roof with a pennant
            pen.polygon(tower.points(-0.65, 0, 0, 1.3, 0.65, 0), blend(palette.subject, palette.accent, 0.35))
            pen.draw.line(tower.points(0, 1.3, 0, 1.8), fill=palette.subject, width=max(1, round(unit / 400)))
            pen.draw.polygon(tower.points(0, 1.8, 0.4, 1.65, 0, 1.5), fill=palette.accent)
        else:
            for k in range(3):
                pen.draw.rectangle(tower.box(-0.5 + k * 0.4, 0, -0.3 + k * 0.4, 0.22), fill=palette.subject)
        for k in range(rng.randint(1, 3)):  # lit windows
            pen.draw.rectangle(tower.box(-0.1, -0.5 - k * 0.9, 0.1, -0.85 - k * 0.9), fill=palette.accent)
    gate = _around(centre_x, ground, tower_width * 0.45, tower_width * 0.8)
    pen.draw.chord(gate, 180, 360, fill=blend(palette.subject, BLACK, 0.5))


def _draw_character(pen: Pen, rng: random.Random, width: int, height: int, prompt: str) -> None:
    """A standing cloaked figure holding a staff, a sword, or a sword and a shield; maybe a hat."""
    palette, floor = pen.palette, height * 0.88
    pen.rectangle((0, floor, width, height), palette.near)
    figure = Frame(width / 2, floor, min(height * 0.78, width * 1.4))  # 1.0: the top of the head
    body, cloak, size = palette.subject, blend(palette.subject, palette.accent, 0.3), figure.unit
    pen.draw.ellipse(_around(figure.origin_x, floor, size * 0.22, size * 0.03), fill=BLACK + (90,))  # shadow
    pen.polygon(figure.points(-0.1, 0.83, 0.1, 0.83, 0.21, 0.1, -0.21, 0.1), cloak)
    for side, hand_height in ((-1, 0.5), (1, 0.64)):  # legs and arms
        pen.rectangle(figure.box(0.02 * side, 0.36, 0.085 * side, 0), body)
        pen.draw.line(figure.points(0.1 * side, 0.8, 0.2 * side, hand_height), fill=body,
                      width=max(2, round(size * 0.05)))
    pen.polygon(figure.points(-0.12, 0.83, 0.12, 0.83, 0.09, 0.34, -0.09, 0.34), body)
    pen.draw.rectangle(figure.box(-0.1, 0.58, 0.1, 0.545), fill=palette.accent)  # belt
    pen.ellipse(figure.box(-0.07, 0.99, 0.07, 0.83), body)
    held, x = rng.choice(("staff", "sword", "shield")), 0.2  # x: the right hand
    if held == "staff":
        staff = blend(body, palette.accent, 0.2)
        pen.draw.line(figure.points(x, 1.02, x, 0), fill=staff, width=max(2, round(size * 0.02)))
        pen.draw.ellipse(figure.box(x - 0.07, 0.96, x + 0.07, 1.1), fill=palette.accent + (70,))
        pen.draw.ellipse(figure.box(x - 0.03, 1.0, x + 0.03, 1.06), fill=blend(palette.accent, WHITE, 0.5))
    else:
        steel = blend((215, 220, 230), palette.accent, 0.1)
        pen.polygon(figure.points(x - 0.015, 0.64, x + 0.015, 0.64, x + 0.1, 0.97, x + 0.08, 0.99), steel)
        guard = figure.points(x - 0.04, 0.66, x + 0.05, 0.63)
        pen.draw.line(guard, fill=palette.accent, width=max(2, round(size * 0.02)))
        if held == "shield":
            pen.ellipse(figure.box(-0.29, 0.67, -0.11, 0.43), blend(palette.accent, body, 0.35))
    if rng.random() < 0.5:  # pointed hat
        pen.polygon(figure.points(-0.1, 0.94, rng.uniform(-0.08, 0.08), 1.12, 0.1, 0.94), cloak)


def _draw_portrait(pen: Pen, rng: random.Random, width: int, height: int, prompt: str) -> None:
    """A bust (hood, crown, horns or hair; glinting eyes) clipped to an oval in a gilt frame."""
    palette, rim, body = pen.palette, pen.palette.accent, pen.palette.subject
    oval_width = min(width * 0.8, height * 0.62)
    oval_height = min(oval_width * 1.3, height * 0.92)
    left, top = round(width / 2 - oval_width / 2), round(height / 2 - oval_height / 2)
    inner_width, inner_height = max(1, round(oval_width)), max(1, round(oval_height))
    pen.draw.rectangle((0, 0, width, height), fill=blend(body, palette.far, 0.35) + (200,))  # dim wall
    inner = _gradient(inner_width, inner_height, blend(palette.sky, palette.horizon, 0.3), palette.horizon)
    bust = pen.onto(inner)
    head = Frame(inner_width / 2, inner_height * 0.44, inner_width * 0.2)
    head_x, head_y, radius_x, radius_y = head.origin_x, head.origin_y, head.unit, inner_height * 0.2
    bust.ellipse((inner_width * 0.04, inner_height * 0.74, inner_width * 0.96, inner_height * 1.5), body)
    bust.rectangle((inner_width * 0.43, inner_height * 0.55, inner_width * 0.57, inner_height * 0.8), body)
    bust.draw.ellipse(_around(head_x - radius_x * 0.08, head_y, radius_x, radius_y), fill=rim)  # rim light
    bust.ellipse(_around(head_x, head_y, radius_x, radius_y), body)
    headwear = rng.choice(("hood", "crown", "horns", "hair"))
    if headwear == "hood":
        hood = _around(head_x, head_y + radius_y * 0.2, radius_x * 1.35, radius_y * 1.4)
        bust.chord(hood, 180, 360, blend(body, rim, 0.25))
    elif headwear == "crown":
        tips = [value for i in range(5) for value in (-0.8 + 0.4 * i, 1.25 if i % 2 else 0.95)]
        bust.polygon(head.points(-0.8, 0.75, *tips, 0.8, 0.75), rim)
    elif headwear == "horns":
        for side in (-1, 1):
            horn = Frame(head_x, head_y, radius_x, facing=side).points(0.5, 0.7, 1.4, 1.5, 0.85, 0.4)
            bust.polygon(horn, blend(rim, (240, 230, 210), 0.5))
    else:
        hair = _around(head_x, head_y - radius_y * 0.15, radius_x * 1.1, radius_y)
        bust.chord(hair, 160, 380, blend(body, palette.far, 0.3))
    for side in (-1, 1):  # glinting eyes give the silhouette a face
        eye = _around(head_x + side * radius_x * 0.38, head_y + radius_y * 0.05, radius_x * 0.07)
        bust.draw.ellipse(eye, fill=blend(rim, WHITE, 0.5))
    mask = Image.new("L", (inner_width, inner_height), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, inner_width - 1, inner_height - 1), fill=255)
    pen.image.paste(inner, (left, top), mask)
    frame = max(2, round(oval_width / 22))  # gilt frame, then a thin dark outer ring
    rings = ((frame, rim, frame), (frame * 1.6, blend(rim, BLACK, 0.5), max(1, frame // 3)))
    for gap, colour, line_width in rings:
        ring = (left - gap, top - gap, left + inner_width + gap, top + inner_height + gap)
        pen.draw.ellipse(ring, outline=colour, width=line_width)


def _draw_item(pen: Pen, rng: random.Random, width: int, height: int, prompt: str) -> None:
    """A sword, a chest with spilled coins or a potion under a spotlight: the one the prompt names,
    else the seed's choice."""
    palette, floor = pen.palette, height * 0.74
    pen.rectangle((0, floor, width, height), blend(palette.near, palette.horizon, 0.35))
    item = Frame(width / 2, floor, min(width * 0.9, height * 0.8))
    pen.draw.ellipse(_around(item.origin_x, floor, item.unit * 0.4, item.unit * 0.08), fill=WHITE + (45,))
    named = [kind for kind, words in _ITEM_WORDS.items() if any(word in prompt.lower() for word in words)]
    kind = named[0] if named else rng.choice(sorted(_ITEM_WORDS))
    if kind == "sword":
        steel = blend((212, 218, 228), palette.accent, 0.1)
        pen.polygon(item.points(0, 0, -0.035, 0.06, -0.035, 0.52, 0.035, 0.52, 0.035, 0.06), steel)
        pen.draw.line(item.points(0, 0.05, 0, 0.52), fill=blend(steel, BLACK, 0.25),
                      width=max(1, round(item.unit / 150)))
        pen.rectangle(item.box(-0.15, 0.555, 0.15, 0.52), palette.accent)  # guard, grip, pommel
        pen.rectangle(item.box(-0.022, 0.69, 0.022, 0.555), palette.subject)
        pen.ellipse(item.box(-0.04, 0.75, 0.04, 0.67), palette.accent)
    elif kind == "chest":
        wood = blend((120, 72, 36), palette.subject, 0.25)
        pen.rectangle(item.box(-0.28, 0.3, 0.28, 0), wood)
        pen.chord(item.box(-0.28, 0.465, 0.28, 0.135), 180, 360, blend(wood, WHITE, 0.12))
        for x in (-0.21, 0.21):  # metal bands and lock
            pen.draw.rectangle(item.box(x - 0.02, 0.465, x + 0.02, 0), fill=palette.accent)
        pen.rectangle(item.box(-0.04, 0.33, 0.04, 0.24), palette.accent)
        for _ in range(rng.randint(3, 7)):  # spilled coins
            x, y = rng.uniform(-0.45, 0.45), -rng.uniform(0.01, 0.06)
            pen.ellipse(item.box(x - 0.025, y - 0.012, x + 0.025, y + 0.012), palette.accent)
    else:
        glass = blend((200, 225, 235), palette.sky, 0.2)
        pen.rectangle(item.box(-0.06, 0.58, 0.06, 0.34), glass)
        pen.rectangle(item.box(-0.076, 0.64, 0.076, 0.57), (140, 100, 60))  # cork
        pen.ellipse(item.box(-0.2, 0.4, 0.2, 0), glass)
        pen.draw.chord(item.box(-0.184, 0.384, 0.184, 0.016), 10, 170, fill=palette.accent)  # liquid
        pen.draw.ellipse(item.box(-0.11, 0.34, -0.05, 0.22), fill=WHITE + (140,))


def _draw_creature(pen: Pen, rng: random.Random, width: int, height: int, prompt: str) -> None:
    """A four-legged dragon-like beast in profile, maybe winged, with a glowing eye."""
    palette, floor, body = pen.palette, height * 0.86, pen.palette.subject
    pen.rectangle((0, floor, width, height), palette.near)
    beast = Frame(width / 2, floor, min(width * 0.85, height * 1.1), facing=rng.choice((-1, 1)))
    pen.draw.ellipse(_around(beast.origin_x, floor, beast.unit * 0.35, beast.unit * 0.03), fill=BLACK + (90,))
    if rng.random() < 0.6:  # bat wing with a scalloped trailing edge
        wing = beast.points(-0.05, 0.42, -0.25, 0.9, -0.42, 0.62, -0.33, 0.6, -0.27, 0.5, -0.18, 0.49,
                            -0.1, 0.4)
        pen.polygon(wing, blend(body, palette.accent, 0.2))
    tail = beast.points(-0.22, 0.3, -0.45, 0.4 + rng.uniform(0, 0.15), -0.5, 0.45, -0.2, 0.38)
    pen.polygon(tail, body)
    for x in (-0.18, -0.1, 0.1, 0.18):  # tapered legs
        pen.polygon(beast.points(x - 0.035, 0.3, x + 0.035, 0.3, x + 0.02, 0, x - 0.025, 0), body)
    pen.ellipse(beast.box(-0.28, 0.43, 0.28, 0.18), body)
    for k in range(6):  # spikes along the back
        pen.polygon(beast.points(-0.2 + k * 0.07, 0.42, -0.17 + k * 0.07, 0.49, -0.14 + k * 0.07, 0.42), body)
    pen.polygon(beast.points(0.15, 0.4, 0.3, 0.55, 0.36, 0.5, 0.27, 0.25), body)  # neck
    pen.polygon(beast.points(0.35, 0.61, 0.52, 0.52, 0.5, 0.48, 0.35, 0.5), body)  # snout
    pen.ellipse(beast.box(0.27, 0.64, 0.43, 0.48), body)
    horn = beast.points(0.31, 0.61, 0.2 + rng.uniform(0, 0.06), 0.74, 0.38, 0.62)
    pen.polygon(horn, blend(body, (230, 220, 200), 0.6))
    (eye_x, eye_y), = beast.points(0.38, 0.57)
    pen.draw.ellipse(_around(eye_x, eye_y, beast.unit * 0.036), fill=palette.accent + (80,))  # glow
    pen.draw.ellipse(_around(eye_x, eye_y, beast.unit * 0.015), fill=blend(palette.accent, WHITE, 0.4))


def _draw_map(pen: Pen, rng: random.Random, width: int, height: int, prompt: str) -> None:
    """Top down on paper: terrain, mountains, a river, towns, a survey grid, a compass rose, a border."""
    palette, unit, draw = pen.palette, min(width, height), pen.draw
    paper, ink = blend((236, 222, 186), palette.horizon, 0.15), blend(palette.subject, (60, 40, 20), 0.5)
    line_width = max(1, round(unit / 300))
    draw.rectangle((0, 0, width, height), fill=paper)
    for _ in range(rng.randint(4, 7)):  # terrain: clusters of overlapping ellipses
        colour = blend(paper, rng.choice(((110, 160, 80), palette.far, (150, 120, 80))), 0.4)
        centre_x, centre_y = rng.uniform(0, width), rng.uniform(0, height)
        for _ in range(rng.randint(8, 14)):
            radius = unit * rng.uniform(0.02, 0.055)
            x, y = centre_x + rng.gauss(0, unit * 0.06), centre_y + rng.gauss(0, unit * 0.05)
            draw.ellipse(_around(x, y, radius), fill=colour)
    for _ in range(rng.randint(4, 9)):  # mountain glyphs
        x, y, size = rng.uniform(0, width), rng.uniform(0, height), unit * rng.uniform(0.025, 0.05)
        draw.polygon(Frame(x, y, size).points(-1, 0, 0, 1.3, 1, 0), fill=blend(paper, ink, 0.25), outline=ink)
    river: list[Point] = []
    x, y = -unit * 0.05, height * rng.uniform(0.25, 0.75)
    while x < width + unit * 0.05:  # a random walk across the map
        river.append((x, y))
        x, y = x + unit * 0.05, min(height * 0.95, max(height * 0.05, y + rng.uniform(-1, 1) * unit * 0.05))
    water = blend((70, 120, 180), palette.sky, 0.2)
    draw.line(river, fill=water, width=max(2, round(unit / 45)), joint="curve")
    for _ in range(rng.randint(2, 5)):  # towns
        town = _around(rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.7) * height, unit * 0.018)
        draw.rectangle(town, fill=palette.accent, outline=ink, width=line_width)
    step = max(8.0, unit / 8)
    for i in range(1, int(max(width, height) / step) + 1):  # faint survey grid
        draw.line([(i * step, 0), (i * step, height)], fill=ink + (45,))
        draw.line([(0, i * step), (width, i * step)], fill=ink + (45,))
    rose_x, rose_y, radius = width - unit * 0.15, height - unit * 0.15, unit * 0.1  # 4 long, 4 short points
    star = [(rose_x + math.sin(i * math.pi / 8) * radius * reach,
             rose_y - math.cos(i * math.pi / 8) * radius * reach)
            for i, reach in enumerate((1, 0.18, 0.55, 0.18) * 4)]
    draw.ellipse(_around(rose_x, rose_y, radius * 0.7), outline=ink, width=line_width)
    draw.polygon(star, fill=ink)
    draw.polygon([star[15], star[0], star[1], (rose_x, rose_y)], fill=palette.accent)  # north point
    border = max(2, round(unit / 100))
    draw.rectangle((border, border, width - 1 - border, height - 1 - border), outline=ink, width=border)


Drawer = Callable[[Pen, random.Random, int, int, str], None]  # pen, rng, width, height, prompt
_DRAWERS: dict[str, Drawer] = {
    "scene": partial(_draw_landscape, castle=False),
    "character": _draw_character,
    "portrait": _draw_portrait,
    "item": _draw_item,
    "creature": _draw_creature,
    "location": partial(_draw_landscape, castle=True),
    "map": _draw_map,
}
DRAWN_IMAGE_TYPES = frozenset(_DRAWERS)  # the image types draw_picture draws


def _apply_textures(picture: Image.Image, rng: random.Random, look: Look) -> Image.Image:
    """The style's textures over the finished picture, so styles differ beyond colour; returns it
    or a new image of its size. ("bold" is not here: it is the pen's outline.)"""
    width, height = picture.size
    unit, draw, textures = min(width, height), ImageDraw.Draw(picture, "RGBA"), look.textures
    if "strokes" in textures:  # short translucent brush strokes sampled from the picture itself
        stroke = max(1, unit / 70)
        for _ in range(400):
            x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
            angle, length = rng.uniform(-0.6, 0.6), rng.uniform(2, 4) * stroke
            colour = blend(picture.getpixel((int(x), int(y))), WHITE, 0.08) + (90,)  # type: ignore[arg-type]
            end = (x + math.cos(angle) * length, y + math.sin(angle) * length)
            draw.line([(x, y), end], fill=colour, width=round(stroke))
    if "ink" in textures:  # diagonal hatching
        for x in range(-height, width, max(4, round(unit / 40))):
            draw.line([(x, height), (x + height, 0)], fill=look.palette.subject + (28,))
    if "wash" in textures:  # faint pigment blooms, then a soft blur
        for _ in range(10):
            radius = unit * rng.uniform(0.04, 0.12)
            bloom = _around(rng.uniform(0, width), rng.uniform(0, height), radius)
            draw.ellipse(bloom, fill=rng.choice(look.palette) + (22,))
        picture = picture.filter(ImageFilter.BoxBlur(max(1, round(unit / 300))))
    if "pixel" in textures:
        block, nearest = max(2, round(unit / 96)), Image.Resampling.NEAREST
        small = picture.resize((max(1, width // block), max(1, height // block)), nearest)
        picture = small.resize((width, height), nearest)
    if "vignette" in textures:
        # 0 at the centre to 255 in the corners
        corners = Image.radial_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
        shade = corners.point(lambda value: max(0, value - 110) * 2)
        picture = Image.composite(Image.new("RGB", (width, height)), picture, shade)
    if "letterbox" in textures:
        bars = ImageDraw.Draw(picture)
        for top, bottom in ((0, 0.07), (0.93, 1)):
            bars.rectangle((0, height * top, width, height * bottom), fill=BLACK)
    return picture


def draw_picture(
    image_type: str, look: Look, width: int, height: int, rng: random.Random, prompt: str
) -> Image.Image:
    """A width x height RGB picture of image_type (one of DRAWN_IMAGE_TYPES) in look, its
    random choices drawn from rng; prompt may name what an item is."""
    picture, unit = _gradient(width, height, look.palette.sky, look.palette.horizon), min(width, height)
    if "bold" in look.textures:
        pen = Pen.on(picture, look.palette, _BOLD_INK, max(2, round(unit / 110)))
    elif "ink" in look.textures:
        pen = Pen.on(picture, look.palette, look.palette.subject, max(1, round(unit / 220)))
    else:
        pen = Pen.on(picture, look.palette)
    _DRAWERS[image_type](pen, rng, width, height, prompt)
    return _apply_textures(picture, rng, look)
