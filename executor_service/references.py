"""A plan's reference images (and mask): checked against the store, read, and recorded.

Each reference must be an image this executor stored, in the plan's session, no larger
than catalogue.MAX_REFERENCE_IMAGE_BYTES and holding the bytes the plan names
(content_sha256). Every problem is a field violation naming the reference by its
index in the plan (plan.reference_images[1].storage_path), all of them in one
InvalidRequest, raised before the provider is asked anything.

What a render used is written beside its image in the store's user metadata, compactly,
because S3 allows 2 KiB of it per object (AWS S3 user guide, "Working with object
metadata"; MinIO enforces it too): "references" is one entry per reference,
separated by spaces, each "role:sha256:key-in-session", and "mask" is "sha256:key-in-session".
A reference lies in the plan's session and so in the image's, so the session's folder is
left out of each key. At MAX_REFERENCE_IMAGES references and a mask that is about
1.1 KB; the rest of the executor's metadata is about 250 bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from executor_service.ports import ObjectStore, ReferenceInput, RenderInputs, StoredObject
from imagegen.catalogue import (
    IMAGE_CHUNK_BYTES,
    MAX_REFERENCE_IMAGE_BYTES,
    MAX_REFERENCE_IMAGES,
    REFERENCE_ROLES,
    reference_role_name,
    reference_role_value,
)
from imagegen.errors import FieldViolation, InvalidRequest, NotFound
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ReferenceImage

REFERENCES_KEY = "references"
MASK_KEY = "mask"
MASK_ROLE = "mask"  # ReferenceInput.role of a mask

# "bucket/key" -> key (executor.key_from_storage_path: InvalidRequest, NotFound), and key -> "bucket/key".
KeyOf = Callable[[str, str], str]
StoragePathOf = Callable[[str], str]

# (field prefix, the reference, its ReferenceInput role) for each reference and the mask.
_Named = tuple[str, ReferenceImage, str]


def _named(plan: ImageGenerationPlan) -> list[_Named]:
    named = [
        (f"plan.reference_images[{index}]", ref, reference_role_name(ref.role))
        for index, ref in enumerate(plan.reference_images)
    ]
    if plan.HasField("mask"):
        named.append(("plan.mask", plan.mask, MASK_ROLE))
    return named


def shape_inputs(plan: ImageGenerationPlan) -> RenderInputs:
    """The plan's render inputs without their bytes: enough to check a provider's
    capabilities (how many references, a mask) before anything is read."""
    named = _named(plan)
    refs = tuple(ReferenceInput(role, ref.storage_path, b"", "") for _, ref, role in named if role != MASK_ROLE)
    mask = next((ReferenceInput(role, ref.storage_path, b"", "") for _, ref, role in named if role == MASK_ROLE), None)
    return RenderInputs(references=refs, mask=mask)


async def stored_references(
    plan: ImageGenerationPlan, store: ObjectStore, key_of: KeyOf
) -> dict[str, StoredObject]:
    """The stored object behind each of plan's references and its mask, by field prefix;
    InvalidRequest naming every reference that is not an image this executor stored in the
    plan's session, is too large, or holds other bytes than its content_sha256.
    key_of is executor.key_from_storage_path (InvalidRequest, NotFound)."""
    found: dict[str, StoredObject] = {}
    violations: list[FieldViolation] = []
    for field, ref, _ in _named(plan):
        try:
            key = key_of(ref.storage_path, store.bucket)
            stored = await store.stat(key) if key.startswith(f"{plan.session_id}/") else None
        except InvalidRequest as bad:
            violations += [FieldViolation(f"{field}.{v.field}", v.description) for v in bad.violations]
            continue
        except NotFound:
            stored = None
        if stored is None:
            violations.append(FieldViolation(
                f"{field}.storage_path", "is not an image this executor stored in the plan's session"
            ))
        elif stored.size > MAX_REFERENCE_IMAGE_BYTES:
            violations.append(FieldViolation(
                f"{field}.storage_path", f"is {stored.size} bytes; a reference may be at most {MAX_REFERENCE_IMAGE_BYTES}"
            ))
        elif stored.metadata.get("sha256") != ref.content_sha256:
            violations.append(FieldViolation(
                f"{field}.content_sha256", "does not match the image stored at storage_path"
            ))
        else:
            found[field] = stored
    if violations:
        raise InvalidRequest(violations, plan=plan)
    return found


async def read_inputs(
    plan: ImageGenerationPlan, store: ObjectStore, stored: Mapping[str, StoredObject]
) -> RenderInputs:
    """The plan's references and mask with their bytes, read from the store (each at most
    MAX_REFERENCE_IMAGE_BYTES, and checked against its content_sha256 again as read)."""
    refs: list[ReferenceInput] = []
    mask: ReferenceInput | None = None
    for field, ref, role in _named(plan):
        found = stored[field]
        data = await _read(store, found, field, plan)
        if hashlib.sha256(data).hexdigest() != ref.content_sha256:
            raise InvalidRequest(
                [FieldViolation(f"{field}.content_sha256", "does not match the image stored at storage_path")],
                plan=plan,
            )
        item = ReferenceInput(role, ref.storage_path, data, found.content_type)
        if role == MASK_ROLE:
            mask = item
        else:
            refs.append(item)
    return RenderInputs(references=tuple(refs), mask=mask)


async def _read(store: ObjectStore, stored: StoredObject, field: str, plan: ImageGenerationPlan) -> bytes:
    try:
        reader = await store.open(stored.key, IMAGE_CHUNK_BYTES)
    except NotFound:
        raise InvalidRequest(
            [FieldViolation(f"{field}.storage_path", "is not an image this executor stored in the plan's session")],
            plan=plan,
        ) from None
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in reader.chunks:
            size += len(chunk)
            if size > MAX_REFERENCE_IMAGE_BYTES:
                raise InvalidRequest(
                    [FieldViolation(f"{field}.storage_path", f"is more than {MAX_REFERENCE_IMAGE_BYTES} bytes")],
                    plan=plan,
                )
            parts.append(chunk)
    finally:
        await reader.aclose()
    return b"".join(parts)


def reference_metadata(plan: ImageGenerationPlan) -> dict[str, str]:
    """The user metadata that records plan's references and mask (none: no entries)."""
    metadata: dict[str, str] = {}
    prefix = f"{plan.session_id}/"
    if plan.reference_images:
        metadata[REFERENCES_KEY] = " ".join(
            f"{reference_role_name(ref.role)}:{ref.content_sha256}:{_key(ref.storage_path).removeprefix(prefix)}"
            for ref in plan.reference_images
        )
    if plan.HasField("mask"):
        metadata[MASK_KEY] = f"{plan.mask.content_sha256}:{_key(plan.mask.storage_path).removeprefix(prefix)}"
    return metadata


def recorded_references(
    metadata: Mapping[str, str], key: str, storage_path: StoragePathOf
) -> list[ReferenceImage]:
    """The references an image stored under key was rendered with, from its metadata;
    an entry that does not read as one the executor wrote is left out, and at most
    MAX_REFERENCE_IMAGES are read."""
    session = key.partition("/")[0]
    refs: list[ReferenceImage] = []
    for entry in metadata.get(REFERENCES_KEY, "").split()[:MAX_REFERENCE_IMAGES]:
        role, _, rest = entry.partition(":")
        sha256, _, relative = rest.partition(":")
        if role not in REFERENCE_ROLES or len(sha256) != 64 or not relative:
            continue
        refs.append(ReferenceImage(
            storage_path=storage_path(f"{session}/{relative}"),
            content_sha256=sha256,
            role=reference_role_value(role),
        ))
    return refs


def _key(storage_path: str) -> str:
    return storage_path.partition("/")[2]
