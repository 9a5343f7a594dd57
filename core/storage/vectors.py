"""The vector store interface: one L2-normalised embedding per visible image, with the payload that
search filters on. Implementations: a Qdrant Edge shard in DATA_DIR (default), a Qdrant server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# Payload fields every backend stores and indexes, so the same filters work everywhere.
KEYWORD_FIELDS = ("sources", "uploaders", "format", "visibility")
FLOAT_FIELDS = ("created_at",)
INTEGER_FIELDS = ("size_bytes", "width", "height")
# "removed" on soft-deleted images ("visible" again once restored; absent on the others): every search
# leaves them out. The catalog stays the authority (a hit whose row is not visible is dropped too);
# the flag keeps k results full. A keyword, since Qdrant Edge does not match booleans.
VISIBILITY_FIELD = "visibility"
REMOVED = "removed"
VISIBLE = "visible"


@dataclass(frozen=True)
class VectorFilter:
    """Restrictions on a search; empty fields do not restrict. Lists match when any value matches."""

    sources: tuple[str, ...] = ()
    uploaders: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    created_from: float | None = None
    created_to: float | None = None
    min_size_bytes: int | None = None
    max_size_bytes: int | None = None

    def is_empty(self) -> bool:
        return self == VectorFilter()


@dataclass(frozen=True)
class VectorHit:
    id: str
    score: float


def vectors_in_order(ids: Sequence[str], by_id: Mapping[str, Sequence[float]], dim: int) -> np.ndarray:
    """The ``(len(ids), dim)`` matrix of ``by_id``'s vectors in ``ids``' order; :class:`KeyError`
    names the first id the store did not return."""
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(missing[0])
    return np.asarray([by_id[i] for i in ids], dtype=np.float32).reshape(len(ids), dim)


def scroll_pages(
    page: Callable[[object | None], tuple[Sequence[object], object | None]], vector_name: str
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Every point, a page at a time, as (ids, vectors): ``page(offset)`` returns a page of records
    (with ``.id`` and ``.vector[vector_name]``) and the next offset, ``None`` after the last page."""
    offset = None
    while True:
        records, offset = page(offset)
        if records:
            yield (
                [str(r.id) for r in records],  # type: ignore[attr-defined]
                np.asarray([r.vector[vector_name] for r in records], dtype=np.float32),  # type: ignore[attr-defined]
            )
        if offset is None:
            return


class VectorStore(ABC):
    """Vectors by image id (a UUID string)."""

    name: str
    dim: int

    @abstractmethod
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        """Write vectors durably: when this returns they survive a crash."""

    @abstractmethod
    def set_payload(self, ids: Sequence[str], payloads: Sequence[dict]) -> None:
        """Replace the given payload fields of existing points (other fields stay)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        k: int,
        flt: VectorFilter | None = None,
        *,
        exact: bool = False,
        exclude_ids: Sequence[str] = (),
    ) -> list[VectorHit]:
        """The ``k`` most cosine-similar points, best first."""

    @abstractmethod
    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors for ``ids`` in that order; :class:`KeyError` names the first missing id."""

    @abstractmethod
    def iter_all(self, batch: int = 10_000) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every stored point, in batches of (ids, vectors)."""

    @abstractmethod
    def count(self) -> int: ...

    def flush(self) -> None:
        """Persist buffered state so a reopen is fast; servers do this themselves."""

    def optimize(self) -> None:
        """Build or refresh the search index where the backend does not do it by itself."""

    def describe(self) -> str:
        return self.name

    @contextmanager
    def kept_open(self) -> Iterator[None]:
        """Keep what this process holds open while the caller works elsewhere between two calls
        (a first snapshot reads the catalog between its first page of vectors and the rest); a
        store that holds nothing here has nothing to keep."""
        yield

    def rest(self) -> None:
        """Nothing is asked of the store for a while (a full read just ended): hand back what this
        process holds alone. Server stores hold nothing here; the next call works as before."""

    def close(self) -> None:
        """Flush and release the store."""
