"""A 2-D map of the collection: UMAP (cosine) on the shared neighbour graph.

Up to `FIT_MAX` images UMAP is fitted on all of them, reusing the graph (`precomputed_knn`), so the
map costs no neighbour search of its own. Beyond that it is fitted on a random sample of
`FIT_MAX` images (with an exact graph among them), and every other image is placed the way UMAP
initialises new points: at the membership-weighted mean of its graph neighbours already on the
map, repeated until everything is placed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from core.analysis.exact import as_float32, check_vectors, search
from core.analysis.neighbours import NeighbourGraph, exact_graph

FIT_MAX = 50_000
N_NEIGHBORS = 15
MIN_DIST = 0.1
_PLACEMENT_ROUNDS = 20


@dataclass(frozen=True)
class Projection:
    coordinates: np.ndarray  # (n, 2) float32, row i is image i
    fitted: np.ndarray  # (m,) int64: rows UMAP was fitted on; the others were placed by their neighbours


def umap_projection(vectors: np.ndarray, graph: NeighbourGraph, *, n_neighbors: int = N_NEIGHBORS,
                    min_dist: float = MIN_DIST, fit_max: int = FIT_MAX, seed: int = 0) -> Projection:
    """2-D coordinates for every row of `vectors` (the rows `graph` was built on); deterministic per seed."""
    x = check_vectors(vectors)
    n = len(x)
    if graph.n != n:
        raise ValueError(f"the graph has {graph.n} rows but there are {n} vectors; rebuild or update the graph")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be at least 2, got {n_neighbors}")
    if n <= 3:
        coords = np.zeros((n, 2), dtype=np.float32)
        coords[:, 0] = np.arange(n)
        return Projection(coords, np.arange(n))
    if n <= fit_max:
        return Projection(_fit(as_float32(x), graph, n_neighbors, min_dist, seed), np.arange(n))
    rng = np.random.default_rng(seed)
    fitted = np.sort(rng.choice(n, size=fit_max, replace=False))
    coords = np.full((n, 2), np.nan, dtype=np.float32)
    sample = as_float32(x[fitted])
    coords[fitted] = _fit(sample, exact_graph(sample, n_neighbors), n_neighbors, min_dist, seed)
    _place_by_neighbours(coords, graph)
    missing = np.flatnonzero(np.isnan(coords[:, 0]))
    if len(missing):
        idx, sim = search(x[missing], sample, n_neighbors)
        coords[missing] = _weighted_mean(coords[fitted], idx, sim)
    return Projection(coords, fitted)


def _fit(x: np.ndarray, graph: NeighbourGraph, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    import umap

    k = min(n_neighbors, len(x) - 1, graph.k)
    indices = np.concatenate([np.arange(len(x))[:, None], graph.indices[:, : k - 1]], axis=1)
    distances = np.concatenate([np.zeros((len(x), 1)), 1.0 - graph.similarities[:, : k - 1]], axis=1)
    distances = np.where(indices >= 0, np.maximum(distances, 0.0), np.inf).astype(np.float32)
    reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed,
                        precomputed_knn=(indices.astype(np.int32), distances), init="spectral")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value 1 overridden.*")
        return reducer.fit_transform(x).astype(np.float32)


def _membership(sim: np.ndarray) -> np.ndarray:
    """UMAP-style weights: exp(-(d - d_nearest) / mean spread), zero for missing neighbours."""
    dist = np.where(np.isfinite(sim), 1.0 - sim, np.nan)
    nearest = np.nanmin(np.where(np.isnan(dist), np.inf, dist), axis=1, keepdims=True)
    spread = np.nanmean(dist - nearest, axis=1, keepdims=True)
    weight = np.exp(-(dist - nearest) / np.maximum(np.nan_to_num(spread, nan=1.0), 1e-6))
    return np.nan_to_num(weight, nan=0.0)


def _weighted_mean(known: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> np.ndarray:
    weight = _membership(sim) * (idx >= 0)
    pts = known[np.maximum(idx, 0)]
    return ((pts * weight[..., None]).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-12)[:, None]).astype(np.float32)


def _place_by_neighbours(coords: np.ndarray, graph: NeighbourGraph) -> None:
    """Place unplaced rows at the weighted mean of their placed neighbours, wave by wave."""
    for _ in range(_PLACEMENT_ROUNDS):
        todo = np.flatnonzero(np.isnan(coords[:, 0]))
        if len(todo) == 0:
            return
        idx = graph.indices[todo]
        placed = (idx >= 0) & ~np.isnan(coords[np.maximum(idx, 0), 0])
        ready = placed.any(axis=1)
        if not ready.any():
            return
        sim = np.where(placed, graph.similarities[todo], -np.inf)[ready]
        coords[todo[ready]] = _weighted_mean(np.nan_to_num(coords), np.where(placed, idx, -1)[ready], sim)
