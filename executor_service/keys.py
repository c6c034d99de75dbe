"""The object keys the executor writes, and the storage paths callers name them by.

{session_id}/{image_type}/{plan_id}.{ext}: the same plan always maps to the same key, so
a stored image is found again without a render; its plan is kept at that key plus
".plan.json". Pure."""

from __future__ import annotations

import re

from imagegen.catalogue import EXTENSIONS, IMAGE_TYPE_NAMES, MAX_STORAGE_PATH_CHARS, SESSION_ID_PATTERN, image_type_name
from imagegen.errors import FieldViolation, InvalidRequest, NotFound
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

# The only keys the executor ever writes; GetImage, SignImageUrl and the
# lifecycle calls reach nothing else.
STORED_KEY = re.compile(
    rf"{SESSION_ID_PATTERN}/(?:{'|'.join(IMAGE_TYPE_NAMES)})/[0-9a-f]{{32}}"
    rf"\.(?:{'|'.join(EXTENSIONS.values())})"
)

# Beside each image, the plan it was rendered from: "{image key}.plan.json" (proto3 JSON).
# Never an image: STORED_KEY does not match it, so GetImage and SignImageUrl never serve
# it and listings never count it.
PLAN_SIDECAR_SUFFIX = ".plan.json"
PLAN_SIDECAR_KEY = re.compile(rf"(?:{STORED_KEY.pattern}){re.escape(PLAN_SIDECAR_SUFFIX)}")


def plan_sidecar_key(key: str) -> str:
    """Where the plan of the image stored under key is kept."""
    return key + PLAN_SIDECAR_SUFFIX


def object_key(plan: ImageGenerationPlan, mime_type: str) -> str:
    """{session_id}/{image_type}/{plan_id}.{ext}; session_id is validated as a
    safe path segment before this is called."""
    return f"{plan.session_id}/{image_type_name(plan.image_type)}/{plan.plan_id}.{EXTENSIONS[mime_type]}"


def key_from_storage_path(storage_path: str, bucket: str) -> str:
    """The object key in "bucket/key". InvalidRequest when the path is malformed
    (empty, "." or ".." segments, backslashes, control characters); NotFound when
    it names another bucket or a key the executor never writes."""
    bucket_name, _, key = storage_path.partition("/")
    if not storage_path:
        problem = "is required"
    elif len(storage_path) > MAX_STORAGE_PATH_CHARS:
        problem = f"must be at most {MAX_STORAGE_PATH_CHARS} characters"
    elif (
        not bucket_name
        or any(segment in ("", ".", "..") for segment in key.split("/"))
        or "\\" in key
        or not key.isprintable()
    ):
        problem = 'must be "bucket/key" as in a result\'s storage_path'
    else:
        problem = ""
    if problem:
        raise InvalidRequest([FieldViolation("storage_path", problem)])
    if bucket_name != bucket or not STORED_KEY.fullmatch(key):
        raise NotFound(f"no image is stored at {storage_path}")
    return key
