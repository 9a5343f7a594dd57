"""Is a newly arrived image a duplicate of one already stored? Decided without touching the collection.

Ingest gives the new image's hashes, plus stored images found two ways: its nearest neighbours in
the vector store (with their cosine) and the stored images within `HAMMING_MAX` pHash bits
(`hash_matches` over the catalog's hash arrays; their cosine may be unknown). The verdict uses the
collection's cached `SimilarityScale` and the same thresholds as the duplicate view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.analysis.duplicates import DEFAULT_THRESHOLDS, DuplicateThresholds, judge_pairs, pair_strength
from core.analysis.hamming import distances_to, hashes_from_hex
from core.analysis.similarity import SimilarityScale

VERDICTS = ("exact", "near", "none")


@dataclass(frozen=True)
class StoredImage:
    """A stored image close to the arriving one."""

    image_id: str
    cosine: float  # to the arriving image; NaN when it was found by hash only
    sha256: str
    pixel_sha256: str | None
    phash: str
    phash_mirror: str


@dataclass(frozen=True)
class ArrivalCheck:
    """The verdict, and the stored image it is about (the closest one when the verdict is "none")."""

    verdict: str  # "exact" | "near" | "none"
    image_id: str | None  # None when nothing is stored yet
    cosine: float
    similarity: float
    phash_distance: int | None
    mirrored: bool
    signals: tuple[str, ...]


def hash_matches(phash: str, phash_mirror: str, stored_phash: np.ndarray, stored_phash_mirror: np.ndarray,
                 radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of stored images within `radius` pHash bits (mirrored copies included), closest first.

    `stored_*` are uint64 arrays (`hashes_from_hex` of the catalog's columns); ~10 ms per 1M images.
    """
    query = hashes_from_hex([phash, phash_mirror])
    distance, _ = distances_to(int(query[0]), int(query[1]), stored_phash, stored_phash_mirror)
    hits = np.flatnonzero(distance <= radius)
    order = np.argsort(distance[hits], kind="stable")
    return hits[order], distance[hits][order]


def check_arrival(*, sha256: str, pixel_sha256: str | None, phash: str, phash_mirror: str,
                  stored: Sequence[StoredImage], scale: SimilarityScale,
                  thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS) -> ArrivalCheck:
    """Exact duplicate (same bytes, then same pixels), near duplicate (strongest match), or none."""
    if not stored:
        return ArrivalCheck("none", None, math.nan, math.nan, None, False, ())
    new = hashes_from_hex([phash, phash_mirror])
    stored_hashes = hashes_from_hex([s.phash for s in stored])
    stored_mirrors = hashes_from_hex([s.phash_mirror for s in stored])
    distance, mirrored = distances_to(int(new[0]), int(new[1]), stored_hashes, stored_mirrors)
    cosine = np.array([s.cosine for s in stored], dtype=np.float64)
    similarity = scale.similarity(cosine)
    comparable = np.where(np.isnan(similarity), -np.inf, similarity)
    same_bytes = np.array([s.sha256 == sha256 for s in stored])
    same_pixels = np.array([bool(pixel_sha256) and s.pixel_sha256 == pixel_sha256 for s in stored])
    exact = same_bytes | same_pixels
    verdicts = judge_pairs(comparable, distance, exact, thresholds)
    strength = pair_strength(comparable, distance, exact, thresholds) + same_bytes  # same bytes before same pixels
    if verdicts.accepted.any():
        best = int(np.flatnonzero(verdicts.accepted)[np.argmax(strength[verdicts.accepted])])
        verdict = "exact" if exact[best] else "near"
    else:
        best = int(np.lexsort((distance, -comparable))[0])
        verdict = "none"
    return ArrivalCheck(verdict, stored[best].image_id, float(cosine[best]), float(similarity[best]),
                        int(distance[best]), bool(mirrored[best]),
                        verdicts.signals(best, bool(same_bytes[best]), bool(same_pixels[best])))
