"""Approximate k-nearest neighbours for large collections: an inverted file refined by its own graph.

1. Spherical k-means (on a sample) splits the collection into ~2*sqrt(n) lists; rows are reordered
   so each list is contiguous, as a centred int8 working copy (a quarter of the float32 size).
2. Each row scans the `nprobe` lists closest to it; `nprobe` is doubled until a sample of rows
   reaches `INITIAL_RECALL` against exact search (cheap lists first, the graph does the rest).
3. Rounds of "neighbours of neighbours" (as in NN-descent) repair what the lists cut apart, until
   the sample reaches the target recall.
4. The kept neighbours are re-scored exactly in float32 and sorted (`ivf_neighbours`); a caller
   that only proposes pairs takes them as found (`ivf_neighbour_rows`), without the vectors.
Kernels are compiled with numba (a dependency of umap-learn) and run on all cores; the k-means, list
assignment and the exact recall sample are torch products on the caller's `device`, which holds
the vectors for them on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numba.extending
import numpy as np
import torch

from core.analysis.exact import BLOCK_ELEMENTS, block_elements, device_vectors, recall, true_neighbours
from core.analysis.heap import release_free_memory

INITIAL_RECALL = 0.7
MAX_PROBE = 32
MAX_ROUNDS = 4
FANOUT = 12  # neighbours of the first FANOUT neighbours are a row's refinement candidates
_QUERY_CHUNK = 128
_FAST = {"reassoc", "contract", "nsz", "arcp"}  # vectorised sums; infinities still compare correctly


@dataclass(frozen=True)
class ApproximateResult:
    indices: np.ndarray  # (n, k) int32
    similarities: np.ndarray  # (n, k) float32, exact
    description: str


@dataclass(frozen=True)
class _InvertedFile:
    """Rows grouped by closest list; list l holds permuted positions bounds[l]:bounds[l+1].

    Centred rows are stored as int8 codes with a per-row scale:
    x.y ~= scale_x * scale_y * (codes_x . codes_y) + a_x + a_y, where a = x.mean - |mean|^2 / 2.
    """

    order: np.ndarray  # (n,) original row at each permuted position
    bounds: np.ndarray  # (nlist + 1,) int64
    probes: np.ndarray  # (n, MAX_PROBE) int16 in permuted order: closest lists first
    codes: np.ndarray  # (n, d) int8, permuted order
    scales: np.ndarray  # (n,) float32
    offsets: np.ndarray  # (n,) float32


def ivf_neighbours(x: np.ndarray, k: int, *, target_recall: float, seed: int,
                   sample: int, device: str = "cpu") -> ApproximateResult:
    """Approximate top-k neighbours of every row of the unit vectors `x` (self excluded)."""
    found = _search(lambda: x, k, target_recall=target_recall, seed=seed, sample=sample, device=device)
    out_idx = np.empty((len(x), k), dtype=np.int32)
    out_sim = np.empty((len(x), k), dtype=np.float32)
    _rescore(x, found.order, found.positions, out_idx, out_sim)
    return ApproximateResult(out_idx, out_sim, found.description)


def ivf_neighbour_rows(make_vectors: Callable[[], np.ndarray], k: int, *, target_recall: float, seed: int,
                       sample: int, device: str = "cpu") -> np.ndarray:
    """(n, k) int32: the rows `ivf_neighbours` finds for each row (-1 where fewer), in no order and
    without similarities, for a caller that only proposes pairs. The unit vectors come from
    `make_vectors`, whose result this holds the only reference to, and are dropped once the
    inverted file is built: the exact re-scoring, the one later step that reads them, only sorts
    the rows found. (For the sketch neighbours at a million images, 0.36 GiB less beside the codes.)"""
    found = _search(make_vectors, k, target_recall=target_recall, seed=seed, sample=sample, device=device)
    rows = np.empty_like(found.positions)
    rows[found.order] = np.where(found.positions >= 0, found.order[np.maximum(found.positions, 0)], -1)
    return rows


@dataclass(frozen=True)
class _Found:
    order: np.ndarray  # (n,) original row at each permuted position
    positions: np.ndarray  # (n, k) int32: each permuted position's neighbours, as permuted positions (-1: none)
    description: str


def _search(make_vectors: Callable[[], np.ndarray], k: int, *, target_recall: float, seed: int,
            sample: int, device: str) -> _Found:
    """Steps 1-3 of the module docstring; the vectors are read only before the inverted file exists."""
    x = make_vectors()
    n = len(x)
    rng = np.random.default_rng(seed)
    tune_rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    # before the inverted file exists: the exact search's blocks and the int8 copy never coexist,
    # and the heap those blocks leave (0.27 GiB for a million sketches) goes back to the system
    truth = true_neighbours(x, tune_rows, min(10, k), device=device)
    release_free_memory()
    ivf = _build_inverted_file(x, rng, device)
    del x  # the codes stand for it from here (a caller that re-scores keeps its own reference)
    order, nlist = ivf.order, len(ivf.bounds) - 1
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    tune_pos = where[tune_rows]

    def sample_recall(idx_perm: np.ndarray) -> float:
        found = idx_perm[:, : truth.shape[1]]
        return recall(np.where(found >= 0, order[np.maximum(found, 0)], -1), truth)

    nprobe = 4
    while nprobe < MAX_PROBE:
        idx, _ = _probe(ivf, min(10, k), nprobe, tune_pos)
        if sample_recall(idx) >= INITIAL_RECALL:
            break
        nprobe *= 2
    idx = np.full((n, k), -1, dtype=np.int32)
    sim = np.full((n, k), -np.inf, dtype=np.float32)
    _probe_kernel(ivf.codes, ivf.scales, ivf.offsets, ivf.bounds, ivf.probes, nprobe, np.arange(n),
                  _chunk_starts(n), idx, sim)
    codes, scales, offsets = ivf.codes, ivf.scales, ivf.offsets
    del ivf  # the probe lists are done with
    rounds = 0
    while rounds < MAX_ROUNDS and sample_recall(idx[tune_pos]) < target_recall:
        forward = np.ascontiguousarray(idx[:, :FANOUT])
        rev_ptr, rev_idx = _reverse(forward)
        changed = _refine_round(codes, scales, offsets, forward, rev_ptr, rev_idx, idx, sim)
        del forward, rev_ptr, rev_idx
        rounds += 1
        if changed == 0:
            break
    return _Found(order, idx, f"ivf(lists={nlist},nprobe={nprobe},rounds={rounds})")


def _build_inverted_file(x: np.ndarray, rng: np.random.Generator, device: str,
                         iterations: int = 10) -> _InvertedFile:
    n, d = x.shape
    nlist = int(np.clip(round(2 * math.sqrt(n)), 16, 4096))
    xt = device_vectors(x, device)
    on = xt.device
    train = xt[torch.from_numpy(np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))).to(on)].float()
    centroids = train[torch.from_numpy(rng.choice(len(train), size=nlist, replace=False)).to(on)].clone()
    with torch.inference_mode():
        for _ in range(iterations):
            assign = torch.from_numpy(_closest(train, centroids, 1)[:, 0].astype(np.int64)).to(on)
            sums = torch.zeros_like(centroids).index_add_(0, assign, train)
            empty = torch.bincount(assign, minlength=nlist) == 0
            sums[empty] = centroids[empty]
            centroids = torch.nn.functional.normalize(sums, dim=1)
        del train
        probes = _closest(xt, centroids, min(nlist, MAX_PROBE))
        mean = torch.zeros(d, dtype=torch.float64, device=on)
        for s in range(0, n, 65536):
            mean += xt[s:s + 65536].double().sum(0)
        mean = (mean / n).float()
        order = np.argsort(probes[:, 0], kind="stable")
        bounds = np.searchsorted(probes[order, 0], np.arange(nlist + 1)).astype(np.int64)
        codes = np.empty((n, d), dtype=np.int8)
        scales = np.empty(n, dtype=np.float32)
        offsets = np.empty(n, dtype=np.float32)
        step = max(1, BLOCK_ELEMENTS // (8 * d))
        for s in range(0, n, step):
            rows = xt[torch.from_numpy(order[s:s + step]).to(on)].float()
            centred = rows - mean
            scale = centred.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            codes[s:s + step] = torch.round(centred / scale[:, None]).to(torch.int8).cpu().numpy()
            scales[s:s + step] = scale.cpu().numpy()
            offsets[s:s + step] = (rows @ mean - 0.5 * float(mean @ mean)).cpu().numpy()
    for c in range(probes.shape[1]):  # into list order in place, a column at a time: a copy is 64 MB at 1M
        probes[:, c] = probes[order, c]
    return _InvertedFile(order, bounds, probes, codes, scales, offsets)


def _closest(x: torch.Tensor, centroids: torch.Tensor, top: int) -> np.ndarray:
    """Each row's `top` closest centroids, closest first, as int16."""
    out = np.empty((len(x), top), dtype=np.int16)
    rows = max(1, block_elements(x.device) // len(centroids))
    for i in range(0, len(x), rows):
        out[i:i + rows] = torch.topk(x[i:i + rows].float() @ centroids.T, top, dim=1).indices.cpu().numpy()
    return out


def _probe(ivf: _InvertedFile, k: int, nprobe: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (permuted positions, approximate similarities) of the rows at `positions`, in that order."""
    by_position = np.argsort(positions, kind="stable")
    queries = np.ascontiguousarray(positions[by_position], dtype=np.int64)
    idx = np.full((len(queries), k), -1, dtype=np.int32)
    sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    _probe_kernel(ivf.codes, ivf.scales, ivf.offsets, ivf.bounds, ivf.probes, nprobe, queries,
                  _chunk_starts(len(queries)), idx, sim)
    out_idx = np.empty_like(idx)
    out_sim = np.empty_like(sim)
    out_idx[by_position] = idx
    out_sim[by_position] = sim
    return out_idx, out_sim


def _chunk_starts(m: int) -> np.ndarray:
    return np.append(np.arange(0, m, _QUERY_CHUNK), m).astype(np.int64)


@numba.njit(inline="always")
def _insert(idx, sim, r, j, value):  # pragma: no cover - compiled
    """Insert (j, value) into row r, kept sorted by similarity, unless it is too weak or present."""
    k = sim.shape[1]
    if not value > sim[r, k - 1]:
        return 0
    for t in range(k):
        if idx[r, t] == j:
            return 0
    pos = k - 1
    while pos > 0 and sim[r, pos - 1] < value:
        sim[r, pos] = sim[r, pos - 1]
        idx[r, pos] = idx[r, pos - 1]
        pos -= 1
    sim[r, pos] = value
    idx[r, pos] = j
    return 1


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _probe_kernel(codes, scales, offsets, bounds, probes, nprobe, queries, starts, idx, sim):  # pragma: no cover
    d = codes.shape[1]
    for c in numba.prange(len(starts) - 1):
        q0 = starts[c]
        m = starts[c + 1] - q0
        qvec = np.empty((m, d), dtype=np.float32)
        for a in range(m):
            for t in range(d):
                qvec[a, t] = codes[queries[q0 + a], t]
        pair_list = np.empty(m * nprobe, dtype=np.int64)
        for a in range(m):
            for s in range(nprobe):
                pair_list[a * nprobe + s] = probes[queries[q0 + a], s]
        by_list = np.argsort(pair_list, kind="mergesort")
        row = np.empty(d, dtype=np.float32)
        e = 0
        while e < len(by_list):
            lst = pair_list[by_list[e]]
            f = e
            while f < len(by_list) and pair_list[by_list[f]] == lst:
                f += 1
            for j in range(bounds[lst], bounds[lst + 1]):
                for t in range(d):
                    row[t] = codes[j, t]
                for g in range(e, f):
                    a = by_list[g] // nprobe
                    p = queries[q0 + a]
                    if j == p:
                        continue
                    acc = np.float32(0.0)
                    for t in range(d):
                        acc += qvec[a, t] * row[t]
                    _insert(idx, sim, q0 + a, j, acc * scales[p] * scales[j] + offsets[p] + offsets[j])
            e = f


@numba.njit(cache=True)
def _reverse(forward):  # pragma: no cover - compiled
    """Reverse edges of `forward` as CSR (ptr, idx), at most forward.shape[1] per row."""
    n, fan = forward.shape
    count = np.zeros(n + 1, dtype=np.int64)
    for p in range(n):
        for t in range(fan):
            q = forward[p, t]
            if q >= 0 and count[q + 1] < fan:
                count[q + 1] += 1
    ptr = np.cumsum(count)
    out = np.empty(ptr[n], dtype=np.int32)
    fill = ptr[:n].copy()
    for p in range(n):
        for t in range(fan):
            q = forward[p, t]
            if q >= 0 and fill[q] < ptr[q + 1]:
                out[fill[q]] = p
                fill[q] += 1
    return ptr, out


@numba.njit(inline="always")
def _near(forward, rev_ptr, rev_idx, u, t):  # pragma: no cover - compiled
    """The t-th of u's forward-then-reverse neighbours (-1 past the end)."""
    fan = forward.shape[1]
    if t < fan:
        return forward[u, t]
    t -= fan
    if t < rev_ptr[u + 1] - rev_ptr[u]:
        return rev_idx[rev_ptr[u] + t]
    return -1


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _refine_round(codes, scales, offsets, forward, rev_ptr, rev_idx, idx, sim):  # pragma: no cover - compiled
    """Offer each row the neighbours of its neighbours (both directions); count improvements."""
    n, d = codes.shape
    width = 2 * forward.shape[1]
    changed = np.zeros(n, dtype=np.int64)
    for p in numba.prange(n):
        vec = np.empty(d, dtype=np.float32)
        for t in range(d):
            vec[t] = codes[p, t]
        for a in range(width):
            u = _near(forward, rev_ptr, rev_idx, p, a)
            if u < 0:
                continue
            for b in range(width):
                j = _near(forward, rev_ptr, rev_idx, u, b)
                if j < 0 or j == p:
                    continue
                acc = np.float32(0.0)
                for t in range(d):
                    acc += vec[t] * codes[j, t]
                changed[p] += _insert(idx, sim, p, j, acc * scales[p] * scales[j] + offsets[p] + offsets[j])
    return changed.sum()


# float16 vectors (a large collection's snapshot) are read through this table of every half's value
_HALF_VALUES = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def _entry(x, values, r, u):  # pragma: no cover - replaced by the overload below when compiled
    raise NotImplementedError


@numba.extending.overload(_entry, inline="always")
def _entry_overload(x, values, r, u):  # pragma: no cover - compiled
    """x[r, u] as float32: half precision arrives as its bits (numba has no float16)."""
    if x.dtype == numba.types.uint16:
        return lambda x, values, r, u: values[x[r, u]]
    return lambda x, values, r, u: x[r, u]


def _rescore(x: np.ndarray, order: np.ndarray, idx_perm: np.ndarray, out_idx: np.ndarray,
             out_sim: np.ndarray) -> None:
    """Exact similarities for the kept neighbours, in original row order, best first; float16
    vectors are multiplied in float32."""
    _rescore_kernel(x.view(np.uint16) if x.dtype == np.float16 else x, _HALF_VALUES, order, idx_perm, out_idx, out_sim)


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _rescore_kernel(x, values, order, idx_perm, out_idx, out_sim):  # pragma: no cover - compiled
    n, k = idx_perm.shape
    for p in numba.prange(n):
        r = order[p]
        for t in range(k):
            out_idx[r, t] = -1
            out_sim[r, t] = -np.inf
        for t in range(k):
            q = idx_perm[p, t]
            if q < 0:
                continue
            j = order[q]
            acc = np.float32(0.0)
            for u in range(x.shape[1]):
                acc += _entry(x, values, r, u) * _entry(x, values, j, u)
            _insert(out_idx, out_sim, r, j, acc)
