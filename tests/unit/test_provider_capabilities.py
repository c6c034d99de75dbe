"""A plan beyond a provider's declared capabilities is refused before any call: by the
provider itself (FAILED_PRECONDITION), skipped by a chain, and INVALID_ARGUMENT from the
executor when no configured provider can render it."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor_service.capabilities import capability_problems, combined, refuse_unless_capable
from executor_service.executor import Executor
from executor_service.ports import NO_INPUTS, ReferenceInput, RenderedImage, RenderInputs
from executor_service.providers.chain import ProviderChain
from executor_service.providers.offline_renderer import OfflineRenderer
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_PROMPT_CHARS, ProviderCapabilities
from imagegen.errors import InvalidRequest, ProviderNotCapable, ProviderUnavailable
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from tests.support.plans import make_plan

REFERENCE = ReferenceInput("subject", "images/s1/portrait/" + "a" * 32 + ".png", b"png", "image/png")


class Declared:
    """A provider that declares capabilities and counts its calls."""

    def __init__(self, name: str, capabilities: ProviderCapabilities, fail: Exception | None = None) -> None:
        self.name, self.declared, self.fail, self.calls = name, capabilities, fail, 0

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self.declared

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return RenderedImage(b"\x89PNG\r\n\x1a\n", "image/png", 1, 1, model=f"{self.name}-1")


def test_each_capability_names_the_field_it_cannot_render() -> None:
    plan = make_plan(enhanced_prompt="x" * 50, metadata={"output_format": "webp"})
    inputs = RenderInputs(references=(REFERENCE, REFERENCE), mask=REFERENCE)
    narrow = ProviderCapabilities(max_reference_images=1, max_prompt_chars=10)
    assert [p.field for p in capability_problems(narrow, plan, inputs)] == [
        "plan.reference_images", "plan.mask", "plan.enhanced_prompt", "plan.metadata['output_format']",
    ]
    wide = ProviderCapabilities(max_reference_images=2, masks=True, output_formats=frozenset({"png", "webp"}))
    assert capability_problems(wide, plan, inputs) == []


def test_no_declared_reference_support_means_none() -> None:
    problems = capability_problems(ProviderCapabilities(), make_plan(), RenderInputs(references=(REFERENCE,)))
    assert [(p.field, p.description) for p in problems] == [
        ("plan.reference_images", "names 1 reference images; the provider takes none")
    ]


def test_a_provider_refuses_a_plan_beyond_it_as_not_usable() -> None:
    provider = Declared("narrow", ProviderCapabilities())
    with pytest.raises(ProviderNotCapable) as caught:
        refuse_unless_capable(provider, make_plan(), RenderInputs(mask=REFERENCE))
    assert caught.value.reason == "PROVIDER_NOT_USABLE" and not caught.value.retryable
    assert caught.value.metadata == {"provider": "narrow"}


async def test_the_offline_renderer_checks_itself_before_rendering() -> None:
    with pytest.raises(ProviderNotCapable):
        await OfflineRenderer().render(make_plan(), RenderInputs(mask=REFERENCE))


async def test_a_chain_skips_providers_that_cannot_render_the_plan_without_calling_them() -> None:
    short = Declared("short", ProviderCapabilities(max_prompt_chars=10))
    roomy = Declared("roomy", ProviderCapabilities())
    image = await ProviderChain([short, roomy]).render(make_plan(enhanced_prompt="a long prompt indeed"))
    assert (image.provider, short.calls, roomy.calls) == ("roomy", 0, 1)


async def test_a_chain_moves_on_when_a_provider_refuses_the_plan_as_beyond_it() -> None:
    refusing = Declared("refusing", ProviderCapabilities(), fail=ProviderNotCapable("no"))
    fallback = Declared("fallback", ProviderCapabilities())
    image = await ProviderChain([refusing, fallback]).render(make_plan())
    assert (image.provider, refusing.calls, fallback.calls) == ("fallback", 1, 1)


async def test_a_chain_no_provider_of_which_can_render_the_plan_refuses_it_as_invalid() -> None:
    a, b = Declared("a", ProviderCapabilities()), Declared("b", ProviderCapabilities(max_prompt_chars=5))
    with pytest.raises(InvalidRequest) as caught:
        await ProviderChain([a, b]).render(make_plan(), RenderInputs(mask=REFERENCE))
    assert [v.field for v in caught.value.violations] == ["plan.mask"]
    assert (a.calls, b.calls) == (0, 0)


async def test_a_chain_still_reports_a_real_failure_over_a_skip() -> None:
    down = Declared("down", ProviderCapabilities(), fail=ProviderUnavailable("down"))
    short = Declared("short", ProviderCapabilities(max_prompt_chars=5))
    with pytest.raises(ProviderUnavailable):
        await ProviderChain([down, short]).render(make_plan())


def test_a_chain_declares_what_any_of_its_providers_can_do() -> None:
    declared = combined([
        ProviderCapabilities(max_reference_images=4, output_formats=frozenset({"png"})),
        ProviderCapabilities(masks=True, previews=True, output_formats=frozenset({"webp"}), max_prompt_chars=100),
    ])
    assert declared == ProviderCapabilities(
        max_reference_images=4, masks=True, previews=True,
        output_formats=frozenset({"png", "webp"}), max_prompt_chars=MAX_PROMPT_CHARS,
    )


async def test_the_executor_refuses_a_plan_its_provider_cannot_render_before_any_call(tmp_path: Path) -> None:
    provider = Declared("png-only", ProviderCapabilities(output_formats=frozenset({"png"})))
    store = LocalObjectStore(tmp_path / "store", bucket="images")
    executor = Executor(provider, store, "http://127.0.0.1:8000/images")
    with pytest.raises(InvalidRequest) as caught:
        await executor.execute(make_plan(metadata={"output_format": "jpeg"}))
    assert [v.field for v in caught.value.violations] == ["plan.metadata['output_format']"]
    assert provider.calls == 0 and not any((tmp_path / "store").rglob("*.png"))
