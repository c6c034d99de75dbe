"""Several image providers in a fallback order, behind the one ImageProvider port.

A provider whose declared capabilities do not cover the plan is skipped
without a call; when none covers it, the plan is InvalidRequest naming what no
provider can render. The next provider is tried only when the one before failed
in a way a retry could help (unavailable, throttled), or refused the plan as
beyond its capabilities. A content rejection, a plan the provider
cannot render, or a misconfiguration ends the chain: another provider would
only hide the problem. The first provider decides the image's media type (and
so its object key); a later one is used only if it renders the same type.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from executor_service.capabilities import capability_problems, combined
from executor_service.ports import NO_INPUTS, ImageProvider, RenderedImage, RenderInputs
from imagegen.catalogue import ProviderCapabilities
from imagegen.errors import FieldViolation, ImagegenError, InvalidRequest, ProviderNotCapable
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

log = logging.getLogger(__name__)


class ProviderChain:
    def __init__(self, providers: Sequence[ImageProvider]) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.providers = tuple(providers)
        self.name = self.providers[0].name

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return combined([provider.capabilities(plan) for provider in self.providers])

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self.providers[0].mime_type(plan)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        wanted = self.mime_type(plan)
        failure: ImagegenError | None = None
        beyond: list[FieldViolation] = []
        tried = []
        for provider in self.providers:
            if provider is not self.providers[0] and provider.mime_type(plan) != wanted:
                log.info("skipping provider %s: it does not render %s", provider.name, wanted)
                continue
            problems = capability_problems(provider.capabilities(plan), plan, inputs)
            if problems:
                log.info("skipping provider %s: it cannot render this plan (%s)", provider.name, problems[0].field)
                beyond = beyond or problems
                continue
            tried.append(provider)
            try:
                image = await provider.render(plan, inputs)
            except ProviderNotCapable as exc:
                log.info("provider %s refused the plan as beyond it; trying the next one", provider.name)
                failure = failure or exc
                continue
            except ImagegenError as exc:
                if not exc.retryable:
                    raise
                log.warning("provider %s failed (%s); trying the next one", provider.name, exc.reason)
                failure = exc
                continue
            return dataclasses.replace(image, provider=image.provider or provider.name)
        if failure is None:  # no provider could render the plan: nothing was sent
            raise InvalidRequest(beyond)
        if len(tried) > 1:
            failure.metadata.setdefault("providers_tried", ",".join(p.name for p in tried))
        raise failure

    async def aclose(self) -> None:
        for provider in self.providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

