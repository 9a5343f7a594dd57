"""The blob store interface: originals and thumbnails by key.

Keys are ``originals/<image id>`` and ``thumbnails/<image id>.jpg``; writes are idempotent, so a
re-run of an interrupted ingest simply writes the same bytes again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


def original_key(image_id: str) -> str:
    return f"originals/{image_id}"


def thumbnail_key(image_id: str) -> str:
    return f"thumbnails/{image_id}.jpg"


BLOB_PREFIXES = ("originals/", "thumbnails/")


def image_id_of(key: str) -> str:
    """The image a blob key belongs to (inverse of :func:`original_key` and :func:`thumbnail_key`)."""
    return key.rpartition("/")[2].removesuffix(".jpg")


class BlobStore(ABC):
    """Bytes by key. Implementations: files under DATA_DIR (default), MinIO/S3."""

    name: str
    presigns = False  # whether url() and upload_url() hand out URLs (S3) or None (files)

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` atomically: readers see the old value or the whole new one."""

    @abstractmethod
    def get(self, key: str, limit: int | None = None) -> bytes:
        """The bytes under ``key`` (only the first ``limit`` with a limit, so an object a client put
        cannot make us read more than we accept); :class:`KeyError` when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def count(self, prefix: str) -> int:
        """How many keys start with ``prefix`` (for status and consistency checks)."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (repair looks for blobs no catalog row owns)."""

    def url(self, key: str, expires_s: int = 900) -> str | None:
        """A URL a browser can fetch directly (presigned on S3); ``None`` where bytes must be served."""
        return None

    def upload_url(self, key: str, expires_s: int = 900) -> str | None:
        """A URL a client can PUT the bytes of ``key`` to directly (presigned on S3); ``None`` where
        the store cannot take uploads past the app (files under DATA_DIR)."""
        return None

    def describe(self) -> str:
        """Where the blobs live, without credentials."""
        return self.name

    def close(self) -> None:
        """Release connections; the default has none."""
