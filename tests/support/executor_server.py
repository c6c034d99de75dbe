"""Run an executor server around a given Executor, and a provider double that
counts its renders and can be held mid-render."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from executor_service.bootstrap import create_server
from executor_service.config import ExecutorSettings
from executor_service.executor import Executor
from executor_service.ports import NO_INPUTS, ImageProvider, RenderedImage, RenderInputs
from imagegen.catalogue import ProviderCapabilities
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan


@contextlib.asynccontextmanager
async def running_executor(executor: Executor) -> AsyncIterator[str]:
    """The executor served on 127.0.0.1 port 0; yields its target, stops it and closes the executor after."""
    running = await create_server(ExecutorSettings(address="127.0.0.1:0"), executor)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.stop(None)
        await executor.aclose()


class HeldProvider:
    """Returns fixed bytes, counting renders. With hold set, each render waits
    for release; started is set when a render begins, cancelled when one is
    cancelled. Wraps a real provider instead when given one."""

    name = "held"

    def __init__(self, data: bytes = b"", *, inner: ImageProvider | None = None, hold: bool = False) -> None:
        self.data = data
        self.inner = inner
        self.calls = 0
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        if inner is not None:
            self.name = inner.name

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return self.inner.capabilities(plan) if self.inner else ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return self.inner.mime_type(plan) if self.inner else "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
            if self.inner is not None:
                return await self.inner.render(plan, inputs)
            return RenderedImage(self.data, "image/png", 1024, 1024, model="held-1")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
