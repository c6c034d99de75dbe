"""LocalObjectStore: all or nothing, never outside its root."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from executor_service.ports import AlreadyStored
from executor_service.stores.local_store import LocalObjectStore
from imagegen.errors import NotFound, StorageMisconfigured, StorageUnavailable


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
    assert await store.stat(key) is None
    with pytest.raises(NotFound):
        await store.open(key, 1024)
    with pytest.raises(StorageMisconfigured):
        await store.put(key, b"x", "image/png", {})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


SIDECARS = {
    "not JSON": b"{not json",
    "binary": bytes(range(256)),
    "empty": b"",
    "a list": b"[]",
    "no content type": b'{"metadata": {}}',
    "a number for content type": b'{"content_type": 5, "metadata": {}}',
    "metadata not strings": b'{"content_type": "image/png", "metadata": {"width": 1024}}',
    "metadata a list": b'{"content_type": "image/png", "metadata": []}',
    "nested past the parser's depth": b'{"metadata": ' * 3_000,  # within the 64 KiB read
    "too large": b'{"content_type": "image/png", "metadata": {"x": "' + b"y" * (1 << 20) + b'"}}',
}


@pytest.mark.parametrize("sidecar", SIDECARS.values(), ids=SIDECARS.keys())
async def test_an_object_whose_sidecar_the_store_did_not_write_is_absent(tmp_path: Path, sidecar: bytes) -> None:
    store = LocalObjectStore(tmp_path, bucket="b")
    await store.put("s/item/a.png", b"image", "image/png", {"width": "1"})
    (tmp_path / "s/item/a.png.meta.json").write_bytes(sidecar)
    assert await store.stat("s/item/a.png") is None
    with pytest.raises(NotFound):
        await store.open("s/item/a.png", 1024)
    with pytest.raises(NotFound):
        await store.sign("s/item/a.png", None)
    healed = await store.put("s/item/a.png", b"image", "image/png", {"width": "1"})  # the next execution
    assert await store.stat("s/item/a.png") == healed


@pytest.mark.parametrize("link", ["image", "sidecar", "folder"])
async def test_nothing_is_read_or_written_through_a_link(tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (outside / "secret.png.meta.json").write_text('{"content_type": "image/png", "metadata": {}}')
    store = LocalObjectStore(tmp_path / "root", bucket="b")
    await store.put("s/item/a.png", b"image", "image/png", {})
    folder = tmp_path / "root" / "s" / "item"
    if link == "folder":
        shutil.rmtree(folder)
        folder.symlink_to(outside, target_is_directory=True)
        key = "s/item/secret.png"
    else:
        target = folder / ("a.png" if link == "image" else "a.png.meta.json")
        target.unlink()
        target.symlink_to(outside / ("secret.png" if link == "image" else "secret.png.meta.json"))
        key = "s/item/a.png"
    assert await store.stat(key) is None
    with pytest.raises(NotFound):
        await store.open(key, 1024)
    if link == "folder":
        with pytest.raises(StorageMisconfigured):
            await store.put("s/item/new.png", b"new", "image/png", {})
        assert sorted(p.name for p in outside.iterdir()) == ["secret.png", "secret.png.meta.json"]


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


async def test_put_creates_only_if_absent_and_the_loser_gets_the_stored_object(tmp_path: Path) -> None:
    first, second = LocalObjectStore(tmp_path, "b"), LocalObjectStore(tmp_path, "b")  # two processes, one disk
    stored = await first.put("s/item/a.png", b"first", "image/png", {"sha256": "1"})
    with pytest.raises(AlreadyStored) as taken:
        await second.put("s/item/a.png", b"second!", "image/png", {"sha256": "2"})
    assert taken.value.existing == stored
    assert (tmp_path / "s/item/a.png").read_bytes() == b"first" and stored.metadata == {"sha256": "1"}
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


async def test_concurrent_puts_store_one_object_and_every_writer_describes_it(tmp_path: Path) -> None:
    stores = [LocalObjectStore(tmp_path, "b") for _ in range(8)]
    outcomes = await asyncio.gather(
        *(store.put("s/item/a.png", f"bytes-{i}".encode(), "image/png", {"sha256": str(i)}) for i, store in enumerate(stores)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o.existing for o in outcomes if isinstance(o, AlreadyStored)]
    assert len(winners) == 1 and len(losers) == 7 and all(loser == winners[0] for loser in losers)
    on_disk = (tmp_path / "s/item/a.png").read_bytes()
    assert on_disk == f"bytes-{winners[0].metadata['sha256']}".encode()


async def test_a_sidecar_left_without_its_image_is_written_over(tmp_path: Path) -> None:
    """A writer that died between the sidecar and the image left no object: the next put stores."""
    store = LocalObjectStore(tmp_path, "b")
    (tmp_path / "s/item").mkdir(parents=True)
    (tmp_path / "s/item/a.png.meta.json").write_text('{"content_type": "image/png", "metadata": {"sha256": "dead"}}')
    stored = await store.put("s/item/a.png", b"fresh", "image/png", {"sha256": "new"})
    assert stored.metadata == {"sha256": "new"} and (tmp_path / "s/item/a.png").read_bytes() == b"fresh"


async def test_writers_in_other_processes_store_one_object(tmp_path: Path) -> None:
    """Four processes race for one key on one disk: one stores, three are told what is stored."""
    import subprocess
    import sys

    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from executor_service.ports import AlreadyStored\n"
        "from executor_service.stores.local_store import LocalObjectStore\n"
        "async def main():\n"
        "    store = LocalObjectStore(Path(sys.argv[1]), 'b')\n"
        "    try:\n"
        "        await store.put('s/item/a.png', sys.argv[2].encode() * 100_000, 'image/png', {'sha256': sys.argv[2]})\n"
        "        print('stored', sys.argv[2])\n"
        "    except AlreadyStored as taken:\n"
        "        print('taken', taken.existing.metadata['sha256'])\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i)], cwd=root, stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outcomes = [run.communicate(timeout=60)[0].split() for run in runs]
    stored = [who for verdict, who in outcomes if verdict == "stored"]
    told = {who for verdict, who in outcomes if verdict == "taken"}
    assert len(stored) == 1 and told <= set(stored) and len(outcomes) == 4
    assert (tmp_path / "s/item/a.png").read_bytes() == stored[0].encode() * 100_000
