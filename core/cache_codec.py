"""How cached analysis values become bytes and back, without pickle.

Anything that can write to the cache server (Redis) can put any bytes under our keys, so reading a
value must never run code: a value is a small JSON header (its type and its plain fields) followed
by its arrays, each written with ``np.save`` and read with ``np.load(allow_pickle=False)``. Each
cached type has one :class:`Codec`: one function from the record to (fields, arrays) and one back.
Decoding checks the type tag, the fields and the arrays' kinds and shapes, and raises
:class:`CodecError` on anything else; the caller then ignores the value and recomputes it.

Bump :data:`FORMAT` when an encoding changes: it is part of every key, so a new release ignores
values an older one wrote instead of misreading them.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from core.analysis import AnomalyScores, DuplicateCandidates, NeighbourGraph, Projection, SimilarityScale

FORMAT = "v7"
_MAGIC = b"VAC3"
_HEADER = struct.Struct("<I")

T = TypeVar("T")
Fields = dict[str, Any]
Arrays = dict[str, np.ndarray]


class CodecError(ValueError):
    """The bytes are not a value of the expected type in this format."""


@dataclass(frozen=True)
class Codec(Generic[T]):
    """One cached type: its tag in the payload, and the pair that splits it into plain parts and back."""

    tag: str
    to_parts: Callable[[T], tuple[Fields, Arrays]]
    from_parts: Callable[[Fields, Arrays], T]
    fits: Callable[[T, int], bool] = lambda _value, _n: True  # whether it can be a value for n images

    def encode(self, value: T) -> bytes:
        fields, arrays = self.to_parts(value)
        header = json.dumps({"type": self.tag, "fields": fields, "arrays": list(arrays)}).encode()
        out = io.BytesIO()
        out.write(_MAGIC + _HEADER.pack(len(header)) + header)
        for array in arrays.values():
            np.save(out, np.ascontiguousarray(array), allow_pickle=False)
        return out.getvalue()

    def decode(self, data: bytes) -> T:
        """The value, or :class:`CodecError` for anything that is not one (never runs code)."""
        try:
            if not data.startswith(_MAGIC):
                raise CodecError("not a value in this cache format")
            (length,) = _HEADER.unpack_from(data, len(_MAGIC))
            start = len(_MAGIC) + _HEADER.size
            header = json.loads(data[start:start + length])
            if not isinstance(header, dict) or header.get("type") != self.tag:
                raise CodecError(f"not a {self.tag}")
            stream = io.BytesIO(data[start + length:])
            arrays = {str(name): np.load(stream, allow_pickle=False) for name in header["arrays"]}
            if stream.read(1):
                raise CodecError("trailing bytes")
            return self.from_parts(header["fields"], arrays)
        except CodecError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, struct.error, EOFError) as exc:
            raise CodecError(f"unreadable {self.tag}: {type(exc).__name__}: {exc}") from exc


def _array(arrays: Arrays, name: str, kinds: str, ndim: int) -> np.ndarray:
    """One array, checked: numpy kind letters in ``kinds`` (e.g. "iu", "f", "b") and dimensions."""
    array = arrays[name]
    if array.dtype.kind not in kinds or array.ndim != ndim:
        raise CodecError(f"{name}: expected a {ndim}-d array of kind {kinds!r}, got {array.dtype} {array.shape}")
    return array


def _same_length(*arrays: np.ndarray) -> None:
    if len({len(a) for a in arrays}) > 1:
        raise CodecError("arrays of different lengths")


# similarity scale ---------------------------------------------------------------------------------
def _scale_fields(scale: SimilarityScale) -> Fields:
    return {"reference_cosine": scale.reference_cosine, "reference_rank": scale.reference_rank,
            "histogram_edges": list(scale.histogram_edges), "histogram_counts": list(scale.histogram_counts)}


def _scale_from(fields: Fields) -> SimilarityScale:
    return SimilarityScale(
        reference_cosine=float(fields["reference_cosine"]),
        reference_rank=int(fields["reference_rank"]),
        histogram_edges=tuple(float(e) for e in fields["histogram_edges"]),
        histogram_counts=tuple(int(c) for c in fields["histogram_counts"]),
    )


SCALE: Codec[SimilarityScale] = Codec("scale", lambda s: (_scale_fields(s), {}), lambda f, _a: _scale_from(f))


# neighbour graph ----------------------------------------------------------------------------------
def _graph_from(fields: Fields, arrays: Arrays) -> NeighbourGraph:
    indices, similarities = _array(arrays, "indices", "iu", 2), _array(arrays, "similarities", "f", 2)
    if indices.shape != similarities.shape:
        raise CodecError("graph indices and similarities differ in shape")
    return NeighbourGraph(indices=indices, similarities=similarities, method=str(fields["method"]),
                          recall_at_10=float(fields["recall_at_10"]), recall_sample=int(fields["recall_sample"]))


GRAPH: Codec[NeighbourGraph] = Codec(
    "graph",
    lambda g: ({"method": g.method, "recall_at_10": g.recall_at_10, "recall_sample": g.recall_sample},
               {"indices": g.indices, "similarities": g.similarities}),
    _graph_from,
    fits=lambda g, n: g.n == n and (g.indices.size == 0 or int(g.indices.max()) < n),
)


@dataclass(frozen=True)
class LatestGraph:
    """The most recent graph and which images it covers: the first ``count`` ids of its version, in
    arrival order, as a digest (an id list of 1M images would weigh more than the check is worth)."""

    count: int
    ids_sha256: str
    graph: NeighbourGraph


LATEST_GRAPH: Codec[LatestGraph] = Codec(
    "graph-latest",
    lambda v: ({"count": v.count, "ids_sha256": v.ids_sha256, "graph": GRAPH.to_parts(v.graph)[0]},
               GRAPH.to_parts(v.graph)[1]),
    lambda f, a: LatestGraph(int(f["count"]), str(f["ids_sha256"]), _graph_from(f["graph"], a)),
)


# duplicate candidates -----------------------------------------------------------------------------
_CANDIDATE_ARRAYS = {"left": "iu", "right": "iu", "cosine": "f", "phash_distance": "iu", "mirrored": "b",
                     "same_bytes": "b", "same_pixels": "b", "crop_score": "f", "pixel_score": "f",
                     "neighbour_score": "f", "local_difference": "f", "detail": "f", "crop_local_difference": "f"}


def _candidates_from(fields: Fields, arrays: Arrays) -> DuplicateCandidates:
    checked = {name: _array(arrays, name, kinds, 1) for name, kinds in _CANDIDATE_ARRAYS.items()}
    _same_length(*checked.values())
    return DuplicateCandidates(**checked, scale=_scale_from(fields["scale"]),
                               similarity_floor=float(fields["similarity_floor"]),
                               hamming_max=int(fields["hamming_max"]),
                               hamming_searched=int(fields["hamming_searched"]), crop_floor=float(fields["crop_floor"]))


CANDIDATES: Codec[DuplicateCandidates] = Codec(
    "candidates",
    lambda c: ({"scale": _scale_fields(c.scale), "similarity_floor": c.similarity_floor,
                "hamming_max": c.hamming_max, "hamming_searched": c.hamming_searched, "crop_floor": c.crop_floor},
               {name: getattr(c, name) for name in _CANDIDATE_ARRAYS}),
    _candidates_from,
    fits=lambda c, n: len(c) == 0 or max(int(c.left.max()), int(c.right.max())) < n,
)


# anomaly scores -----------------------------------------------------------------------------------
def _scores_from(fields: Fields, arrays: Arrays) -> AnomalyScores:
    scores, percentiles = _array(arrays, "scores", "f", 1), _array(arrays, "percentiles", "f", 1)
    _same_length(scores, percentiles)
    k = fields["k"]
    return AnomalyScores(method=str(fields["method"]), k=None if k is None else int(k), scores=scores,
                         percentiles=percentiles)


ANOMALY_SCORES: Codec[AnomalyScores] = Codec(
    "anomaly-scores",
    lambda s: ({"method": s.method, "k": s.k}, {"scores": s.scores, "percentiles": s.percentiles}),
    _scores_from,
    fits=lambda s, n: len(s.scores) == n,
)


# projection ---------------------------------------------------------------------------------------
def _projection_from(_fields: Fields, arrays: Arrays) -> Projection:
    coordinates = _array(arrays, "coordinates", "f", 2)
    if coordinates.shape[1:] != (2,):
        raise CodecError("projection coordinates are not 2-D points")
    return Projection(coordinates=coordinates, fitted=_array(arrays, "fitted", "iu", 1))


PROJECTION: Codec[Projection] = Codec(
    "projection",
    lambda p: ({}, {"coordinates": p.coordinates, "fitted": p.fitted}),
    _projection_from,
    fits=lambda p, n: len(p.coordinates) == n and (p.fitted.size == 0 or int(p.fitted.max()) < n),
)


# a query vector (search by text) ------------------------------------------------------------------
VECTOR: Codec[np.ndarray] = Codec("vector", lambda v: ({}, {"vector": v}), lambda _f, a: _array(a, "vector", "f", 1))
