"""The execution use case with a counting provider and the real local store."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from executor_service.executor import Executor, object_key
from executor_service.ports import NO_INPUTS, RenderedImage, RenderInputs
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import ProviderCapabilities
from imagegen.errors import InvalidRequest, ProviderUnavailable
from imagegen.fingerprint import with_fingerprint
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult, ImageType
from tests.support.plans import make_plan

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image bytes"


class CountingProvider:
    name = "counting"

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.calls = 0
        self.fail = fail
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    def capabilities(self, plan: ImageGenerationPlan) -> ProviderCapabilities:
        return ProviderCapabilities()

    def mime_type(self, plan: ImageGenerationPlan) -> str:
        return "image/png"

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return RenderedImage(PNG, "image/png", 1024, 1024, model="count-1", revised_prompt="revised")




@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store", bucket="images")


@pytest.fixture
def executor(provider: CountingProvider, store: LocalObjectStore) -> Executor:
    return Executor(provider, store, "https://game.test/images/")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_first_execution_renders_stores_and_fills_every_field(
    executor: Executor, provider: CountingProvider, tmp_path: Path
) -> None:
    plan = make_plan()
    result = await executor.execute(plan)
    key = f"table-3/creature/{with_fingerprint(plan).plan_id}.png"
    assert provider.calls == 1
    assert result.storage_path == f"images/{key}"
    assert result.proxy_url == f"https://game.test/images/{key}"
    assert result.image_url == (tmp_path / "store" / key).as_uri()
    assert (tmp_path / "store" / key).read_bytes() == PNG
    assert (result.mime_type, result.byte_size, result.width, result.height) == ("image/png", len(PNG), 1024, 1024)
    assert result.content_sha256 == hashlib.sha256(PNG).hexdigest()
    assert (result.provider.name, result.provider.model, result.provider.revised_prompt) == (
        "counting", "count-1", "revised",
    )
    assert not result.reused
    assert result.plan.plan_id == with_fingerprint(plan).plan_id
    assert result.create_time.seconds > 0


async def test_second_execution_of_the_same_plan_renders_nothing(
    executor: Executor, provider: CountingProvider
) -> None:
    first = await executor.execute(make_plan())
    second = await executor.execute(make_plan())
    assert provider.calls == 1
    assert second.reused
    for field in ("storage_path", "content_sha256", "byte_size", "width", "height", "create_time"):
        assert getattr(second, field) == getattr(first, field)
    assert (second.provider.name, second.provider.model) == ("counting", "count-1")


async def test_a_fresh_executor_finds_what_an_earlier_one_stored(
    executor: Executor, store: LocalObjectStore
) -> None:
    await executor.execute(make_plan())
    other_provider = CountingProvider()
    again = await Executor(other_provider, store, "https://game.test/images").execute(
        make_plan()
    )
    assert again.reused and other_provider.calls == 0


async def test_concurrent_identical_plans_render_once(executor: Executor, provider: CountingProvider) -> None:
    provider.gate = asyncio.Event()
    calls = [asyncio.create_task(executor.execute(make_plan())) for _ in range(16)]
    # Every call joins the shared render in its first step; the render starts
    # only after a stat() round trip through a worker thread, so by then all 16 wait on it.
    await provider.started.wait()
    provider.gate.set()
    results = await asyncio.gather(*calls)
    assert provider.calls == 1
    assert all(result == results[0] for result in results)


async def test_request_id_replays_the_first_result(executor: Executor, provider: CountingProvider) -> None:
    first = await executor.execute(make_plan(), request_id="req-1")
    again = await executor.execute(make_plan(), request_id="req-1")
    assert again == first and not again.reused
    with pytest.raises(InvalidRequest) as caught:
        await executor.execute(make_plan(style="watercolor"), request_id="req-1")
    assert caught.value.violations[0].field == "request_id"
    assert provider.calls == 1


@pytest.mark.parametrize(
    "reuse",
    [
        {"session_id": "table-2"},  # the same picture for another table: the example
        {"session_id": "table-2", "style": "watercolor"},
        {"metadata": {"quality": "high"}},  # metadata changes the plan_id
        {"size": "1024x1536"},
        {"enhanced_prompt": "An owlbear in a moonlit glade."},
    ],
)
async def test_a_request_id_is_bound_to_its_session_and_plan(
    executor: Executor, provider: CountingProvider, store: LocalObjectStore, tmp_path: Path, reuse: dict[str, object]
) -> None:
    first = await executor.execute(make_plan(session_id="table-1"), request_id="turn-42")
    stored = files_under(tmp_path / "store")
    with pytest.raises(InvalidRequest) as caught:
        await executor.execute(make_plan(**{"session_id": "table-1", **reuse}), request_id="turn-42")
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert files_under(tmp_path / "store") == stored and provider.calls == 1
    assert await executor.execute(make_plan(session_id="table-1"), request_id="turn-42") == first


async def test_a_request_id_reused_while_its_first_call_runs_is_checked_too(
    executor: Executor, provider: CountingProvider
) -> None:
    provider.gate = asyncio.Event()
    first = asyncio.ensure_future(executor.execute(make_plan(session_id="table-1"), request_id="turn-7"))
    await provider.started.wait()
    with pytest.raises(InvalidRequest):
        await executor.execute(make_plan(session_id="table-2"), request_id="turn-7")
    joined = asyncio.ensure_future(executor.execute(make_plan(session_id="table-1"), request_id="turn-7"))
    provider.gate.set()
    assert await first == await joined and provider.calls == 1


async def test_a_failed_call_leaves_its_request_id_free_for_the_retry(store: LocalObjectStore) -> None:
    provider = CountingProvider(fail=ProviderUnavailable("down"))
    executor = Executor(provider, store, "https://game.test/images")
    with pytest.raises(ProviderUnavailable):
        await executor.execute(make_plan(), request_id="r-9")
    provider.fail = None
    result = await executor.execute(make_plan(), request_id="r-9")
    assert provider.calls == 2 and not result.reused


async def test_invalid_plan_writes_nothing(executor: Executor, provider: CountingProvider, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await executor.execute(make_plan(size="0x0", session_id="../up"))
    assert {v.field for v in caught.value.violations} == {"plan.size", "plan.session_id"}
    assert caught.value.plan is not None
    assert provider.calls == 0
    assert files_under(tmp_path) == []


async def test_provider_failure_stores_nothing_and_carries_the_plan(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    failing = CountingProvider(fail=ProviderUnavailable("provider down"))
    with pytest.raises(ProviderUnavailable) as caught:
        await Executor(failing, store, "https://game.test").execute(make_plan())
    assert caught.value.plan.plan_id == with_fingerprint(make_plan()).plan_id
    assert files_under(tmp_path) == []


def test_object_key_layout() -> None:
    plan = with_fingerprint(make_plan(image_type=ImageType.IMAGE_TYPE_MAP))
    assert object_key(plan, "image/webp") == f"table-3/map/{plan.plan_id}.webp"


@pytest.mark.parametrize("seconds", [2**62, -(2**62), 315_576_000_001, 604_801, 0, -1])
async def test_an_expiry_out_of_range_is_invalid_argument_whatever_its_size(
    executor: Executor, store: LocalObjectStore, seconds: int
) -> None:
    from google.protobuf import duration_pb2

    from executor_service.servicer import _timedelta

    result = await executor.execute(make_plan())
    with pytest.raises(InvalidRequest) as caught:
        await executor.sign_image_url(result.storage_path, _timedelta(duration_pb2.Duration(seconds=seconds)))
    assert [v.field for v in caught.value.violations] == ["expires_in"]


class DifferentEachTime(CountingProvider):
    """Every render gives other bytes, as every real provider does."""

    async def render(self, plan: ImageGenerationPlan, inputs: RenderInputs = NO_INPUTS) -> RenderedImage:
        image = await super().render(plan, inputs)
        return RenderedImage(PNG + str(self.calls).encode() * self.calls, image.mime_type, 1024, 1024, model="x")


async def execute_at_once(executors: list[Executor], provider: CountingProvider) -> list[ImageGenerationResult]:
    """Each executor executes the same plan, every one rendering with provider before
    any of them stores: what each answers."""
    provider.gate = asyncio.Event()
    calls = [asyncio.ensure_future(executor.execute(make_plan())) for executor in executors]
    while provider.calls < len(executors):
        await asyncio.wait_for(provider.started.wait(), 5)
        provider.started.clear()
    provider.gate.set()
    return list(await asyncio.gather(*calls))


async def test_two_executors_on_one_store_both_describe_the_stored_bytes(tmp_path: Path) -> None:
    """No coordination: both render; the store's create-if-absent decides, and both results tell the truth."""
    provider = DifferentEachTime()
    executors = [Executor(provider, LocalObjectStore(tmp_path / "store", "images"), "https://x") for _ in range(2)]
    results = await execute_at_once(executors, provider)
    (image,) = [p for p in files_under(tmp_path / "store") if p.suffix == ".png"]
    stored = image.read_bytes()
    for result in results:
        assert result.content_sha256 == hashlib.sha256(stored).hexdigest()
        assert result.byte_size == len(stored)
    assert provider.calls == 2 and sorted(r.reused for r in results) == [False, True]
