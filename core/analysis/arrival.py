"""Is a newly arrived image a duplicate of one already stored? Decided without touching the collection.

Ingest gives the new image's hashes, plus stored images found two ways: its nearest neighbours in
the vector store (with their cosine) and the stored images within `HAMMING_MAX` pHash bits
(`hash_matches` over the catalog's hash arrays; their cosine may be unknown), and, in a
collection of up to `EXHAUSTIVE_MAX_N` images, the crop candidates of `crop_candidates_for`:
stored images matching a window of the new one, and stored images with a window matching it
(`arrival_proposals`). Crops are verified against each of them in both directions. The verdict
uses the collection's cached `SimilarityScale` and the same thresholds as the duplicate view.

Beyond `EXHAUSTIVE_MAX_N` images the duplicate view no longer searches crops among every pair but
among the neighbour graph's edges and the pHash pairs; the arrival check then does the same
(`searches_crop_windows`): its crops are verified among the `arrival_neighbour_count` nearest
vectors and the pHash matches. Scanning every stored image's 64 crop windows both ways cost an
arrival 142 ms of wall clock at a million stored images on 2 AVX2 cores, twice the encoder's
71 ms, and the windows themselves take 512 MB.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.analysis.crops import EXHAUSTIVE_MAX_N, contained, containing, crop_matches, window_hashes
from core.analysis.details import close_looks
from core.analysis.duplicates import (
    DEFAULT_THRESHOLDS,
    LOCAL_CHECK_FLOOR,
    DuplicateThresholds,
    judge_pairs,
    pair_strength,
    pixel_scores,
    sketch_arrays,
)
from core.analysis.hamming import distances_to, hashes_from_hex
from core.analysis.neighbours import DEFAULT_K
from core.analysis.similarity import SimilarityScale

VERDICTS = ("exact", "near", "none")
ARRIVAL_NEIGHBOURS = 5  # nearest stored vectors judged where every stored image's crop windows are searched


@dataclass(frozen=True)
class StoredImage:
    """A stored image close to the arriving one."""

    image_id: str
    cosine: float  # to the arriving image; NaN when it was found by hash only
    sha256: str
    pixel_sha256: str | None
    phash: str
    phash_mirror: str
    sketch: bytes | None  # None (or NaN from a DataFrame) for images stored before sketches existed


@dataclass(frozen=True)
class ArrivalCheck:
    """The verdict, and the stored image it is about (the closest one when the verdict is "none")."""

    verdict: str  # "exact" | "near" | "none"
    image_id: str | None  # None when nothing is stored yet
    cosine: float
    similarity: float
    phash_distance: int | None
    mirrored: bool
    crop_score: float | None
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


def crop_candidates_for(sketch: bytes | None, phash: str, phash_mirror: str, stored_phash: np.ndarray,
                        stored_phash_mirror: np.ndarray, stored_windows: np.ndarray) -> np.ndarray:
    """Positions of stored images that may be a crop of the new image or contain it, flipped or
    not, by window hashes.

    `stored_windows` are the stored images' `window_hashes` (n, W); ~20 ms per 1M images each way.
    """
    pixels, present = sketch_arrays([sketch])
    inside = (contained(window_hashes(pixels)[0], stored_phash, stored_phash_mirror) if present[0]
              else np.zeros(0, dtype=np.int64))
    own, own_mirror = (int(h) for h in hashes_from_hex([phash, phash_mirror]))
    return np.union1d(inside, containing(stored_windows, own, own_mirror))


def searches_crop_windows(stored: int) -> bool:
    """Whether an arrival's crops are searched among every one of `stored` images' windows (as the
    duplicate view searches every pair, up to `EXHAUSTIVE_MAX_N`), rather than among its nearest
    vectors and pHash matches only (as the view searches the graph's edges and pHash pairs beyond)."""
    return stored <= EXHAUSTIVE_MAX_N


def arrival_neighbour_count(stored: int) -> int:
    """How many nearest stored vectors an arrival is judged against: as many as the neighbour graph
    links where they are the crop search's only partners, else `ARRIVAL_NEIGHBOURS`."""
    return ARRIVAL_NEIGHBOURS if searches_crop_windows(stored) else DEFAULT_K


def arrival_proposals(sketch: bytes | None, phash: str, phash_mirror: str, stored_phash: np.ndarray,
                      stored_phash_mirror: np.ndarray, stored_windows: np.ndarray | None,
                      radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the stored images that the collection-wide scans propose to an arrival: within
    `radius` pHash bits (closest first, `hash_matches`), and crop candidates either way
    (`crop_candidates_for`; none where `stored_windows` is None: see `searches_crop_windows`)."""
    rows, _ = hash_matches(phash, phash_mirror, stored_phash, stored_phash_mirror, radius)
    crops = (np.empty(0, dtype=np.int64) if stored_windows is None else
             crop_candidates_for(sketch, phash, phash_mirror, stored_phash, stored_phash_mirror, stored_windows))
    return rows, crops


def _crop_scores(sketch: bytes | None, own_hashes: np.ndarray, stored: Sequence[StoredImage],
                 stored_hashes: np.ndarray, stored_mirrors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verified crop score of the new image (`own_hashes`: its pHash, then its mirrored pHash)
    against each stored one, either way round, flipped or not (NaN: none), and each pair's whole
    sketch correlation (`pixel_scores`; NaN without sketches)."""
    scores = np.full(len(stored), np.nan, dtype=np.float32)
    pixels, present = sketch_arrays([sketch, *(s.sketch for s in stored)])
    if not present[0]:
        return scores, scores.copy()
    hashes = np.concatenate([own_hashes[:1], stored_hashes]).astype(np.uint64)
    mirrors = np.concatenate([own_hashes[1:], stored_mirrors]).astype(np.uint64)
    rows = np.arange(1, len(stored) + 1)
    found = crop_matches(pixels, hashes, mirrors, present, pairs=(np.zeros_like(rows), rows),
                         exhaustive_max_n=0)
    np.fmax.at(scores, np.maximum(found.outer, found.inner) - 1, found.score)
    agree = np.where(present[1:], pixel_scores(pixels, np.zeros_like(rows), rows), np.nan)
    return scores, agree.astype(np.float32)


def check_arrival(*, sha256: str, pixel_sha256: str | None, phash: str, phash_mirror: str, sketch: bytes | None,
                  stored: Sequence[StoredImage], scale: SimilarityScale,
                  thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS,
                  picture: Callable[[], np.ndarray] | None = None,
                  pictures: Callable[[list[str]], np.ndarray] | None = None) -> ArrivalCheck:
    """Exact duplicate (same bytes, then same pixels), near duplicate (strongest match), or none.

    With `picture` (makes the new image's close-up) and `pictures` (stored image ids -> theirs), the
    stored images its sketch confirms (or would, were the close look to agree: the `sketch` signal
    needs one) are looked at closely (`core.analysis.details`), as the duplicate view does: only
    those, so an arrival with no near duplicate decodes and fetches nothing."""
    if not stored:
        return ArrivalCheck("none", None, math.nan, math.nan, None, False, None, ())
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
    crop, whole = _crop_scores(sketch, new, stored, stored_hashes, stored_mirrors)
    agree = np.fmax(whole, crop)
    judge = functools.partial(judge_pairs, comparable, distance, crop, exact, thresholds, agree, None)
    verdicts = judge()
    if picture is not None and pictures is not None:
        hopeful = judge(np.zeros(len(stored), dtype=np.float32))  # as if every close look agreed
        look = np.flatnonzero(hopeful.accepted & ~exact & (whole >= LOCAL_CHECK_FLOOR))
        if len(look):
            local, detail = (np.full(len(stored), np.nan, dtype=np.float32) for _ in range(2))
            looks = close_looks(np.repeat(picture()[None], len(look), axis=0),
                                pictures([stored[i].image_id for i in look]))
            local[look], detail[look] = looks.difference, looks.detail
            verdicts = judge(local, detail=detail)
    strength = pair_strength(comparable, distance, crop, exact, thresholds) + same_bytes  # same bytes before same pixels
    if verdicts.accepted.any():
        best = int(np.flatnonzero(verdicts.accepted)[np.argmax(strength[verdicts.accepted])])
        verdict = "exact" if exact[best] else "near"
    else:
        best = int(np.lexsort((distance, -comparable))[0])
        verdict = "none"
    return ArrivalCheck(verdict, stored[best].image_id, float(cosine[best]), float(similarity[best]),
                        int(distance[best]), bool(mirrored[best]), None if np.isnan(crop[best]) else float(crop[best]),
                        verdicts.signals(best, bool(same_bytes[best]), bool(same_pixels[best])))
