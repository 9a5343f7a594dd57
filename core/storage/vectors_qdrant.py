"""Vectors on a Qdrant server (``QDRANT_URL``): for teams that outgrow the embedded shard.

The server may be shared by many app replicas and CLI runs at once, so unlike the Edge shard
nothing here is locked. The collection is created on first use with the same index settings as
the embedded default (cosine, HNSW m=16, ef_construct=100, full_scan_threshold=10000) plus a
memmap threshold, and every payload field that search filters on gets an index. Writes wait for
the server to apply them (``wait=True``), because the ingest protocol marks an image visible only
after its vector is stored. The server builds its HNSW index in the background, so
:meth:`optimize` has nothing to do.

The class takes any :class:`QdrantClient`: tests pass one in local mode (``location=":memory:"``),
which runs the same calls in-process, exactly (no HNSW).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from core.settings import Settings
from core.storage.errors import StorageError
from core.storage.vectors import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    REMOVED,
    VISIBILITY_FIELD,
    VectorFilter,
    VectorHit,
    VectorStore,
    scroll_pages,
    vectors_in_order,
)

VECTOR_NAME = "image"  # the same named vector as the Edge shard
MEMMAP_THRESHOLD_KB = 20_000  # segments above ~20 MB of vectors live in memory-mapped files
UPSERT_BATCH = 256
RETRIEVE_BATCH = 1_000
T = TypeVar("T")

_QDRANT_ERRORS = (QdrantException, ResponseHandlingException, UnexpectedResponse, OSError)


def qdrant_filter(flt: VectorFilter | None, exclude_ids: Sequence[str] = ()) -> models.Filter:
    """The Qdrant filter for a :class:`VectorFilter`, condition for condition the Edge one."""
    must: list[models.Condition] = []
    if flt is not None:
        for key, values in (("sources", flt.sources), ("uploaders", flt.uploaders), ("format", flt.formats)):
            if values:
                must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(values))))
        if flt.created_from is not None or flt.created_to is not None:
            must.append(
                models.FieldCondition(key="created_at", range=models.Range(gte=flt.created_from, lte=flt.created_to))
            )
        if flt.min_size_bytes is not None or flt.max_size_bytes is not None:
            low = None if flt.min_size_bytes is None else float(flt.min_size_bytes)
            high = None if flt.max_size_bytes is None else float(flt.max_size_bytes)
            must.append(models.FieldCondition(key="size_bytes", range=models.Range(gte=low, lte=high)))
    must_not: list[models.Condition] = [models.FieldCondition(key=VISIBILITY_FIELD, match=models.MatchValue(value=REMOVED))]
    if exclude_ids:
        must_not.append(models.HasIdCondition(has_id=[str(uuid.UUID(i)) for i in exclude_ids]))
    return models.Filter(must=must or None, must_not=must_not)


def collection_config(dim: int) -> dict[str, Any]:
    """How a new collection is made: the embedded shard's index settings, plus a memmap threshold
    (deprecated since Qdrant 1.15 in favour of per-vector storage settings, still honoured)."""
    return {
        "vectors_config": {VECTOR_NAME: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        "hnsw_config": models.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10_000),
        "optimizers_config": models.OptimizersConfigDiff(memmap_threshold=MEMMAP_THRESHOLD_KB),
    }


def _payload_schemas() -> dict[str, models.PayloadSchemaType]:
    schemas = {key: models.PayloadSchemaType.KEYWORD for key in KEYWORD_FIELDS}
    schemas.update({key: models.PayloadSchemaType.FLOAT for key in FLOAT_FIELDS})
    schemas.update({key: models.PayloadSchemaType.INTEGER for key in INTEGER_FIELDS})
    return schemas


@dataclass(frozen=True)
class NeighbourMatrix:
    """Each sampled point's nearest neighbours, as a sparse matrix: ``ids[rows[n]]`` is near
    ``ids[cols[n]]`` with cosine similarity ``scores[n]``. A point is never its own neighbour."""

    ids: list[str]
    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray


class QdrantVectorStore(VectorStore):
    """A Qdrant collection reached through qdrant-client (see the module docstring)."""

    name = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dim: int,
        *,
        where: str = "Qdrant",
        hnsw_ef: int = 128,
        upsert_batch: int = UPSERT_BATCH,
    ) -> None:
        if dim < 1:
            raise ValueError(f"Vector size must be positive, got {dim}.")
        self.client = client
        self.collection = collection
        self.dim = dim
        self.where = where
        self.hnsw_ef = hnsw_ef
        self.upsert_batch = upsert_batch
        self._call(self._ensure_collection)

    @classmethod
    def from_settings(cls, settings: Settings, dim: int) -> QdrantVectorStore:
        """Connect to ``QDRANT_URL`` (with ``QDRANT_API_KEY``), creating the collection if missing."""
        if not settings.qdrant_url:
            raise StorageError("QDRANT_URL is not set; the embedded Edge shard is used instead.")
        where = f"Qdrant at {settings.public()['qdrant_url']}"
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=10)
        try:
            return cls(client, settings.qdrant_collection, dim, where=where)
        except BaseException:
            client.close()
            raise

    # helpers ------------------------------------------------------------------------------------
    def _call(self, work: Callable[[], T]) -> T:
        """Run a client call, turning the client's many error types into one :class:`StorageError`."""
        try:
            return work()
        except _QDRANT_ERRORS as exc:
            raise StorageError(
                f"The vector store ({self.where}, collection {self.collection!r}) failed: {type(exc).__name__}: {exc}. "
                "Check that the server is up and QDRANT_URL / QDRANT_API_KEY are right."
            ) from exc

    def _ensure_collection(self) -> None:
        if not self.client.collection_exists(self.collection):
            try:
                self.client.create_collection(self.collection, **collection_config(self.dim))
            except (UnexpectedResponse, ValueError):
                # Another replica created it between our check and our call: fine if it exists now.
                if not self.client.collection_exists(self.collection):
                    raise
        info = self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        if params is None or params.size != self.dim:
            found = "no vector named 'image'" if params is None else f"vectors of size {params.size}"
            raise StorageError(
                f"The Qdrant collection {self.collection!r} ({self.where}) holds {found}, but the model makes "
                f"{self.dim}-d vectors. Set QDRANT_COLLECTION to a new name, or use the model it was built with."
            )
        have = info.payload_schema or {}
        for key, schema in _payload_schemas().items():
            if key not in have:
                self.client.create_payload_index(self.collection, key, field_schema=schema, wait=True)

    # interface ----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim) or len(payloads) != len(ids):
            raise ValueError(
                f"Expected {len(ids)} vectors of size {self.dim} and as many payloads, got shape "
                f"{vectors.shape} and {len(payloads)} payloads."
            )
        for start in range(0, len(ids), self.upsert_batch):
            end = start + self.upsert_batch
            batch = models.Batch(
                ids=[str(i) for i in ids[start:end]],
                vectors={VECTOR_NAME: vectors[start:end].tolist()},
                payloads=[dict(p) for p in payloads[start:end]],
            )
            self._call(lambda b=batch: self.client.upsert(self.collection, points=b, wait=True))

    def set_payload(self, ids: Sequence[str], payloads: Sequence[dict]) -> None:
        operations = [
            models.SetPayloadOperation(set_payload=models.SetPayload(payload=dict(p), points=[str(i)]))
            for i, p in zip(ids, payloads, strict=True)
        ]
        for start in range(0, len(operations), self.upsert_batch):
            chunk = operations[start : start + self.upsert_batch]
            self._call(lambda c=chunk: self.client.batch_update_points(self.collection, c, wait=True))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            selector = models.PointIdsList(points=[str(i) for i in ids])
            self._call(lambda: self.client.delete(self.collection, points_selector=selector, wait=True))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        flt: VectorFilter | None = None,
        *,
        exact: bool = False,
        exclude_ids: Sequence[str] = (),
    ) -> list[VectorHit]:
        response = self._call(
            lambda: self.client.query_points(
                self.collection,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                using=VECTOR_NAME,
                query_filter=qdrant_filter(flt, exclude_ids),
                search_params=models.SearchParams(hnsw_ef=max(self.hnsw_ef, k), exact=exact),
                limit=k,
                with_payload=False,
            )
        )
        return [VectorHit(str(p.id), float(p.score)) for p in response.points]

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        by_id: dict[str, list[float]] = {}
        for start in range(0, len(ids), RETRIEVE_BATCH):
            chunk = [str(i) for i in ids[start : start + RETRIEVE_BATCH]]
            records = self._call(
                lambda c=chunk: self.client.retrieve(self.collection, c, with_payload=False, with_vectors=[VECTOR_NAME])
            )
            by_id.update({str(r.id): r.vector[VECTOR_NAME] for r in records})
        return vectors_in_order(ids, by_id, self.dim)

    def iter_all(self, batch: int = 10_000) -> Iterator[tuple[list[str], np.ndarray]]:
        def page(offset: object | None) -> tuple[list, object | None]:
            return self._call(
                lambda: self.client.scroll(
                    self.collection, limit=batch, offset=offset, with_payload=False, with_vectors=[VECTOR_NAME]
                )
            )

        return scroll_pages(page, VECTOR_NAME)

    def count(self) -> int:
        return int(self._call(lambda: self.client.count(self.collection, exact=True)).count)

    def search_matrix_offsets(self, limit: int, *, sample: int | None = None, flt: VectorFilter | None = None) -> NeighbourMatrix:
        """The ``limit`` nearest neighbours of ``sample`` points (all of them by default), computed by
        the server in one call: the neighbour graph without pulling every vector to the client."""
        sample = self.count() if sample is None else sample
        if sample == 0:
            empty = np.zeros(0, dtype=np.int64)
            return NeighbourMatrix([], empty, empty, np.zeros(0, dtype=np.float32))
        result = self._call(
            lambda: self.client.search_matrix_offsets(
                self.collection, query_filter=qdrant_filter(flt), limit=limit, sample=sample, using=VECTOR_NAME
            )
        )
        return NeighbourMatrix(
            ids=[str(i) for i in result.ids],
            rows=np.asarray(result.offsets_row, dtype=np.int64),
            cols=np.asarray(result.offsets_col, dtype=np.int64),
            scores=np.asarray(result.scores, dtype=np.float32),
        )

    def describe(self) -> str:
        return f"{self.where}, collection {self.collection!r}"

    def close(self) -> None:
        self.client.close()
