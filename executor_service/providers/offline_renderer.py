"""Deterministic offline renderer: the embedded default image provider (no cloud).

Draws a simple but recognisable picture per image type (landscape, castle, figure,
portrait, object, beast, map) in a palette and texture derived from the style, with
the prompt as a caption. Same arguments -> same PNG bytes; no I/O, no global state.
"""
from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import math
import random
from collections import namedtuple
from functools import partial
from types import SimpleNamespace

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from executor_service.ports import RenderedImage
from executor_service.providers.image_options import MIME_TYPES, output_format, output_mime_type
from imagegen.catalogue import image_type_name
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from imagegen.validation import parse_size

IMAGE_TYPES = ("scene", "character", "portrait", "item", "creature", "location", "map")
MIN_SIZE, MAX_SIZE = 64, 4096
_MAX_PROMPT = 600  # more than three caption lines can ever hold; bounds the wrapping cost
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_Palette = namedtuple("_Palette", "sky horizon far near subject accent")
_STYLES = {  # slug -> (palette as hex, texture treatments); other slugs are derived from a hash
    "painterly": ("587cb2 f0c896 809276 4a623e 3a2c28 dea440", {"strokes"}),
    "ink-sketch": ("e2ded2 f8f6ee c8c4ba a8a49a 1e1e22 6e6e76", {"ink"}),
    "watercolor": ("8cb8da fae4d0 acccac 76a88c 4e587c e47478", {"wash"}),
    "dark-fantasy": ("100c1e 602432 2e223c 1a1420 0a080c d2283c", {"vignette"}),
    "cinematic": ("0e2e46 fc9646 2a485c 142430 0c141c ffbe5a", {"vignette", "letterbox"}),
    "pixel-art": ("465ec8 8cc8ff 3ca05a 286e3c 322850 ffd23c", {"pixel"}),
    "heroic": ("285abe ffdc8c 6e965a 3c6e32 781e1e fac828", {"bold"}),
}
_ITEMS = {"sword": ("sword", "blade", "dagger", "axe", "spear"),
          "chest": ("chest", "box", "treasure", "coin", "gold", "crate"),
          "potion": ("potion", "flask", "vial", "bottle", "elixir", "brew")}


def _mix(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def _style_look(slug):
    if slug in _STYLES:
        hexes, looks = _STYLES[slug]
        return _Palette(*(tuple(bytes.fromhex(x)) for x in hexes.split())), looks
    d = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).digest()
    hsv = [(0, .55, .62), (.08, .35, .96), (.3, .3, .55), (.3, .42, .34), (.55, .4, .18), (.5, .8, .96)]
    rgb = (colorsys.hsv_to_rgb((d[0] / 256 + h) % 1, s, v) for h, s, v in hsv)
    pal = _Palette(*(tuple(round(c * 255) for c in col) for col in rgb))
    return pal, [set(), {"strokes"}, {"wash"}, {"bold"}, {"vignette"}, {"ink"}][d[1] % 6]


def _box(cx, cy, rx, ry=None):
    ry = rx if ry is None else ry
    return (cx - abs(rx), cy - abs(ry), cx + abs(rx), cy + abs(ry))


def _pts(ox, oy, s, *c, f=1):
    """Relative coords (x right, y up, in units of s from an origin) -> canvas points; f=-1 mirrors."""
    return [(ox + f * c[i] * s, oy - c[i + 1] * s) for i in range(0, len(c), 2)]


def _rbox(ox, oy, s, x0, y0, x1, y1, f=1):
    (ax, ay), (bx, by) = _pts(ox, oy, s, x0, y0, x1, y1, f=f)
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))  # ImageDraw rejects inverted boxes


def _pen(img, pal, outline=None, width=1):
    """ImageDraw with alpha blending, plus shape helpers that carry the style's outline."""
    d, o = ImageDraw.Draw(img, "RGBA"), {"outline": outline, "width": width}
    return SimpleNamespace(d=d, pal=pal, ol=outline, olw=width, poly=partial(d.polygon, **o), oval=partial(
        d.ellipse, **o), rect=partial(d.rectangle, **o), chord=partial(d.chord, **o))


def _gradient(w, h, top, bottom):
    col = Image.new("RGB", (1, h))
    col.putdata([_mix(top, bottom, y / max(1, h - 1)) for y in range(h)])
    return col.resize((w, h), Image.Resampling.NEAREST)


def _landscape(p, rng, w, h, castle):
    u, pal = min(w, h), p.pal
    sx, sy, r = w * rng.uniform(0.15, 0.85), h * rng.uniform(0.1, 0.3), u * rng.uniform(0.05, 0.09)
    p.d.ellipse(_box(sx, sy, r * 1.9), fill=pal.accent + (50,))  # soft halo round the sun/moon
    p.d.ellipse(_box(sx, sy, r), fill=_mix(pal.accent, pal.horizon, 0.4))
    base = h * rng.uniform(0.5, 0.6)
    for i, (amp, col) in enumerate(((0.14, pal.far), (0.07, pal.near))):  # far then near hills
        if castle and i == 1:
            _castle(p, rng, w, h, base + h * 0.1)
        n, y0 = rng.randint(3, 8), base + i * h * 0.2
        p.poly([(w * k / n, y0 - rng.uniform(0, amp * h)) for k in range(n + 1)] + [(w, h), (0, h)], col)
    if castle:
        return
    trees = [(rng.uniform(0, w), rng.uniform(base + 0.2 * h, 0.98 * h)) for _ in range(rng.randint(4, 10))]
    for x, y in sorted(trees, key=lambda t: t[1]):  # far trees first so nearer ones overlap them
        th = u * rng.uniform(0.08, 0.16) * (0.6 + y / h)
        p.poly([(x, y - th), (x - th * 0.32, y), (x + th * 0.32, y)], _mix(pal.near, pal.subject, 0.6))
    for _ in range(rng.randint(2, 5)):  # birds: small "v" strokes in the sky
        bx, by, bs = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.08, 0.4), u * rng.uniform(0.012, 0.025)
        p.d.line(_pts(bx, by, bs, -1, 0.5, 0, 0, 1, 0.5), fill=pal.subject, width=max(1, round(u / 300)))


def _castle(p, rng, w, h, ground):
    u, pal = min(w, h), p.pal
    n, span = rng.randint(3, 5), min(w * 0.75, u * 0.95)
    cx, t = w * rng.uniform(0.4, 0.6), span / (n * 1.7)  # t: tower width, the castle's unit
    x0 = cx - span / 2
    p.rect((x0, ground - u * 0.12, x0 + span, h), pal.subject)  # curtain wall with crenellations
    for i in range(int(span / t * 2)):
        p.d.rectangle(_rbox(x0 + i * t / 2, ground - u * 0.12, t, 0, 0, 0.25, 0.25), fill=pal.subject)
    for i in range(n):
        tx, top = x0 + (i + 0.5) * span / n, ground - u * rng.uniform(0.22, 0.45)
        p.rect(_rbox(tx, top, t, -0.5, 0, 0.5, -h / t), pal.subject)
        if rng.random() < 0.55:  # conical roof with a pennant
            p.poly(_pts(tx, top, t, -0.65, 0, 0, 1.3, 0.65, 0), _mix(pal.subject, pal.accent, 0.35))
            p.d.line(_pts(tx, top, t, 0, 1.3, 0, 1.8), fill=pal.subject, width=max(1, round(u / 400)))
            p.d.polygon(_pts(tx, top, t, 0, 1.8, 0.4, 1.65, 0, 1.5), fill=pal.accent)
        else:
            for k in range(3):
                p.d.rectangle(_rbox(tx, top, t, -0.5 + k * 0.4, 0, -0.3 + k * 0.4, 0.22), fill=pal.subject)
        for k in range(rng.randint(1, 3)):  # lit windows
            p.d.rectangle(_rbox(tx, top, t, -0.1, -0.5 - k * 0.9, 0.1, -0.85 - k * 0.9), fill=pal.accent)
    p.d.chord(_box(cx, ground, t * 0.45, t * 0.8), 180, 360, fill=_mix(pal.subject, _BLACK, 0.5))  # gate


def _character(p, rng, w, h):
    pal, floor, cx = p.pal, h * 0.88, w / 2
    p.rect((0, floor, w, h), pal.near)
    s = min(h * 0.78, w * 1.4)  # figure height, clamped for narrow canvases
    body, cloak = pal.subject, _mix(pal.subject, pal.accent, 0.3)
    P = lambda *c: _pts(cx, floor, s, *c)  # noqa: E731 - figure coords: 1.0 = top of the head
    p.d.ellipse(_box(cx, floor, s * 0.22, s * 0.03), fill=_BLACK + (90,))  # shadow
    p.poly(P(-0.1, 0.83, 0.1, 0.83, 0.21, 0.1, -0.21, 0.1), cloak)
    for sd, hand in ((-1, 0.5), (1, 0.64)):  # legs and arms
        p.rect(_rbox(cx, floor, s, 0.02 * sd, 0.36, 0.085 * sd, 0), body)
        p.d.line(P(0.1 * sd, 0.8, 0.2 * sd, hand), fill=body, width=max(2, round(s * 0.05)))
    p.poly(P(-0.12, 0.83, 0.12, 0.83, 0.09, 0.34, -0.09, 0.34), body)
    p.d.rectangle(_rbox(cx, floor, s, -0.1, 0.58, 0.1, 0.545), fill=pal.accent)  # belt
    p.oval(_rbox(cx, floor, s, -0.07, 0.99, 0.07, 0.83), body)
    kind, hx = rng.choice(("staff", "sword", "shield")), 0.2
    if kind == "staff":
        p.d.line(P(hx, 1.02, hx, 0), fill=_mix(body, pal.accent, 0.2), width=max(2, round(s * 0.02)))
        p.d.ellipse(_rbox(cx, floor, s, hx - 0.07, 0.96, hx + 0.07, 1.1), fill=pal.accent + (70,))
        p.d.ellipse(_rbox(cx, floor, s, hx - 0.03, 1.0, hx + 0.03, 1.06), fill=_mix(pal.accent, _WHITE, 0.5))
    else:
        steel = _mix((215, 220, 230), pal.accent, 0.1)
        p.poly(P(hx - 0.015, 0.64, hx + 0.015, 0.64, hx + 0.1, 0.97, hx + 0.08, 0.99), steel)
        p.d.line(P(hx - 0.04, 0.66, hx + 0.05, 0.63), fill=pal.accent, width=max(2, round(s * 0.02)))
        if kind == "shield":
            p.oval(_rbox(cx, floor, s, -0.29, 0.67, -0.11, 0.43), _mix(pal.accent, body, 0.35))
    if rng.random() < 0.5:  # pointed hat
        p.poly(P(-0.1, 0.94, rng.uniform(-0.08, 0.08), 1.12, 0.1, 0.94), cloak)


def _portrait(p, rng, w, h, art):
    pal, rim, body = p.pal, p.pal.accent, p.pal.subject
    ow = min(w * 0.8, h * 0.62)
    oh = min(ow * 1.3, h * 0.92)
    x0, y0, iw, ih = round(w / 2 - ow / 2), round(h / 2 - oh / 2), max(1, round(ow)), max(1, round(oh))
    p.d.rectangle((0, 0, w, h), fill=_mix(body, pal.far, 0.35) + (200,))  # dim wall around the frame
    inner = _gradient(iw, ih, _mix(pal.sky, pal.horizon, 0.3), pal.horizon)
    q, hx, hy, rx, ry = _pen(inner, pal, p.ol, p.olw), iw / 2, ih * 0.44, iw * 0.2, ih * 0.2
    q.oval((iw * 0.04, ih * 0.74, iw * 0.96, ih * 1.5), body)  # shoulders, neck, head with rim light
    q.rect((iw * 0.43, ih * 0.55, iw * 0.57, ih * 0.8), body)
    q.d.ellipse(_box(hx - rx * 0.08, hy, rx, ry), fill=rim)
    q.oval(_box(hx, hy, rx, ry), body)
    kind = rng.choice(("hood", "crown", "horns", "hair"))
    if kind == "hood":
        q.chord(_box(hx, hy + ry * 0.2, rx * 1.35, ry * 1.4), 180, 360, _mix(body, rim, 0.25))
    elif kind == "crown":
        tips = (v for i in range(5) for v in (-0.8 + 0.4 * i, 1.25 if i % 2 else 0.95))
        q.poly(_pts(hx, hy, rx, -0.8, 0.75, *tips, 0.8, 0.75), rim)
    elif kind == "horns":
        for sd in (-1, 1):
            q.poly(_pts(hx, hy, rx, 0.5, 0.7, 1.4, 1.5, 0.85, 0.4, f=sd), _mix(rim, (240, 230, 210), 0.5))
    else:
        q.chord(_box(hx, hy - ry * 0.15, rx * 1.1, ry), 160, 380, _mix(body, pal.far, 0.3))
    for sd in (-1, 1):  # glinting eyes give the silhouette a face
        q.d.ellipse(_box(hx + sd * rx * 0.38, hy + ry * 0.05, rx * 0.07), fill=_mix(rim, _WHITE, 0.5))
    mask = Image.new("L", (iw, ih), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, iw - 1, ih - 1), fill=255)
    art.paste(inner, (x0, y0), mask)  # clip the bust to the oval
    fw = max(2, round(ow / 22))  # gilt frame plus a thin dark outer ring
    for g, col, lw in ((fw, rim, fw), (fw * 1.6, _mix(rim, _BLACK, 0.5), max(1, fw // 3))):
        p.d.ellipse((x0 - g, y0 - g, x0 + iw + g, y0 + ih + g), outline=col, width=lw)


def _item(p, rng, w, h, prompt):
    pal, floor, cx = p.pal, h * 0.74, w / 2
    p.rect((0, floor, w, h), _mix(pal.near, pal.horizon, 0.35))
    u = min(w * 0.9, h * 0.8)
    P, B = (lambda *c: _pts(cx, floor, u, *c)), (lambda *c: _rbox(cx, floor, u, *c))  # noqa: E731
    p.d.ellipse(_box(cx, floor, u * 0.4, u * 0.08), fill=_WHITE + (45,))  # spotlight
    # The prompt picks the object when it names one; otherwise the seed does.
    kind = next((k for k, ws in _ITEMS.items() if any(x in prompt.lower() for x in ws)), None)
    kind = kind or rng.choice(sorted(_ITEMS))
    if kind == "sword":
        steel = _mix((212, 218, 228), pal.accent, 0.1)
        p.poly(P(0, 0, -0.035, 0.06, -0.035, 0.52, 0.035, 0.52, 0.035, 0.06), steel)
        p.d.line(P(0, 0.05, 0, 0.52), fill=_mix(steel, _BLACK, 0.25), width=max(1, round(u / 150)))
        p.rect(B(-0.15, 0.555, 0.15, 0.52), pal.accent)
        p.rect(B(-0.022, 0.69, 0.022, 0.555), pal.subject)
        p.oval(B(-0.04, 0.75, 0.04, 0.67), pal.accent)
    elif kind == "chest":
        wood = _mix((120, 72, 36), pal.subject, 0.25)
        p.rect(B(-0.28, 0.3, 0.28, 0), wood)
        p.chord(B(-0.28, 0.465, 0.28, 0.135), 180, 360, _mix(wood, _WHITE, 0.12))
        for fx in (-0.21, 0.21):  # metal bands and lock
            p.d.rectangle(B(fx - 0.02, 0.465, fx + 0.02, 0), fill=pal.accent)
        p.rect(B(-0.04, 0.33, 0.04, 0.24), pal.accent)
        for _ in range(rng.randint(3, 7)):  # spilled coins
            x, y = rng.uniform(-0.45, 0.45), -rng.uniform(0.01, 0.06)
            p.oval(B(x - 0.025, y - 0.012, x + 0.025, y + 0.012), pal.accent)
    else:
        glass = _mix((200, 225, 235), pal.sky, 0.2)
        p.rect(B(-0.06, 0.58, 0.06, 0.34), glass)
        p.rect(B(-0.076, 0.64, 0.076, 0.57), (140, 100, 60))  # cork
        p.oval(B(-0.2, 0.4, 0.2, 0), glass)
        p.d.chord(B(-0.184, 0.384, 0.184, 0.016), 10, 170, fill=pal.accent)  # liquid
        p.d.ellipse(B(-0.11, 0.34, -0.05, 0.22), fill=_WHITE + (140,))


def _creature(p, rng, w, h):
    pal, floor, cx = p.pal, h * 0.86, w / 2
    p.rect((0, floor, w, h), pal.near)
    u, f, body = min(w * 0.85, h * 1.1), rng.choice((-1, 1)), pal.subject  # f: which way it faces
    P = lambda *c: _pts(cx, floor, u, *c, f=f)  # noqa: E731
    p.d.ellipse(_box(cx, floor, u * 0.35, u * 0.03), fill=_BLACK + (90,))
    if rng.random() < 0.6:  # bat wing with a scalloped trailing edge
        p.poly(P(-0.05, 0.42, -0.25, 0.9, -0.42, 0.62, -0.33, 0.6, -0.27, 0.5, -0.18, 0.49, -0.1, 0.4),
               _mix(body, pal.accent, 0.2))
    p.poly(P(-0.22, 0.3, -0.45, 0.4 + rng.uniform(0, 0.15), -0.5, 0.45, -0.2, 0.38), body)  # tail
    for lx in (-0.18, -0.1, 0.1, 0.18):  # tapered legs
        p.poly(P(lx - 0.035, 0.3, lx + 0.035, 0.3, lx + 0.02, 0, lx - 0.025, 0), body)
    p.oval(_rbox(cx, floor, u, -0.28, 0.43, 0.28, 0.18, f=f), body)
    for k in range(6):  # spikes along the back
        p.poly(P(-0.2 + k * 0.07, 0.42, -0.17 + k * 0.07, 0.49, -0.14 + k * 0.07, 0.42), body)
    p.poly(P(0.15, 0.4, 0.3, 0.55, 0.36, 0.5, 0.27, 0.25), body)  # neck, snout, head, horn
    p.poly(P(0.35, 0.61, 0.52, 0.52, 0.5, 0.48, 0.35, 0.5), body)
    p.oval(_rbox(cx, floor, u, 0.27, 0.64, 0.43, 0.48, f=f), body)
    p.poly(P(0.31, 0.61, 0.2 + rng.uniform(0, 0.06), 0.74, 0.38, 0.62), _mix(body, (230, 220, 200), 0.6))
    (ex, ey), = P(0.38, 0.57)
    p.d.ellipse(_box(ex, ey, u * 0.036), fill=pal.accent + (80,))  # glowing eye
    p.d.ellipse(_box(ex, ey, u * 0.015), fill=_mix(pal.accent, _WHITE, 0.4))


def _map(p, rng, w, h):
    pal, u = p.pal, min(w, h)
    paper, ink = _mix((236, 222, 186), pal.horizon, 0.15), _mix(pal.subject, (60, 40, 20), 0.5)
    lw = max(1, round(u / 300))
    p.d.rectangle((0, 0, w, h), fill=paper)
    for _ in range(rng.randint(4, 7)):  # terrain blobs: clusters of overlapping ellipses
        col = _mix(paper, rng.choice(((110, 160, 80), pal.far, (150, 120, 80))), 0.4)
        bx, by = rng.uniform(0, w), rng.uniform(0, h)
        for _ in range(rng.randint(8, 14)):
            r = u * rng.uniform(0.02, 0.055)
            p.d.ellipse(_box(bx + rng.gauss(0, u * 0.06), by + rng.gauss(0, u * 0.05), r), fill=col)
    for _ in range(rng.randint(4, 9)):  # mountain glyphs
        mx, my, ms = rng.uniform(0, w), rng.uniform(0, h), u * rng.uniform(0.025, 0.05)
        p.d.polygon(_pts(mx, my, ms, -1, 0, 0, 1.3, 1, 0), fill=_mix(paper, ink, 0.25), outline=ink)
    pts, x, y = [], -u * 0.05, h * rng.uniform(0.25, 0.75)
    while x < w + u * 0.05:  # river: a random walk across the map
        pts.append((x, y))
        x, y = x + u * 0.05, min(h * 0.95, max(h * 0.05, y + rng.uniform(-1, 1) * u * 0.05))
    p.d.line(pts, fill=_mix((70, 120, 180), pal.sky, 0.2), width=max(2, round(u / 45)), joint="curve")
    for _ in range(rng.randint(2, 5)):  # towns
        p.d.rectangle(_box(rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.7) * h, u * 0.018), fill=pal.accent,
                      outline=ink, width=lw)
    step = max(8.0, u / 8)
    for i in range(1, int(max(w, h) / step) + 1):  # faint survey grid
        p.d.line([(i * step, 0), (i * step, h)], fill=ink + (45,))
        p.d.line([(0, i * step), (w, i * step)], fill=ink + (45,))
    cx, cy, r = w - u * 0.15, h - u * 0.15, u * 0.1  # compass rose: 4 long, 4 short points
    star = [(cx + math.sin(i * math.pi / 8) * r * k, cy - math.cos(i * math.pi / 8) * r * k)
            for i, k in enumerate((1, 0.18, 0.55, 0.18) * 4)]
    p.d.ellipse(_box(cx, cy, r * 0.7), outline=ink, width=lw)
    p.d.polygon(star, fill=ink)
    p.d.polygon([star[15], star[0], star[1], (cx, cy)], fill=pal.accent)  # north point
    bw = max(2, round(u / 100))
    p.d.rectangle((bw, bw, w - 1 - bw, h - 1 - bw), outline=ink, width=bw)


def _treat(art, rng, pal, looks):
    """Style texture over the finished picture (before the caption), so styles differ beyond colour."""
    w, h = art.size
    u, d = min(w, h), ImageDraw.Draw(art, "RGBA")
    if "strokes" in looks:  # short translucent brush strokes sampled from the picture itself
        sw = max(1, u / 70)
        for _ in range(400):
            x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            a, ln = rng.uniform(-0.6, 0.6), rng.uniform(2, 4)
            c = _mix(art.getpixel((int(x), int(y))), _WHITE, 0.08) + (90,)
            d.line([(x, y), (x + math.cos(a) * ln * sw, y + math.sin(a) * ln * sw)], fill=c, width=round(sw))
    if "ink" in looks:  # diagonal hatching
        for x in range(-h, w, max(4, round(u / 40))):
            d.line([(x, h), (x + h, 0)], fill=pal.subject + (28,))
    if "wash" in looks:  # faint pigment blooms, then a soft blur
        for _ in range(10):
            r = u * rng.uniform(0.04, 0.12)
            d.ellipse(_box(rng.uniform(0, w), rng.uniform(0, h), r), fill=rng.choice(pal) + (22,))
        art = art.filter(ImageFilter.BoxBlur(max(1, round(u / 300))))
    if "pixel" in looks:
        k, near = max(2, round(u / 96)), Image.Resampling.NEAREST
        art = art.resize((max(1, w // k), max(1, h // k)), near).resize((w, h), near)
    if "vignette" in looks:
        mask = Image.radial_gradient("L").resize((w, h), Image.Resampling.BILINEAR)  # 0 centre -> 255 corners
        art = Image.composite(Image.new("RGB", (w, h)), art, mask.point(lambda v: max(0, v - 110) * 2))
    for y0, y1 in ((0, 0.07), (0.93, 1)) if "letterbox" in looks else ():
        ImageDraw.Draw(art).rectangle((0, h * y0, w, h * y1), fill=_BLACK)
    return art


def _wrap(text, font, max_w, max_lines):
    """Greedy word wrap; hard-breaks over-long words; an ellipsis marks truncation."""
    fits = lambda s: font.getlength(s) <= max_w  # noqa: E731
    lines = [""]
    for word in text[:_MAX_PROMPT].split():
        while word and len(lines) <= max_lines:
            cand = f"{lines[-1]} {word}".lstrip()
            if fits(cand):
                lines[-1], word = cand, ""
            elif lines[-1]:
                lines.append("")
            else:  # a single word wider than the line
                n = 1
                while n < len(word) and fits(word[:n + 1]):
                    n += 1
                lines[-1], word = word[:n], word[n:]
        if len(lines) > max_lines:
            break
    cut = len(lines) > max_lines or len(text) > _MAX_PROMPT
    lines = [ln for ln in lines[:max_lines] if ln]
    if cut and lines:
        while lines[-1] and not fits(lines[-1] + "…"):
            lines[-1] = lines[-1][:-1]
        lines[-1] = lines[-1].rstrip() + "…"
    return lines


def render_png(*, prompt: str, image_type: str, style: str, width: int, height: int) -> bytes:
    """PNG bytes for a plan, the same bytes for the same arguments."""
    if image_type not in IMAGE_TYPES:
        raise ValueError(f"unknown image_type {image_type!r}; expected one of {IMAGE_TYPES}")
    if not all(isinstance(v, int) and MIN_SIZE <= v <= MAX_SIZE for v in (width, height)):
        raise ValueError(f"width and height must be ints in [{MIN_SIZE}, {MAX_SIZE}], got {width}x{height}")
    key = "\x1f".join((prompt, image_type, style, f"{width}x{height}")).encode("utf-8", "surrogatepass")
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))  # never the global RNG
    slug = style.strip().lower()
    pal, looks = _style_look(slug)
    text = " ".join("".join(c if c.isprintable() else " " for c in prompt).split())

    # Lay out the caption band first so the picture gets the remaining height; tiny images skip it.
    fs = max(10, min(56, round(min(width, height) / 30)))
    pad, line_h = fs * 0.5, fs * 1.25
    max_lines = min(3, int((height * 0.35 - 2 * pad) // line_h))
    font = ImageFont.load_default(size=fs)
    show = min(width, height) >= 96 and max_lines > 0
    lines = _wrap(text, font, width - 2 * pad, max_lines) if show else []
    w, h = width, height - (round(len(lines) * line_h + 2 * pad) if lines else 0)

    art = _gradient(w, h, pal.sky, pal.horizon)
    outline = (pal.subject, max(1, round(min(w, h) / 220))) if "ink" in looks else (None, 1)
    outline = ((20, 16, 14), max(2, round(min(w, h) / 110))) if "bold" in looks else outline
    pen = _pen(art, pal, *outline)
    if image_type in ("scene", "location"):
        _landscape(pen, rng, w, h, castle=image_type == "location")
    elif image_type == "portrait":
        _portrait(pen, rng, w, h, art)
    elif image_type == "item":
        _item(pen, rng, w, h, text)
    else:
        {"character": _character, "creature": _creature, "map": _map}[image_type](pen, rng, w, h)
    art = _treat(art, rng, pal, looks)

    img = Image.new("RGB", (width, height), _mix(pal.subject, _BLACK, 0.45))
    img.paste(art, (0, 0))
    d = ImageDraw.Draw(img, "RGBA")
    if lines:
        d.line([(0, h), (width, h)], fill=pal.accent, width=max(1, round(fs / 10)))
        for i, line in enumerate(lines):
            d.text((pad, h + pad + i * line_h), line, font=font, fill=_mix(pal.horizon, _WHITE, 0.65))
    lfs = max(8, round(fs * 0.6))
    label, lfont = f"{image_type} · {slug}" if slug else image_type, ImageFont.load_default(size=lfs)
    lw, lp = lfont.getlength(label), lfs * 0.4
    if min(width, height) >= 96 and lw + 3 * lp <= width * 0.9:  # corner label only when it fits
        d.rectangle((lp, lp, lp * 3 + lw, lp * 3 + lfs * 1.1), fill=_BLACK + (120,))
        d.text((lp * 2, lp * 2), label, font=lfont, fill=_WHITE)

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)  # fixed options, no text chunks
    return buf.getvalue()


class OfflineRenderer:
    """render_png behind the ImageProvider port; rendering runs in a worker thread
    so the event loop keeps serving other calls meanwhile. The output format is the
    plan's metadata "output_format" or the configured default, like the OpenAI
    provider's, so either can stand in for the other in a provider chain."""

    name = "offline"
    model = "offline-renderer-1"

    def __init__(self, output_format: str = "png") -> None:
        self._output_format = output_format

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return output_mime_type(plan, self._output_format)

    async def render(self, plan: ImageGenerationPlan) -> RenderedImage:
        width, height = parse_size(plan.size)
        image_format = output_format(plan, self._output_format)
        data = await asyncio.to_thread(
            _render,
            image_format,
            prompt=plan.enhanced_prompt,
            image_type=image_type_name(plan.image_type),
            style=plan.style,
            width=width,
            height=height,
        )
        return RenderedImage(data, MIME_TYPES[image_format], width, height, model=self.model)


def _render(image_format: str, **arguments) -> bytes:
    png = render_png(**arguments)
    if image_format == "png":
        return png
    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.save(out, format=image_format.upper(), quality=90)  # fixed options: same bytes each time
    return out.getvalue()
