"""A directory on local disk as the object store: the embedded default.

Objects are files under root/key with their metadata in a sidecar
root/key.meta.json. Writes go to a temporary file in the same directory and
are renamed into place, so a reader never sees a partial image; the temporary
file is removed on every failure path. Its URLs are file:// URLs, which do not
expire.

The store answers only for what it wrote: a sidecar that is not the JSON it
writes (or is larger than it ever writes) makes its object absent, so reads are
NOT_FOUND and the next execution of the plan renders and writes it again; a path
that goes through a symbolic link is never read or written, so nothing outside
the root is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from executor_service.ports import AlreadyStored, ObjectReader, SignedUrl, StoredObject
from imagegen.errors import NotFound, StorageMisconfigured, StorageUnavailable

log = logging.getLogger(__name__)

_SIDECAR = ".meta.json"
# A sidecar holds a media type and a few short metadata values; anything larger is not ours.
MAX_SIDECAR_BYTES = 64 * 1024
_NO_FOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _NotOurs(Exception):
    """The path leaves the root through a link, or holds something the store did not write."""


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
        file = await asyncio.to_thread(self._open, key) if stored else None
        if stored is None or file is None:
            raise NotFound(f"no image is stored at {self.storage_path(key)}")
        return ObjectReader(stored, _chunks(file, chunk_size, key), release=file.close)

    async def list(self, prefix: str, limit: int, start_after: str = "") -> list[StoredObject]:
        """A walk of the directories prefix can be in, sorted by key: what the store wrote
        (an image with its sidecar); temporary files and anything it did not write left out."""
        return await asyncio.to_thread(self._list, prefix, limit, start_after)

    async def delete(self, key: str) -> None:
        """The image, then its sidecar, under the writers' lock."""
        await asyncio.to_thread(self._delete, key)

    async def set_retention(self, days: int) -> bool:
        return False  # a directory has no lifecycle rules: the executor's sweep expires images

    def _list(self, prefix: str, limit: int, start_after: str) -> list[StoredObject]:
        base = prefix.rpartition("/")[0]
        try:
            top = self._path(base) if base else self._root
        except _NotOurs:
            return []
        keys: list[str] = []
        for directory, subdirectories, files in os.walk(top):  # os.walk does not follow links
            subdirectories.sort()
            relative = Path(directory).relative_to(self._root)
            for name in files:
                if name.startswith(".") or name.endswith(_SIDECAR):
                    continue
                key = (relative / name).as_posix() if relative.parts else name
                if key.startswith(prefix) and key > start_after:
                    keys.append(key)
        found: list[StoredObject] = []
        for key in sorted(keys):
            if len(found) >= limit:
                break
            stored = self._stat(key)
            if stored is not None:
                found.append(stored)
        return found

    def _delete(self, key: str) -> None:
        try:
            path = self._path(key)
        except _NotOurs:
            return  # never written by this store: nothing of it to delete
        try:
            with _exclusive(self._root):
                path.unlink(missing_ok=True)
                path.with_name(path.name + _SIDECAR).unlink(missing_ok=True)
        except FileNotFoundError:
            return  # the root itself is gone: nothing is stored
        except OSError as exc:
            raise StorageUnavailable(f"local store cannot delete {key}: {exc.strerror}") from exc

    def _path(self, key: str) -> Path:
        """root/key, refusing a key whose path is not exactly that once links are resolved."""
        parts = Path(key).parts
        path = self._root / key
        if not parts or Path(key).is_absolute() or ".." in parts or path.resolve() != path:
            raise _NotOurs(f"{key[:200]!r} leaves the store")
        return path

    def _open(self, key: str) -> BinaryIO | None:
        try:
            fd = os.open(self._path(key), _NO_FOLLOW)
        except (FileNotFoundError, _NotOurs):  # removed or replaced between stat and open
            return None
        except OSError as exc:
            raise StorageUnavailable(f"local store cannot read {key}: {exc.strerror}") from exc
        return os.fdopen(fd, "rb")

    def _stat(self, key: str) -> StoredObject | None:
        try:
            path = self._path(key)
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise _NotOurs(f"{key} is not a regular file")
            content_type, metadata = _read_sidecar(path.with_name(path.name + _SIDECAR))
        except FileNotFoundError:
            return None
        except _NotOurs as exc:
            log.warning("local store: %s; treating it as absent", exc)
            return None
        except OSError as exc:
            raise StorageUnavailable(f"local store cannot read {key}: {exc.strerror}") from exc
        return StoredObject(
            key=key,
            size=info.st_size,
            content_type=content_type,
            create_time=dt.datetime.fromtimestamp(info.st_mtime, dt.timezone.utc),
            metadata=metadata,
        )

    def _put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        """Create-if-absent: under an exclusive lock on the store's root directory (flock(2),
        which every process writing this store takes, and which the kernel drops when a
        writer dies), look, then write the sidecar and the image, each renamed into place.
        stat() needs the image, so an image is never visible without its metadata; what is
        there but not the store's own (a sidecar it did not write) is written over.
        AlreadyStored with the object when the key is taken."""
        try:
            path = self._path(key)
        except _NotOurs as exc:
            raise StorageMisconfigured(f"local store refuses to write {key}: {exc}") from None
        sidecar_path = path.with_name(path.name + _SIDECAR)
        sidecar = json.dumps({"content_type": content_type, "metadata": dict(metadata)}).encode()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            with _exclusive(self._root):
                existing = self._stat(key)
                if existing is not None:
                    raise AlreadyStored(existing)
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(sidecar_path, sidecar)
                try:
                    _write_atomically(path, data)
                except BaseException:
                    sidecar_path.unlink(missing_ok=True)  # nothing was stored: leave nothing
                    raise
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


def _read_sidecar(path: Path) -> tuple[str, dict[str, str]]:
    """(content_type, metadata) from a sidecar this store wrote; _NotOurs for anything else."""
    try:
        fd = os.open(path, _NO_FOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotOurs(f"{path.name} is a link") from None
        raise
    with os.fdopen(fd, "rb") as file:
        raw = file.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise _NotOurs(f"{path.name} is larger than any sidecar the store writes")
    try:
        sidecar = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise _NotOurs(f"{path.name} is not JSON") from None
    content_type = sidecar.get("content_type") if isinstance(sidecar, dict) else None
    metadata = sidecar.get("metadata") if isinstance(sidecar, dict) else None
    if not (
        isinstance(content_type, str)
        and isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _NotOurs(f"{path.name} is not a sidecar the store wrote")
    return content_type, metadata


@contextlib.contextmanager
def _complete_temporary(path: Path, data: bytes) -> Iterator[str]:
    """A temporary file beside path (on its file system) holding all of data, closed, for
    the caller to link or move to path; its name is gone after, whatever happens."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """flock(2) on directory, held for the block: the store's writers, one at a time."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _writable_directory(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _write_atomically(path: Path, data: bytes) -> None:
    with _complete_temporary(path, data) as tmp:
        os.replace(tmp, path)
