"""The pure parts of the image lifecycle: session quotas on a clock, page tokens, the price
table and its settings, and ListImages' order over a local store whose files have
distinct create times; and the same quota and session forgetting on a real Valkey."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from executor_service.config import ExecutorSettings
from executor_service.coordination.in_process import InProcessCoordination
from executor_service.coordination.quotas import SessionQuotas
from executor_service.coordination.valkey import ValkeyCoordination
from executor_service.executor import Executor
from executor_service.page_tokens import PREFIX, NotOurs, PageTokens
from executor_service.ports import QuotaLimit, Usage
from executor_service.pricing import MAX_ESTIMATE_MICROS, Price, PriceTable
from executor_service.stores.local_store import LocalObjectStore
from imagegen import catalogue
from imagegen.errors import InvalidRequest, QuotaExceeded
from imagegen.v1.image_plan_pb2 import ImageType
from imagegen_runtime.error_mapping import to_status
from imagegen_runtime.settings import ConfigError
from imagegen_runtime.valkey import Valkey
from tests.support.plans import make_plan
from tests.support.valkey_server import ValkeyServer
from tests.unit.test_executor import PNG, CountingProvider

HOURLY = (QuotaLimit(2, 3600, "2/hour"), QuotaLimit(3, 86_400, "3/day"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- quotas ------------------------------------------------------------------------------


def test_a_session_gets_as_many_renders_as_its_limits_allow_and_a_slot_frees_as_the_window_slides() -> None:
    clock = Clock()
    quotas = SessionQuotas(clock)
    quotas.take("s", HOURLY)
    clock.now += 600
    quotas.take("s", HOURLY)
    with pytest.raises(QuotaExceeded) as over:
        quotas.take("s", HOURLY)
    assert (over.value.limit, over.value.subject, over.value.retry_after) == ("2/hour", "session:s", 3000)
    quotas.take("t", HOURLY)  # another session is counted apart
    clock.now += 3000.5  # the first render has left the hour
    quotas.take("s", HOURLY)
    clock.now += 3600
    with pytest.raises(QuotaExceeded) as daily:
        quotas.take("s", HOURLY)
    assert daily.value.limit == "3/day"


def test_a_render_given_back_frees_its_slot() -> None:
    quotas = SessionQuotas(Clock())
    token = quotas.take("s", HOURLY)
    quotas.take("s", HOURLY)
    quotas.give_back("s", token)
    quotas.take("s", HOURLY)
    with pytest.raises(QuotaExceeded):
        quotas.take("s", HOURLY)


def test_quota_exceeded_is_resource_exhausted_with_quota_failure_and_retry_info() -> None:
    from google.rpc import error_details_pb2, status_pb2

    status = to_status(QuotaExceeded("table-7", "10/hour", retry_after=42))
    assert status.code.name == "RESOURCE_EXHAUSTED"
    details = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"]).details
    failure, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(failure) for d in details if d.Is(failure.DESCRIPTOR))
    assert any(d.Unpack(retry) for d in details if d.Is(retry.DESCRIPTOR))
    assert [(v.subject, v.description) for v in failure.violations] == [("session:table-7", "at most 10/hour new renders")]
    assert retry.retry_delay.seconds == 42


async def test_the_executor_counts_renders_only_not_reuses_and_gives_back_failed_ones(tmp_path: Path) -> None:
    provider = CountingProvider(fail=RuntimeError("the provider broke"))
    store = LocalObjectStore(tmp_path)
    executor = Executor(provider, store, "http://x", quotas=(QuotaLimit(1, 3600, "1/hour"),))
    plan = make_plan(session_id="s")
    with pytest.raises(RuntimeError):
        await executor.execute(plan)
    provider.fail = None
    assert not (await executor.execute(plan)).reused  # the failure gave its slot back
    assert (await executor.execute(plan)).reused  # reused: counted nothing, refused nothing
    with pytest.raises(QuotaExceeded) as over:
        await executor.execute(make_plan(session_id="s", enhanced_prompt="another"))
    assert over.value.plan is not None and over.value.plan.session_id == "s"
    assert provider.calls == 2


# -- request records of a session ------------------------------------------------------


async def test_forgetting_a_session_forgets_its_request_records_only() -> None:
    coordination = InProcessCoordination()
    assert await coordination.claim_request("r1", "s", "p") is None
    assert await coordination.claim_request("r2", "other", "p") is None
    await coordination.forget_session("s")
    assert await coordination.claim_request("r1", "t", "q") is None  # free again, for anyone
    with pytest.raises(InvalidRequest):
        await coordination.claim_request("r2", "t", "p")  # still bound to its session


@pytest.fixture
async def valkey_pair(tmp_path: Path) -> AsyncIterator[tuple[ValkeyCoordination, ValkeyCoordination]]:
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    with ValkeyServer(tmp_path / "valkey") as server:
        pair = tuple(ValkeyCoordination(Valkey(server.url, prefix=prefix, retry_interval=0.05)) for _ in range(2))
        yield pair  # type: ignore[misc]
        for coordination in pair:
            await coordination.aclose()


async def test_on_valkey_replicas_share_a_sessions_quota_and_forget_its_records(
    valkey_pair: tuple[ValkeyCoordination, ValkeyCoordination],
) -> None:
    first, second = valkey_pair
    token = await first.take_render_quota("s", HOURLY)
    await second.take_render_quota("s", HOURLY)
    with pytest.raises(QuotaExceeded) as over:
        await first.take_render_quota("s", HOURLY)
    assert over.value.limit == "2/hour" and 3590 < over.value.retry_after <= 3600
    await second.return_render_quota("s", token)  # given back on another replica
    await first.take_render_quota("s", HOURLY)
    await second.take_render_quota("t", HOURLY)

    assert await first.claim_request("r1", "s", "p") is None
    assert await first.claim_request("r2", "other", "p") is None
    await second.forget_session("s")
    assert await second.claim_request("r1", "t", "q") is None
    with pytest.raises(InvalidRequest):
        await second.claim_request("r2", "t", "p")


# -- page tokens ------------------------------------------------------------------------


def test_a_page_token_opens_only_for_its_listing_and_key_and_unchanged() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.issue((123, "s/portrait/a.png"), "s/")
    assert tokens.open(token, "s/") == (123, "s/portrait/a.png")
    for bad, listing in [
        (token, "t/"),
        (token, "s/portrait/"),
        (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "s/"),
        ("", "s/"),
        ("!!!", "s/"),
        ("A" * 5000, "s/"),
    ]:
        with pytest.raises(NotOurs):
            tokens.open(bad, listing)
    with pytest.raises(NotOurs):
        PageTokens(b"another key").open(token, "s/")
    assert PageTokens(b"k" * 32).open(token, "s/") == (123, "s/portrait/a.png")  # replicas sharing the key


def test_no_page_token_looks_like_a_command_line_option() -> None:
    """base64url may begin with "-", which `imagegen images --page-token TOKEN` would take
    for an option: every token begins with a letter, and one without it does not open."""
    tokens = PageTokens(b"k" * 32)
    issued = [tokens.issue((micros, f"s/item/{micros:032x}.png"), "s/") for micros in range(2000)]
    assert all(token[0].isalpha() for token in issued)
    assert tokens.open(issued[7], "s/") == (7, f"s/item/{7:032x}.png")
    with pytest.raises(NotOurs):
        tokens.open(issued[7].removeprefix(PREFIX), "s/")


def test_the_longest_page_token_fits_the_catalogues_limit_and_a_longer_one_is_not_read() -> None:
    tokens = PageTokens(b"k" * 32)
    session = "s" * catalogue.MAX_SESSION_ID_CHARS
    listing, key = f"{session}/character/", f"{session}/character/{'f' * 32}.webp"
    longest = tokens.issue((2**53, key), listing)  # the longest listing, key and create time
    assert len(longest) <= catalogue.MAX_PAGE_TOKEN_CHARS
    assert tokens.open(longest, listing) == (2**53, key)
    with pytest.raises(NotOurs, match="too long"):  # refused before it is decoded or signed
        tokens.open("A" * (catalogue.MAX_PAGE_TOKEN_CHARS + 1), listing)


# -- prices -----------------------------------------------------------------------------


def test_the_price_table_estimates_micros_from_tokens_or_per_image() -> None:
    table = PriceTable.from_json(
        json.dumps({
            "openai/gpt-image-2": {"input_per_million": 5, "input_image_per_million": 8, "output_per_million": 40},
            "offline-1": {"per_image": 0.001},
        })
    )
    usage = Usage(input_tokens=60, input_image_tokens=10, output_tokens=272, total_tokens=332)
    assert table.estimate_micros("openai", "gpt-image-2", usage) == 50 * 5 + 10 * 8 + 272 * 40
    assert table.estimate_micros("offline", "offline-1", None) == 1000
    assert table.estimate_micros("other", "gpt-image-2", usage) == 0  # priced for openai only
    assert PriceTable().estimate_micros("openai", "gpt-image-2", usage) == 0
    assert table.price("x", "offline-1") == Price(per_image=0.001)


def test_an_estimate_past_any_sensible_cost_is_capped_not_an_overflow() -> None:
    # Finite prices a table accepts, times the most tokens a provider's usage may report.
    table = PriceTable.from_json('{"offline-1": {"per_image": 1e303}, "gpt-image-2": {"output_per_million": 1e300}}')
    usage = Usage(input_tokens=0, input_image_tokens=0, output_tokens=2**53 - 1, total_tokens=2**53 - 1)
    assert table.estimate_micros("offline", "offline-1", None) == MAX_ESTIMATE_MICROS  # 1e309: inf as a float
    assert table.estimate_micros("openai", "gpt-image-2", usage) == MAX_ESTIMATE_MICROS


@pytest.mark.parametrize(
    "raw",
    ["[]", "{", '{"m": {"per_image": -1}}', '{"m": {"per_token": 1}}', '{"m": {"per_image": "1"}}', '{"m": 3}',
     '{"m": ' * 3_000],
    ids=["list", "unclosed", "negative", "unknown-price", "string-price", "number", "nested-past-the-parsers-depth"],
)
def test_a_bad_price_table_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="EXECUTOR_PRICE_TABLE"):
        ExecutorSettings.from_env({"EXECUTOR_PRICE_TABLE": raw})


def test_lifecycle_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"gpt-image-2": {"output_per_million": 40}}')
    settings = ExecutorSettings.from_env({
        "EXECUTOR_SESSION_QUOTA": "10/hour, 50/day",
        "EXECUTOR_RETENTION_DAYS": "30",
        "EXECUTOR_PRICE_TABLE": str(prices),
        "EXECUTOR_PAGE_TOKEN_KEY": SHARED_KEY,
    })
    assert settings.session_quota == (QuotaLimit(10, 3600, "10/hour"), QuotaLimit(50, 86_400, "50/day"))
    assert settings.retention_days == 30 and settings.page_token_key == SHARED_KEY
    assert settings.price_table.price("openai", "gpt-image-2") == Price(output_per_million=40)
    assert SHARED_KEY not in repr(settings)


SHARED_KEY = "a-shared-secret-of-32-bytes-or-more"


@pytest.mark.parametrize("key", ["shared-secret", "x" * 31, "é" * 15])
def test_a_page_token_key_shorter_than_the_hash_is_refused_at_start(key: str) -> None:
    with pytest.raises(ConfigError, match="EXECUTOR_PAGE_TOKEN_KEY") as caught:
        ExecutorSettings.from_env({"EXECUTOR_PAGE_TOKEN_KEY": key})
    assert key not in str(caught.value)  # a secret is named, never shown
    defaults = ExecutorSettings.from_env({})
    assert (defaults.session_quota, defaults.retention_days, len(defaults.price_table)) == ((), 0, 0)


@pytest.mark.parametrize("raw", ["10", "10/week", "0/hour", "10/hour,20/hour", "ten/day"])
def test_a_bad_session_quota_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="EXECUTOR_SESSION_QUOTA"):
        ExecutorSettings.from_env({"EXECUTOR_SESSION_QUOTA": raw})


# -- listing order ----------------------------------------------------------------------


async def test_list_images_is_newest_first_across_pages_over_a_local_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    executor = Executor(CountingProvider(), store, "http://x")
    base = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    ages = [5, 1, 4, 2, 3]  # hours; written in another order than their times
    keys = {}
    for n, hours in enumerate(ages):
        key = f"s/{'map' if n % 2 else 'item'}/{uuid.uuid4().hex}.png"
        await store.put(key, PNG, "image/png", {"plan-id": key[-36:-4]})
        when = base - hours * 3600
        os.utime(tmp_path / key, (when, when))
        keys[hours] = key
    seen, token = [], ""
    while True:
        images, token = await executor.list_images("s", 0, 2, token)
        seen.append([image.storage_path.partition("/")[2] for image in images])
        if not token:
            break
    assert seen == [[keys[1], keys[2]], [keys[3], keys[4]], [keys[5]]]
    maps, _ = await executor.list_images("s", ImageType.IMAGE_TYPE_MAP, 10)
    assert [image.storage_path.partition("/")[2] for image in maps] == [keys[1], keys[2]]
    assert [image.plan.image_type for image in maps] == [ImageType.IMAGE_TYPE_MAP] * 2
    await asyncio.gather(*(store.delete(key) for key in keys.values()))
    assert await executor.list_images("s") == ([], "")
    assert list(tmp_path.rglob("*.meta.json")) == []  # the sidecars went with their images
