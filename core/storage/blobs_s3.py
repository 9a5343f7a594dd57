"""Blobs on MinIO or any S3-compatible server (``S3_ENDPOINT``), through the ``minio`` client.

An S3 PUT is atomic (readers see the old object or the whole new one), so writes need no temporary
key. The bucket is created on first use if missing. Galleries do not proxy bytes through the app:
:meth:`S3BlobStore.url` hands the browser a presigned GET URL that expires within minutes, signed for
``S3_PUBLIC_ENDPOINT`` when browsers reach the server under another name than the app does, and
:meth:`S3BlobStore.upload_url` a presigned PUT URL the same way, so API clients upload past the app.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from core.settings import Settings, SettingsError
from core.storage.blobs import BlobStore
from core.storage.errors import StorageError

MAX_URL_EXPIRY_S = 3600
_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
T = TypeVar("T")


def _http_client(timeout_s: float) -> urllib3.PoolManager:
    """Short timeouts and few retries: an unreachable server must fail in seconds, not minutes
    (the minio default reads for up to five minutes and retries five times)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=max(timeout_s, 30.0)),
        retries=urllib3.Retry(total=2, connect=1, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=10,
    )


def minio_client(endpoint: str, access_key: str, secret_key: str, region: str, timeout_s: float = 5.0) -> Minio:
    """A client for ``endpoint`` given as a URL (``http://host:9000``); without a scheme, HTTPS."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise SettingsError(f"S3 endpoint {endpoint!r} must look like http://host:9000 (no path).")
    return Minio(
        parts.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=parts.scheme == "https",
        region=region,
        http_client=_http_client(timeout_s),
    )


class S3BlobStore(BlobStore):
    """Bytes as objects in one bucket (see the module docstring)."""

    name = "s3"
    presigns = True

    def __init__(self, client: Minio, bucket: str, *, where: str, public_client: Minio | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.where = where
        self.public_client = public_client or client
        self._call(self._ensure_bucket)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if not (settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key):
            raise SettingsError("S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY must all be set for S3 blobs.")
        keys = (settings.s3_access_key, settings.s3_secret_key, settings.s3_region)
        client = minio_client(settings.s3_endpoint, *keys)
        public = minio_client(settings.s3_public_endpoint, *keys) if settings.s3_public_endpoint else None
        where = f"S3 at {settings.public()['s3_endpoint']}"
        return cls(client, settings.s3_bucket, where=where, public_client=public)

    def _call(self, work: Callable[[], T]) -> T:
        """Run a client call; failures become one :class:`StorageError` that names the server."""
        try:
            return work()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(
                f"The blob store ({self.where}, bucket {self.bucket!r}) failed: {type(exc).__name__}: {exc}. "
                "Check that the server is up and S3_ENDPOINT / S3_ACCESS_KEY / S3_SECRET_KEY are right."
            ) from exc

    def _ensure_bucket(self) -> None:
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:  # another replica won the race
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call(lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type))

    def get(self, key: str, limit: int | None = None) -> bytes:
        def read() -> bytes:
            # Not a Range request: S3 refuses a range on an empty object (416), and an empty upload
            # must reach the ingest to be rejected as empty. Closing unread closes the connection.
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read() if limit is None else response.read(limit)
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(read)
        except StorageError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code in _MISSING:
                raise KeyError(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._call(lambda: self.client.stat_object(self.bucket, key))
        except StorageError as exc:
            if isinstance(exc.__cause__, S3Error) and exc.__cause__.code in _MISSING | {"NotFound"}:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.remove_object(self.bucket, key))

    def count(self, prefix: str) -> int:
        """Lists the prefix (1,000 keys a request): fine for status, not for a hot path."""
        return self._call(lambda: sum(1 for _ in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)))

    def keys(self, prefix: str) -> list[str]:
        return self._call(lambda: [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix,
                                                                                   recursive=True)])

    def url(self, key: str, expires_s: int = 900) -> str | None:
        return self._presigned("GET", key, expires_s)

    def upload_url(self, key: str, expires_s: int = 900) -> str | None:
        return self._presigned("PUT", key, expires_s)

    def _presigned(self, method: str, key: str, expires_s: int) -> str:
        """Signed for the public endpoint (the one clients reach), with no network call: the client
        knows the region from the settings."""
        if not 1 <= expires_s <= MAX_URL_EXPIRY_S:
            raise ValueError(f"A presigned URL should live 1 to {MAX_URL_EXPIRY_S} s, not {expires_s}.")
        return self._call(
            lambda: self.public_client.get_presigned_url(method, self.bucket, key, expires=timedelta(seconds=expires_s))
        )

    def describe(self) -> str:
        return f"{self.where}, bucket {self.bucket!r}"
