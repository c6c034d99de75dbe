"""The catalogue: every image type, style, output format, planning mode and limit, once.

Everything else reads them from here: both planners, the renderer, the LLM's schema,
validation, the settings, the CLI's choices, the clients and the docs tables (a test
checks the docs against this module). Adding a style here gives the offline planner its
words, the renderer its look and the LLM schema its enum value; adding an image type
needs its enum value in protos/imagegen/v1/image_plan.proto first.

Pure data and a few lookups: no I/O, no transport, nothing runs at import time beyond
building these constants.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from imagegen.v1.image_plan_pb2 import ImageType, ReferenceRole
from imagegen.v1.planner_service_pb2 import PlanningMode

# -- Image types --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTypeSpec:
    """One kind of picture.

    name: the short name ("portrait"), also the storage folder in
      {session_id}/{name}/{plan_id}.{ext};
    value: its imagegen.v1.ImageType number;
    default_size: "WIDTHxHEIGHT" when a request names none (sizes every image model takes:
      landscape for wide views, portrait orientation for standing figures, square for
      everything centred);
    summary: one line the LLM is given to choose the type;
    framing: the sentence the offline planner writes for it.
    """

    name: str
    value: int
    default_size: str
    summary: str
    framing: str


IMAGE_TYPES: Mapping[str, ImageTypeSpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        ImageTypeSpec(
            "scene", ImageType.IMAGE_TYPE_SCENE, "1536x1024", "action or several characters in a place",
            "Wide establishing shot of a fantasy scene, clear foreground, midground and background "
            "depth, the action readable at a glance, characters in dynamic, legible poses",
        ),
        ImageTypeSpec(
            "character", ImageType.IMAGE_TYPE_CHARACTER, "1024x1536", "one full-body figure",
            "Full-body character illustration, the whole figure in frame from head to feet, "
            "readable silhouette, clothing, armor and gear clearly visible, unobtrusive background",
        ),
        ImageTypeSpec(
            "portrait", ImageType.IMAGE_TYPE_PORTRAIT, "1024x1024", "head and shoulders of one figure",
            "Head-and-shoulders portrait, face in sharp focus with a clear, characterful "
            "expression, eyes toward the viewer, neutral uncluttered background",
        ),
        ImageTypeSpec(
            "item", ImageType.IMAGE_TYPE_ITEM, "1024x1024", "one object on its own",
            "A single object centred on a plain neutral ground, studio lighting, crisp detail on "
            "materials and craftsmanship, no hands, no people, nothing else in frame",
        ),
        ImageTypeSpec(
            "creature", ImageType.IMAGE_TYPE_CREATURE, "1024x1024", "one monster or beast, whole",
            "Full view of the creature from head to tail, anatomy clearly readable, a strong "
            "sense of its size and scale, characteristic stance",
        ),
        ImageTypeSpec(
            "location", ImageType.IMAGE_TYPE_LOCATION, "1536x1024", "a place with no prominent characters",
            "Environment art of a fantasy location, no prominent characters, strong sense of "
            "scale and atmosphere, inviting exploration",
        ),
        ImageTypeSpec(
            "map", ImageType.IMAGE_TYPE_MAP, "1024x1024", "a top-down map",
            "Top-down fantasy map, orthographic view with no perspective, readable terrain and clear "
            "boundaries, labels-free or minimal labels, legend-like clarity, usable at the gaming table",
        ),
    )
})
IMAGE_TYPE_NAMES: tuple[str, ...] = tuple(IMAGE_TYPES)

_BY_VALUE: Mapping[int, ImageTypeSpec] = MappingProxyType({spec.value: spec for spec in IMAGE_TYPES.values()})
_BY_NAME: Mapping[str, ImageTypeSpec] = MappingProxyType({
    **IMAGE_TYPES,
    **{ImageType.Name(spec.value).lower(): spec for spec in IMAGE_TYPES.values()},
})


def image_type_name(image_type: int) -> str:
    """The short name of a valid image type: IMAGE_TYPE_PORTRAIT -> "portrait"; KeyError otherwise."""
    return _BY_VALUE[image_type].name


def image_type_from_name(name: str) -> int:
    """IMAGE_TYPE_PORTRAIT, "portrait" or "Portrait" -> the enum number; ValueError if unknown."""
    try:
        return _BY_NAME[name.strip().lower()].value
    except KeyError:
        raise ValueError(f"unknown image type {name!r}; expected one of {', '.join(IMAGE_TYPE_NAMES)}") from None


def image_type_spec(image_type: int | str) -> ImageTypeSpec:
    """The catalogue entry for an enum number or a short name; KeyError if unknown."""
    return _BY_VALUE[image_type] if isinstance(image_type, int) else IMAGE_TYPES[image_type]


# -- Styles -------------------------------------------------------------------------------

# The renderer's texture treatments a style may ask for.
TEXTURES = frozenset({"strokes", "ink", "wash", "pixel", "vignette", "letterbox", "bold"})


@dataclass(frozen=True)
class Style:
    """A style preset: the planner's words and the offline renderer's look together.

    words: what the planners write into the prompt ("Style: {words}.");
    palette: six "rrggbb" colours the renderer paints with, in the order
      sky, horizon, far, near, subject, accent;
    textures: the renderer's treatments (TEXTURES) laid over the picture.
    """

    name: str
    words: str
    palette: tuple[str, str, str, str, str, str]
    textures: frozenset[str]


STYLES: Mapping[str, Style] = MappingProxyType({
    style.name: style
    for style in (
        Style(
            "painterly",
            "painterly digital fantasy illustration, visible confident brushwork, rich harmonious "
            "color, soft dramatic lighting",
            ("587cb2", "f0c896", "809276", "4a623e", "3a2c28", "dea440"), frozenset({"strokes"}),
        ),
        Style(
            "ink-sketch",
            "black ink sketch with fine cross-hatching, loose confident linework, monochrome on "
            "off-white paper",
            ("e2ded2", "f8f6ee", "c8c4ba", "a8a49a", "1e1e22", "6e6e76"), frozenset({"ink"}),
        ),
        Style(
            "watercolor",
            "watercolor painting, soft translucent washes with bleeding edges, textured cold-press "
            "paper, gentle natural light",
            ("8cb8da", "fae4d0", "acccac", "76a88c", "4e587c", "e47478"), frozenset({"wash"}),
        ),
        Style(
            "dark-fantasy",
            "dark fantasy art, muted desaturated palette, deep shadows, grim gothic atmosphere, "
            "gritty texture",
            ("100c1e", "602432", "2e223c", "1a1420", "0a080c", "d2283c"), frozenset({"vignette"}),
        ),
        Style(
            "cinematic",
            "cinematic film still, realistic detail, dramatic volumetric lighting, shallow depth of "
            "field, moody color grade",
            ("0e2e46", "fc9646", "2a485c", "142430", "0c141c", "ffbe5a"), frozenset({"vignette", "letterbox"}),
        ),
        Style(
            "pixel-art",
            "16-bit pixel art, crisp hard-edged pixels, limited retro palette, no anti-aliasing",
            ("465ec8", "8cc8ff", "3ca05a", "286e3c", "322850", "ffd23c"), frozenset({"pixel"}),
        ),
        Style(
            "heroic",
            "classic tabletop RPG rulebook art, heroic poses, bold clean inked lines, vivid saturated "
            "color, richly detailed fantasy illustration",
            ("285abe", "ffdc8c", "6e965a", "3c6e32", "781e1e", "fac828"), frozenset({"bold"}),
        ),
        Style(
            "parchment-map",
            "hand-drawn fantasy cartography on aged parchment, sepia ink linework, subtle "
            "watercolor tint, decorative compass rose",
            ("d8c49a", "f2e4c0", "b89c6c", "8c7048", "4a3420", "a0522d"), frozenset({"ink", "wash"}),
        ),
    )
})
DEFAULT_STYLE = "painterly"

# -- Output formats -----------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """An image file format a provider may be asked for: its media type and file extension."""

    name: str
    mime_type: str
    extension: str


OUTPUT_FORMATS: Mapping[str, OutputFormat] = MappingProxyType({
    f.name: f
    for f in (
        OutputFormat("png", "image/png", "png"),
        OutputFormat("jpeg", "image/jpeg", "jpg"),
        OutputFormat("webp", "image/webp", "webp"),
    )
})
DEFAULT_OUTPUT_FORMAT = "png"
MIME_TYPES: Mapping[str, str] = MappingProxyType({f.name: f.mime_type for f in OUTPUT_FORMATS.values()})
EXTENSIONS: Mapping[str, str] = MappingProxyType({f.mime_type: f.extension for f in OUTPUT_FORMATS.values()})

# -- Provider capabilities ----------------------------------------------------------------

MAX_REFERENCE_IMAGES = 8  # reference images one plan may name, whatever the provider
# The largest stored image a plan may reference (or use as its mask): the executor reads
# each one whole into memory to send it, so MAX_REFERENCE_IMAGES of them stay bounded.
# Below OpenAI's 50 MB per input image (API reference, "Create image edit").
MAX_REFERENCE_IMAGE_BYTES = 16 * 1024 * 1024

# What a render takes from a reference image (ReferenceRole, without its prefix):
# subject: keep who or what it shows; style: follow its look; edit: the image to change.
REFERENCE_ROLES: tuple[str, ...] = ("subject", "style", "edit")


def reference_role_value(role: str) -> int:
    """"subject", "style" or "edit" (any case, REFERENCE_ROLE_ prefix allowed) -> the enum number."""
    name = role.strip().lower().removeprefix("reference_role_")
    if name not in REFERENCE_ROLES:
        raise ValueError(f"role={role!r}: expected one of {', '.join(REFERENCE_ROLES)}")
    return ReferenceRole.Value(f"REFERENCE_ROLE_{name.upper()}")


def reference_role_name(value: int) -> str:
    """The enum number -> "subject", "style" or "edit"; "" for UNSPECIFIED or an unknown number."""
    if value not in ReferenceRole.values() or value == ReferenceRole.REFERENCE_ROLE_UNSPECIFIED:
        return ""
    return ReferenceRole.Name(value).removeprefix("REFERENCE_ROLE_").lower()


@dataclass(frozen=True)
class ProviderCapabilities:
    """What an image provider (one of its models) can render, declared up front so a plan
    it cannot render is refused before any call, and a provider chain skips to one that can.

    max_reference_images: how many reference images a render may use (0: none);
    masks: whether an edit may be limited to a mask;
    seeds: whether a render takes a seed (so an image can be rendered again alike);
    previews: whether it reports partial images while it renders;
    output_formats: the OUTPUT_FORMATS names it can write;
    max_prompt_chars: the longest prompt it takes (None: any plan's, MAX_PROMPT_CHARS).
    """

    max_reference_images: int = 0
    masks: bool = False
    seeds: bool = False
    previews: bool = False
    output_formats: frozenset[str] = frozenset({"png"})
    max_prompt_chars: int | None = None
    # sizes: the only WIDTHxHEIGHT it renders (None: any the provider's own rules allow);
    # size_step: both sides must be multiples of it (a latent-space model's 8).
    sizes: frozenset[str] | None = None
    size_step: int = 1


# A plan's seed: plan metadata "seed", a decimal integer from 0 to MAX_SEED (the widest
# every seeded provider takes: Imagen and Gemini read it as a signed 32-bit integer).
SEED_KEY = "seed"
MAX_SEED = 2**31 - 1
# Gemini image models and Imagen render these sizes only (their aspect ratios at about
# one megapixel; ai.google.dev/gemini-api/docs/image-generation, .../docs/imagen).
GEMINI_SIZES = frozenset({
    "1024x1024", "832x1248", "1248x832", "864x1184", "1184x864",
    "896x1152", "1152x896", "768x1344", "1344x768", "1536x672",
})
IMAGEN_SIZES = frozenset({"1024x1024", "896x1280", "1280x896", "768x1408", "1408x768"})
# The Imagen aspect ratio of each size (GenerateImagesConfig.aspect_ratio).
IMAGEN_ASPECT_RATIOS: Mapping[str, str] = MappingProxyType({
    "1024x1024": "1:1", "896x1280": "3:4", "1280x896": "4:3", "768x1408": "9:16", "1408x768": "16:9",
})
GEMINI_ASPECT_RATIOS: Mapping[str, str] = MappingProxyType({
    "1024x1024": "1:1", "832x1248": "2:3", "1248x832": "3:2", "864x1184": "3:4", "1184x864": "4:3",
    "896x1152": "4:5", "1152x896": "5:4", "768x1344": "9:16", "1344x768": "16:9", "1536x672": "21:9",
})


@dataclass(frozen=True)
class ProviderModel:
    """One row of PROVIDER_MODELS: what provider renders with the models whose names
    start with model_prefix ("" matches any), and a word on where that comes from."""

    provider: str
    model_prefix: str
    capabilities: ProviderCapabilities
    notes: str


_ALL_FORMATS = frozenset({"png", "jpeg", "webp"})
# Every image provider and model family, first match wins (provider_capabilities).
PROVIDER_MODELS: tuple[ProviderModel, ...] = (
    ProviderModel("offline", "", ProviderCapabilities(
        max_reference_images=MAX_REFERENCE_IMAGES, previews=True, output_formats=_ALL_FORMATS),
                  "the built-in Pillow renderer; any size; draws from every reference, applies no mask; "
                  "one preview, drawn small"),
    # The images API's edit endpoint takes up to 16 input images and a PNG mask
    # (platform.openai.com/docs/api-reference/images/createEdit); a plan names fewer. With
    # stream=True a generation sends partial images first (image_generation.partial_image).
    ProviderModel("openai", "gpt-image-", ProviderCapabilities(
        max_reference_images=min(16, MAX_REFERENCE_IMAGES), masks=True, previews=True, output_formats=_ALL_FORMATS),
                  "GPT image models; sizes by model family (docs/executor.md); references through images.edit; "
                  "previews from a streamed generation"),
    ProviderModel("openai", "", ProviderCapabilities(output_formats=_ALL_FORMATS),
                  "other OpenAI image models: text to image"),
    ProviderModel("azure", "gpt-image-", ProviderCapabilities(
        max_reference_images=min(16, MAX_REFERENCE_IMAGES), masks=True, previews=True, output_formats=_ALL_FORMATS),
                  "GPT image models on an Azure OpenAI deployment; as openai"),
    ProviderModel("azure", "", ProviderCapabilities(output_formats=_ALL_FORMATS),
                  "other models on an Azure OpenAI deployment: text to image"),
    ProviderModel("comfyui", "", ProviderCapabilities(
        max_reference_images=MAX_REFERENCE_IMAGES, seeds=True, previews=True, size_step=8),
                  "at most the workflow's `{{reference_N}}` slots; sides in multiples of 8 (latents)"),
    ProviderModel("gemini", "gemini-", ProviderCapabilities(
        max_reference_images=3, seeds=True, sizes=GEMINI_SIZES),
                  "Gemini image models (generate_content); references as image parts"),
    ProviderModel("imagen", "imagen-", ProviderCapabilities(seeds=True, sizes=IMAGEN_SIZES),
                  "Imagen (generate_images); text to image"),
)


def provider_capabilities(provider: str, model: str) -> ProviderCapabilities:
    """The capabilities PROVIDER_MODELS declares for provider's model; a model of no
    listed family gets the provider's most cautious row (text to image, PNG)."""
    for row in PROVIDER_MODELS:
        if row.provider == provider and model.startswith(row.model_prefix):
            return row.capabilities
    return ProviderCapabilities()


# -- Planning modes -----------------------------------------------------------------------

# auto: the LLM when one is configured, else offline; llm; offline.
PLANNING_MODES: tuple[str, ...] = ("auto", "llm", "offline")
DEFAULT_PLANNING_MODE = "auto"


def planning_mode_value(mode: str) -> int:
    """"auto", "llm" or "offline" (any case, PLANNING_MODE_ prefix allowed) -> the enum number."""
    name = mode.strip().lower().removeprefix("planning_mode_")
    if name not in PLANNING_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {', '.join(PLANNING_MODES)}")
    return PlanningMode.Value(f"PLANNING_MODE_{name.upper()}")


def planning_mode_name(value: int) -> str | None:
    """The enum number -> "auto", "llm" or "offline"; None for UNSPECIFIED; ValueError if unknown."""
    if value == PlanningMode.PLANNING_MODE_UNSPECIFIED:
        return None
    name = PlanningMode.Name(value).removeprefix("PLANNING_MODE_").lower() if value in PlanningMode.values() else ""
    if name not in PLANNING_MODES:
        raise ValueError(f"unknown planning mode {value}")
    return name


# -- Limits -------------------------------------------------------------------------------
# Characters are Unicode code points (len() of the str), as protobuf counts string fields.

MAX_PROMPT_CHARS = 4000  # a request's prompt and a plan's enhanced_prompt
MIN_SIDE, MAX_SIDE = 64, 4096  # pixels per side of any size
MAX_MAP_ENTRIES = 32  # context and metadata entries
MAX_MAP_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1024
MAX_CONTEXT_VALUE_CHARS = 500
MAX_REQUEST_ID_CHARS = 128
MAX_STORAGE_PATH_CHARS = 1024
MAX_STYLE_CHARS = 40
MAX_SESSION_ID_CHARS = 128

# A session id is also a safe storage folder name: no "/", no "." or ".." alone.
SESSION_ID_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_SESSION_ID_CHARS - 1}}}"
STYLE_PATTERN = rf"[a-z0-9][a-z0-9-]{{0,{MAX_STYLE_CHARS - 1}}}"
METADATA_KEY_PATTERN = rf"[a-z0-9_.-]{{1,{MAX_MAP_KEY_CHARS}}}"
CONTEXT_KEY_PATTERN = rf"[A-Za-z0-9_.-]{{1,{MAX_MAP_KEY_CHARS}}}"
SESSION_ID = re.compile(SESSION_ID_PATTERN)

# Presigned URLs live 1 second to 7 days (SigV4's limit, AWS S3 API reference:
# "Authenticating Requests: Using Query Parameters").
MIN_URL_EXPIRY = dt.timedelta(seconds=1)
MAX_URL_EXPIRY = dt.timedelta(days=7)
DEFAULT_URL_EXPIRY = dt.timedelta(hours=1)

# Executions (StartExecution and friends): "executions/{id}", id 32 lowercase hex digits;
# ListExecutions pages; previews are downsized to fit these before they go on the wire.
EXECUTION_ID_PATTERN = r"[0-9a-f]{32}"
EXECUTION_NAME = re.compile(rf"executions/({EXECUTION_ID_PATTERN})")
DEFAULT_EXECUTIONS_PAGE_SIZE = 50
MAX_EXECUTIONS_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_CHARS = 512
MAX_PREVIEW_SIDE = 256  # pixels, the long side
MAX_PREVIEW_BYTES = 64 * 1024
# An execution's progress_percent is recorded (and announced) only when it moved by at
# least this many whole percent, and 100 never while rendering: at most 100 // 5 - 1 = 19
# progress events per render, so a sampler's hundreds of steps do not flood the queue.
PROGRESS_STEP_PERCENT = 5

# The longest wait a peer's Retry-After (or retry-after-ms) is taken at: a longer one,
# an infinite one or a number too large for a float becomes this (the error's RetryInfo).
MAX_RETRY_AFTER = dt.timedelta(hours=1)

# ListImages pages (AIP-158): page_size 0 means the default, more than the maximum is refused.
DEFAULT_LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 100
# Newest first over an S3 listing (which is in key order) means reading a session's keys and
# sorting them: a listing reads the keys of at most this many images (and of the plans kept
# beside them, so twice as many keys); a session with more lists only these.
MAX_LISTED_SESSION_IMAGES = 10_000

# The executor keeps each image's plan beside it as proto3 JSON ({key}.plan.json). The
# largest valid plan's JSON: every string at its limit, each character escaped to its
# longest form (\uXXXX, 6 bytes), and room for the names, quotes and punctuation. A file
# larger than this is not one the executor wrote and is not read.
MAX_PLAN_SIDECAR_BYTES = 6 * (
    MAX_PROMPT_CHARS
    + MAX_STYLE_CHARS
    + MAX_SESSION_ID_CHARS
    + MAX_MAP_ENTRIES * (MAX_MAP_KEY_CHARS + MAX_METADATA_VALUE_CHARS)
    + (MAX_REFERENCE_IMAGES + 1) * (MAX_STORAGE_PATH_CHARS + 64)
) + 16 * 1024

# gRPC transport, the same on servers and client channels.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # both directions
IMAGE_CHUNK_BYTES = 1024 * 1024  # GetImage sends at most this much per message
# Servers accept keepalive pings without calls this often and no more (more often is
# answered with GOAWAY too_many_pings); clients ping every DEFAULT_KEEPALIVE_SECONDS.
MIN_PING_INTERVAL_SECONDS = 10
DEFAULT_KEEPALIVE_SECONDS = 30
