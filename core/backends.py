"""The one place where settings choose backends: embedded defaults unless a server is configured."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from core.storage.blobs import BlobStore
from core.storage.cache import Cache
from core.storage.catalog import Catalog, sqlite_url
from core.storage.vectors import VectorStore


@dataclass
class Backends:
    blobs: BlobStore
    catalog: Catalog
    vectors: VectorStore
    cache: Cache

    def describe(self) -> dict[str, str]:
        """Which backend each store uses and where, without credentials."""
        return {
            "blobs": self.blobs.describe(),
            "catalog": self.catalog.describe(),
            "vectors": self.vectors.describe(),
            "cache": self.cache.describe(),
        }

    def close(self) -> None:
        for store in (self.vectors, self.blobs, self.cache):
            store.close()
        self.catalog.close()


def open_blobs(settings: Settings) -> BlobStore:
    if settings.s3_endpoint:
        from core.storage.blobs_s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    from core.storage.blobs_files import FileBlobStore

    return FileBlobStore(settings.data_dir / "blobs")


def open_catalog(settings: Settings) -> Catalog:
    if settings.database_url:
        return Catalog(settings.database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Catalog(sqlite_url(settings.data_dir / "catalog.sqlite3"))


def open_vectors(settings: Settings, dim: int) -> VectorStore:
    if settings.qdrant_url:
        from core.storage.vectors_qdrant import QdrantVectorStore

        return QdrantVectorStore.from_settings(settings, dim)
    from core.storage.vectors_edge import EdgeVectorStore

    return EdgeVectorStore(settings.data_dir / "vectors", dim, lock_timeout_s=settings.lock_timeout_s)


def open_cache(settings: Settings) -> Cache:
    if settings.redis_url:
        from core.storage.cache_redis import RedisCache

        return RedisCache(settings.redis_url)
    from core.storage.cache_memory import MemoryCache

    return MemoryCache()


def open_backends(settings: Settings, dim: int) -> Backends:
    """Open every store, closing the ones already opened if a later one fails."""
    settings.check_data_dir()
    opened: list = []
    try:
        catalog = open_catalog(settings)
        opened.append(catalog)
        blobs = open_blobs(settings)
        opened.append(blobs)
        vectors = open_vectors(settings, dim)
        opened.append(vectors)
        cache = open_cache(settings)
    except BaseException:
        for store in reversed(opened):
            store.close()
        raise
    return Backends(blobs=blobs, catalog=catalog, vectors=vectors, cache=cache)
