"""LocalObjectStore: all or nothing, never outside its root."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from unittest import mock

import pytest

from executor_service.stores.local_store import LocalObjectStore
from imagegen.errors import NotFound, StorageUnavailable


async def test_put_then_stat(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, bucket="b")
    stored = await store.put("s/portrait/abc.png", b"data", "image/png", {"plan-id": "abc"})
    again = await store.stat("s/portrait/abc.png")
    assert again == stored
    assert (stored.size, stored.content_type, dict(stored.metadata)) == (4, "image/png", {"plan-id": "abc"})
    assert store.storage_path("s/portrait/abc.png") == "b/s/portrait/abc.png"
    assert await store.stat("s/portrait/missing.png") is None


async def test_failed_write_leaves_no_partial_object_and_no_temp_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(StorageUnavailable):
            await store.put("s/item/x.png", b"data", "image/png", {})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert await store.stat("s/item/x.png") is None


@pytest.mark.parametrize("key", ["../outside.png", "/etc/passwd", "a/../../b.png", ""])
async def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    store = LocalObjectStore(tmp_path / "root")
    with pytest.raises(ValueError):
        await store.stat(key)


async def test_open_reads_in_chunks_and_closing_unread_releases_the_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, bucket="b")
    await store.put("s/item/a.png", b"0123456789", "image/png", {})
    reader = await store.open("s/item/a.png", chunk_size=4)
    assert [chunk async for chunk in reader.chunks] == [b"0123", b"4567", b"89"]
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    readers = [await store.open("s/item/a.png", chunk_size=4) for _ in range(10)]
    for unread in readers:
        await unread.aclose()
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # ten unread readers would hold ten
    with pytest.raises(NotFound):
        await store.open("s/item/missing.png", chunk_size=4)
