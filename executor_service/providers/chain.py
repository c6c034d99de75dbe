"""Several image providers in a fallback order, behind the one ImageProvider port.

The next provider is tried only when the one before failed in a way a retry
could help (unavailable, throttled). A content rejection, a plan the provider
cannot render, or a misconfiguration ends the chain: another provider would
only hide the problem. The first provider decides the image's media type (and
so its object key); a later one is used only if it renders the same type.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from executor_service.ports import NO_INPUTS, ImageProvider, RenderedImage, RenderInputs
from imagegen.catalogue import ProviderCapabilities
from imagegen.errors import ImagegenError
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan

log = logging.getLogger(__name__)


class ProviderChain:
    def __init__(self, providers: Sequence[ImageProvider]) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.providers = tuple(providers)
        self.name = self.providers[0].name

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self.providers[0].capabilities(plan)

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self.providers[0].mime_type(plan)

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        wanted = self.mime_type(plan)
        failure: ImagegenError | None = None
        for provider in self.providers:
            if provider is not self.providers[0] and provider.mime_type(plan) != wanted:
                log.info("skipping provider %s: it does not render %s", provider.name, wanted)
                continue
            try:
                image = await provider.render(plan, inputs)
            except ImagegenError as exc:
                if not exc.retryable:
                    raise
                log.warning("provider %s failed (%s); trying the next one", provider.name, exc.reason)
                failure = exc
                continue
            return dataclasses.replace(image, provider=image.provider or provider.name)
        assert failure is not None  # the first provider is always tried
        if len(self.providers) > 1:
            failure.metadata.setdefault("providers_tried", ",".join(p.name for p in self.providers))
        raise failure

    async def aclose(self) -> None:
        for provider in self.providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

