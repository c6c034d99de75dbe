"""Checking a plan against a provider's declared capabilities, before any call.

A provider declares what it can render (imagegen.catalogue.ProviderCapabilities). The
executor asks its provider, a chain asks each of its providers, and a provider asks
itself when called directly: what cannot be rendered is refused without a request.
"""

from __future__ import annotations

from collections.abc import Sequence

from executor_service.ports import ImageProvider, RenderInputs
from imagegen.catalogue import MAX_PROMPT_CHARS, OUTPUT_FORMATS, SEED_KEY, ProviderCapabilities
from imagegen.errors import FieldViolation, ProviderNotCapable, map_entry
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

OUTPUT_FORMAT_KEY = "output_format"


def capability_problems(
    capabilities: ProviderCapabilities, plan: ImageGenerationPlan, inputs: RenderInputs
) -> list[FieldViolation]:
    """What in plan and inputs a provider with capabilities cannot render, as field
    violations (empty: it can render them)."""
    problems: list[FieldViolation] = []
    if len(inputs.references) > capabilities.max_reference_images:
        allowed = capabilities.max_reference_images
        problems.append(FieldViolation(
            "plan.reference_images",
            f"names {len(inputs.references)} reference images; the provider takes "
            + (f"at most {allowed}" if allowed else "none"),
        ))
    if inputs.mask is not None and not capabilities.masks:
        problems.append(FieldViolation("plan.mask", "the provider cannot apply a mask"))
    longest = capabilities.max_prompt_chars or MAX_PROMPT_CHARS
    if len(plan.enhanced_prompt) > longest:
        problems.append(FieldViolation("plan.enhanced_prompt", f"the provider takes at most {longest} characters"))
    fmt = plan.metadata.get(OUTPUT_FORMAT_KEY)
    if fmt in OUTPUT_FORMATS and fmt not in capabilities.output_formats:
        problems.append(FieldViolation(
            map_entry("plan.metadata", OUTPUT_FORMAT_KEY),
            f"the provider writes {', '.join(sorted(capabilities.output_formats))}, not {fmt}",
        ))
    if capabilities.sizes is not None and plan.size not in capabilities.sizes:
        problems.append(FieldViolation(
            "plan.size", f"the provider renders only {', '.join(sorted(capabilities.sizes))}"
        ))
    elif capabilities.size_step > 1 and _off_step(plan.size, capabilities.size_step):
        problems.append(FieldViolation(
            "plan.size", f"the provider renders sides in multiples of {capabilities.size_step} pixels only"
        ))
    return problems


def _off_step(size: str, step: int) -> bool:
    width, _, height = size.partition("x")
    return not (width.isdigit() and height.isdigit()) or int(width) % step != 0 or int(height) % step != 0


def plan_seed(plan: ImageGenerationPlan) -> int | None:
    """The plan's seed (metadata SEED_KEY, checked by validation), or None without one."""
    raw = plan.metadata.get(SEED_KEY)
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


def refuse_unless_capable(provider: ImageProvider, plan: ImageGenerationPlan, inputs: RenderInputs) -> None:
    """ProviderNotCapable (FAILED_PRECONDITION, PROVIDER_NOT_USABLE) naming what provider
    cannot render; for a provider's own render(), before it sends anything."""
    problems = capability_problems(provider.capabilities(plan), plan, inputs)
    if problems:
        raise ProviderNotCapable(
            f"the image provider {provider.name} cannot render this plan: "
            + "; ".join(f"{p.field} {p.description}" for p in problems),
            metadata={"provider": provider.name},
        )


def combined(capabilities: Sequence[ProviderCapabilities]) -> ProviderCapabilities:
    """What at least one of several providers can do, each capability on its own: a chain's
    declaration. Whether one provider can do all a plan asks is checked per provider."""
    return ProviderCapabilities(
        max_reference_images=max(c.max_reference_images for c in capabilities),
        masks=any(c.masks for c in capabilities),
        seeds=any(c.seeds for c in capabilities),
        previews=any(c.previews for c in capabilities),
        output_formats=frozenset().union(*(c.output_formats for c in capabilities)),
        max_prompt_chars=max(c.max_prompt_chars or MAX_PROMPT_CHARS for c in capabilities),
        sizes=None if any(c.sizes is None for c in capabilities)
        else frozenset().union(*(c.sizes or () for c in capabilities)),
        size_step=min(c.size_step for c in capabilities),
    )


