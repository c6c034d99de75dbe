"""Benchmarks on the executor with the SeaweedFS S3 server (started here, on loopback):

2. Store path: a provider that returns fixed-size bytes at once, distinct plans through
   the executor over gRPC, images/s and p50/p99, against raw minio put_object of the
   same bytes from one process, at the same concurrency, in the same run.
6. Memory: the executor's peak RSS while 64 concurrent 4 MB images are executed and stored.
7. GetImage of an 8 MB image: MB/s against a bare grpc.aio server-streaming service that
   reads the same object from the same S3 server with the raw minio SDK (the baseline),
   and, for context, one that sends the bytes from memory.
10. Slow readers: 64 GetImage calls of an 8 MB image, each on its own connection, whose
    clients read the first message and then stop; the executor's RSS growth against the
    same 64 connections open and idle (the baseline). The image bytes it holds for them
    are bounded by its GetImage buffer (EXECUTOR_GETIMAGE_BUFFER_BYTES).

The executor runs in its own process (bench._servers), so its RSS is its own and the
load generator does not share its GIL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc

from bench._servers import STREAM_METHOD
from bench.harness import Target, percentile, report, run_load
from clients import AsyncExecutorClient
from executor_service.config import DEFAULT_IMAGE_BUFFER_BYTES
from imagegen.v1 import executor_service_pb2
from imagegen.v1.image_plan_pb2 import ImageGenerationPlan, ImageType
from tests.support.s3_server import S3Server

MB = 1024 * 1024


@contextmanager
def s3_server() -> Iterator[S3Server]:
    with tempfile.TemporaryDirectory() as tmp:
        server = S3Server(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def server_process(kind: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """(target, pid) of `python -m bench._servers KIND` with env added."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTOR_", "OPENAI_", "PLANNER_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._servers", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**clean, **env},
    )
    try:
        yield f"127.0.0.1:{int(process.stdout.readline())}", process.pid  # type: ignore[union-attr]
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=60)


def executor_env(s3: S3Server, bucket: str, image_bytes: int) -> dict[str, str]:
    return {
        "EXECUTOR_ADDRESS": "127.0.0.1:0",
        "EXECUTOR_STORE": "minio",
        "EXECUTOR_MINIO_ENDPOINT": s3.endpoint,
        "EXECUTOR_MINIO_ACCESS_KEY": s3.access_key,
        "EXECUTOR_MINIO_SECRET_KEY": s3.secret_key,
        "EXECUTOR_MINIO_REGION": s3.region,
        "EXECUTOR_BUCKET": bucket,
        "BENCH_IMAGE_BYTES": str(image_bytes),
        "LOG_LEVEL": "WARNING",
    }


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), read before it exits."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def rss_mb(pid: int) -> float:
    """The process's resident set now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


async def settled_rss_mb(pid: int, *, quiet: float = 1.0, limit: float = 30.0) -> float:
    """VmRSS once it has moved by less than 1 MB for `quiet` seconds (at most `limit`):
    what the process holds when it has stopped reading ahead. Polling here measures
    the process from outside; nothing waits on it to go on."""
    started = time.monotonic()
    last, since = rss_mb(pid), started
    while time.monotonic() - started < limit:
        await asyncio.sleep(0.1)
        now = rss_mb(pid)
        if abs(now - last) >= 1:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return rss_mb(pid)


def plan(i: int, session: str) -> ImageGenerationPlan:
    return ImageGenerationPlan(
        enhanced_prompt=f"A dragon's hoard, coin pile {i}", image_type=ImageType.IMAGE_TYPE_ITEM,
        style="painterly", size="2048x2048", session_id=session,
    )


async def store_path(s3: S3Server, quick: bool) -> dict:
    size, concurrency = 256 * 1024, 16
    count = 64 if quick else 1500
    data = b"\x89PNG\r\n\x1a\n" + bytes(size - 8)
    client = s3.client()
    client.make_bucket("raw")

    def raw_put(i: int) -> float:
        import io

        started = time.perf_counter()
        client.put_object("raw", f"raw/{i}.png", io.BytesIO(data), len(data), content_type="image/png")
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:  # the baseline: one process, same concurrency
        list(pool.map(raw_put, range(-50, 0)))
        started = time.perf_counter()
        raw_latencies = list(pool.map(raw_put, range(count)))
        raw_seconds = time.perf_counter() - started

    with server_process("executor", executor_env(s3, "executor", size)) as (target, _):
        async with AsyncExecutorClient(target) as executor:
            async def execute(i: int) -> None:
                await executor.execute_plan(plan(i, "store"))

            await run_load(lambda i: execute(-1 - i), requests=50, concurrency=concurrency)
            stats = await run_load(execute, requests=count, concurrency=concurrency)
    raw_throughput = count / raw_seconds
    rows = [
        {"path": "raw put_object", "images": count, "concurrency": concurrency, "images_per_s": raw_throughput,
         "p50_ms": percentile(raw_latencies, 0.5) * 1000, "p99_ms": percentile(raw_latencies, 0.99) * 1000},
        {"path": "executor ExecutePlan", "images": count, "concurrency": concurrency, "images_per_s": stats.throughput,
         "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms},
    ]
    ratio = stats.throughput / raw_throughput
    return report("executor_store_path", rows, [Target("executor/raw put throughput", ratio, 0.8, ">=")],
                  {"image_bytes": size})


async def memory(s3: S3Server, quick: bool) -> dict:
    size, count = 4 * MB, 16 if quick else 64
    with server_process("executor", executor_env(s3, "memory", size)) as (target, pid):
        idle = peak_rss_mb(pid)
        async with AsyncExecutorClient(target) as executor:
            results = await asyncio.gather(*(executor.execute_plan(plan(i, "memory")) for i in range(count)))
        assert all(r.byte_size == size for r in results)
        peak = peak_rss_mb(pid)
    rows = [{"concurrent_images": count, "image_mb": size / MB, "rss_at_start_mb": idle, "peak_rss_mb": peak}]
    return report("executor_memory", rows, [Target(f"executor peak RSS, {count} x 4 MB", peak, 400, "<=", " MB")])


async def get_image(s3: S3Server, quick: bool) -> dict:
    size, rounds = 8 * MB, 5 if quick else 40
    env = executor_env(s3, "getimage", size)

    async def throughput(fetch) -> float:  # type: ignore[no-untyped-def]
        for _ in range(3):
            assert await fetch() == size
        started = time.perf_counter()
        for _ in range(rounds):
            await fetch()
        return rounds * size / MB / (time.perf_counter() - started)

    async def bare(kind: str, storage_path: str) -> float:
        with server_process(kind, env) as (target, _):
            async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * MB)]) as channel:
                stream = channel.unary_stream(
                    STREAM_METHOD,
                    request_serializer=executor_service_pb2.GetImageRequest.SerializeToString,
                    response_deserializer=executor_service_pb2.GetImageResponse.FromString,
                )
                request = executor_service_pb2.GetImageRequest(storage_path=storage_path)

                async def fetch() -> int:
                    return sum([len(m.chunk_data) async for m in stream(request)])

                return await throughput(fetch)

    with server_process("executor", env) as (target, _):
        async with AsyncExecutorClient(target) as executor:
            stored = await executor.execute_plan(plan(0, "getimage"))

            async def fetch_image() -> int:
                return len((await executor.get_image(stored.storage_path)).data)

            measured = await throughput(fetch_image)
    baseline = await bare("s3stream", stored.storage_path)
    from_memory = await bare("stream", stored.storage_path)
    rows = [
        {"path": "bare stream, raw SDK read from S3 (baseline)", "mb_per_s": baseline},
        {"path": "executor GetImage", "mb_per_s": measured},
        {"path": "bare stream from memory (context)", "mb_per_s": from_memory},
    ]
    return report("get_image", rows, [Target("GetImage / bare S3 stream MB/s", measured / baseline, 0.8, ">=")],
                  {"image_bytes": size, "vs_memory": measured / from_memory})


async def slow_readers(s3: S3Server, quick: bool) -> dict:
    size, readers = 8 * MB, 8 if quick else 64
    env = executor_env(s3, "slowreaders", size)
    buffer_bytes = int(env.get("EXECUTOR_GETIMAGE_BUFFER_BYTES", DEFAULT_IMAGE_BUFFER_BYTES))
    with server_process("executor", env) as (target, pid):
        async with AsyncExecutorClient(target) as executor:
            stored = await executor.execute_plan(plan(0, "slowreaders"))
            assert len((await executor.get_image(stored.storage_path)).data) == size  # warm
        # A fixed 64 KiB HTTP/2 window (BDP probing off), so each reader stalls after its
        # first message whatever the timing: with probing on, how far a client's window
        # grows is up to timing, and a client may simply take the whole image.
        options = [
            ("grpc.http2.bdp_probe", 0),
            ("grpc.use_local_subchannel_pool", 1),  # a connection per reader, never shared
            ("grpc.max_receive_message_length", 64 * MB),
        ]
        channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(readers)]
        try:
            await asyncio.gather(*(channel.channel_ready() for channel in channels))
            idle = await settled_rss_mb(pid)
            clients = [AsyncExecutorClient(channel) for channel in channels]
            # Each reads the first message (open_image does) and then nothing.
            streams = await asyncio.gather(*(client.open_image(stored.storage_path) for client in clients))
            stalled = await settled_rss_mb(pid)

            async def rest(stream) -> int:  # type: ignore[no-untyped-def]
                async with stream:
                    return sum([len(chunk) async for chunk in stream])

            assert all(n == size for n in await asyncio.gather(*(rest(s) for s in streams)))  # and then all of it
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
    growth = stalled - idle
    rows = [
        {"readers": readers, "image_mb": size / MB, "buffer_mb": buffer_bytes / MB, "idle_connections_rss_mb": idle,
         "stalled_readers_rss_mb": stalled, "growth_mb": growth, "images_mb": readers * size / MB},
    ]
    # The buffer counts image bytes between the store and gRPC; each is in memory about
    # three times on its way (in its message, serialized, gRPC's copy): the documented bound.
    limit = 3 * buffer_bytes / MB
    return report("get_image_slow_readers", rows,
                  [Target(f"executor RSS growth, {readers} stalled readers of 8 MB", growth, limit, "<=", " MB")])


async def run(quick: bool = False) -> list[dict]:
    with s3_server() as s3:
        return [
            await store_path(s3, quick), await memory(s3, quick), await get_image(s3, quick),
            await slow_readers(s3, quick),
        ]
