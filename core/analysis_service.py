"""The collection's analysis, computed once per collection version and shared by every view.

The neighbour graph is built from the collection's vectors once per version (updated, not rebuilt,
when images were only added), and the duplicate candidates, the similarity scale, anomaly scores
and the map all derive from it. Results are cached twice: in this process for the current version
(moving a threshold re-reads nothing) and through the cache backend under a key that holds the
cache format, the collection's id and version (another process, or a restart with Redis, finds them
there). What the cache backend holds is plain data (:mod:`core.cache_codec`), never a pickle: a
value that does not decode is logged and recomputed. Each value is computed once, by its first
caller, without a lock around the computation (:mod:`core.analysis_memo`): a threshold move or an
arrival check never waits behind a graph or UMAP build of another value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from core import analysis
from core.analysis import (
    AnomalyScores,
    DuplicateCandidates,
    DuplicateCluster,
    DuplicatePair,
    DuplicateReport,
    DuplicateThresholds,
    ImageSignals,
    NeighbourGraph,
    SimilarityScale,
    StoredImage,
)
from core.analysis.anomalies import DEFAULT_METHOD, combination_p_values, embedding_percentiles
from core.analysis.crops import WINDOWS, window_hashes
from core.analysis.details import DETAIL_SIDE
from core.analysis.neighbours import DEFAULT_K, EXACT_MAX_N
from core.analysis.quality import (
    DEFAULT_Z,
    FLAG_NAMES,
    QualityFlags,
    quality_flags,
    robust_z,
)
from core.analysis.reasons import image_reasons
from core.analysis_inputs import read_analysis_rows
from core.analysis_memo import ComputedOnce
from core.cache_codec import (
    ANOMALY_SCORES,
    CANDIDATES,
    FORMAT,
    GRAPH,
    LATEST_GRAPH,
    PROJECTION,
    SCALE,
    Codec,
    CodecError,
    LatestGraph,
)
from core.images import detail_picture
from core.observability import observe_analysis
from core.paging import Page, page_of
from core.reports import (
    AnomaliesView,
    AnomalyRow,
    ArrivalMatch,
    DuplicateGroup,
    DuplicateLink,
    DuplicateMember,
    DuplicatesView,
    ImageRef,
    IssueRow,
    IssuesView,
    MapView,
)
from core.storage.cache import Cache
from core.storage.catalog import Catalog, ImageRecord, Label

CACHE_TTL_S = 7 * 24 * 3600
MAX_THRESHOLD_VIEWS = 16  # clusterings kept per version: the latest slider positions
MIN_CALIBRATION_IMAGES = 2 * 10 + 1  # the scale's reference rank needs that many images
REF_CHUNK = 65536  # image references built at once for a long listing

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorSnapshot:
    """Every visible image at one collection version: catalog rows, signals and vectors in the same
    order (:func:`core.analysis_inputs.read_analysis_rows`)."""

    version: int
    frame: pd.DataFrame  # catalog rows, ordered by arrival, without their hashes and sketches
    signals: ImageSignals  # entry i is frame row i: hashes, sizes and packed sketches
    vectors: np.ndarray  # (n, dim) L2-normalised, row i is frame row i; float16 from analysis_inputs.HALF_PRECISION_MIN_IMAGES images

    properties: np.ndarray  # (n, len(PROPERTY_NAMES)) measured properties, NaN rows for unmeasured images

    # Converted from the frame once per snapshot: every view and the graph's cache key read them.
    @functools.cached_property
    def ids(self) -> list[str]:
        return self.frame["id"].tolist()

    def refs(self, rows: np.ndarray | list[int] | range) -> list[ImageRef]:
        """The rows' references, their columns taken from the frame for these rows only: at a
        million images each column as a list of Python objects held 50-90 MB."""
        rows = np.asarray(rows, dtype=np.int64)
        names = self.frame["file_name"].take(rows).tolist()
        sources, widths, heights = (_shared(self.frame[c].take(rows).tolist()) for c in ("source", "width", "height"))
        return [ImageRef(self.ids[r], *ref) for r, *ref in zip(rows.tolist(), names, sources, widths, heights, strict=True)]


def _shared(values: list[T]) -> list[T]:
    """``values`` with equal ones as one object: a folder name or a size repeats across many rows,
    and each converted value is otherwise its own object (28-60 bytes)."""
    seen: dict[T, T] = {}
    return [seen.setdefault(v, v) for v in values]


class CollectionAnalysis:
    """Graph, duplicate candidates, scale, scores and map for one collection (see module docstring).

    Each value is computed once per (version, name) by its first caller (:class:`ComputedOnce`);
    threshold views (clusters for one set of thresholds) are kept for the few latest thresholds.
    """

    def __init__(self, cache: Cache, collection_id: str, snapshot: Callable[[], VectorSnapshot], k: int = DEFAULT_K,
                 device: str = "cpu", pictures: Callable[[list[str]], np.ndarray] | None = None):
        self.cache = cache
        self.pictures = pictures  # image ids -> their close-up pictures (`detail_pictures`); None: no close look
        self.collection_id = collection_id
        self.snapshot = snapshot
        self.k = k
        self.device = device  # where the neighbour graph is computed: "cpu" or "cuda"
        self._values = ComputedOnce()
        self._latest_graph: LatestGraph | None = None  # kept here, not encoded, where the cache is in-process
        self._views = ComputedOnce(max_values=MAX_THRESHOLD_VIEWS)
        self._windows_lock = threading.Lock()
        self._windows: tuple[list[str], np.ndarray] = ([], np.zeros((0, len(WINDOWS)), dtype=np.uint64))
        self._ignored: set[str] = set()  # keys whose unreadable values were already logged

    # caching --------------------------------------------------------------------------------------
    def _key(self, version: int, name: str) -> str:
        return f"va:{FORMAT}:{self.collection_id}:{version}:{name}"

    def _latest_key(self, name: str) -> str:
        return f"va:{FORMAT}:{self.collection_id}:latest:{name}"

    def _read(self, key: str, codec: Codec[T], images: int | None = None) -> T | None:
        """The cache backend's value under ``key``, or ``None`` when it is absent or is not a value of
        this type for ``images`` images (logged once per key, then recomputed and overwritten)."""
        raw = self.cache.get(key)
        if raw is None:
            return None
        try:
            value = codec.decode(raw)
            if images is not None and not codec.fits(value, images):
                raise CodecError(f"it does not fit the version's {images} images")
        except CodecError as exc:
            if key not in self._ignored:
                self._ignored.add(key)
                log.warning("Ignoring the cached value under %s (recomputing it): %s", key, exc)
            return None
        return value

    def _cached(self, snap: VectorSnapshot, name: str, compute: Callable[[], T], codec: Codec[T] | None) -> T:
        """The value for this version: from this process, else the cache backend, else computed, once
        however many callers ask at the same time. ``codec=None`` keeps it in this process only, for
        values rebuilt from the catalog more cheaply than sent through the cache (the image signals
        carry 384 bytes of packed sketch an image)."""

        shared = codec is not None and not self.cache.in_process  # an in-process cache would hold a copy

        def load_or_compute() -> T:
            key = self._key(snap.version, name)
            value = self._read(key, codec, len(snap.ids)) if shared else None
            if value is None:
                with observe_analysis(name.split(":")[0], version=snap.version):
                    value = compute()
                if shared:
                    self.cache.set(key, codec.encode(value), ttl_s=CACHE_TTL_S)
            return value

        return self._values.get(snap.version, name, load_or_compute)

    def computed(self, snap: VectorSnapshot, name: str, codec: Codec[T]) -> T | None:
        """The value if this process or the cache backend already holds it; never computes (a
        detail view shows the map position only once the map exists)."""
        found = self._values.peek(snap.version, name)
        return found if found is not None else self._read(self._key(snap.version, name), codec, len(snap.ids))

    # shared pieces --------------------------------------------------------------------------------
    def graph(self, snap: VectorSnapshot) -> NeighbourGraph:
        return self._cached(snap, f"graph:k{self.k}", lambda: self._build_graph(snap), GRAPH)

    def _build_graph(self, snap: VectorSnapshot) -> NeighbourGraph:
        """Update the latest graph when this version only added images after it; else build anew."""
        latest_key = self._latest_key(f"graph:k{self.k}")
        latest = self._latest_graph if self.cache.in_process else self._read(latest_key, LATEST_GRAPH)
        ids = snap.ids
        graph: NeighbourGraph | None = None
        if (latest is not None and 0 < latest.count <= len(ids) and latest.graph.n == latest.count
                and _ids_digest(ids[: latest.count]) == latest.ids_sha256):
            graph = latest.graph
            if latest.count < len(ids):
                graph = analysis.update_graph(graph, snap.vectors, device=self.device)
        if graph is None:
            graph = analysis.build_graph(snap.vectors, k=min(self.k, max(1, len(ids) - 1)), device=self.device)
        latest = LatestGraph(len(ids), _ids_digest(ids), graph)
        if self.cache.in_process:
            self._latest_graph = latest
        else:
            self.cache.set(latest_key, LATEST_GRAPH.encode(latest), ttl_s=CACHE_TTL_S)
        return graph

    def scale(self, snap: VectorSnapshot) -> SimilarityScale:
        def compute() -> SimilarityScale:
            scale = analysis.similarity_scale(self.graph(snap))
            self.cache.set(self._latest_key("scale"), SCALE.encode(scale), ttl_s=CACHE_TTL_S)
            return scale

        return self._cached(snap, "scale", compute, SCALE)

    def candidates(self, snap: VectorSnapshot) -> DuplicateCandidates:
        pictures = self.pictures
        details = None if pictures is None else (lambda rows: pictures([snap.ids[r] for r in rows]))
        return self._cached(
            snap,
            "candidates",
            lambda: analysis.duplicate_candidates(
                self.graph(snap), snap.vectors, snap.signals, scale=self.scale(snap), device=self.device,
                details=details,
            ),
            CANDIDATES,
        )

    # duplicates -----------------------------------------------------------------------------------
    def _report(self, snap: VectorSnapshot, thresholds: DuplicateThresholds) -> DuplicateReport:
        """Clusters under these thresholds, largest first; kept for the latest few thresholds, so
        paging through them re-clusters nothing."""
        return self._views.get(
            snap.version, f"duplicates:{thresholds!r}",
            lambda: analysis.duplicate_clusters(self.candidates(snap), snap.vectors, snap.signals, thresholds),
        )

    def duplicates(self, thresholds: DuplicateThresholds) -> DuplicatesView:
        snap = self.snapshot()
        if len(snap.ids) < 2:
            return DuplicatesView((), thresholds, self._empty_scale(), 0, len(snap.ids))
        report = self._report(snap, thresholds)
        groups = _groups(snap, report.clusters, 1)
        return DuplicatesView(groups, thresholds, report.scale, report.pair_count, len(snap.ids),
                              hamming_searched=report.hamming_searched)

    def duplicate_groups(self, thresholds: DuplicateThresholds, offset: int, limit: int) -> Page[DuplicateGroup]:
        """One page of :meth:`duplicates`' groups (largest first), built for that page only."""
        snap = self.snapshot()
        clusters = self._report(snap, thresholds).clusters if len(snap.ids) >= 2 else ()
        page = page_of(clusters, offset, limit)
        groups = _groups(snap, page.items, offset + 1)
        return Page(groups, offset, limit, page.total)

    def cluster_ids(self, snap: VectorSnapshot, thresholds: DuplicateThresholds) -> np.ndarray:
        """Each row's cluster id under these thresholds (as in :meth:`duplicates`), 0 when in none."""
        found = np.zeros(len(snap.ids), dtype=np.int64)
        if len(snap.ids) >= 2:
            for number, cluster in enumerate(self._report(snap, thresholds).clusters, 1):
                found[list(cluster.members)] = number
        return found

    def threshold_examples(self, thresholds: DuplicateThresholds, signal: str, count: int = 6
                           ) -> tuple[list[DuplicateLink], list[DuplicateLink]]:
        """Pairs just inside and just outside one threshold: what moving the slider adds or removes."""
        snap = self.snapshot()
        if len(snap.ids) < 2:
            return [], []
        inside, outside = analysis.threshold_examples(self.candidates(snap), thresholds, signal, count)
        return [_link(snap, p) for p in inside], [_link(snap, p) for p in outside]

    # anomalies ------------------------------------------------------------------------------------
    def anomaly_scores(self, snap: VectorSnapshot, method: str, k: int | None) -> AnomalyScores:
        """Scores of every row; every image ties (score 0) while there are fewer than two."""
        if len(snap.ids) < 2:
            return AnomalyScores(method, k, np.zeros(len(snap.ids)), np.full(len(snap.ids), 100.0))

        def compute() -> AnomalyScores:
            same = snap.signals.pixels_group
            return analysis.anomaly_scores(snap.vectors, self.graph(snap), method=method, k=k, same_image=same,
                                           properties=self.properties(snap))

        return self._cached(snap, f"anomalies:{method}:k{k}", compute, ANOMALY_SCORES)

    # image quality --------------------------------------------------------------------------------
    def properties(self, snap: VectorSnapshot) -> np.ndarray:
        """(n, len(PROPERTY_NAMES)) the images' measured properties, NaN rows for unmeasured ones."""
        return snap.properties

    def quality(self, snap: VectorSnapshot, z_threshold: float) -> QualityFlags:
        """Every image's issue flags at this cut-off, kept for the version."""
        return self._cached(snap, f"quality:z{z_threshold!r}",
                            lambda: quality_flags(self.properties(snap), z_threshold), None)

    def reasons(self, snap: VectorSnapshot, k: int | None, z_threshold: float) -> tuple[tuple[str, ...], ...]:
        """Every image's reasons (:func:`core.analysis.reasons.image_reasons`), kept for the version."""
        def compute() -> tuple[tuple[str, ...], ...]:
            flags = self.quality(snap, z_threshold)
            if len(snap.ids) < 2:
                return tuple(() for _ in snap.ids)
            graph = self.graph(snap)
            near, far = embedding_percentiles(graph, graph.k if k is None else k, snap.signals.pixels_group)
            properties = self.properties(snap)
            return image_reasons(near, far, flags, robust_z(properties), combination_p_values(properties))

        return self._cached(snap, f"reasons:k{k}:z{z_threshold!r}", compute, None)

    def issues(self, flag: str | None, z_threshold: float) -> IssuesView:
        """The flagged images, by flag (in `FLAG_NAMES` order), most extreme first within each."""
        snap = self.snapshot()
        flags = self.quality(snap, z_threshold)
        names = FLAG_NAMES if flag is None else (flag,)
        rows = []
        for name in names:
            found = flags.rows_with(name)
            j = FLAG_NAMES.index(name)
            for row, ref in zip(found, snap.refs(found), strict=True):
                raised = next(f for f in flags.of(int(row)) if f.name == name)
                rows.append(IssueRow(ref, raised.name, raised.explanation, raised.property,
                                     flags.value(int(row), j), float(flags.z[row, j])))
        return IssuesView(z_threshold, tuple(rows), len(snap.ids))

    def _ranked(self, snap: VectorSnapshot, method: str, k: int | None) -> tuple[AnomalyScores, np.ndarray]:
        """Scores and their ranking (rows, most unusual first), sorted once per version."""
        def rank() -> tuple[AnomalyScores, np.ndarray]:
            scores = self.anomaly_scores(snap, method, k)
            return scores, scores.ranking()

        return self._values.get(snap.version, f"ranking:{method}:k{k}", rank)

    def anomaly_rows(self, *, method: str, k: int | None, threshold: float | None, top: int | None,
                     contamination: float | None, labels: Mapping[str, Label], selected_only: bool = False,
                     offset: int = 0, limit: int | None = None,
                     z_threshold: float = DEFAULT_Z) -> tuple[AnomalyScores, Page[AnomalyRow]]:
        """Rows ``offset``.. of the ranking (only the selected ones with ``selected_only``), built for
        that page only, each with its reasons and flags at ``z_threshold``; ``limit=None`` gives them
        all (exports)."""
        snap = self.snapshot()
        scores, order = self._ranked(snap, method, k)
        flags = self.quality(snap, z_threshold)
        reasons = self.reasons(snap, k, z_threshold)
        selected = np.zeros(len(snap.ids), dtype=bool)
        if len(snap.ids) >= 2 and any(c is not None for c in (threshold, top, contamination)):
            selected[analysis.select_anomalies(scores, threshold=threshold, top=top, contamination=contamination)] = True
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(1, len(order) + 1)
        listed = order[selected[order]] if selected_only else order
        limit = len(listed) if limit is None else limit
        page = listed[offset:offset + limit]
        rows = tuple(
            AnomalyRow(ref, float(scores.scores[row]), float(scores.percentiles[row]), int(rank_of[row]),
                       label.label if label else None, bool(selected[row]),
                       label.labelled_by if label else None, label.labelled_at if label else None,
                       reasons[row], flags.of(int(row)))
            # references a chunk at a time: an export's million rows hold only their own columns' objects
            for c0 in range(0, len(page), REF_CHUNK)
            for row, ref in zip(page[c0:c0 + REF_CHUNK], snap.refs(page[c0:c0 + REF_CHUNK]), strict=True)
            for label in (labels.get(ref.image_id),)
        )
        return scores, Page(rows, offset, limit, len(listed))

    def anomalies(self, *, method: str, k: int | None, threshold: float | None, top: int | None,
                  contamination: float | None, labels: Mapping[str, Label],
                  z_threshold: float = DEFAULT_Z, selected_only: bool = False) -> AnomaliesView:
        scores, page = self.anomaly_rows(method=method, k=k, threshold=threshold, top=top,
                                         contamination=contamination, labels=labels, z_threshold=z_threshold,
                                         selected_only=selected_only)
        return AnomaliesView(scores.method, scores.k, page.items)

    # the map --------------------------------------------------------------------------------------
    def projection(self, labels: Mapping[str, Label]) -> MapView:
        """Every image's map position with what colours it: anomaly score and percentile (default
        method), duplicate cluster (default thresholds), label and source; all cached per version."""
        snap = self.snapshot()
        n = len(snap.ids)
        if n < 3:
            coordinates, fitted = np.zeros((n, 2), dtype=np.float32), 0
        else:
            projection = self._cached(snap, "projection", lambda: analysis.umap_projection(
                snap.vectors, self.graph(snap)), PROJECTION)
            coordinates, fitted = projection.coordinates, len(projection.fitted)
        scores = self.anomaly_scores(snap, DEFAULT_METHOD, None)
        ids, names, sources = snap.ids, snap.frame["file_name"].tolist(), snap.frame["source"].tolist()
        return MapView(
            image_id=tuple(ids), file_name=tuple(names), source=tuple(sources),
            x=np.ascontiguousarray(coordinates[:, 0], dtype=np.float32),
            y=np.ascontiguousarray(coordinates[:, 1], dtype=np.float32),
            anomaly_score=scores.scores.astype(np.float32), anomaly_percentile=scores.percentiles.astype(np.float32),
            label=tuple(labels[i].label if i in labels else None for i in ids),
            cluster_id=self.cluster_ids(snap, DuplicateThresholds()).astype(np.int32), fitted=fitted)

    def _empty_scale(self) -> SimilarityScale:
        return SimilarityScale(reference_cosine=math.nan, reference_rank=0, histogram_edges=(), histogram_counts=())

    # on arrival -----------------------------------------------------------------------------------
    def arrival_context(self, catalog: Catalog) -> ArrivalContext:
        """What ingest needs to judge new images against the visible ones, read from ``catalog`` as
        the snapshot reads it (pages packed into arrays), without loading vectors or building a graph
        that is not there yet: the scale is the latest one computed (it drifts slowly), or computed
        now where that is quick. Crop windows are made only where every stored image's are searched
        (`searches_crop_windows`), and only for the images the last ingest had not seen."""
        rows = read_analysis_rows(catalog)
        ids = rows.frame["id"].tolist()
        searched = analysis.searches_crop_windows(len(ids))  # if not: 512 MB at a million images, not kept either
        with self._windows_lock:
            known, cached = self._windows
            if not searched or ids[: len(known)] != known:
                known, cached = [], cached[:0]
            windows = np.concatenate([cached, window_hashes(rows.signals.sketch[len(known):])]) if searched else None
            self._windows = (ids, windows) if windows is not None else (known, cached)
        return ArrivalContext(ids, self._latest_scale(len(ids)), rows.signals.phash, rows.signals.phash_mirror, windows,
                              functools.partial(catalog.get, ready_only=True), self.pictures)

    def _latest_scale(self, n: int) -> SimilarityScale | None:
        scale = self._read(self._latest_key("scale"), SCALE)
        if scale is not None:
            return scale
        if MIN_CALIBRATION_IMAGES <= n <= EXACT_MAX_N:
            return self.scale(self.snapshot())
        return None


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _groups(snap: VectorSnapshot, clusters: Sequence[DuplicateCluster], first: int) -> tuple[DuplicateGroup, ...]:
    """The clusters as groups numbered from ``first``, their members' references taken in one call
    (a call per cluster cost more than the clustering for thousands of clusters)."""
    refs = iter(snap.refs([row for cluster in clusters for row in cluster.members]))
    return tuple(_group(snap, number, cluster, list(itertools.islice(refs, len(cluster.members))))
                 for number, cluster in enumerate(clusters, first))


def _group(snap: VectorSnapshot, number: int, cluster: DuplicateCluster, refs: list[ImageRef]) -> DuplicateGroup:
    members = tuple(
        DuplicateMember(ref, i == 0, sim, cos, dist, crop, sig)
        for i, (ref, sim, cos, dist, crop, sig) in enumerate(
            zip(refs, cluster.similarity_to_representative, cluster.cosine_to_representative,
                cluster.phash_distance_to_representative, cluster.crop_score_to_representative,
                cluster.signals_to_representative, strict=True)
        )
    )
    return DuplicateGroup(number, members, cluster.exact, _link(snap, cluster.weakest_link))


def _link(snap: VectorSnapshot, p: DuplicatePair) -> DuplicateLink:
    return DuplicateLink(snap.ids[p.left], snap.ids[p.right], p.similarity, p.cosine, p.phash_distance, p.mirrored,
                         p.crop_score, p.signals)


def stored_image(record: ImageRecord, cosine: float) -> StoredImage:
    """A stored image as the arrival check compares it (``cosine`` NaN when found by hash only)."""
    return StoredImage(record.id, cosine, record.sha256, record.pixel_sha256, record.phash, record.phash_mirror,
                       record.sketch)


@dataclass(frozen=True)
class ArrivalContext:
    """The images visible when an ingest started, as arrays; the catalog rows of the few that a
    pHash or crop check proposes are read when proposed (one that was removed since is skipped).
    Kept in the process between ingests, the crop windows (up to `EXHAUSTIVE_MAX_N` images) are made once."""

    ids: list[str]
    scale: SimilarityScale | None  # None while the collection is too small to calibrate
    phash: np.ndarray
    phash_mirror: np.ndarray
    windows: np.ndarray | None  # (n, W) crop-window hashes of the images; None: not searched (`searches_crop_windows`)
    records: Callable[[list[str]], list[ImageRecord]]  # visible rows of these ids
    pictures: Callable[[list[str]], np.ndarray] | None = None  # close-up pictures of stored images, by id

    @property
    def neighbour_count(self) -> int:
        """How many nearest stored vectors ingest gives `judge` (`arrival_neighbour_count`)."""
        return analysis.arrival_neighbour_count(len(self.ids))

    def judge(self, *, sha256: str, pixel_sha256: str, phash: str, phash_mirror: str, sketch: bytes,
              neighbours: list[StoredImage], thresholds: DuplicateThresholds,
              thumbnail: bytes | None = None) -> ArrivalMatch:
        """Verdict for one new image from its vector neighbours, stored pHash matches and crop
        candidates; with its ``thumbnail``, near duplicates its sketch confirms get a close look."""
        stored = {s.image_id: s for s in neighbours}
        rows, crops = analysis.arrival_proposals(sketch, phash, phash_mirror, self.phash, self.phash_mirror,
                                                 self.windows, thresholds.highest_hamming)
        proposed = [self.ids[r] for r in [*rows[:self.neighbour_count], *crops[:self.neighbour_count]]]
        missing = [i for i in dict.fromkeys(proposed) if i not in stored]
        for record in self.records(missing) if missing else []:
            stored[record.id] = stored_image(record, math.nan)
        scale = self.scale
        if scale is None:  # cosine means nothing yet: judge by bytes, pixels, pHash and crops only
            stored = {i: dataclasses.replace(s, cosine=math.nan) for i, s in stored.items()}
            scale = SimilarityScale(reference_cosine=0.0, reference_rank=0, histogram_edges=(), histogram_counts=())
        check = analysis.check_arrival(sha256=sha256, pixel_sha256=pixel_sha256, phash=phash,
                                       phash_mirror=phash_mirror, sketch=sketch, stored=list(stored.values()), scale=scale,
                                       thresholds=thresholds, pictures=self.pictures,
                                       picture=None if thumbnail is None else functools.partial(
                                           detail_picture, thumbnail, DETAIL_SIDE))
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
