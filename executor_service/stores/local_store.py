"""A directory on local disk as the object store: the embedded default.

Objects are files under root/key with their metadata in a sidecar
root/key.meta.json. Writes go to a temporary file in the same directory and
are renamed into place, so a reader never sees a partial image; the temporary
file is removed on every failure path. Its URLs are file:// URLs, which do not
expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import BinaryIO

from executor_service.ports import ObjectReader, SignedUrl, StoredObject
from imagegen.errors import NotFound, StorageUnavailable

_SIDECAR = ".meta.json"


class LocalObjectStore:
    def __init__(self, root: Path, bucket: str = "imagegen") -> None:
        self._root = root.resolve()
        self.bucket = bucket

    def ensure_ready(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    def storage_path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    async def ping(self) -> None:
        """The root is a directory this process can write into."""
        if not await asyncio.to_thread(_writable_directory, self._root):
            raise StorageUnavailable(f"local store {self._root} is not a writable directory")

    async def stat(self, key: str) -> StoredObject | None:
        return await asyncio.to_thread(self._stat, key)

    async def put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        return await asyncio.to_thread(self._put, key, data, content_type, metadata)

    async def url(self, key: str) -> str:
        return self._path(key).as_uri()

    async def sign(self, key: str, expires_in: dt.timedelta | None) -> SignedUrl:
        if await self.stat(key) is None:
            raise NotFound(f"no image is stored at {self.storage_path(key)}")
        return SignedUrl(await self.url(key), expire_time=None)

    async def open(self, key: str, chunk_size: int) -> ObjectReader:
        stored = await self.stat(key)
        try:
            file = await asyncio.to_thread(open, self._path(key), "rb") if stored else None
        except FileNotFoundError:  # removed between stat and open
            file = None
        if stored is None or file is None:
            raise NotFound(f"no image is stored at {self.storage_path(key)}")
        return ObjectReader(stored, _chunks(file, chunk_size, key), release=file.close)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root) or path == self._root:
            raise ValueError(f"object key {key!r} leaves the store")
        return path

    def _stat(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            info = path.stat()
            sidecar = json.loads(path.with_name(path.name + _SIDECAR).read_text("utf-8"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageUnavailable(f"local store cannot read {key}: {exc.strerror}") from exc
        return StoredObject(
            key=key,
            size=info.st_size,
            content_type=sidecar["content_type"],
            create_time=dt.datetime.fromtimestamp(info.st_mtime, dt.timezone.utc),
            metadata=sidecar["metadata"],
        )

    def _put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        path = self._path(key)
        sidecar = {"content_type": content_type, "metadata": dict(metadata)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Sidecar first: stat() looks for the image, so an image is never
            # visible without its metadata.
            _write_atomically(path.with_name(path.name + _SIDECAR), json.dumps(sidecar).encode())
            _write_atomically(path, data)
        except OSError as exc:
            raise StorageUnavailable(f"local store cannot write {key}: {exc.strerror}") from exc
        stored = self._stat(key)
        assert stored is not None
        return stored


async def _chunks(file: BinaryIO, chunk_size: int, key: str) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(file.read, chunk_size):
            yield chunk
    except OSError as exc:
        raise StorageUnavailable(f"local store cannot read {key}: {exc.strerror}") from exc
    finally:
        file.close()


def _writable_directory(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
