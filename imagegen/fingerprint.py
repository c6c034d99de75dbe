"""Content fingerprints: one canonical JSON digest, and the plan_id made with it.

canonical_digest is the project's one way to hash structured data (the plan_id here,
the planner's request key for its plan cache), so two digests of equal data never
differ by key order, spacing or escaping.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType, ReferenceRole

# Enum names once: ImageType.values() builds a new list on every call.
_ENUM_NAMES = {number: ImageType.Name(number) for number in ImageType.values()}
_ROLE_NAMES = {number: ReferenceRole.Name(number) for number in ReferenceRole.values()}


def canonical_digest(data: Any) -> str:
    """64 hex digits of SHA-256 over data as canonical JSON (sorted keys, no spaces,
    UTF-8 rather than \\u escapes). data must be JSON-serialisable."""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def plan_fingerprint(plan: ImageGenerationPlan) -> str:
    """The plan_id: 32 hex digits of SHA-256 over the fields that decide the image.

    session_id (where the image is filed) and provenance (how the plan was
    made) are left out; metadata is sorted, so map order never matters. Reference
    images count by content (each one's content_sha256 and role, in plan order, and
    the mask's content_sha256), not by where they are stored: a changed portrait makes
    a new plan_id, a copy of the same bytes elsewhere does not. A plan without
    references or mask digests exactly as before they existed, so images already
    stored keep their plan_id.
    """
    decided: dict[str, Any] = {
        "v": 1,
        "enhanced_prompt": plan.enhanced_prompt,
        "image_type": _ENUM_NAMES.get(plan.image_type, plan.image_type),
        "style": plan.style,
        "size": plan.size,
        "metadata": dict(plan.metadata),
    }
    if plan.reference_images:
        decided["reference_images"] = [
            {"sha256": ref.content_sha256, "role": _ROLE_NAMES.get(ref.role, ref.role)}
            for ref in plan.reference_images
        ]
    if plan.HasField("mask"):
        decided["mask"] = {"sha256": plan.mask.content_sha256}
    return canonical_digest(decided)[:32]


def with_fingerprint(plan: ImageGenerationPlan) -> ImageGenerationPlan:
    """A copy of the plan with plan_id set to its fingerprint."""
    stamped = ImageGenerationPlan()
    stamped.CopyFrom(plan)
    stamped.plan_id = plan_fingerprint(plan)
    return stamped
