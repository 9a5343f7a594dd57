"""Search by text, by an uploaded image, or by an image already in the collection.

All three embed the query into the image space and ask the vector store for the nearest images,
with the same filters. Text embeddings are cached (through the cache backend) because analysts
repeat and refine the same queries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass

import numpy as np

from core import validation
from core.backends import Backends
from core.embedding import Embedder
from core.errors import InvalidRequest
from core.images import prepare_image
from core.observability import observe_search
from core.settings import Settings
from core.storage.vectors import VectorFilter

TEXT_CACHE_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class SearchResult:
    """One hit, with what a gallery needs to show it."""

    image_id: str
    score: float  # cosine similarity to the query, in [-1, 1]
    file_name: str
    source: str
    format: str
    width: int
    height: int
    size_bytes: int
    created_at: float


@dataclass(frozen=True)
class SearchFilter:
    """Which images a search may return; empty fields do not restrict, and a list matches when any
    of its values does. Checked when built, so a bad value names its field before any work starts.
    Times are Unix seconds (arrival), sizes bytes, formats as stored (``JPEG``, ``PNG``, ...)."""

    sources: tuple[str, ...] = ()
    uploaders: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    created_from: float | None = None
    created_to: float | None = None
    min_size_bytes: int | None = None
    max_size_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("sources", "uploaders", "formats"):
            object.__setattr__(self, name, validation.texts(name, getattr(self, name)))
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))
        for low, high in (("created_from", "created_to"), ("min_size_bytes", "max_size_bytes")):
            lo, hi = getattr(self, low), getattr(self, high)
            for name, value in ((low, lo), (high, hi)):
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise InvalidRequest(name, f"expected a number, got {value!r}")
            if lo is not None and hi is not None and lo > hi:
                raise InvalidRequest(high, f"{hi} is below {low} ({lo})")

    def to_vector_filter(self) -> VectorFilter:
        """The vector store's own filter: the storage type stays beneath the facade."""
        return VectorFilter(**dataclasses.asdict(self))


@dataclass(frozen=True)
class SearchResponse:
    results: tuple[SearchResult, ...]
    query: str  # what was searched, for display ("text: …", "image: …", "similar to: …")
    seconds: float  # vector search time, without encoding the query


def text_vector(text: str, embedder: Embedder, backends: Backends) -> np.ndarray:
    """The text's embedding, from the cache when an earlier query computed it."""
    if not text.strip():
        raise InvalidRequest("text", "it is empty; type what the images should show")
    key = "text:" + hashlib.sha256(f"{embedder.info.name}|{embedder.info.weights}|{text}".encode()).hexdigest()
    cached = backends.cache.get(key)
    if cached is not None:
        return np.frombuffer(cached, dtype=np.float32)
    vector = embedder.embed_texts([text])[0].astype(np.float32)
    backends.cache.set(key, vector.tobytes(), ttl_s=TEXT_CACHE_TTL_S)
    return vector


def image_vector(data: bytes, embedder: Embedder, settings: Settings) -> np.ndarray:
    """The embedding of an uploaded query image (validated like any upload; not stored)."""
    image = prepare_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    return embedder.embed_images([image.model_image])[0]


def nearest(
    backends: Backends,
    vector: np.ndarray,
    *,
    query: str,
    k: int = 20,
    min_score: float | None = None,
    flt: VectorFilter | None = None,
    exclude_ids: tuple[str, ...] = (),
) -> SearchResponse:
    """The ``k`` visible images nearest to ``vector`` that pass the filter and the score threshold."""
    if k < 1:
        raise InvalidRequest("k", f"{k} is below 1")
    search_type = query.split(":", 1)[0].replace(" ", "_")  # text | image | similar_to
    with observe_search(search_type, k=k, filtered=flt is not None and not flt.is_empty()) as logged:
        start = time.perf_counter()
        hits = backends.vectors.search(vector, k, flt, exclude_ids=exclude_ids)
        seconds = time.perf_counter() - start
        logged["hits"] = len(hits)
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    records = {r.id: r for r in backends.catalog.get([h.id for h in hits])}  # ready images only
    results = tuple(
        SearchResult(
            image_id=h.id,
            score=h.score,
            file_name=records[h.id].file_name,
            source=records[h.id].source,
            format=records[h.id].format,
            width=records[h.id].width,
            height=records[h.id].height,
            size_bytes=records[h.id].size_bytes,
            created_at=records[h.id].created_at,
        )
        for h in hits
        if h.id in records
    )
    return SearchResponse(results=results, query=query, seconds=seconds)
