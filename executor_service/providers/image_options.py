"""What an image provider may be asked for: output formats, quality and
moderation levels, and which sizes each GPT image model family accepts.

Pure rules, no SDK: config.py checks settings with them at start, and the
providers check each plan with them before any request is made.

Sizes (OpenAI's images API reference, 2026): the gpt-image-2 family
(gpt-image-2, its snapshots, gpt-image-2.5-*, gpt-image-2.6-*) takes any
WIDTHxHEIGHT with both sides multiples of 16, the long side at most 3840 and
at most 3 times the short side, and 655,360 to 8,294,400 pixels in all. The
older GPT image models (gpt-image-1-mini, gpt-image-1.5, chatgpt-image-latest)
and any model this module does not know take only 1024x1024, 1536x1024 and
1024x1536. dall-e-2, dall-e-3 and gpt-image-1 are retired.
"""

from __future__ import annotations

from imagegen.catalogue import MIME_TYPES
from imagegen.errors import FieldViolation, InvalidRequest, map_entry
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

QUALITIES = ("auto", "low", "medium", "high", "xhigh", "max")
MODERATION_LEVELS = ("auto", "low")
RETIRED_MODELS = frozenset({"dall-e-2", "dall-e-3", "gpt-image-1"})
DEFAULT_MODEL = "gpt-image-2"

FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536")
_FLEXIBLE_FAMILY = "gpt-image-2"
_SIDE_MULTIPLE = 16
_MAX_EDGE = 3840
_MAX_RATIO = 3
_MIN_PIXELS, _MAX_PIXELS = 655_360, 8_294_400

# Plan metadata keys that choose rendering options (part of the plan's fingerprint).
OUTPUT_FORMAT_KEY = "output_format"
QUALITY_KEY = "quality"
MODERATION_KEY = "moderation"


def size_problem(model: str, width: int, height: int) -> str:
    """Why model cannot render width x height, or "" when it can."""
    if not model.startswith(_FLEXIBLE_FAMILY):
        if f"{width}x{height}" in FIXED_SIZES:
            return ""
        return f"{model} renders only {', '.join(FIXED_SIZES)}"
    long, short = max(width, height), min(width, height)
    if width % _SIDE_MULTIPLE or height % _SIDE_MULTIPLE:
        return f"{model} needs both sides in multiples of {_SIDE_MULTIPLE} pixels"
    if long > _MAX_EDGE:
        return f"{model} renders at most {_MAX_EDGE} pixels per side"
    if long > _MAX_RATIO * short:
        return f"{model} renders aspect ratios up to {_MAX_RATIO}:1"
    if not _MIN_PIXELS <= width * height <= _MAX_PIXELS:
        return f"{model} renders {_MIN_PIXELS:,} to {_MAX_PIXELS:,} pixels in all"
    return ""


def plan_option(plan: ImageGenerationPlan, key: str, default: str, allowed: object) -> str:
    """plan.metadata[key] if set, else default; InvalidRequest unless it is allowed."""
    value = plan.metadata.get(key, default)
    if value not in allowed:  # type: ignore[operator]
        raise InvalidRequest(
            [FieldViolation(map_entry("plan.metadata", key), f"must be one of {', '.join(allowed)}")]  # type: ignore[call-overload]
        )
    return value


def output_format(plan: ImageGenerationPlan, default: str) -> str:
    return plan_option(plan, OUTPUT_FORMAT_KEY, default, MIME_TYPES)


def output_mime_type(plan: ImageGenerationPlan, default_format: str) -> str:
    """The media type of the plan's image: metadata "output_format" or the configured default."""
    return MIME_TYPES[output_format(plan, default_format)]
