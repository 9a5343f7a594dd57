"""Exact and near duplicates: candidate pairs gathered once, thresholds applied cheaply.

`duplicate_candidates` does the expensive part once per collection version: it keeps every
neighbour-graph edge above `similarity_floor` on the calibrated scale, every pair within
`hamming_max` pHash bits (mirrored copies included), every verified crop scoring `crop_floor` or
more (`core.analysis.crops`), and every pair with the same bytes or the same decoded pixels,
each with all its evidence. Moving a threshold then only filters those pairs
(`duplicate_pairs`, `duplicate_clusters`), so thresholds inside the floors never miss a pair the
graph or the hash search found.

A pair is a duplicate when it has the same bytes or the same pixels, or when its signals pass:
- rule "either" (default): similarity >= `similarity`, or pHash distance <= `hamming`, or one
  image is a crop of the other (crop score >= `crop`), or both embedding and pHash
  moderately strong together (similarity >= `agree_similarity` and distance <=
  `agree_hamming`). Each signal alone misses some copies (random-weight embeddings barely move
  under a rotation that costs pHash 9-12 bits); where they agree, far fewer false pairs slip in.
- rule "both": similarity >= `similarity` and a pixel signal (pHash distance <= `hamming`, or a crop).
Defaults measured on the labelled benchmark (`benchmarks/analysis.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from core.analysis.crops import (
    DEFAULT_CROP_MATCH,
    EXHAUSTIVE_MAX_N,
    PACKED_BYTES,
    crop_matches,
    pack_sketches,
)
from core.analysis.exact import check_vectors
from core.analysis.hamming import hashes_from_hex, pair_distances, pairs_within
from core.analysis.heap import release_free_memory
from core.analysis.neighbours import NeighbourGraph
from core.analysis.similarity import SimilarityScale, similarity_scale
from core.errors import InvalidRequest
from core.images import SKETCH_SIDE

RULES = ("either", "both")
SIGNALS = ("same_bytes", "same_pixels", "phash", "crop", "cosine", "phash+cosine")
DEFAULT_SIMILARITY = 0.95
DEFAULT_HAMMING = 8
DEFAULT_RULE = "either"
DEFAULT_AGREE_SIMILARITY = 0.3
DEFAULT_AGREE_HAMMING = 12
SIMILARITY_FLOOR = 0.3  # lowest similarity threshold the candidates support
HAMMING_MAX = 12  # highest pHash threshold the candidates support
CROP_FLOOR = 0.8  # lowest crop threshold the candidates support
_EXACT_STRENGTH = 1.5
EXAMPLE_SIGNALS = ("cosine", "phash", "crop")


@dataclass(frozen=True)
class ImageSignals:
    """Per-image facts besides the embedding, one entry per row of the vectors.

    `bytes_group` / `pixels_group`: equal values mean the same SHA-256 / the same decoded pixels.
    `created` orders images by arrival (earlier is smaller) to pick cluster representatives.
    `sketch` holds each image's miniature (`core.images.sketch`) packed by `pack_sketches`; rows
    whose `has_sketch` is False (stored before sketches existed) are zeros and take no part in
    crop detection.
    """

    bytes_group: np.ndarray  # (n,) int64
    pixels_group: np.ndarray  # (n,) int64
    phash: np.ndarray  # (n,) uint64
    phash_mirror: np.ndarray  # (n,) uint64
    pixels: np.ndarray  # (n,) int64, width * height
    created: np.ndarray  # (n,) float64
    sketch: np.ndarray  # (n, PACKED_BYTES) uint8
    has_sketch: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.phash)

    @classmethod
    def from_columns(cls, *, sha256: Sequence[str], pixel_sha256: Sequence[str | None], phash: Sequence[str],
                     phash_mirror: Sequence[str], width: Sequence[int], height: Sequence[int],
                     created: Sequence[float] | None = None,
                     sketch: Sequence[bytes | None] | None = None) -> ImageSignals:
        """Build from catalog columns; hashes are 16-hex-digit strings, a missing pixel hash matches nothing.

        `sketch` holds `core.images.sketch` bytes per image (None where missing); without it no
        image takes part in crop detection.
        """
        n = len(sha256)
        lengths = {len(pixel_sha256), len(phash), len(phash_mirror), len(width), len(height)}
        for optional in (created, sketch):
            if optional is not None:
                lengths.add(len(optional))
        if lengths != {n}:
            raise ValueError("every column of image signals must have one entry per image")
        pixel_keys = [p if p else f"\0missing{i}" for i, p in enumerate(pixel_sha256)]
        return cls(
            bytes_group=np.unique(np.asarray(sha256, dtype=object), return_inverse=True)[1].astype(np.int64),
            pixels_group=np.unique(np.asarray(pixel_keys, dtype=object), return_inverse=True)[1].astype(np.int64),
            phash=hashes_from_hex(phash),
            phash_mirror=hashes_from_hex(phash_mirror),
            pixels=np.asarray(width, dtype=np.int64) * np.asarray(height, dtype=np.int64),
            created=np.arange(n, dtype=np.float64) if created is None else np.asarray(created, dtype=np.float64),
            **dict(zip(("sketch", "has_sketch"), sketch_arrays(sketch if sketch is not None else [None] * n),
                       strict=True)),
        )


def sketch_arrays(sketch: Sequence[bytes | memoryview | float | None],
                  chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Packed sketches (n, PACKED_BYTES) uint8 (`pack_sketches`) and (n,) presence from
    `core.images.sketch` bytes (None: missing); converted a chunk at a time, so the RGB pixels of
    the whole collection are never in memory at once."""
    size = SKETCH_SIDE * SKETCH_SIDE * 3
    packed = np.zeros((len(sketch), PACKED_BYTES), dtype=np.uint8)
    present = np.zeros(len(sketch), dtype=bool)
    for c0 in range(0, len(sketch), chunk):
        rgb = np.zeros((min(chunk, len(sketch) - c0), size), dtype=np.uint8)
        for i, data in enumerate(sketch[c0:c0 + chunk]):
            if not isinstance(data, (bytes, bytearray, memoryview)):  # None, or NaN where pandas read a SQL NULL
                continue
            if len(data) != size:
                raise ValueError(f"a sketch must be {size} bytes ({SKETCH_SIDE}x{SKETCH_SIDE} RGB), got {len(data)}")
            rgb[i] = np.frombuffer(data, dtype=np.uint8)
            present[c0 + i] = True
        packed[c0:c0 + len(rgb)] = pack_sketches(rgb.reshape(len(rgb), SKETCH_SIDE, SKETCH_SIDE, 3))
    packed[~present] = 0
    return packed, present


@dataclass(frozen=True)
class DuplicateThresholds:
    """Where the user's sliders are: calibrated similarity, pHash bits, and how they combine.

    The agreement band (`agree_*`) applies to rule "either" only. `crop` is the correlation a
    verified crop needs (`core.analysis.crops`; above 1 turns crops off).
    """

    similarity: float = DEFAULT_SIMILARITY
    hamming: int = DEFAULT_HAMMING
    rule: str = DEFAULT_RULE
    crop: float = DEFAULT_CROP_MATCH
    agree_similarity: float = DEFAULT_AGREE_SIMILARITY
    agree_hamming: int = DEFAULT_AGREE_HAMMING

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InvalidRequest("rule", f"{self.rule!r} is not one of {', '.join(RULES)}")
        for name in ("similarity", "agree_similarity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value > 1.0:
                raise InvalidRequest(name, f"{value!r} is not a number up to 1")
        if not isinstance(self.crop, (int, float, np.floating)) or not np.isfinite(self.crop):
            raise InvalidRequest("crop", f"{self.crop!r} is not a number (a correlation; above 1 turns crops off)")
        for name in ("hamming", "agree_hamming"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 64:
                raise InvalidRequest(name, f"{value!r} is not a whole number of bits from 0 to 64")

    @property
    def lowest_similarity(self) -> float:
        return min(self.similarity, self.agree_similarity) if self.rule == "either" else self.similarity

    @property
    def highest_hamming(self) -> int:
        return max(self.hamming, self.agree_hamming) if self.rule == "either" else self.hamming


DEFAULT_THRESHOLDS = DuplicateThresholds()


@dataclass(frozen=True)
class DuplicateCandidates:
    """Every pair that some threshold within the floors could call a duplicate, with its evidence."""

    left: np.ndarray  # (m,) int32, left < right, sorted
    right: np.ndarray  # (m,) int32
    cosine: np.ndarray  # (m,) float32
    phash_distance: np.ndarray  # (m,) uint8, mirror-aware
    mirrored: np.ndarray  # (m,) bool: the flipped hash matched better
    same_bytes: np.ndarray  # (m,) bool
    same_pixels: np.ndarray  # (m,) bool
    crop_score: np.ndarray  # (m,) float32: verified crop correlation, NaN where no crop was found
    scale: SimilarityScale
    similarity_floor: float
    hamming_max: int
    crop_floor: float

    @property
    def similarity(self) -> np.ndarray:
        return self.scale.similarity(self.cosine)

    def __len__(self) -> int:
        return len(self.left)


@dataclass(frozen=True)
class DuplicatePair:
    """Two images and why they count (or would count) as duplicates."""

    left: int
    right: int
    cosine: float
    similarity: float
    phash_distance: int
    mirrored: bool
    crop_score: float | None  # None where neither image is a verified crop of the other
    signals: tuple[str, ...]  # which of SIGNALS matched under the thresholds


@dataclass(frozen=True)
class DuplicateCluster:
    """Images connected by duplicate pairs, the representative first, then most similar to it first.

    `links` is the cluster's strongest spanning tree (one pair per member besides the
    representative, saying how it joined); `weakest_link` is the tree pair nearest its threshold:
    moving a threshold past it splits the cluster, so a chain shows up there.
    """

    members: tuple[int, ...]
    cosine_to_representative: tuple[float, ...]
    similarity_to_representative: tuple[float, ...]
    phash_distance_to_representative: tuple[int, ...]
    crop_score_to_representative: tuple[float | None, ...]  # None where neither is a verified crop of the other
    signals_to_representative: tuple[tuple[str, ...], ...]  # () where a member joined through others only
    links: tuple[DuplicatePair, ...]
    weakest_link: DuplicatePair

    @property
    def representative(self) -> int:
        return self.members[0]

    @property
    def exact(self) -> bool:
        """All members have the same bytes or pixels as the representative."""
        return all({"same_bytes", "same_pixels"} & set(s) for s in self.signals_to_representative[1:])


@dataclass(frozen=True)
class DuplicateReport:
    clusters: tuple[DuplicateCluster, ...]  # largest first
    thresholds: DuplicateThresholds
    scale: SimilarityScale
    pair_count: int


def duplicate_candidates(graph: NeighbourGraph, vectors: np.ndarray, signals: ImageSignals, *,
                         scale: SimilarityScale | None = None, similarity_floor: float = SIMILARITY_FLOOR,
                         hamming_max: int = HAMMING_MAX, crop_floor: float = CROP_FLOOR,
                         crop_exhaustive_max_n: int = EXHAUSTIVE_MAX_N) -> DuplicateCandidates:
    """Gather and describe every candidate pair (the step to cache; thresholds come later).

    Crops are searched among all pairs up to `crop_exhaustive_max_n` images; beyond that among
    the neighbour graph's edges and the pHash pairs.
    """
    x = check_vectors(vectors)
    n = len(x)
    if graph.n != n or len(signals) != n:
        raise ValueError(f"graph ({graph.n} rows), vectors ({n}) and signals ({len(signals)}) must describe "
                         "the same images in the same order")
    scale = scale or similarity_scale(graph)
    hl, hr, _, _ = pairs_within(signals.phash, signals.phash_mirror, hamming_max)
    hash_keys = _pair_keys(hl, hr, n)
    # beyond the exhaustive size: every graph edge and pHash pair, both ways round
    crops = crop_matches(signals.sketch, signals.phash, signals.phash_mirror, signals.has_sketch, pairs=(hl, hr),
                         partners=graph.indices, exhaustive_max_n=crop_exhaustive_max_n)
    strong = crops.score >= crop_floor
    crop_keys = _pair_keys(crops.outer[strong], crops.inner[strong], n)
    parts = [_graph_keys(graph, scale, similarity_floor), hash_keys, crop_keys,
             _star_keys(signals.bytes_group, n), _star_keys(signals.pixels_group, n)]
    keys = np.unique(np.concatenate(parts))
    crop_score = np.full(len(keys), np.nan, dtype=np.float32)
    np.fmax.at(crop_score, np.searchsorted(keys, crop_keys), crops.score[strong])  # best of both orders
    left, right = (keys // max(n, 1)).astype(np.int32), (keys % max(n, 1)).astype(np.int32)
    distance, mirrored = pair_distances(signals.phash, signals.phash_mirror, left, right)
    release_free_memory()  # the crop search's and pair gathering's freed temporaries
    return DuplicateCandidates(
        left=left, right=right, cosine=_row_dots(x, left, right), phash_distance=distance, mirrored=mirrored,
        same_bytes=signals.bytes_group[left] == signals.bytes_group[right],
        same_pixels=signals.pixels_group[left] == signals.pixels_group[right], crop_score=crop_score,
        scale=scale, similarity_floor=float(similarity_floor), hamming_max=int(hamming_max),
        crop_floor=float(crop_floor))


def _graph_keys(graph: NeighbourGraph, scale: SimilarityScale, floor: float, block: int = 65536) -> np.ndarray:
    """Keys of the graph edges at or above `floor` on the calibrated scale (in row blocks: memory stays flat)."""
    parts = [np.empty(0, dtype=np.int64)]
    for s in range(0, graph.n, block):
        cols = graph.indices[s:s + block].astype(np.int64)
        keep = (cols >= 0) & (scale.similarity(graph.similarities[s:s + block]) >= floor)
        rows = np.broadcast_to(np.arange(s, s + len(cols))[:, None], cols.shape)
        parts.append(_pair_keys(rows[keep], cols[keep], graph.n))
    return np.concatenate(parts)


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return np.minimum(a, b) * n + np.maximum(a, b)


def _star_keys(groups: np.ndarray, n: int) -> np.ndarray:
    """Pairs linking each member of a group to the group's first member."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    lead = first[inverse]
    rows = np.arange(len(groups))
    linked = lead != rows
    return _pair_keys(lead[linked], rows[linked], n)


def _row_dots(x: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cosine of each pair; rows are gathered a chunk at a time (two 16 MB copies at 512-d)."""
    out = np.empty(len(left), dtype=np.float32)
    for s in range(0, len(left), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", x[left[s:s + chunk]], x[right[s:s + chunk]])
    return out


# thresholds -------------------------------------------------------------------------------------

def _check_range(candidates: DuplicateCandidates, thresholds: DuplicateThresholds) -> None:
    """A threshold outside the range the candidates were gathered for is the caller's to change."""
    if thresholds.lowest_similarity < candidates.similarity_floor:
        raise InvalidRequest("similarity", f"{thresholds.lowest_similarity} is below the {candidates.similarity_floor} "
                             "the candidates were gathered for (gather them again with a lower similarity_floor)")
    if thresholds.crop < candidates.crop_floor:
        raise InvalidRequest("crop", f"{thresholds.crop} is below the {candidates.crop_floor} the candidates were "
                             "gathered for (gather them again with a lower crop_floor)")
    if thresholds.rule == "either" and thresholds.highest_hamming > candidates.hamming_max:
        raise InvalidRequest("hamming", f"{thresholds.highest_hamming} is above the {candidates.hamming_max} bits "
                             "the candidates were gathered for (gather them again with a higher hamming_max)")


@dataclass(frozen=True)
class PairVerdicts:
    """Per pair: accepted, and which signals did it."""

    accepted: np.ndarray
    by_cosine: np.ndarray
    by_hash: np.ndarray
    by_crop: np.ndarray
    by_agreement: np.ndarray  # accepted by the agreement band only

    def signals(self, i: int, same_bytes: bool, same_pixels: bool) -> tuple[str, ...]:
        hits = (same_bytes, same_pixels, self.by_hash[i], self.by_crop[i], self.by_cosine[i], self.by_agreement[i])
        return tuple(name for name, hit in zip(SIGNALS, hits, strict=True) if hit)


def judge_pairs(similarity: np.ndarray, distance: np.ndarray, crop: np.ndarray, exact: np.ndarray,
                t: DuplicateThresholds) -> PairVerdicts:
    """Which pairs the thresholds accept, and by which signals (vectorised over pairs; crop NaN = none)."""
    by_cosine = similarity >= t.similarity
    by_hash = distance <= t.hamming
    by_crop = np.nan_to_num(crop, nan=-np.inf) >= t.crop
    if t.rule == "both":
        return PairVerdicts(exact | (by_cosine & (by_hash | by_crop)), by_cosine, by_hash, by_crop,
                            np.zeros_like(by_hash))
    agreement = (similarity >= t.agree_similarity) & (distance <= t.agree_hamming) & ~by_cosine & ~by_hash & ~by_crop
    return PairVerdicts(exact | by_cosine | by_hash | by_crop | agreement, by_cosine, by_hash, by_crop, agreement)


def pair_strength(similarity: np.ndarray, distance: np.ndarray, crop: np.ndarray, exact: np.ndarray,
                  t: DuplicateThresholds) -> np.ndarray:
    """How far each accepted pair clears its thresholds: 0 at a threshold, 1 for identical evidence."""
    def margins(sim_t: float, ham_t: int) -> tuple[np.ndarray, np.ndarray]:
        by_cosine = np.clip((similarity - sim_t) / max(1e-9, 1.0 - sim_t), 0.0, 1.0)
        by_hash = np.clip((ham_t + 1 - distance.astype(np.float64)) / (ham_t + 1), 0.0, 1.0)
        return np.where(similarity >= sim_t, by_cosine, -1.0), np.where(distance <= ham_t, by_hash, -1.0)

    cos_m, hash_m = margins(t.similarity, t.hamming)
    score = np.nan_to_num(crop, nan=-np.inf)
    crop_m = np.where(score >= t.crop, np.clip((score - t.crop) / max(1e-9, 1.0 - t.crop), 0.0, 1.0), -1.0)
    pixel_m = np.maximum(hash_m, crop_m)
    if t.rule == "both":
        near = np.minimum(cos_m, pixel_m)
    else:
        agree_cos, agree_hash = margins(t.agree_similarity, t.agree_hamming)
        near = np.maximum(np.maximum(cos_m, pixel_m), np.minimum(agree_cos, agree_hash))
    return np.where(exact, _EXACT_STRENGTH, near)


def duplicate_pairs(candidates: DuplicateCandidates, thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS,
                    ) -> list[DuplicatePair]:
    """Every accepted pair, strongest first."""
    _check_range(candidates, thresholds)
    verdicts = _judge_candidates(candidates, thresholds)
    rows = np.flatnonzero(verdicts.accepted)
    strength = pair_strength(candidates.similarity[rows], candidates.phash_distance[rows],
                             candidates.crop_score[rows], candidates.same_bytes[rows] | candidates.same_pixels[rows],
                             thresholds)
    rows = rows[np.argsort(-strength, kind="stable")]
    return [_pair(candidates, int(i), verdicts) for i in rows]


def _judge_candidates(c: DuplicateCandidates, t: DuplicateThresholds) -> PairVerdicts:
    return judge_pairs(c.similarity, c.phash_distance, c.crop_score, c.same_bytes | c.same_pixels, t)


def _pair(c: DuplicateCandidates, i: int, verdicts: PairVerdicts) -> DuplicatePair:
    crop = float(c.crop_score[i])
    return DuplicatePair(int(c.left[i]), int(c.right[i]), float(c.cosine[i]), float(c.scale.similarity(c.cosine[i])),
                         int(c.phash_distance[i]), bool(c.mirrored[i]), None if np.isnan(crop) else crop,
                         verdicts.signals(i, bool(c.same_bytes[i]), bool(c.same_pixels[i])))


def duplicate_clusters(candidates: DuplicateCandidates, vectors: np.ndarray, signals: ImageSignals,
                       thresholds: DuplicateThresholds = DEFAULT_THRESHOLDS) -> DuplicateReport:
    """Connected components of the accepted pairs, each with representative, order and weakest link.

    The representative is the member with the most pixels, then the earliest created, then the
    lowest row. Members follow by cosine to the representative, highest first.
    """
    _check_range(candidates, thresholds)
    x = check_vectors(vectors)
    n = len(x)
    verdicts = _judge_candidates(candidates, thresholds)
    rows = np.flatnonzero(verdicts.accepted)
    left, right = candidates.left[rows], candidates.right[rows]
    exact = candidates.same_bytes[rows] | candidates.same_pixels[rows]
    strength = pair_strength(candidates.similarity[rows], candidates.phash_distance[rows],
                             candidates.crop_score[rows], exact, thresholds)
    adjacency = coo_matrix((2.0 - strength, (left, right)), shape=(n, n)).tocsr()
    n_parts, label = connected_components(adjacency, directed=False)
    tree = minimum_spanning_tree(adjacency).tocoo()
    accepted_keys = left.astype(np.int64) * n + right  # sorted, as the candidates are
    all_keys = candidates.left.astype(np.int64) * n + candidates.right
    tree_keys = np.minimum(tree.row, tree.col).astype(np.int64) * n + np.maximum(tree.row, tree.col)
    tree_pair = rows[np.searchsorted(accepted_keys, tree_keys)]
    sizes = np.bincount(label, minlength=n_parts)
    by_label = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[by_label], np.arange(n_parts + 1))
    tree_label = label[tree.row]
    tree_order = np.argsort(tree_label, kind="stable")
    tree_starts = np.searchsorted(tree_label[tree_order], np.arange(n_parts + 1))
    clusters = []
    for part in np.flatnonzero(sizes >= 2):
        members = by_label[starts[part]:starts[part + 1]]
        edges = tree_order[tree_starts[part]:tree_starts[part + 1]]
        links = [(tree.data[e], _pair(candidates, int(tree_pair[e]), verdicts)) for e in edges]
        crop = _crop_scores(candidates, all_keys, n, members)
        clusters.append(_cluster(members, links, x, signals, crop, candidates.scale, thresholds))
    clusters.sort(key=lambda c: (-len(c.members), c.representative))
    return DuplicateReport(tuple(clusters), thresholds, candidates.scale, len(rows))


def _crop_scores(candidates: DuplicateCandidates, keys: np.ndarray, n: int, members: np.ndarray,
                 ) -> dict[tuple[int, int], float]:
    """Crop scores among `members`, by (smaller, larger) row, from the candidates (sorted `keys`)."""
    a, b = np.meshgrid(members, members, indexing="ij")
    wanted = (np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)).ravel()
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = (keys[pos] == wanted) & ~np.isnan(candidates.crop_score[pos])
    return {(int(k // n), int(k % n)): float(candidates.crop_score[p]) for k, p in zip(wanted[found], pos[found],
                                                                                      strict=True)}


def _cluster(members: np.ndarray, links: list[tuple[float, DuplicatePair]], x: np.ndarray,
             signals: ImageSignals, crops: dict[tuple[int, int], float], scale: SimilarityScale,
             t: DuplicateThresholds) -> DuplicateCluster:
    rep = int(min(members, key=lambda m: (-signals.pixels[m], signals.created[m], m)))
    cos = x[members] @ x[rep]
    distance, _ = pair_distances(signals.phash, signals.phash_mirror, np.full(len(members), rep), members)
    order = sorted(range(len(members)), key=lambda i: (members[i] != rep, -cos[i], int(distance[i]), members[i]))
    members, cos, distance = members[order], cos[order], distance[order]
    sim = scale.similarity(cos)
    same_bytes = signals.bytes_group[members] == signals.bytes_group[rep]
    same_pixels = signals.pixels_group[members] == signals.pixels_group[rep]
    crop = np.array([crops.get((min(rep, int(m)), max(rep, int(m))), np.nan) for m in members], dtype=np.float32)
    verdicts = judge_pairs(sim, distance, crop, same_bytes | same_pixels, t)
    direct = tuple(verdicts.signals(i, bool(same_bytes[i]), bool(same_pixels[i])) if i else ()
                   for i in range(len(members)))
    weakest = max(links, key=lambda wl: (wl[0], wl[1].left, wl[1].right))[1]
    return DuplicateCluster(
        members=tuple(int(m) for m in members),
        cosine_to_representative=tuple(float(c) for c in cos),
        similarity_to_representative=tuple(float(s) for s in sim),
        phash_distance_to_representative=tuple(int(d) for d in distance),
        crop_score_to_representative=tuple(None if np.isnan(c) else float(c) for c in crop),
        signals_to_representative=direct,
        links=tuple(link for _, link in links),
        weakest_link=weakest)


def threshold_examples(candidates: DuplicateCandidates, thresholds: DuplicateThresholds, signal: str,
                       count: int = 6) -> tuple[list[DuplicatePair], list[DuplicatePair]]:
    """Pairs just inside and just outside one threshold ("cosine", "phash" or "crop"), closest to it first.

    For showing beside a slider what moving it would add or remove.
    """
    if signal not in EXAMPLE_SIGNALS:
        raise ValueError(f"examples are for one of the thresholds {EXAMPLE_SIGNALS}, not {signal!r}")
    verdicts = _judge_candidates(candidates, thresholds)
    not_exact = ~(candidates.same_bytes | candidates.same_pixels)
    if signal == "cosine":
        gap, inside = candidates.similarity - thresholds.similarity, verdicts.by_cosine
    elif signal == "phash":
        gap, inside = thresholds.hamming - candidates.phash_distance.astype(np.float64), verdicts.by_hash
    else:
        gap, inside = candidates.crop_score - thresholds.crop, verdicts.by_crop
        not_exact &= ~np.isnan(candidates.crop_score)
    result = []
    for side in (inside, ~inside):
        rows = np.flatnonzero(side & not_exact)
        rows = rows[np.argsort(np.abs(gap[rows]), kind="stable")][:count]
        result.append([_pair(candidates, int(i), verdicts) for i in rows])
    return result[0], result[1]
