"""The k-nearest-neighbour graph that duplicates, anomalies and the map all read.

Computed once per collection version and cached by the caller; everything downstream re-thresholds
it. Up to `EXACT_MAX_N_BY_DEVICE[device]` images the graph is exact (blocked matrix products, never
an n x n matrix); beyond that it is approximate (`core.analysis.approximate`), and its recall@10
against exact search is measured on a sample and stored with it. Adding a few images updates a
graph without a rebuild (`update_graph`). Every function takes the torch `device` ("cpu" or "cuda")
its products run on and returns the same numpy arrays whichever it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.analysis.approximate import ivf_neighbour_rows, ivf_neighbours
from core.analysis.exact import (
    check_vectors,
    device_vectors,
    merge_top_k,
    recall,
    search,
    search_tensors,
    true_neighbours,
)
from core.analysis.heap import release_free_memory
from core.devices import check_device

DEFAULT_K = 30
EXACT_MAX_N = 50_000
# An exact graph costs n^2 * d multiply-adds, the approximate one about n. On a CPU 50k images take
# seconds and the approximate graph wins beyond that. A GPU does the fp32 products about a hundred
# times faster: on an H100 the exact graph of 1M 512-d vectors took 40 s, the approximate one 42 s
# (recall@10 0.97), so beyond 1M the approximate graph is the faster one there too.
EXACT_MAX_N_BY_DEVICE = {"cpu": EXACT_MAX_N, "cuda": 1_000_000}
TARGET_RECALL = 0.97  # reached on a tuning sample; the stored recall is measured on another one
RECALL_SAMPLE = 1000


@dataclass(frozen=True)
class NeighbourGraph:
    """Each image's k most similar other images, most similar first.

    `indices[i]` are row positions in the vectors the graph was built from (-1 where a collection
    has fewer than k other images); `similarities[i]` are their cosine similarities (-inf where
    -1). `recall_at_10` is 1.0 for an exact graph, else the share of true top-10 neighbours found,
    measured against exact search on `recall_sample` images.
    """

    indices: np.ndarray
    similarities: np.ndarray
    method: str
    recall_at_10: float
    recall_sample: int = 0

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def build_graph(vectors: np.ndarray, k: int = DEFAULT_K, *, method: str = "auto",
                exact_max_n: int | None = None, target_recall: float = TARGET_RECALL,
                seed: int = 0, device: str = "cpu") -> NeighbourGraph:
    """The neighbour graph: `method` "exact", "approximate", or "auto" (exact up to `exact_max_n`,
    by default the device's `EXACT_MAX_N_BY_DEVICE`)."""
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"unknown graph method {method!r}; use 'auto', 'exact' or 'approximate'")
    limit = EXACT_MAX_N_BY_DEVICE[check_device(device).type] if exact_max_n is None else exact_max_n
    x = check_vectors(vectors)
    if method == "exact" or (method == "auto" and len(x) <= limit):
        return exact_graph(x, k, device=device)
    return approximate_graph(x, k, target_recall=target_recall, seed=seed, device=device)


def neighbour_rows(make_vectors: Callable[[], np.ndarray], n: int, k: int, *, seed: int = 0,
                   device: str = "cpu") -> np.ndarray:
    """(n, k) int32: the rows `build_graph` (method "auto") would link each of the `n` rows of
    `make_vectors()` to (-1 where fewer), in no order and without similarities: for a caller that
    only proposes pairs. Where the graph would be approximate, the vectors are dropped before the
    search (`ivf_neighbour_rows`) and no recall is measured."""
    _check_k(k)
    if n <= EXACT_MAX_N_BY_DEVICE[check_device(device).type] or _too_few_to_sample(n, k, RECALL_SAMPLE):
        return exact_graph(make_vectors(), k, device=device).indices
    return ivf_neighbour_rows(lambda: check_vectors(make_vectors()), k, target_recall=TARGET_RECALL, seed=seed,
                              sample=RECALL_SAMPLE, device=device)


def exact_graph(vectors: np.ndarray, k: int = DEFAULT_K, *, device: str = "cpu") -> NeighbourGraph:
    """Exact neighbours of every row."""
    x = check_vectors(vectors)
    _check_k(k)
    idx, sim = search(x, x, k, self_offset=0, device=device)
    return NeighbourGraph(idx, sim, "exact", 1.0, 0)


def approximate_graph(vectors: np.ndarray, k: int = DEFAULT_K, *, target_recall: float = TARGET_RECALL,
                      seed: int = 0, sample: int = RECALL_SAMPLE, device: str = "cpu") -> NeighbourGraph:
    """Approximate neighbours; exact when the collection is too small for sampling to mean much."""
    x = check_vectors(vectors)
    _check_k(k)
    if _too_few_to_sample(len(x), k, sample):
        return exact_graph(x, k, device=device)
    result = ivf_neighbours(x, k, target_recall=target_recall, seed=seed, sample=sample, device=device)
    check_rows = np.random.default_rng(seed + 1).choice(len(x), size=sample, replace=False)
    measured = graph_recall(NeighbourGraph(result.indices, result.similarities, "", 0.0), x, rows=check_rows,
                            device=device)
    release_free_memory()  # the inverted file's and the recall check's freed working copies
    return NeighbourGraph(result.indices, result.similarities, result.description, measured, sample)


def _too_few_to_sample(n: int, k: int, sample: int) -> bool:
    """Whether `n` rows are too few for a recall sample of `sample` rows to mean much."""
    return n <= max(4 * sample, 4 * k)


def graph_recall(graph: NeighbourGraph, vectors: np.ndarray, *, rows: np.ndarray | None = None,
                 sample: int = RECALL_SAMPLE, seed: int = 0, at: int = 10, device: str = "cpu") -> float:
    """Recall@`at` of `graph` against exact search, on `rows` or a random sample of rows."""
    x = check_vectors(vectors)
    if rows is None:
        rows = np.random.default_rng(seed).choice(len(x), size=min(sample, len(x)), replace=False)
    rows = np.sort(np.asarray(rows))
    return recall(graph.indices[rows, :at], true_neighbours(x, rows, min(at, graph.k), device=device))


def update_graph(graph: NeighbourGraph, vectors: np.ndarray, *, device: str = "cpu") -> NeighbourGraph:
    """The graph over `vectors`, whose first `graph.n` rows are the ones `graph` was built from.

    New rows get exact neighbours among all rows; old rows merge in any new row that beats their
    current k-th neighbour. Equal to a full exact rebuild when `graph` was exact.
    """
    check_device(device)
    x = check_vectors(vectors)
    n_old, k = graph.n, graph.k
    if len(x) < n_old:
        raise ValueError(f"update_graph needs the {n_old} vectors the graph was built from first, then "
                         f"the new ones; got {len(x)} rows. Rebuild the graph after deleting images.")
    if len(x) == n_old:
        return graph
    xt = device_vectors(x, device)
    new_idx, new_sim = search_tensors(xt[n_old:], xt, k, self_offset=n_old)
    back_idx, back_sim = search_tensors(xt[:n_old], xt[n_old:], k)
    back = torch.from_numpy(np.where(back_idx >= 0, back_idx.astype(np.int64) + n_old, -1))
    with torch.inference_mode():
        merged_sim, merged_idx = merge_top_k(torch.from_numpy(graph.similarities),
                                             torch.from_numpy(graph.indices.astype(np.int64)),
                                             torch.from_numpy(back_sim), back, k)
    indices = np.concatenate([merged_idx.numpy().astype(np.int32), new_idx])
    similarities = np.concatenate([merged_sim.numpy(), new_sim])
    indices[~np.isfinite(similarities)] = -1
    return NeighbourGraph(indices, similarities, graph.method, graph.recall_at_10, graph.recall_sample)


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
