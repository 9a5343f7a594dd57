"""Public records of stored images: what the facade returns when a caller asks about images.

The catalog's own row (:class:`core.storage.catalog.ImageRecord`) also carries the crop sketch and
the ingest state; callers get these records instead, built from it in one place, so the catalog
can change without changing what the app, the API or a notebook receive.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.storage.catalog import ImageName, ImageRecord


@dataclass(frozen=True)
class ImageInfo:
    """One visible image; ``file_name``/``source`` are the first it arrived under."""

    id: str
    file_name: str
    source: str
    uploader: str
    created_at: float  # arrival, Unix seconds
    format: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    pixel_sha256: str  # SHA-256 of the decoded pixels: equal for re-encodings of the same picture
    phash: str
    dhash: str

    @classmethod
    def from_record(cls, record: ImageRecord) -> ImageInfo:
        return cls(
            id=record.id, file_name=record.file_name, source=record.source, uploader=record.uploader,
            created_at=record.created_at, format=record.format, width=record.width, height=record.height,
            size_bytes=record.size_bytes, sha256=record.sha256, pixel_sha256=record.pixel_sha256,
            phash=record.phash, dhash=record.dhash,
        )


@dataclass(frozen=True)
class ImageFileName:
    """A name an image arrived under: the same bytes may come from many files and batches."""

    file_name: str
    source: str
    uploader: str
    added_at: float

    @classmethod
    def from_name(cls, name: ImageName) -> ImageFileName:
        return cls(file_name=name.file_name, source=name.source, uploader=name.uploader, added_at=name.added_at)
