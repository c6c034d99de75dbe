"""Hostile input to every RPC of both services: nothing INTERNAL or UNKNOWN, nothing slow,
nothing written for a call that is refused.

A seeded generator (the seed is in every failure message) sends, per RPC, messages whose
fields take hostile values (limits and one past them, huge strings, control characters,
traversal, out-of-range enums and durations) and raw bytes mutated from valid requests
(flipped, cut, spliced, random). Bounded in count and time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from imagegen import catalogue
from imagegen.v1 import executor_service_pb2 as ex
from imagegen.v1 import planner_service_pb2 as pl
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan
from tests.conftest import Services

pytestmark = pytest.mark.integration

SEED = 20261130
CALLS_PER_RPC = 120
CALL_DEADLINE = 5.0  # "no call over a few seconds": a call still running then fails the test
REFUSED_CODES_ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def _strings(rng: random.Random, limit: int) -> str:
    return rng.choice([
        "", " ", "\t\n", "x", "a" * (limit - 1), "a" * limit, "a" * (limit + 1), "é" * limit, "🐉" * limit,
        "a" * 100_000, "\x00", "\x7f\x1b[31m", "../../etc/passwd", "a/b", "..", ".", "%2e%2e", "\\x",
        "IMAGE_TYPE_MAP", "\u202eevil", "\ufeff", "s" * 129, "table-1", "Ω≈ç√", "null",
    ])


def _size(rng: random.Random) -> str:
    return rng.choice(["", "64x64", "128x96", "63x64", "4097x64", "0x0", "-1x5", "1e3x64", "64X64",
                       "64x64x64", " 64x64", "99999x99999", "256x256", "00064x00064", "x", "１２８x１２８"])


def _map(rng: random.Random, key_limit: int, value_limit: int) -> dict[str, str]:
    entries = rng.choice([0, 1, 3, catalogue.MAX_MAP_ENTRIES, catalogue.MAX_MAP_ENTRIES + 1, 200])
    keys = ["k", "race", "Quality", "quality", "a" * key_limit, "a" * (key_limit + 1), "bad key", "", "é", "x.y-z_1"]
    return {f"{rng.choice(keys)}{i if i else ''}"[: key_limit + 2]: _strings(rng, value_limit) for i in range(entries)}


def _enum(rng: random.Random) -> int:
    return rng.choice([0, 1, 3, 4, 7, 8, -1, 2**31 - 1, -(2**31)])


def _plan(rng: random.Random) -> ImageGenerationPlan:
    plan = ImageGenerationPlan(
        enhanced_prompt=rng.choice([_strings(rng, catalogue.MAX_PROMPT_CHARS), "A lantern"]),
        image_type=_enum(rng),
        style=rng.choice([_strings(rng, catalogue.MAX_STYLE_CHARS), "painterly", "noir"]),
        size=_size(rng),
        session_id=rng.choice([_strings(rng, catalogue.MAX_SESSION_ID_CHARS), "fuzz"]),
        plan_id=rng.choice(["", "0" * 32, "zz", _strings(rng, 32)]),
    )
    plan.metadata.update(_map(rng, catalogue.MAX_MAP_KEY_CHARS, catalogue.MAX_METADATA_VALUE_CHARS))
    if rng.random() < 0.3:
        plan.provenance.planner = _strings(rng, 64)
        plan.provenance.latency.seconds = rng.choice([0, -1, 315_576_000_000, 2**62])
    return plan


def create_plan(rng: random.Random) -> pl.CreatePlanRequest:
    request = pl.CreatePlanRequest(
        prompt=rng.choice([_strings(rng, catalogue.MAX_PROMPT_CHARS), "A goblin ambush"]),
        image_type=_enum(rng), style=rng.choice(["", "painterly", _strings(rng, 40)]), size=_size(rng),
        session_id=rng.choice([_strings(rng, catalogue.MAX_SESSION_ID_CHARS), "fuzz"]), mode=_enum(rng),
    )
    request.context.update(_map(rng, catalogue.MAX_MAP_KEY_CHARS, catalogue.MAX_CONTEXT_VALUE_CHARS))
    return request


def execute_plan(rng: random.Random) -> ex.ExecutePlanRequest:
    request = ex.ExecutePlanRequest(request_id=rng.choice(["", _strings(rng, catalogue.MAX_REQUEST_ID_CHARS)]))
    if rng.random() < 0.9:
        request.plan.CopyFrom(_plan(rng))
    return request


def stream_execute_plan(rng: random.Random) -> ex.StreamExecutePlanRequest:
    base = execute_plan(rng)
    return ex.StreamExecutePlanRequest(plan=base.plan if base.HasField("plan") else None, request_id=base.request_id)


def _storage_path(rng: random.Random) -> str:
    return rng.choice([
        "", "imagegen", "imagegen/", "imagegen/fuzz/item/" + "a" * 32 + ".png", "other/fuzz/item/x.png",
        "imagegen/../etc/passwd", "imagegen//x", "imagegen/fuzz/item/" + "a" * 32 + ".png.meta.json",
        "imagegen/" + "a" * 2000, "imagegen/fuzz\\item", "imagegen/\x00", "/imagegen/x", _strings(rng, 1024),
    ])


def get_image(rng: random.Random) -> ex.GetImageRequest:
    return ex.GetImageRequest(storage_path=_storage_path(rng))


def sign_image_url(rng: random.Random) -> ex.SignImageUrlRequest:
    request = ex.SignImageUrlRequest(storage_path=_storage_path(rng))
    if rng.random() < 0.7:
        request.expires_in.seconds = rng.choice([0, 1, -1, 604_800, 604_801, 315_576_000_000, -(2**62), 2**62])
        request.expires_in.nanos = rng.choice([0, 1, -1, 999_999_999, 2_000_000_000])
    return request


# (service, method, streaming response, make a hostile message)
RPCS: list[tuple[str, str, bool, Callable[[random.Random], Any]]] = [
    ("planner", "/imagegen.v1.PlannerService/CreatePlan", False, create_plan),
    ("executor", "/imagegen.v1.ExecutorService/ExecutePlan", False, execute_plan),
    ("executor", "/imagegen.v1.ExecutorService/StreamExecutePlan", True, stream_execute_plan),
    ("executor", "/imagegen.v1.ExecutorService/GetImage", True, get_image),
    ("executor", "/imagegen.v1.ExecutorService/SignImageUrl", False, sign_image_url),
]


def _mutated(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0 and data:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # cut
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == 2:  # splice random bytes in
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    elif kind == 3:  # a field with a huge declared length
        data += bytes([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"x" * 8
    else:  # nothing like a message
        data = bytearray(rng.randbytes(rng.randint(0, 512)))
    return bytes(data)


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def _call(channel: grpc.aio.Channel, method: str, streaming: bool, payload: bytes) -> grpc.StatusCode:
    try:
        if streaming:
            call = channel.unary_stream(method)(payload, timeout=CALL_DEADLINE)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(method)(payload, timeout=CALL_DEADLINE)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
@pytest.mark.parametrize(("service", "method", "streaming", "make"), RPCS, ids=[rpc[1].rsplit("/", 1)[1] for rpc in RPCS])
async def test_hostile_messages_and_bytes_get_a_clear_status_and_change_nothing(
    services: Services, service: str, method: str, streaming: bool, make: Callable[[random.Random], Any]
) -> None:
    rng = random.Random(f"{SEED}-{method}")
    target = services.planner_target if service == "planner" else services.executor_target
    async with grpc.aio.insecure_channel(target) as channel:
        for i in range(CALLS_PER_RPC):
            message = make(rng)
            payload = message.SerializeToString() if i % 2 == 0 else _mutated(rng, message.SerializeToString())
            before = _files(services.store_dir)
            code = await _call(channel, method, streaming, payload)
            case = f"seed {SEED}, {method} call {i}: {payload[:120]!r}"
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), f"{code.name}: {case}"
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"over {CALL_DEADLINE} s: {case}"
            if code != grpc.StatusCode.OK:
                assert code in REFUSED_CODES_ALLOWED, f"{code.name}: {case}"
                assert _files(services.store_dir) == before, f"a refused call wrote: {case}"
                assert not [p for p in before if p.name.endswith(".tmp")], f"temp file left: {case}"
