"""How unusual each image is within its collection, by one of several methods.

Methods (`METHODS`), each giving a raw score where higher means more unusual:
- "fused" (default): the embedding's group-aware outlier score ("embedding" below), the
  property outlier score ("properties") and the property combination score
  (:func:`core.analysis.quality.property_combination_scores`) combined by a weighted Fisher's
  method. Each score becomes an empirical p-value within the collection (the share of images
  scoring at least as high; for the properties never below the chi-square tail of their score,
  see `property_p_values`, which the combination shares), and the fused score is -2 (w_e ln
  p_embedding + w_p ln p_properties + w_c ln p_combination) with `FUSED_WEIGHTS` (1, 2, 1). An
  image extreme in any signal ranks high, one extreme in several highest; no signal's scale
  matters, only its order. Embedding distance alone cannot see a blank page, a strip or a fully
  transparent file (a white page after compositing looks like line art), and properties alone
  cannot see a picture of the wrong subject. With equal weights an image extreme in its properties only (a tiny copy of a normal
  icon) falls behind images mildly unusual in both; the properties' weight 2 was chosen on the
  union of the benchmarks in `benchmarks/analysis.py` (synthetic, and real icons with planted
  anomalies). The combination catches an image each of whose properties is ordinary but whose
  measurements together are unlike the collection's (an over-exposed icon: ROC-AUC 0.56 to 0.92
  for that kind on one real draw). Its weight and core were chosen by the worst margin to the
  targets over two synthetic and three real draws, never per benchmark.
- "embedding": distance to the image's k-th nearest neighbour with k the graph's k (30 by
  default), mean with the percentile of the local score. A foreign batch smaller than k cannot hide
  in its own company: its members' k-th neighbours lie outside the batch.
- "properties": the root-sum-square of the robust z-scores of the image's measured properties
  (:func:`core.analysis.quality.property_outlier_scores`); 0 for images not yet measured.
- "combined": the mean percentile rank of "knn" and "mahalanobis". Foreign images often
  arrive as a batch and are each other's nearest neighbours, which hides them from a local score;
  a global score sees the batch as far from the bulk of the collection, while the local score
  catches loners inside it.
- "knn": mean cosine distance to the k nearest neighbours, skipping the image's own exact
  duplicates (two copies of an outlier must not hide each other).
- "mahalanobis": squared distance from the collection mean in whitened coordinates (covariance
  shrunk towards its largest eigenvalue, so directions of tiny variance do not dominate).
- "lof": scikit-learn's Local Outlier Factor, on the shared neighbour graph.
- "iforest": scikit-learn's Isolation Forest, on the embeddings.
Scores come with percentile ranks; `select_anomalies` picks by score threshold, top N, or an
expected contamination percentage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, rankdata

from core.analysis.exact import as_float32, check_vectors
from core.analysis.neighbours import NeighbourGraph
from core.analysis.quality import property_combination_scores, property_outlier_scores
from core.errors import InvalidRequest
from core.image_properties import PROPERTY_NAMES

METHODS = ("fused", "embedding", "properties", "combined", "knn", "mahalanobis", "lof", "iforest")
DEFAULT_METHOD = "fused"
USES_GRAPH = frozenset({"fused", "embedding", "knn", "combined", "lof"})
USES_PROPERTIES = frozenset({"fused", "properties"})
LOCAL_K = 5  # the local score inside "embedding": a loner's distance to its few nearest images
FUSED_WEIGHTS = (1.0, 2.0, 1.0)  # Fisher weights in "fused": embedding, property, combination p-values
SHRINKAGE = 1e-3


@dataclass(frozen=True)
class AnomalyScores:
    method: str
    k: int | None  # neighbours used, for the graph-based methods
    scores: np.ndarray  # (n,) float64, higher = more unusual
    percentiles: np.ndarray  # (n,) float64 in (0, 100]: share of images scoring the same or lower

    def ranking(self) -> np.ndarray:
        """Row positions, most unusual first (ties: lower row first)."""
        return np.lexsort((np.arange(len(self.scores)), -self.scores))


def anomaly_scores(vectors: np.ndarray, graph: NeighbourGraph, *, method: str = DEFAULT_METHOD,
                   k: int | None = None, same_image: np.ndarray | None = None, seed: int = 0,
                   properties: np.ndarray | None = None) -> AnomalyScores:
    """Score every row of `vectors` (the rows `graph` was built on).

    `k` defaults to the graph's k and cannot exceed it. `same_image` gives each row a group label
    (equal labels = exact duplicates, e.g. the same SHA-256) so that "knn" skips those neighbours.
    `properties` is the rows' property matrix (columns in `PROPERTY_NAMES` order, NaN rows unmeasured),
    which "fused" and "properties" read; without it every image's properties count as typical.
    """
    if method not in METHODS:
        raise InvalidRequest("method", f"{method!r} is not one of {', '.join(METHODS)}")
    x = check_vectors(vectors)
    n = len(x)
    if graph.n != n:
        raise ValueError(f"the graph has {graph.n} rows but there are {n} vectors; rebuild or update the graph")
    if same_image is not None and len(same_image) != n:
        raise ValueError("same_image needs one group label per row")
    k = graph.k if k is None else k
    if not 1 <= k <= graph.k:
        raise InvalidRequest("k", f"{k} is not between 1 and the graph's k ({graph.k})")
    if n < 2:
        return _result(method, k, np.zeros(n))
    if properties is not None and len(properties) != n:
        raise ValueError("properties needs one row per vector")
    if method in USES_PROPERTIES:
        prop = property_outlier_scores(properties) if properties is not None else np.zeros(n)
    if method == "fused":
        combination = property_combination_scores(properties) if properties is not None else np.zeros(n)
        scores = fisher((p_values(embedding_outlier_scores(graph, k, same_image)), property_p_values(prop),
                         property_p_values(combination)), FUSED_WEIGHTS)
    elif method == "embedding":
        scores = embedding_outlier_scores(graph, k, same_image)
    elif method == "properties":
        scores = prop
    elif method == "knn":
        scores = knn_distance(graph, k, same_image)
    elif method == "mahalanobis":
        scores = mahalanobis(x)
    elif method == "combined":
        scores = 0.5 * (_percentile(knn_distance(graph, k, same_image)) + _percentile(mahalanobis(x))) / 100.0
    elif method == "lof":
        scores = _lof(graph, k)
    else:
        scores = _isolation_forest(x, seed)
    return _result(method, k if method in USES_GRAPH else None, scores)


def _result(method: str, k: int | None, scores: np.ndarray) -> AnomalyScores:
    scores = np.asarray(scores, dtype=np.float64)
    return AnomalyScores(method, k, scores, _percentile(scores))


def _percentile(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return np.zeros(0)
    return rankdata(scores, method="max") / len(scores) * 100.0


def p_values(scores: np.ndarray) -> np.ndarray:
    """Empirical p-value of each score within the collection: the share scoring at least as high."""
    return rankdata(-np.asarray(scores, dtype=np.float64), method="max") / len(scores)


def property_p_values(scores: np.ndarray) -> np.ndarray:
    """p-values of property outlier (or combination) scores: the empirical one, but never below
    the chi-square tail of the score squared (one degree of freedom per property). Without that
    floor the rank of an unremarkable score is noise (in a collection of alike files the least
    typical one still gets p = 1/n) and would dilute the embedding's evidence."""
    return np.maximum(p_values(scores), chi2.sf(np.asarray(scores, dtype=np.float64) ** 2, len(PROPERTY_NAMES)))


def fisher(p: tuple[np.ndarray, ...], weights: tuple[float, ...]) -> np.ndarray:
    """Weighted Fisher combination of several p-values of the same rows: -2 sum(w ln p)."""
    if len(p) != len(weights):
        raise ValueError("one weight per p-value")
    return -2.0 * np.sum([w * np.log(q) for q, w in zip(p, weights, strict=True)], axis=0)


def embedding_outlier_scores(graph: NeighbourGraph, k: int, same_image: np.ndarray | None = None) -> np.ndarray:
    """Group-aware embedding score: the mean percentile of the distance to the k-th neighbour (a
    batch of fewer than k foreign images reaches outside itself) and of the mean distance to the
    nearest few (loners), both skipping exact duplicates."""
    near, far = embedding_percentiles(graph, k, same_image)
    return 0.5 * (near + far) / 100.0


def embedding_percentiles(graph: NeighbourGraph, k: int, same_image: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Percentiles of the mean distance to the `LOCAL_K` nearest images and of the distance to the
    k-th: what "embedding" combines and what the reasons read."""
    near = knn_distance(graph, min(LOCAL_K, k), same_image)
    return _percentile(near), _percentile(kth_distance(graph, k, same_image))


def combination_p_values(properties: np.ndarray) -> np.ndarray:
    """p-values of the property combination score, as "fused" reads them, for the reasons."""
    return property_p_values(property_combination_scores(properties))


def kth_distance(graph: NeighbourGraph, k: int, same_image: np.ndarray | None = None,
                 block: int = 65536) -> np.ndarray:
    """Cosine distance to the k-th neighbour that is not an exact duplicate of the row (the farthest
    listed one when fewer are listed)."""
    out = np.empty(graph.n)
    for rows, distance, listed, taken in _taken_neighbours(graph, k, same_image, block):
        kth = np.where(taken, distance, -np.inf).max(axis=1)
        out[rows] = np.where(np.isfinite(kth), kth, _farthest_listed(distance, listed))
    return out


def knn_distance(graph: NeighbourGraph, k: int, same_image: np.ndarray | None = None,
                 block: int = 65536) -> np.ndarray:
    """Mean cosine distance to the first k neighbours that are not exact duplicates of the row.

    A row whose listed neighbours are all its own duplicates scores the distance to the farthest
    listed one (a lower bound).
    """
    out = np.empty(graph.n)
    for rows, distance, listed, taken in _taken_neighbours(graph, k, same_image, block):
        count = taken.sum(axis=1)
        out[rows] = np.where(count > 0, np.where(taken, distance, 0.0).sum(axis=1) / np.maximum(count, 1),
                             _farthest_listed(distance, listed))
    return out


def _taken_neighbours(graph: NeighbourGraph, k: int, same_image: np.ndarray | None, block: int
                      ) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of rows: (rows, cosine distances, listed, taken), taken marking the first k listed
    neighbours that are not exact duplicates of the row (equal ``same_image`` labels). In blocks:
    at a million images and k = 30 each whole-graph float64 temporary is 240 MB."""
    labels = None if same_image is None else np.asarray(same_image)
    for s in range(0, graph.n, block):
        rows = slice(s, min(s + block, graph.n))
        idx = graph.indices[rows]
        listed = idx >= 0
        valid = listed if labels is None else listed & (labels[np.maximum(idx, 0)] != labels[rows, None])
        yield rows, 1.0 - graph.similarities[rows].astype(np.float64), listed, valid & (np.cumsum(valid, axis=1) <= k)


def _farthest_listed(distance: np.ndarray, listed: np.ndarray) -> np.ndarray:
    """Each row's distance to its farthest listed neighbour, 0 with none listed."""
    farthest = np.where(listed, distance, -np.inf).max(axis=1)
    return np.where(np.isfinite(farthest), farthest, 0.0)


def mahalanobis(vectors: np.ndarray, shrinkage: float = SHRINKAGE, block: int = 4096) -> np.ndarray:
    """Squared whitened distance of each row from the mean, covariance shrunk by `shrinkage`."""
    n, d = vectors.shape
    mean = np.zeros(d)
    gram = np.zeros((d, d))
    for s in range(0, n, block):
        part = vectors[s:s + block].astype(np.float64)
        mean += part.sum(axis=0)
        gram += part.T @ part
    mean /= n
    cov = gram / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval = np.maximum(eigval, 0.0)
    weight = 1.0 / (eigval + shrinkage * max(eigval.max(), 1e-12))
    out = np.empty(n)
    basis = eigvec.astype(np.float32)
    shift = (mean @ eigvec).astype(np.float32)
    for s in range(0, n, block):
        proj = as_float32(vectors[s:s + block]) @ basis - shift
        out[s:s + block] = (proj.astype(np.float64) ** 2) @ weight
    return out


def _lof(graph: NeighbourGraph, k: int) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from sklearn.neighbors import LocalOutlierFactor

    k = min(k, int((graph.indices >= 0).sum(axis=1).min()))
    if k < 1:
        return np.zeros(graph.n)
    n = graph.n
    # each row lists itself first (scikit-learn drops it when scoring the training rows); distances
    # get a tiny floor because an implicit zero would read as "no edge"
    cols = np.concatenate([np.arange(n)[:, None], graph.indices[:, :k]], axis=1).ravel()
    dist = np.concatenate([np.zeros((n, 1)), np.maximum(1.0 - graph.similarities[:, :k], 1e-12)], axis=1)
    matrix = csr_matrix((dist.ravel(), cols, np.arange(0, n * (k + 1) + 1, k + 1)), shape=(n, n))
    lof = LocalOutlierFactor(n_neighbors=k, metric="precomputed").fit(matrix)
    return -lof.negative_outlier_factor_


def _isolation_forest(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    x = as_float32(x)
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(x)
    return -forest.score_samples(x)


def select_anomalies(result: AnomalyScores, *, threshold: float | None = None, top: int | None = None,
                     contamination: float | None = None) -> np.ndarray:
    """Row positions flagged as anomalies, most unusual first, by exactly one criterion.

    `threshold`: raw score at or above it. `top`: the N highest. `contamination`: the highest
    `contamination` percent (0-100] of the collection, rounded up.
    """
    given = [v is not None for v in (threshold, top, contamination)]
    if sum(given) != 1:
        raise ValueError("choose exactly one of threshold, top or contamination")
    ranked = result.ranking()
    if threshold is not None:
        return ranked[result.scores[ranked] >= threshold]
    if top is not None:
        if top < 0:
            raise InvalidRequest("top", f"{top} is below zero")
        return ranked[:top]
    if not 0 < contamination <= 100:
        raise InvalidRequest("contamination", f"{contamination} is not a percentage in (0, 100]")
    return ranked[: math.ceil(len(ranked) * contamination / 100.0)]
