"""The plan kept beside each stored image, so a listed image reads like an executed one.

S3 user metadata holds at most 2 KiB, and a plan's enhanced_prompt alone may be 4000
characters, so the plan is a small object of its own: "{image key}.plan.json", the
accepted plan (provenance cleared) in proto3 JSON (imagegen.json_mapping). It is written
through the same ObjectStore port, with the same conditional create, before the image:
plan_id is the plan's content fingerprint, so every writer of one key writes the same
plan and a sidecar already there is as good as ours. Nothing read back is trusted: a
sidecar over MAX_PLAN_SIDECAR_BYTES, not JSON, not a valid plan, or a plan that is not
the one its image's key names is ignored (the caller falls back to the plan's identity).
"""

from __future__ import annotations

import json
import logging

from executor_service.keys import plan_sidecar_key
from executor_service.ports import AlreadyStored, ObjectStore, StoredObject
from imagegen.catalogue import MAX_PLAN_SIDECAR_BYTES
from imagegen.errors import InvalidRequest, NotFound
from imagegen.fingerprint import plan_fingerprint
from imagegen.json_mapping import plan_from_dict, plan_to_json
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

log = logging.getLogger(__name__)

PLAN_SIDECAR_MEDIA_TYPE = "application/json"
_READ_CHUNK_BYTES = 64 * 1024


async def write_plan_sidecar(store: ObjectStore, key: str, plan: ImageGenerationPlan) -> None:
    """Keep plan (accepted: fingerprinted, provenance cleared) beside the image at key.
    Idempotent: a sidecar already there was written from the same plan_id."""
    data = plan_to_json(plan).encode("utf-8")
    try:
        await store.put(plan_sidecar_key(key), data, PLAN_SIDECAR_MEDIA_TYPE, {"plan-id": plan.plan_id})
    except AlreadyStored:
        pass


async def read_plan_sidecar(store: ObjectStore, stored: StoredObject, identity: ImageGenerationPlan) -> ImageGenerationPlan | None:
    """The plan kept beside the stored image, or None when there is none or it is not
    the plan identity (plan_id, session_id, image_type from the image's key) names.
    Reads at most MAX_PLAN_SIDECAR_BYTES; StorageUnavailable when the store fails."""
    key = plan_sidecar_key(stored.key)
    try:
        reader = await store.open(key, _READ_CHUNK_BYTES)
    except NotFound:
        return None  # stored before plans were kept, or its plan was removed since
    data = bytearray()
    try:
        if reader.stored.size > MAX_PLAN_SIDECAR_BYTES:
            log.warning("%s is larger than any plan the executor writes; not read", key)
            return None
        async for chunk in reader.chunks:
            data += chunk
            if len(data) > MAX_PLAN_SIDECAR_BYTES:
                log.warning("%s is larger than any plan the executor writes; not read", key)
                return None
    finally:
        await reader.aclose()
    try:
        plan = plan_from_dict(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError, InvalidRequest):
        log.warning("%s is not a plan the executor wrote; not used", key)
        return None
    if (
        plan.plan_id != identity.plan_id
        or plan_fingerprint(plan) != identity.plan_id
        or plan.session_id != identity.session_id
        or plan.image_type != identity.image_type
    ):
        log.warning("%s is not the plan of its image; not used", key)
        return None
    plan.ClearField("provenance")
    return plan
