"""The in-process coordination: the provider cap and its QUEUED stage, the shared rate-limit pause."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from executor_service.coordination.in_process import PAUSE_WAIT_SECONDS, InProcessCoordination
from executor_service.executor import Executor
from executor_service.ports import NO_INPUTS
from executor_service.stores.local_store import LocalObjectStore
from imagegen.errors import ProviderThrottled
from imagegen.v1.executor_service_pb2 import ExecutionStage
from tests.support.plans import make_plan
from tests.unit.test_executor import CountingProvider


class ConcurrencyProbe(CountingProvider):
    """Counts how many renders run at once; each waits for the test's gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0
        self.most = 0
        self.entered = asyncio.Condition()

    async def render(self, plan, inputs=NO_INPUTS):  # type: ignore[no-untyped-def]
        self.running += 1
        self.most = max(self.most, self.running)
        async with self.entered:
            self.entered.notify_all()
        try:
            return await super().render(plan, inputs)
        finally:
            self.running -= 1


async def test_the_provider_cap_holds_and_callers_beyond_it_hear_queued(tmp_path: Path) -> None:
    provider = ConcurrencyProbe()
    executor = Executor(
        provider, LocalObjectStore(tmp_path, "b"), "https://x", coordination=InProcessCoordination(provider_concurrency=2)
    )
    stages: dict[int, list[int]] = {i: [] for i in range(6)}
    four_queued = asyncio.Event()

    def hear(i: int, stage: int) -> None:
        stages[i].append(stage)
        if sum(ExecutionStage.EXECUTION_STAGE_QUEUED in heard for heard in stages.values()) == 4:
            four_queued.set()

    calls = [
        asyncio.ensure_future(executor.execute(make_plan(size=f"{64 + i * 16}x64"), on_stage=lambda s, i=i: hear(i, s)))
        for i in range(6)
    ]
    await asyncio.wait_for(four_queued.wait(), 10)  # two render, four wait for a slot
    assert provider.running == 2
    provider.gate.set()
    await asyncio.gather(*calls)
    assert provider.most == 2 and provider.calls == 6
    for heard in stages.values():
        assert heard[-2:] == [ExecutionStage.EXECUTION_STAGE_RENDERING, ExecutionStage.EXECUTION_STAGE_STORING]
        assert heard.count(ExecutionStage.EXECUTION_STAGE_QUEUED) <= 1


@pytest.mark.parametrize("retry_after", [3.0, 30.0])
async def test_a_rate_limit_pauses_the_next_provider_calls(tmp_path: Path, retry_after: float) -> None:
    """A short pause is waited out (QUEUED, then RENDERING); a long one refuses at once with the time left."""
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes when the adapter waits
        slept.append(seconds)
        now[0] += seconds

    coordination = InProcessCoordination(clock=lambda: now[0], sleep=sleep)
    provider = CountingProvider(fail=ProviderThrottled("slow down", retry_after=retry_after))
    executor = Executor(provider, LocalObjectStore(tmp_path, "b"), "https://x", coordination=coordination)
    with pytest.raises(ProviderThrottled):
        await executor.execute(make_plan())
    provider.fail = None
    heard: list[int] = []
    if retry_after > PAUSE_WAIT_SECONDS:
        now[0] += 10
        with pytest.raises(ProviderThrottled) as refused:
            await executor.execute(make_plan(style="watercolor"), on_stage=heard.append)
        assert refused.value.retry_after == retry_after - 10 and provider.calls == 1 and slept == []
        now[0] += retry_after
    else:
        await executor.execute(make_plan(style="watercolor"), on_stage=heard.append)
        assert slept == [retry_after] and provider.calls == 2
        assert heard[:2] == [ExecutionStage.EXECUTION_STAGE_QUEUED, ExecutionStage.EXECUTION_STAGE_RENDERING]
    heard.clear()
    await executor.execute(make_plan(style="heroic"), on_stage=heard.append)
    assert ExecutionStage.EXECUTION_STAGE_QUEUED not in heard


async def test_a_pause_is_bounded_whatever_the_provider_says() -> None:
    now = [0.0]
    coordination = InProcessCoordination(clock=lambda: now[0])
    await coordination.pause_provider(float("inf"))
    now[0] += 3601
    heard: list[str] = []
    async with coordination.provider_slot(lambda: heard.append("queued")):
        pass
    assert heard == []
