"""The execution use case's shared renders: who may cancel them, what streaming
callers hear, and which storage paths reach anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from executor_service.executor import Executor, key_from_storage_path, object_key
from executor_service.stores.local_store import LocalObjectStore
from imagegen.errors import InvalidRequest, NotFound, ProviderUnavailable
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.executor_service_pb2 import ExecutionStage
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from tests.support.executor_server import HeldProvider
from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from tests.unit.test_executor import PNG, CountingProvider, files_under, make_plan

KEY = "table-3/creature/" + "a" * 32 + ".png"


@pytest.fixture
def held() -> HeldProvider:
    return HeldProvider(b"\x89PNG held", hold=True)


@pytest.fixture
def executor(held: HeldProvider, tmp_path: Path) -> Executor:
    return Executor(held, LocalObjectStore(tmp_path / "store", bucket="images"), "https://game.test/images")


def request() -> ImageGenerationPlan:
    return make_plan()


async def test_one_caller_leaving_does_not_stop_the_render_the_others_wait_for(
    executor: Executor, held: HeldProvider, tmp_path: Path
) -> None:
    leaving, staying = (asyncio.ensure_future(executor.execute(request())) for _ in range(2))
    await held.started.wait()
    leaving.cancel()
    await asyncio.wait([leaving])  # it has left before the render is released
    held.release.set()
    result = await staying
    assert leaving.cancelled() and not held.cancelled.is_set()
    assert held.calls == 1 and not result.reused
    assert len(files_under(tmp_path / "store")) == 4  # the image, its plan, and the store's sidecar of each


async def test_when_the_last_caller_leaves_the_render_is_cancelled_and_nothing_stored(
    executor: Executor, held: HeldProvider, tmp_path: Path
) -> None:
    calls = [asyncio.ensure_future(executor.execute(request())) for _ in range(3)]
    await held.started.wait()
    for call in calls:
        call.cancel()
    await asyncio.wait_for(held.cancelled.wait(), 5)
    assert files_under(tmp_path / "store") == []
    held.release.set()
    again = await executor.execute(request())  # a fresh render, not the cancelled one
    assert held.calls == 2 and not again.reused


async def test_the_stream_reports_stages_and_a_late_joiner_hears_where_the_render_is(
    executor: Executor, held: HeldProvider
) -> None:
    first: list[int] = []
    late: list[int] = []
    joined = asyncio.Event()

    def hear(stage: int) -> None:
        late.append(stage)
        joined.set()

    leader = asyncio.ensure_future(executor.execute(request(), on_stage=first.append))
    await held.started.wait()
    follower = asyncio.ensure_future(executor.execute(request(), on_stage=hear))
    await asyncio.wait_for(joined.wait(), 5)  # heard on joining, before the render moves on
    assert late == [ExecutionStage.EXECUTION_STAGE_RENDERING]
    held.release.set()
    assert await leader == await follower
    assert first == late == [ExecutionStage.EXECUTION_STAGE_RENDERING, ExecutionStage.EXECUTION_STAGE_STORING]


async def test_closing_the_stream_early_cancels_its_render(executor: Executor, held: HeldProvider, tmp_path: Path) -> None:
    events = executor.execute_stream(request())
    assert await anext(events) == (ExecutionStage.EXECUTION_STAGE_ACCEPTED, None)
    assert await anext(events) == (ExecutionStage.EXECUTION_STAGE_RENDERING, None)
    await events.aclose()
    await asyncio.wait_for(held.cancelled.wait(), 5)
    assert files_under(tmp_path / "store") == []


async def test_the_stream_ends_with_the_result(executor: Executor, held: HeldProvider) -> None:
    held.release.set()
    events = [event async for event in executor.execute_stream(request())]
    assert [stage for stage, _ in events] == [
        ExecutionStage.EXECUTION_STAGE_ACCEPTED, ExecutionStage.EXECUTION_STAGE_RENDERING,
        ExecutionStage.EXECUTION_STAGE_STORING, ExecutionStage.EXECUTION_STAGE_COMPLETED,
    ]
    result = events[-1][1]
    assert result is not None and result.storage_path == "images/" + object_key(with_fingerprint(make_plan()), "image/png")


@pytest.mark.parametrize("path", [f"images/{KEY}"])
def test_a_stored_image_path_gives_its_key(path: str) -> None:
    assert key_from_storage_path(path, "images") == KEY


@pytest.mark.parametrize(
    "path",
    [
        f"other/{KEY}",
        "images/table-3/creature/" + "a" * 31 + ".png",
        "images/table-3/selfie/" + "a" * 32 + ".png",
        f"images/{KEY}.meta.json",
        f"images/{KEY}.plan.json",  # the plan kept beside the image is never served as one
        "images/table-3/creature/" + "a" * 32 + ".gif",
        "images/.hidden/creature/" + "a" * 32 + ".png",
    ],
)
def test_paths_the_executor_never_writes_are_not_found(path: str) -> None:
    with pytest.raises(NotFound):
        key_from_storage_path(path, "images")


@pytest.mark.parametrize(
    "path", ["", "images", "images/", f"images/../{KEY}", f"images/./{KEY}", "images/a//b.png",
             f"/{KEY}", "images/a\\b.png", "images/a\x00.png", "images/" + "x" * 1100],
)
def test_malformed_paths_are_invalid(path: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        key_from_storage_path(path, "images")
    assert [v.field for v in caught.value.violations] == ["storage_path"]


class CountingObserver:
    def __init__(self) -> None:
        self.reuses: list[str] = []

    def reused(self, kind: str) -> None:
        self.reuses.append(kind)

    def stored(self, byte_size: int) -> None:
        pass

    def cost(self, provider: str, model: str, cost_micros: int) -> None:
        pass


async def test_a_shared_render_counts_only_the_callers_it_answered(held: HeldProvider, tmp_path: Path) -> None:
    observer = CountingObserver()
    executor = Executor(held, LocalObjectStore(tmp_path / "store", bucket="images"), "https://x", observer=observer)
    leader = asyncio.ensure_future(executor.execute(request()))
    await held.started.wait()
    followers = [asyncio.ensure_future(executor.execute(request())) for _ in range(62)]
    quitters = [asyncio.ensure_future(executor.execute(request())) for _ in range(5)]
    await asyncio.sleep(0)  # let every caller join the flight before any leaves
    for quitter in quitters:
        quitter.cancel()
    await asyncio.wait(quitters)
    held.release.set()
    await asyncio.gather(leader, *followers)
    assert observer.reuses == ["in_flight"] * 62 and held.calls == 1


async def test_followers_of_a_failed_render_are_not_counted_as_reuses(tmp_path: Path) -> None:
    observer = CountingObserver()
    failing = CountingProvider(fail=ProviderUnavailable("down"))
    failing.gate = asyncio.Event()
    executor = Executor(failing, LocalObjectStore(tmp_path / "store", bucket="images"), "https://x", observer=observer)
    calls = [asyncio.ensure_future(executor.execute(request())) for _ in range(4)]
    await failing.started.wait()
    failing.gate.set()
    await asyncio.wait(calls)
    assert all(isinstance(call.exception(), ProviderUnavailable) for call in calls)
    assert observer.reuses == [] and failing.calls == 1


class ProgressingProvider(CountingProvider):
    """Reports 0.25 then 1.0 when told to, recording whether it was."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[bool] = []

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.asked.append(inputs.on_progress is not None)
        if inputs.on_progress is not None:
            inputs.on_progress(0.25)
        await super().render(plan, inputs)
        if inputs.on_progress is not None:
            inputs.on_progress(1.0)
        return RenderedImage(PNG, "image/png", 1024, 1024, model="count-1")


async def test_the_provider_is_told_to_report_progress_only_when_a_caller_listens(tmp_path: Path) -> None:
    provider = ProgressingProvider()
    executor = Executor(provider, LocalObjectStore(tmp_path / "store", bucket="images"), "https://game.test/images")
    await executor.execute(make_plan(session_id="quiet-1"))
    heard: list[float] = []
    await executor.execute(make_plan(session_id="loud-1"), on_progress=heard.append)
    assert provider.asked == [False, True]
    assert heard == [0.25, 1.0]


async def test_every_caller_of_a_shared_render_that_listens_hears_its_progress(tmp_path: Path) -> None:
    provider = ProgressingProvider()
    provider.gate = asyncio.Event()
    executor = Executor(provider, LocalObjectStore(tmp_path / "store", bucket="images"), "https://game.test/images")
    first: list[float] = []
    second: list[float] = []
    calls = [asyncio.ensure_future(executor.execute(request(), on_progress=first.append))]
    await provider.started.wait()
    joined = asyncio.Event()  # a late joiner hears the stage reached as it joins
    calls.append(asyncio.ensure_future(
        executor.execute(request(), on_stage=lambda _: joined.set(), on_progress=second.append)
    ))
    await asyncio.wait_for(joined.wait(), 5)
    provider.gate.set()
    await asyncio.gather(*calls)
    assert provider.calls == 1 and first == [0.25, 1.0] and second == [1.0]
