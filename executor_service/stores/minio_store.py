"""An S3 bucket (MinIO, or any S3-compatible service) as the object store, on the minio SDK.

The SDK is synchronous, so every call runs in a worker thread. Each image is one
PUT, which S3 makes visible whole or not at all: never a partial object, and no
temporary files. The SDK's default HTTP pool waits five minutes and retries five
times; this store brings its own pool with the configured timeout and retries, so
a dead store fails fast as StorageUnavailable. Image URLs are presigned locally,
for the public endpoint when one is configured (the host players reach the store
by), while every request goes to the internal endpoint.

Failures are mapped here: no connection, timeouts and 5xx -> StorageUnavailable
(retryable); refused credentials or a missing bucket -> StorageMisconfigured (no
retry helps until an operator acts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import genheaders
from minio.time import from_http_header

from executor_service.ports import AlreadyStored, ObjectReader, SignedUrl, StoredObject
from imagegen.errors import ExecutionError, NotFound, StorageMisconfigured, StorageUnavailable

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_META_PREFIX = "x-amz-meta-"
_NOT_USABLE = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
        "NoSuchBucket",
        "AuthorizationHeaderMalformed",
    }
)
_MISSING = frozenset({"NoSuchKey", "NoSuchObject"})
# The lifecycle rule set_retention writes (it replaces the bucket's whole lifecycle configuration).
RETENTION_RULE_ID = "imagegen-retention"


def http_pool(timeout: float, retries: int) -> urllib3.PoolManager:
    """Timeouts on connect and read, a few quick retries on connection errors and
    5xx; after the last retry minio sees the 5xx and raises S3Error/ServerError."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.1,
            status_forcelist=[500, 502, 503, 504] if retries else [],
            raise_on_status=False,
        ),
        maxsize=16,
    )


class MinioObjectStore:
    """client makes every request; signer (default: client) only signs image URLs,
    locally, for the host players reach the store by (connect's public_endpoint)."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        signer: Minio | None = None,
        region: str = "us-east-1",
        url_expiry: dt.timedelta = dt.timedelta(hours=1),
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self._client = client
        self._signer = signer or client
        self.bucket = bucket
        self._region = region
        self._url_expiry = url_expiry
        self._now = now

    @classmethod
    def connect(
        cls,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = True,
        region: str = "us-east-1",
        url_expiry: dt.timedelta = dt.timedelta(hours=1),
        timeout: float = 10.0,
        retries: int = 2,
        public_endpoint: str = "",
        public_secure: bool = True,
    ) -> MinioObjectStore:
        """A store with its own SDK client; no request is made until ensure_ready().

        With public_endpoint (host[:port]; public_secure for https), image URLs are
        signed for that host instead of endpoint: a SigV4 signature covers the Host
        header, so a URL signed for the in-cluster name and rewritten afterwards is
        refused (403). That second client only signs: with the region given, the SDK
        needs no GetBucketLocation to presign, so it never makes a request, and the
        public host need not be reachable from the executor."""
        pool = http_pool(timeout, retries)
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,  # known region: no GetBucketLocation round trip, presigning is local
            http_client=pool,
        )
        signer = (
            Minio(
                public_endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=public_secure,
                region=region,  # what makes presigning local (Minio._get_region)
                http_client=pool,
            )
            if public_endpoint
            else None
        )
        return cls(client, bucket, signer=signer, region=region, url_expiry=url_expiry)

    def ensure_ready(self) -> None:
        """Create the bucket when it does not exist. Blocking: called once at start."""
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
                log.info("created bucket %s in %s", self.bucket, self._region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):  # a racing replica
                raise _storage_error(exc, f"cannot use bucket {self.bucket}") from None
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise _storage_error(exc, f"cannot use bucket {self.bucket}") from None

    def storage_path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    async def ping(self) -> None:
        """One HEAD on the bucket. Not logged here: the health check logs changes only."""
        try:
            exists = await asyncio.to_thread(self._client.bucket_exists, self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _storage_error(exc, f"cannot reach bucket {self.bucket}", quiet=True) from None
        if not exists:
            raise StorageMisconfigured(f"bucket {self.bucket} does not exist")

    async def stat(self, key: str) -> StoredObject | None:
        return await self._call(self._stat, key, action=f"cannot read {key}")

    async def put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        return await self._call(self._put, key, data, content_type, metadata, action=f"cannot write {key}")

    async def url(self, key: str) -> str:
        return self._presign(key, self._url_expiry)

    async def sign(self, key: str, expires_in: dt.timedelta | None) -> SignedUrl:
        if await self.stat(key) is None:
            raise NotFound(f"no image is stored at {self.storage_path(key)}")
        expires_in = expires_in or self._url_expiry
        signed_at = self._now()
        return SignedUrl(self._presign(key, expires_in, signed_at), signed_at + expires_in)

    async def open(self, key: str, chunk_size: int) -> ObjectReader:
        response = await self._call(self._get, key, action=f"cannot read {key}")
        if response is None:
            raise NotFound(f"no image is stored at {self.storage_path(key)}")
        release = _releaser(response)
        return ObjectReader(_stored(key, response.headers), self._chunks(response, chunk_size, key, release), release)

    async def list(self, prefix: str, limit: int, start_after: str = "") -> list[StoredObject]:
        """One ListObjectsV2 walk (1000 keys a request), stopped after limit objects."""
        return await self._call(self._list, prefix, limit, start_after, action=f"cannot list {prefix}")

    async def delete(self, key: str) -> None:
        """DeleteObject, which S3 answers 204 whether or not the key exists."""
        await self._call(self._client.remove_object, self.bucket, key, action=f"cannot delete {key}")

    async def set_retention(self, days: int) -> bool:
        """A lifecycle rule expiring every object days after it was written (S3 user guide,
        "Managing your storage lifecycle"), in place of the bucket's lifecycle
        configuration; False when the server does not implement lifecycle rules."""
        config = LifecycleConfig(
            [Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id=RETENTION_RULE_ID, expiration=Expiration(days=days))]
        )
        try:
            await asyncio.to_thread(self._client.set_bucket_lifecycle, self.bucket, config)
        except S3Error as exc:
            if exc.code in ("NotImplemented", "MalformedXML", "InvalidRequest"):
                log.warning("object store: no lifecycle rules (%s); the executor's sweep expires images", exc.code)
                return False
            raise _storage_error(exc, f"cannot set the lifecycle of bucket {self.bucket}") from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _storage_error(exc, f"cannot set the lifecycle of bucket {self.bucket}") from None
        return True

    # ------------------------------------------------------------------ blocking parts
    def _list(self, prefix: str, limit: int, start_after: str) -> list[StoredObject]:
        found = self._client.list_objects(
            self.bucket, prefix=prefix, recursive=True, start_after=start_after or None
        )
        return [
            StoredObject(
                key=item.object_name,
                size=item.size or 0,
                content_type="",
                create_time=item.last_modified or self._now(),
            )
            for item in itertools.islice(found, max(limit, 0))
            if item.object_name is not None
        ]

    def _stat(self, key: str) -> StoredObject | None:
        try:
            info = self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise
        return StoredObject(
            key=key,
            size=info.size or 0,
            content_type=info.content_type or "application/octet-stream",
            create_time=info.last_modified or self._now(),
            metadata=_user_metadata(info.metadata or {}),
        )

    def _put(self, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]) -> StoredObject:
        """One conditional PUT (If-None-Match: *): S3, MinIO and SeaweedFS create the object
        only if the key is free and answer 412 otherwise, which makes the write the fence
        between replicas (AWS S3 user guide, "Conditional writes"). AlreadyStored with the
        object that is there when the key was taken."""
        headers = genheaders(dict(metadata), None, None, None, False)
        headers["Content-Type"] = content_type
        headers["If-None-Match"] = "*"
        try:
            # minio-py's public put_object sends headers it does not know as user metadata
            # (X-Amz-Meta-If-None-Match), so the condition would never reach the server;
            # _put_object is the single PUT that put_object itself makes for one part.
            # Pinned in pyproject (minio <7.3) and proven against the real S3 server by
            # tests/integration/test_minio_store.py.
            written = self._client._put_object(self.bucket, key, data, headers)
        except S3Error as exc:
            if exc.code != "PreconditionFailed":
                raise
            existing = self._stat(key)
            if existing is None:  # removed between the two requests
                raise StorageUnavailable(f"{key} was taken and then removed; try again") from None
            raise AlreadyStored(existing) from None
        # The store's own clock, as a later stat() reports it (Last-Modified has
        # whole seconds, like Date), without a second round trip per image.
        return StoredObject(
            key=key,
            size=len(data),
            content_type=content_type,
            create_time=_response_date(written.http_headers) or self._now().replace(microsecond=0),
            metadata=dict(metadata),
        )

    def _get(self, key: str) -> Any:
        try:
            return self._client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise

    def _presign(self, key: str, expires_in: dt.timedelta, signed_at: dt.datetime | None = None) -> str:
        # Signing is local (the region is configured), so no thread is needed.
        return self._signer.presigned_get_object(
            self.bucket, key, expires=expires_in, request_date=signed_at or self._now()
        )

    async def _chunks(
        self, response: Any, chunk_size: int, key: str, release: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._call(response.read, chunk_size, action=f"cannot read {key}"):
                handed = [chunk]
                del chunk  # not kept in this frame while suspended: the caller holds the only reference
                yield handed.pop()
        finally:
            release()

    async def _call(self, function: Callable[..., _T], *args: Any, action: str) -> _T:
        try:
            return await asyncio.to_thread(function, *args)
        except ExecutionError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _storage_error(exc, action) from None


def _storage_error(exc: Exception, action: str, *, quiet: bool = False) -> ExecutionError:
    # The SDK's message can carry the request URL; log it, tell the caller the gist.
    if not quiet:
        log.warning("object store: %s: %r", action, exc)
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else None
        if exc.code in _NOT_USABLE or status in (401, 403):
            return StorageMisconfigured(
                f"object store refused the executor ({exc.code}): {action}; check the credentials and bucket",
                metadata={"s3_code": exc.code or ""},
            )
        if status is not None and status < 500:
            return StorageMisconfigured(f"object store rejected the request ({exc.code}): {action}")
        return StorageUnavailable(f"object store failed ({exc.code}): {action}")
    if isinstance(exc, (ServerError, InvalidResponseError)):
        return StorageUnavailable(f"object store failed: {action}")
    return StorageUnavailable(f"object store unreachable: {action}")


def _releaser(response: Any) -> Callable[[], None]:
    """Close a streamed response and hand its connection back to the pool, once."""
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            response.close()
            response.release_conn()

    return release


def _response_date(headers: Mapping[str, str]) -> dt.datetime | None:
    try:
        return email.utils.parsedate_to_datetime(headers["Date"])
    except (KeyError, TypeError, ValueError):
        return None


def _user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name.lower().removeprefix(_META_PREFIX): value
        for name, value in headers.items()
        if name.lower().startswith(_META_PREFIX)
    }


def _stored(key: str, headers: Mapping[str, str]) -> StoredObject:
    modified = headers.get("last-modified")
    return StoredObject(
        key=key,
        size=int(headers.get("content-length", "0")),
        content_type=headers.get("content-type", "application/octet-stream"),
        create_time=from_http_header(modified) if modified else dt.datetime.now(dt.timezone.utc),
        metadata=_user_metadata(headers),
    )
