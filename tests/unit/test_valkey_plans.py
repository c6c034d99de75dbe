"""ValkeyPlans, the planner's coordination on Valkey, against a real valkey-server on
127.0.0.1: replicas are ValkeyPlans of their own (their own client, memory and clocks) on
one Valkey, in this process.

Time is the clocks the adapter is given (its memory's, the Valkey client's quiet period),
and Valkey's own expiry, brought forward with PEXPIRE; a lock's lapse and renewal are
Valkey's doing too, watched as conditions rather than slept through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, PlanProvenance
from imagegen_runtime.valkey import CoordinationSettings, Valkey
from planner_service.bootstrap import build_plans
from planner_service.config import PLAN_LOCK_MARGIN_SECONDS, PlannerSettings
from planner_service.coordination.in_process import InProcessPlans
from planner_service.coordination.valkey import ValkeyPlans
from planner_service.metrics import PlannerMetrics
from planner_service.plan_cache import PlanCache
from tests.support.valkey_server import ValkeyServer

PREFIX = "test:planner"
TTL = 60.0
RETRY_INTERVAL = 2.0


def plan_key(key: str) -> str:
    return f"{PREFIX}:plan:{key}"


def lock_key(key: str) -> str:
    return f"{PREFIX}:plan-lock:{key}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Maker:
    """make() for plan_once, shared by every replica: counts its calls, each plan with a
    plan_id of its own; with hold, each call waits for release."""

    def __init__(self, *, hold: bool = False, prompt_size: int = 10) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.prompt_size = prompt_size
        self.before: Callable[[], Awaitable[None]] | None = None  # runs at the start of each call

    async def __call__(self) -> ImageGenerationPlan:
        self.calls += 1
        self.started.set()
        if self.before is not None:
            await self.before()
        await self.release.wait()
        return ImageGenerationPlan(
            plan_id=f"plan-{self.calls}", enhanced_prompt="p" * self.prompt_size,
            provenance=PlanProvenance(planner="llm", model="gpt-test"),
        )  # fmt: skip


@dataclass
class Replica:
    plans: ValkeyPlans
    registry: CollectorRegistry
    clock: Clock  # the Valkey client's: its quiet period after a failure
    memory_clock: Clock
    changes: list[bool] = field(default_factory=list)

    @property
    def gauge(self) -> float | None:
        return self.registry.get_sample_value("imagegen_planner_coordination_up")


MakeReplica = Callable[..., Replica]


@pytest.fixture
async def replica(valkey_server: ValkeyServer) -> AsyncIterator[MakeReplica]:
    made: list[Replica] = []

    def make_replica(*, ttl: float = TTL, lock_seconds: float = 30.0, **options: float) -> Replica:
        registry, clock, memory_clock = CollectorRegistry(), Clock(), Clock()
        metrics = PlannerMetrics(registry)
        changes: list[bool] = []

        def on_change(up: bool) -> None:
            changes.append(up)
            metrics.coordination_changed(up)

        metrics.coordination_changed(True)  # as the wiring does
        valkey = Valkey(
            valkey_server.url, prefix=PREFIX, timeout=1.0, retry_interval=RETRY_INTERVAL,
            on_change=on_change, clock=clock,
        )  # fmt: skip
        plans = ValkeyPlans(
            valkey, ttl_seconds=ttl, lock_seconds=lock_seconds,
            memory=PlanCache(64, ttl, clock=memory_clock), **options,  # type: ignore[arg-type]
        )  # fmt: skip
        made.append(Replica(plans, registry, clock, memory_clock, changes))
        return made[-1]

    yield make_replica
    for each in made:
        await each.plans.aclose()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll condition (a Valkey state the test cannot be told about) until it holds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.01)


async def subscribers(client: redis.Redis, key: str) -> int:
    [(_, count)] = await client.pubsub_numsub(f"{PREFIX}:plan-made:{key}")
    return int(count)


# ----------------------------------------------------------------- shared single flight
async def test_two_replicas_asked_at_once_make_one_plan(replica: MakeReplica, raw: redis.Redis) -> None:
    a, b = replica(), replica(poll_seconds=60)  # b's wake: the message, not a poll
    maker = Maker(hold=True)
    from_a = [asyncio.ensure_future(a.plans.plan_once("k", maker)) for _ in range(3)]
    await asyncio.wait_for(maker.started.wait(), 10)  # a holds the lock and plans
    from_b = [asyncio.ensure_future(b.plans.plan_once("k", maker)) for _ in range(3)]

    async def b_waits() -> bool:
        return await subscribers(raw, "k") == 1

    await until(b_waits)  # for a's plan, woken by its message
    maker.release.set()
    plans = await asyncio.wait_for(asyncio.gather(*from_a, *from_b), 10)
    assert maker.calls == 1
    assert all(plan == plans[0] for plan in plans) and plans[0].plan_id == "plan-1"
    assert await raw.get(lock_key("k")) is None  # released


async def test_identical_callers_in_one_process_ask_valkey_once(replica: MakeReplica, raw: redis.Redis) -> None:
    a, b = replica(), replica()
    maker = Maker()
    made = await a.plans.plan_once("k", maker)
    await raw.config_resetstat()
    plans = await asyncio.gather(*(b.plans.plan_once("k", maker) for _ in range(5)))
    assert all(plan == made for plan in plans) and maker.calls == 1
    stats = await raw.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 1


async def test_each_caller_gets_its_own_copy(replica: MakeReplica) -> None:
    a = replica()
    maker = Maker()
    first, second = await asyncio.gather(a.plans.plan_once("k", maker), a.plans.plan_once("k", maker))
    first.session_id = "mine"
    assert second.session_id == "" and (await a.plans.plan_once("k", maker)).session_id == ""


# ------------------------------------------------------------------------ shared cache
async def test_a_plan_is_shared_serialized_for_the_configured_ttl(replica: MakeReplica, raw: redis.Redis) -> None:
    a, b = replica(), replica()
    maker = Maker()
    made = await a.plans.plan_once("k", maker)
    assert await raw.get(plan_key("k")) == made.SerializeToString(deterministic=True)
    assert TTL * 1000 - 5000 < await raw.pttl(plan_key("k")) <= TTL * 1000
    assert await b.plans.plan_once("k", maker) == made
    assert maker.calls == 1


async def test_once_valkey_expires_a_plan_it_is_planned_again(replica: MakeReplica, raw: redis.Redis) -> None:
    a = replica()
    maker = Maker()
    first = await a.plans.plan_once("k", maker)
    await raw.pexpire(plan_key("k"), 1)  # the TTL runs out, Valkey's own expiry

    async def expired() -> bool:
        return not await raw.exists(plan_key("k"))

    await until(expired)
    a.memory_clock.advance(TTL)  # and so does a's memory of it
    again = await a.plans.plan_once("k", maker)
    assert maker.calls == 2 and again.plan_id != first.plan_id
    assert await raw.get(plan_key("k")) == again.SerializeToString(deterministic=True)


async def test_a_replica_remembers_a_shared_plan_only_as_long_as_valkey_keeps_it(
    replica: MakeReplica, raw: redis.Redis
) -> None:
    a, b = replica(), replica()
    maker = Maker()
    first = await a.plans.plan_once("k", maker)
    await raw.pexpire(plan_key("k"), 5000)  # five seconds left when b reads it
    assert await b.plans.plan_once("k", maker) == first
    await raw.delete(plan_key("k"))  # Valkey let it go
    b.memory_clock.advance(5.001)
    again = await b.plans.plan_once("k", maker)
    assert maker.calls == 2 and again.plan_id != first.plan_id


async def test_a_plan_too_large_is_not_shared(replica: MakeReplica, raw: redis.Redis) -> None:
    a, b = replica(max_plan_bytes=1024), replica(max_plan_bytes=1024)
    maker = Maker(prompt_size=2000)
    made = await a.plans.plan_once("k", maker)
    assert made.plan_id == "plan-1" and not await raw.exists(plan_key("k"))
    assert (await b.plans.plan_once("k", maker)).plan_id == "plan-2"


async def test_a_valkey_refusing_writes_costs_the_sharing_not_the_plan(
    replica: MakeReplica, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = replica()
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")  # full: every write is an OOM error reply
    maker = Maker()
    made = await a.plans.plan_once("k", maker)
    assert made.plan_id == "plan-1" and maker.calls == 1 and not await raw.exists(plan_key("k"))
    assert "Valkey refused a command" in caplog.text
    assert a.changes == []  # Valkey answered: it is up, only full


# ------------------------------------------------------------------------- the lock
async def test_when_the_lock_holder_dies_a_waiter_takes_over(replica: MakeReplica, raw: redis.Redis) -> None:
    dead = raw.lock(lock_key("k"), timeout=0.5)  # a replica that took the lock and died
    assert await dead.acquire(blocking=False)
    a = replica(poll_seconds=0.05)
    maker = Maker()
    held_by: list[bytes | None] = []

    async def who_holds() -> None:
        held_by.append(await raw.get(lock_key("k")))

    maker.before = who_holds
    made = await asyncio.wait_for(a.plans.plan_once("k", maker), 10)
    assert maker.calls == 1 and made.plan_id == "plan-1"
    assert held_by[0] is not None and held_by[0] != dead.local.token  # a planned under its own lock
    assert await raw.get(plan_key("k")) == made.SerializeToString(deterministic=True)


async def test_a_holder_renews_its_lock_while_it_plans(replica: MakeReplica, raw: redis.Redis) -> None:
    a = replica(lock_seconds=0.6)  # renewed every 0.2 s
    b = replica(lock_seconds=0.6, wait_seconds=30, poll_seconds=0.05)
    maker = Maker(hold=True)
    from_a = asyncio.ensure_future(a.plans.plan_once("k", maker))
    await asyncio.wait_for(maker.started.wait(), 10)
    from_b = asyncio.ensure_future(b.plans.plan_once("k", maker))
    renewals, last = 0, await raw.pttl(lock_key("k"))

    async def renewed_four_times() -> bool:  # longer than the lock lives unrenewed
        nonlocal renewals, last
        ttl = await raw.pttl(lock_key("k"))
        assert ttl > 0, "the lock lapsed while its holder was planning"
        renewals, last = renewals + (ttl > last), ttl
        return renewals >= 4

    await until(renewed_four_times)
    assert not from_b.done()
    maker.release.set()
    assert await from_a == await from_b and maker.calls == 1


# ------------------------------------------------------------------ Valkey goes away
async def test_without_valkey_a_replica_plans_by_itself_and_says_so_once(
    replica: MakeReplica, valkey_server: ValkeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = replica(), replica()
    maker = Maker()
    shared = await a.plans.plan_once("shared", maker)
    assert a.gauge == 1
    valkey_server.kill()
    with caplog.at_level(logging.INFO, logger="imagegen_runtime.valkey"):
        alone = await a.plans.plan_once("alone", maker)
        also_alone = await a.plans.plan_once("also-alone", maker)
        remembered = await a.plans.plan_once("shared", maker)
    assert (alone.plan_id, also_alone.plan_id, maker.calls) == ("plan-2", "plan-3", 3)
    assert remembered == shared  # from a's memory
    assert a.changes == [False] and a.gauge == 0
    down = [r for r in caplog.records if r.name == "imagegen_runtime.valkey"]
    assert [r.levelno for r in down] == [logging.WARNING]

    # Back (empty, as a restarted node is): a reconnects by itself and shares again.
    valkey_server.start()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imagegen_runtime.valkey"):
        await reconnected(a)
    assert a.changes == [False, True] and a.gauge == 1
    assert [r.levelno for r in caplog.records if r.name == "imagegen_runtime.valkey"] == [logging.INFO]
    new = await a.plans.plan_once("after", maker)
    assert await b.plans.plan_once("after", maker) == new and maker.calls == 4
    # What a planned while Valkey was away, or had before Valkey lost it: a shares that
    # plan again rather than asking for another.
    for key, plan in (("alone", alone), ("shared", shared)):
        assert await a.plans.plan_once(key, maker) == plan
        assert await b.plans.plan_once(key, maker) == plan
    assert maker.calls == 4


async def reconnected(each: Replica) -> None:
    """Let the client's quiet period pass until Valkey answers it (its first command on a
    connection from before the restart may fail, as it does in a real outage)."""

    async def answers() -> bool:
        each.clock.advance(RETRY_INTERVAL)
        return await each.plans.ping()

    await until(answers)


# ---------------------------------------------------------------------------- wiring
async def test_the_wiring_shares_plans_with_a_url_an_llm_and_a_cache(valkey_server: ValkeyServer) -> None:
    llm = {"llm_base_url": "http://127.0.0.1:9/v1"}
    url = CoordinationSettings(url=valkey_server.url)
    assert isinstance(build_plans(PlannerSettings(**llm)), InProcessPlans)  # no URL
    assert isinstance(build_plans(PlannerSettings(coordination=url)), InProcessPlans)  # no LLM plans to share
    assert isinstance(build_plans(PlannerSettings(coordination=url, cache_ttl_seconds=0, **llm)), InProcessPlans)
    registry = CollectorRegistry()
    plans = build_plans(PlannerSettings(coordination=url, **llm), PlannerMetrics(registry))
    try:
        assert isinstance(plans, ValkeyPlans) and plans.valkey.prefix == "imagegen:planner"
        assert registry.get_sample_value("imagegen_planner_coordination_up") == 1
        made = await plans.plan_once("k", Maker())
        assert made.plan_id == "plan-1"
        client = redis.Redis.from_url(valkey_server.url)
        assert 3_590_000 < await client.pttl("imagegen:planner:plan:k") <= 3_600_000  # PLANNER_CACHE_TTL_SECONDS
        await client.aclose()
    finally:
        await plans.aclose()


def test_the_lock_lives_for_one_llm_planning_with_its_repair() -> None:
    settings = PlannerSettings(llm_timeout_seconds=10, llm_max_retries=1)
    assert settings.plan_lock_seconds == 10 * (1 + 1) * 2 + PLAN_LOCK_MARGIN_SECONDS
