"""Reference images in the contract and the pure code around them: the fingerprint, the
shape rules, the offline planner's phrasing, the metadata written beside an image and the
offline renderer's use of them."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from executor_service.executor import _metadata
from executor_service.ports import RenderedImage, Usage
from executor_service.providers.offline_renderer import render_png
from executor_service.references import recorded_references, reference_metadata
from imagegen.catalogue import MAX_REFERENCE_IMAGES, provider_capabilities, STYLES, reference_role_name, reference_role_value
from imagegen.errors import InvalidRequest
from imagegen.fingerprint import plan_fingerprint
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType, ReferenceImage, ReferenceRole
from imagegen.v1.planner_service_pb2 import CreatePlanRequest
from imagegen.validation import plan_violations, validate_plan_request
from planner_service.coordination.in_process import InProcessPlans
from planner_service.offline_agent import OfflinePlanningAgent
from planner_service.plan_cache import PlanCache
from planner_service.offline_rules import plan_offline
from planner_service.planning import Planner
from planner_service.ports import PlanDraft, PlanRequest, Repair
from tests.support.plans import make_plan

SUBJECT = ReferenceRole.REFERENCE_ROLE_SUBJECT
STYLE = ReferenceRole.REFERENCE_ROLE_STYLE


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ref(key: str = "table-3/portrait/" + "a" * 32 + ".png", content: str = "thora", role: int = SUBJECT,
        bucket: str = "images") -> ReferenceImage:
    return ReferenceImage(storage_path=f"{bucket}/{key}", content_sha256=sha(content), role=role)


def test_a_plan_without_references_keeps_the_plan_id_it_had_before_references_existed() -> None:
    # Computed on main before reference images were added to the contract: images stored
    # then must still be found by the plans that made them.
    plan = ImageGenerationPlan(
        enhanced_prompt="Portrait of Thora, dwarf cleric", image_type=ImageType.IMAGE_TYPE_PORTRAIT,
        style="painterly", size="1024x1024", session_id="table-1", metadata={"quality": "low"},
    )
    assert plan_fingerprint(plan) == "9819988574afbc92ca75d645364d1170"


def test_a_reference_changes_the_plan_id_by_its_content_and_role_not_where_it_is_stored() -> None:
    plain = plan_fingerprint(make_plan())
    with_portrait = plan_fingerprint(make_plan(reference_images=[ref()]))
    assert with_portrait != plain
    # A changed portrait (other bytes) is another plan; so is another role or order.
    assert plan_fingerprint(make_plan(reference_images=[ref(content="thora, older")])) != with_portrait
    assert plan_fingerprint(make_plan(reference_images=[ref(role=STYLE)])) != with_portrait
    two = [ref(), ref(key="table-3/item/" + "b" * 32 + ".png", content="axe", role=STYLE)]
    assert plan_fingerprint(make_plan(reference_images=two)) != plan_fingerprint(make_plan(reference_images=two[::-1]))
    # The same bytes stored elsewhere (another key, another session's copy) are the same plan.
    moved = ref(key="table-3/character/" + "c" * 32 + ".png")
    assert plan_fingerprint(make_plan(reference_images=[moved])) == with_portrait
    assert plan_fingerprint(make_plan(reference_images=[ref()], session_id="table-9")) == with_portrait
    # A mask counts by its content too.
    masked = make_plan(reference_images=[ref()], mask=ReferenceImage(
        storage_path="images/table-3/item/" + "d" * 32 + ".png", content_sha256=sha("mask")))
    assert plan_fingerprint(masked) != with_portrait


def fields(plan: ImageGenerationPlan) -> dict[str, str]:
    return {v.field: v.description for v in plan_violations(plan)}


def test_the_shape_of_each_reference_is_checked_naming_its_index() -> None:
    assert fields(make_plan(reference_images=[ref()])) == {}
    bad = fields(make_plan(reference_images=[
        ref(),
        ref(key="table-9/portrait/" + "a" * 32 + ".png"),  # another session
        ReferenceImage(storage_path="images/table-3/../x.png", content_sha256="ABC", role=0),
    ]))
    assert set(bad) == {
        "plan.reference_images[1].storage_path",
        "plan.reference_images[2].storage_path",
        "plan.reference_images[2].content_sha256",
        "plan.reference_images[2].role",
    }
    assert "session" in bad["plan.reference_images[1].storage_path"]
    too_many = fields(make_plan(reference_images=[ref()] * (MAX_REFERENCE_IMAGES + 1)))
    assert set(too_many) == {"plan.reference_images"}


def test_a_mask_needs_a_reference_and_no_role() -> None:
    mask = ReferenceImage(storage_path="images/table-3/item/" + "d" * 32 + ".png", content_sha256=sha("m"))
    assert set(fields(make_plan(mask=mask))) == {"plan.mask"}
    assert fields(make_plan(reference_images=[ref()], mask=mask)) == {}
    mask.role = SUBJECT
    assert set(fields(make_plan(reference_images=[ref()], mask=mask))) == {"plan.mask.role"}


def test_the_planner_request_checks_references_by_the_same_rules() -> None:
    request = CreatePlanRequest(prompt="Thora at the gate", session_id="table-3",
                                reference_images=[ref(), ref(key="other/portrait/" + "a" * 32 + ".png")])
    with pytest.raises(InvalidRequest) as caught:
        validate_plan_request(request, STYLES)
    assert [v.field for v in caught.value.violations] == ["reference_images[1].storage_path"]


def test_the_offline_planner_says_how_to_use_each_reference() -> None:
    plan = plan_offline("Thora holds the bridge against goblins", references=("subject", "style"))
    assert "Keep the face, build and gear of the subject in reference 1." in plan.enhanced_prompt
    assert "Follow the palette and brushwork of reference 2." in plan.enhanced_prompt
    assert "reference" not in plan_offline("Thora holds the bridge against goblins").enhanced_prompt
    # Kept whole however long the description is.
    long = plan_offline("goblins " * 1000, references=("subject",) * MAX_REFERENCE_IMAGES)
    assert f"subject in reference {MAX_REFERENCE_IMAGES}." in long.enhanced_prompt


def test_roles_convert_both_ways() -> None:
    assert reference_role_value("Subject") == SUBJECT
    assert reference_role_value("REFERENCE_ROLE_STYLE") == STYLE
    assert reference_role_name(ReferenceRole.REFERENCE_ROLE_EDIT) == "edit"
    assert reference_role_name(0) == ""
    with pytest.raises(ValueError):
        reference_role_value("mask")


def test_the_metadata_records_the_references_within_s3s_user_metadata_limit() -> None:
    session = "s" * 128  # the longest session id
    refs = [
        ReferenceImage(storage_path=f"images/{session}/character/{i:032x}.webp", content_sha256=sha(str(i)),
                       role=SUBJECT)
        for i in range(MAX_REFERENCE_IMAGES)
    ]
    mask = ReferenceImage(storage_path=f"images/{session}/location/{'f' * 32}.png", content_sha256=sha("m"))
    plan = make_plan(session_id=session, reference_images=refs, mask=mask)
    metadata = reference_metadata(plan)
    # With everything else the executor writes beside an image at its longest (a 64-character
    # model, a seed, usage and cost), the whole stays within S3's 2 KiB of user metadata.
    rendered = RenderedImage(
        b"x", "image/webp", 4096, 4096, model="m" * 64, provider="comfyui", seed=2**31 - 1,
        usage=Usage(input_tokens=10**12, input_image_tokens=10**12, output_tokens=10**12, total_tokens=10**12),
    )
    everything = {**_metadata(plan, "comfyui", rendered, 10**9, 10**12), **metadata}
    assert sum(len(k.encode()) + len(v.encode()) for k, v in everything.items()) <= 2048
    key = f"{session}/scene/{'e' * 32}.png"
    assert recorded_references(metadata, key, lambda k: f"images/{k}") == refs
    assert recorded_references({}, key, lambda k: f"images/{k}") == []
    # What the executor did not write is left out rather than trusted.
    junk = {"references": "subject:nothex:x unknown:" + sha("x") + ":a/b.png " + "subject:" + sha("y") + ":"}
    assert recorded_references(junk, key, lambda k: f"images/{k}") == []


def test_providers_declare_what_they_take() -> None:
    OFFLINE, OPENAI = provider_capabilities("offline", "offline-renderer-1"), provider_capabilities("openai", "gpt-image-1")
    assert OFFLINE.max_reference_images == MAX_REFERENCE_IMAGES and not OFFLINE.masks
    assert OPENAI.max_reference_images == MAX_REFERENCE_IMAGES and OPENAI.masks


def png(colour: tuple[int, int, int], size: tuple[int, int] = (200, 300)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def test_the_offline_renderer_shows_its_references_deterministically() -> None:
    args = dict(prompt="Thora in the tavern", image_type="scene", style="painterly", width=512, height=384)
    green = png((20, 200, 40))
    plain = render_png(**args)  # type: ignore[arg-type]
    with_subject = render_png(**args, references=[("subject", green)])  # type: ignore[arg-type]
    assert with_subject != plain
    assert with_subject == render_png(**args, references=[("subject", green)])  # type: ignore[arg-type]
    # The subject stands framed in the top-right corner, in its own colours.
    image = Image.open(io.BytesIO(with_subject)).convert("RGB")
    r, g, b = image.getpixel((512 - 40, 40))  # type: ignore[misc]
    assert g > 150 and r < 80 and b < 80
    # Another portrait, another picture; a style reference changes the palette.
    assert render_png(**args, references=[("subject", png((200, 20, 20)))]) != with_subject  # type: ignore[arg-type]
    assert render_png(**args, references=[("style", green)]) != plain  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference 0"):
        render_png(**args, references=[("subject", b"not an image")])  # type: ignore[arg-type]


# -- The planner ----------------------------------------------------------------------------------


class OneAnswer:
    """An LLM stand-in that answers the same plan every time, counting its calls."""

    name, model = "llm", "scripted"

    def __init__(self) -> None:
        self.requests: list[PlanRequest] = []

    async def draft(self, request: PlanRequest, repair: Repair | None = None) -> PlanDraft:
        self.requests.append(request)
        return PlanDraft("Thora holds the gate; keep the character of reference 1.", "scene", "painterly", "1024x1024")

    async def aclose(self) -> None:
        pass


async def test_the_offline_planner_copies_the_references_into_the_plan() -> None:
    refs = (ref(), ref(key="table-3/item/" + "b" * 32 + ".png", content="axe", role=STYLE))
    plan = await Planner(OfflinePlanningAgent(), STYLES).create_plan(
        PlanRequest(prompt="Thora holds the gate", session_id="table-3", reference_images=refs)
    )
    assert list(plan.reference_images) == list(refs)
    assert "subject in reference 1" in plan.enhanced_prompt and "of reference 2" in plan.enhanced_prompt
    assert plan.plan_id == plan_fingerprint(plan)


async def test_llm_plans_are_shared_by_reference_content_and_each_caller_keeps_its_own_paths() -> None:
    llm = OneAnswer()
    plans = InProcessPlans(PlanCache(16, 3600))
    planner = Planner(OfflinePlanningAgent(), STYLES, llm=llm, plans=plans)  # type: ignore[arg-type]
    here = await planner.create_plan(PlanRequest(prompt="Thora at the gate", session_id="table-3",
                                                 reference_images=(ref(),)))
    # Another table with a copy of the same portrait: the same plan (one LLM call), its own path.
    copy = ref(key="table-4/portrait/" + "f" * 32 + ".png")
    there = await planner.create_plan(PlanRequest(prompt="Thora at the gate", session_id="table-4",
                                                  reference_images=(copy,)))
    assert len(llm.requests) == 1
    assert [r.storage_path for r in there.reference_images] == [copy.storage_path]
    assert there.plan_id == here.plan_id and there.session_id == "table-4"
    # Another portrait is another request: the LLM plans again, and the plan_id differs.
    other = await planner.create_plan(PlanRequest(prompt="Thora at the gate", session_id="table-3",
                                                  reference_images=(ref(content="thora, older"),)))
    assert len(llm.requests) == 2 and other.plan_id != here.plan_id
    assert llm.requests[0].reference_roles == ("subject",)
