"""The collection's analysis, computed once per collection version and shared by every view.

The neighbour graph is built from the collection's vectors once per version (updated, not rebuilt,
when images were only added), and the duplicate candidates, the similarity scale, anomaly scores
and the map all derive from it. Results are cached twice: in this process for the current version
(moving a threshold re-reads nothing) and through the cache backend under a key that holds the
collection's id and version (another process, or a restart with Redis, finds them there).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import analysis
from core.analysis import (
    AnomalyScores,
    DuplicateCandidates,
    DuplicatePair,
    DuplicateThresholds,
    ImageSignals,
    NeighbourGraph,
    Projection,
    SimilarityScale,
    StoredImage,
)
from core.analysis.crops import WINDOWS, window_hashes
from core.analysis.duplicates import sketch_arrays
from core.analysis.neighbours import DEFAULT_K, EXACT_MAX_N
from core.observability import observe_analysis
from core.reports import (
    AnomaliesView,
    AnomalyRow,
    ArrivalMatch,
    DuplicateGroup,
    DuplicateLink,
    DuplicateMember,
    DuplicatesView,
    ImageRef,
    MapPoint,
    MapView,
)
from core.storage.cache import Cache

CACHE_TTL_S = 7 * 24 * 3600
ARRIVAL_NEIGHBOURS = 5
MIN_CALIBRATION_IMAGES = 2 * 10 + 1  # the scale's reference rank needs that many images


@dataclass(frozen=True)
class VectorSnapshot:
    """Every visible image at one collection version: catalog rows and vectors in the same order."""

    version: int
    frame: pd.DataFrame  # catalog rows, ordered by arrival
    vectors: np.ndarray  # (n, dim) float32, L2-normalised, row i is frame row i

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].tolist()

    def refs(self, rows: np.ndarray | list[int] | range) -> list[ImageRef]:
        columns = [self.frame[c].to_numpy() for c in ("id", "file_name", "source", "width", "height")]
        ids, names, sources, widths, heights = columns
        return [ImageRef(str(ids[r]), str(names[r]), str(sources[r]), int(widths[r]), int(heights[r])) for r in rows]


class CollectionAnalysis:
    """Graph, duplicate candidates, scale, scores and map for one collection (see module docstring)."""

    def __init__(self, cache: Cache, collection_id: str, snapshot: Callable[[], VectorSnapshot], k: int = DEFAULT_K,
                 device: str = "cpu"):
        self.cache = cache
        self.collection_id = collection_id
        self.snapshot = snapshot
        self.k = k
        self.device = device  # where the neighbour graph is computed: "cpu" or "cuda"
        self._memo: dict[tuple[int, str], object] = {}
        self._lock = threading.RLock()
        self._windows: tuple[list[str], np.ndarray] = ([], np.zeros((0, len(WINDOWS)), dtype=np.uint64))

    # caching --------------------------------------------------------------------------------------
    def _key(self, version: int, name: str) -> str:
        return f"va:{self.collection_id}:v{version}:{name}"

    def _cached(self, version: int, name: str, compute: Callable[[], object], *, shared: bool = True) -> object:
        """The value for this version: from this process, else the cache backend, else computed.

        `shared=False` keeps it in this process only, for values rebuilt from the catalog more
        cheaply than sent through the cache (the image signals carry 384 bytes of packed sketch an image).
        """
        with self._lock:
            if (version, name) in self._memo:
                return self._memo[(version, name)]
            raw = self.cache.get(self._key(version, name)) if shared else None
            value = pickle.loads(raw) if raw is not None else None
            if value is None:
                with observe_analysis(name.split(":")[0], version=version):
                    value = compute()
                if shared:
                    self.cache.set(self._key(version, name), pickle.dumps(value, protocol=5), ttl_s=CACHE_TTL_S)
            self._memo = {key: v for key, v in self._memo.items() if key[0] == version}
            self._memo[(version, name)] = value
            return value

    def computed(self, version: int, name: str) -> object | None:
        """The value if this process or the cache backend already holds it; never computes (a
        detail view shows the map position only once the map exists)."""
        with self._lock:
            if (version, name) in self._memo:
                return self._memo[(version, name)]
        raw = self.cache.get(self._key(version, name))
        return pickle.loads(raw) if raw is not None else None

    # shared pieces --------------------------------------------------------------------------------
    def graph(self, snap: VectorSnapshot) -> NeighbourGraph:
        return self._cached(snap.version, f"graph:k{self.k}", lambda: self._build_graph(snap))  # type: ignore[return-value]

    def _build_graph(self, snap: VectorSnapshot) -> NeighbourGraph:
        """Update the latest graph when this version only added images after it; else build anew."""
        latest_key = f"va:{self.collection_id}:graph-latest:k{self.k}"
        raw = self.cache.get(latest_key)
        ids = snap.ids
        graph: NeighbourGraph | None = None
        if raw is not None:
            old_ids, old_graph = pickle.loads(raw)
            if 0 < len(old_ids) <= len(ids) and ids[: len(old_ids)] == old_ids:
                if len(old_ids) < len(ids):
                    graph = analysis.update_graph(old_graph, snap.vectors, device=self.device)
                else:
                    graph = old_graph
        if graph is None:
            graph = analysis.build_graph(snap.vectors, k=min(self.k, max(1, len(ids) - 1)), device=self.device)
        self.cache.set(latest_key, pickle.dumps((ids, graph), protocol=5), ttl_s=CACHE_TTL_S)
        return graph

    def signals(self, snap: VectorSnapshot) -> ImageSignals:
        """Per-image hashes and sizes; kept for the version, since every threshold move needs them."""
        f = snap.frame
        return self._cached(  # type: ignore[return-value]
            snap.version,
            "signals",
            lambda: ImageSignals.from_columns(
                sha256=f["sha256"].tolist(), pixel_sha256=f["pixel_sha256"].tolist(), phash=f["phash"].tolist(),
                phash_mirror=f["phash_mirror"].tolist(), width=f["width"].tolist(), height=f["height"].tolist(),
                created=f["created_at"].tolist(), sketch=f["sketch"].tolist(),
            ),
            shared=False,
        )

    def scale(self, snap: VectorSnapshot) -> SimilarityScale:
        def compute() -> SimilarityScale:
            scale = analysis.similarity_scale(self.graph(snap))
            self.cache.set(self._latest_scale_key(), pickle.dumps(scale), ttl_s=CACHE_TTL_S)
            return scale

        return self._cached(snap.version, "scale", compute)  # type: ignore[return-value]

    def candidates(self, snap: VectorSnapshot) -> DuplicateCandidates:
        return self._cached(  # type: ignore[return-value]
            snap.version,
            "candidates",
            lambda: analysis.duplicate_candidates(
                self.graph(snap), snap.vectors, self.signals(snap), scale=self.scale(snap)
            ),
        )

    # views ----------------------------------------------------------------------------------------
    def duplicates(self, thresholds: DuplicateThresholds) -> DuplicatesView:
        snap = self.snapshot()
        if len(snap.ids) < 2:
            return DuplicatesView((), thresholds, self._empty_scale(), 0, len(snap.ids))
        candidates = self.candidates(snap)
        report = analysis.duplicate_clusters(candidates, snap.vectors, self.signals(snap), thresholds)
        groups = []
        for number, cluster in enumerate(report.clusters, 1):
            refs = snap.refs(list(cluster.members))
            members = tuple(
                DuplicateMember(ref, i == 0, sim, cos, dist, crop, sig)
                for i, (ref, sim, cos, dist, crop, sig) in enumerate(
                    zip(refs, cluster.similarity_to_representative, cluster.cosine_to_representative,
                        cluster.phash_distance_to_representative, cluster.crop_score_to_representative,
                        cluster.signals_to_representative, strict=True)
                )
            )
            groups.append(DuplicateGroup(number, members, cluster.exact, _link(snap, cluster.weakest_link)))
        return DuplicatesView(tuple(groups), thresholds, report.scale, report.pair_count, len(snap.ids))

    def threshold_examples(self, thresholds: DuplicateThresholds, signal: str, count: int = 6
                           ) -> tuple[list[DuplicateLink], list[DuplicateLink]]:
        """Pairs just inside and just outside one threshold: what moving the slider adds or removes."""
        snap = self.snapshot()
        if len(snap.ids) < 2:
            return [], []
        inside, outside = analysis.threshold_examples(self.candidates(snap), thresholds, signal, count)
        return [_link(snap, p) for p in inside], [_link(snap, p) for p in outside]

    def anomaly_scores(self, snap: VectorSnapshot, method: str, k: int | None) -> AnomalyScores:
        def compute() -> AnomalyScores:
            same = self.signals(snap).pixels_group
            return analysis.anomaly_scores(snap.vectors, self.graph(snap), method=method, k=k, same_image=same)

        return self._cached(snap.version, f"anomalies:{method}:k{k}", compute)  # type: ignore[return-value]

    def anomalies(self, *, method: str, k: int | None, threshold: float | None, top: int | None,
                  contamination: float | None, labels: dict[str, str]) -> AnomaliesView:
        snap = self.snapshot()
        if len(snap.ids) < 2:
            refs = snap.refs(range(len(snap.ids)))
            rows = tuple(AnomalyRow(r, 0.0, 100.0, 1, labels.get(r.image_id), False) for r in refs)
            return AnomaliesView(method, k, rows)
        scores = self.anomaly_scores(snap, method, k)
        criteria = [c for c in (threshold, top, contamination) if c is not None]
        selected = (
            set(analysis.select_anomalies(scores, threshold=threshold, top=top, contamination=contamination).tolist())
            if criteria
            else set()
        )
        order = scores.ranking()
        refs = snap.refs(order)
        rows = tuple(
            AnomalyRow(ref, float(scores.scores[row]), float(scores.percentiles[row]), rank,
                       labels.get(ref.image_id), int(row) in selected)
            for rank, (row, ref) in enumerate(zip(order, refs, strict=True), 1)
        )
        return AnomaliesView(scores.method, scores.k, rows)

    def projection(self) -> MapView:
        snap = self.snapshot()
        if len(snap.ids) < 3:
            return MapView(tuple(MapPoint(r, 0.0, 0.0) for r in snap.refs(range(len(snap.ids)))), 0)
        projection: Projection = self._cached(  # type: ignore[assignment]
            snap.version, "projection", lambda: analysis.umap_projection(snap.vectors, self.graph(snap))
        )
        refs = snap.refs(range(len(snap.ids)))
        points = tuple(MapPoint(r, float(x), float(y)) for r, (x, y) in zip(refs, projection.coordinates, strict=True))
        return MapView(points, len(projection.fitted))

    def _empty_scale(self) -> SimilarityScale:
        return SimilarityScale(reference_cosine=math.nan, reference_rank=0, histogram_edges=(), histogram_counts=())

    # on arrival -----------------------------------------------------------------------------------
    def arrival_context(self, frame: pd.DataFrame) -> ArrivalContext:
        """What ingest needs to judge new images against the visible ones (``frame``, the catalog's
        rows), without loading vectors or building a graph that is not there yet: the scale is the
        latest one computed (it drifts slowly), or computed now where that is quick."""
        frame = frame.reset_index(drop=True)
        return ArrivalContext(
            frame,
            self._latest_scale(len(frame)),
            analysis.hashes_from_hex(frame["phash"].tolist()),
            analysis.hashes_from_hex(frame["phash_mirror"].tolist()),
            self._crop_windows(frame),
        )

    def _crop_windows(self, frame: pd.DataFrame) -> np.ndarray:
        """Window hashes of the frame's images for crop checks on arrival. Kept in the process between
        ingests, so each ingest computes only the images added since (1M take ~1 min the first time)."""
        ids = frame["id"].tolist()
        with self._lock:
            known, windows = self._windows
            if ids[: len(known)] != known:
                known, windows = [], windows[:0]
            pixels, _ = sketch_arrays(frame["sketch"].iloc[len(known):].tolist())
            windows = np.concatenate([windows, window_hashes(pixels)])
            self._windows = (ids, windows)
            return windows

    def _latest_scale(self, n: int) -> SimilarityScale | None:
        raw = self.cache.get(self._latest_scale_key())
        if raw is not None:
            return pickle.loads(raw)
        if MIN_CALIBRATION_IMAGES <= n <= EXACT_MAX_N:
            return self.scale(self.snapshot())
        return None

    def _latest_scale_key(self) -> str:
        return f"va:{self.collection_id}:scale-latest"


def _link(snap: VectorSnapshot, p: DuplicatePair) -> DuplicateLink:
    return DuplicateLink(snap.ids[p.left], snap.ids[p.right], p.similarity, p.cosine, p.phash_distance, p.mirrored,
                         p.crop_score, p.signals)


@dataclass(frozen=True)
class ArrivalContext:
    frame: pd.DataFrame  # the visible images' catalog rows when the ingest started
    scale: SimilarityScale | None  # None while the collection is too small to calibrate
    phash: np.ndarray
    phash_mirror: np.ndarray
    windows: np.ndarray  # (n, W) crop-window hashes of the frame's images

    def judge(self, *, sha256: str, pixel_sha256: str, phash: str, phash_mirror: str, sketch: bytes,
              neighbours: list[StoredImage], thresholds: DuplicateThresholds) -> ArrivalMatch:
        """Verdict for one new image from its vector neighbours, stored pHash matches and crop candidates."""
        stored = {s.image_id: s for s in neighbours}
        rows, _ = analysis.hash_matches(phash, phash_mirror, self.phash, self.phash_mirror, thresholds.highest_hamming)
        f = self.frame
        crops = analysis.crop_candidates_for(sketch, phash, phash_mirror, self.phash, self.phash_mirror, self.windows)
        for row in [*rows[:ARRIVAL_NEIGHBOURS], *crops[:ARRIVAL_NEIGHBOURS]]:
            image_id = str(f.at[row, "id"])
            stored.setdefault(image_id, StoredImage(image_id, math.nan, str(f.at[row, "sha256"]),
                                                    str(f.at[row, "pixel_sha256"]), str(f.at[row, "phash"]),
                                                    str(f.at[row, "phash_mirror"]), f.at[row, "sketch"]))
        scale = self.scale
        if scale is None:  # cosine means nothing yet: judge by bytes, pixels, pHash and crops only
            stored = {i: dataclasses.replace(s, cosine=math.nan) for i, s in stored.items()}
            scale = SimilarityScale(reference_cosine=0.0, reference_rank=0, histogram_edges=(), histogram_counts=())
        check = analysis.check_arrival(sha256=sha256, pixel_sha256=pixel_sha256, phash=phash,
                                       phash_mirror=phash_mirror, sketch=sketch, stored=list(stored.values()), scale=scale,
                                       thresholds=thresholds)
        cosine = next((s.cosine for s in neighbours if s.image_id == check.image_id), math.nan)
        return ArrivalMatch(
            verdict=check.verdict,
            image_id=check.image_id,
            similarity=None if self.scale is None or math.isnan(cosine) else float(self.scale.similarity(cosine)),
            cosine=None if math.isnan(cosine) else cosine,
            phash_distance=check.phash_distance,
            crop_score=check.crop_score,
            signals=check.signals,
        )
