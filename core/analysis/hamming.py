"""Perceptual-hash distances: every pair within a Hamming radius, mirrored copies included.

Hashes are 64-bit integers (`hashes_from_hex` turns the stored 16-hex-digit strings into them).
A pair's distance is the smaller of the direct distance and the mirrored one (one image's hash
against the other's `phash_mirror`), so horizontally flipped copies match.

`pairs_within` is complete at the radius it is given, by one of two searches: every pair in
cache-sized tiles compiled with numba (predictable however the hashes cluster; about 3 s for 100k
images on two cores, but quadratic: 808 s for 1M), or multi-index hashing (the 64 bits cut into
radius + 1 blocks: a pair within the radius agrees exactly on at least one block, so only pairs
sharing a block are compared). The second is fast for small radii and degrades on the skewed
hash distributions real images give, so `search_plan` compares every pair while that fits
`COMPARISON_BUDGET` and beyond it takes the widest radius whose multi-index comparisons, counted
exactly on the hashes at hand, fit. Lowering it is also what keeps the output linear: about 1 pair in 7,000
of unrelated hashes lies within 16 bits (counting mirrors), 68 million pairs among 1M images.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_TILE_ROWS = 256
_TILE_COLS = 8192
_BINCOUNT_MAX_BITS = 24  # blocks up to this wide are counted with bincount, wider ones by sorting
COMPARISON_BUDGET = 10**10  # hash comparisons one search may make: 6-17 s on two cores


@dataclass(frozen=True)
class HashSearch:
    """How `pairs_within` will search: every pair within `radius` bits is found (-1: none searched)."""

    radius: int
    method: str  # "all pairs" or "multi-index"
    comparisons: int


def hashes_from_hex(hexes: list[str] | np.ndarray) -> np.ndarray:
    """16-hex-digit strings (as `imagehash` writes 64-bit hashes) as a uint64 array."""
    hexes = [str(h) for h in hexes]
    bad = next((h for h in hexes if len(h) != 16), None)
    if bad is not None:
        raise ValueError(f"expected 64-bit hashes as 16 hex digits, got {bad!r}")
    try:
        return np.frombuffer(bytes.fromhex("".join(hexes)), dtype=">u8").astype(np.uint64)
    except ValueError as exc:
        raise ValueError(f"hashes must be hexadecimal: {exc}") from None


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array, as uint8."""
    x = np.asarray(x, dtype=np.uint64)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return ((x * _H01) >> np.uint64(56)).astype(np.uint8)


def pair_distances(phash: np.ndarray, phash_mirror: np.ndarray, left: np.ndarray,
                   right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance uint8, mirrored bool) for the given pairs; mirrored when the flip matched better."""
    direct = popcount(phash[left] ^ phash[right])
    flipped = np.minimum(popcount(phash[left] ^ phash_mirror[right]), popcount(phash_mirror[left] ^ phash[right]))
    return np.minimum(direct, flipped), flipped < direct


def distances_to(phash: int, phash_mirror: int, stored_phash: np.ndarray,
                 stored_phash_mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, mirrored) from one image's hashes to every stored image: every arrival asks it of
    the whole collection, so it is one compiled pass (the numpy popcount made three, ten array
    operations each: 55 ms at a million images on an AVX2 EPYC)."""
    stored, mirrors = _check_hashes(stored_phash, stored_phash_mirror)
    return _distances_to(np.uint64(phash), np.uint64(phash_mirror), stored, mirrors)


@numba.njit(parallel=True, cache=True)
def _distances_to(phash, phash_mirror, stored, mirrors):  # pragma: no cover - compiled
    n = stored.shape[0]
    distance = np.empty(n, dtype=np.uint8)
    mirrored = np.empty(n, dtype=np.bool_)
    for j in numba.prange(n):
        direct = popcount_u64(stored[j] ^ phash)
        flipped = min(popcount_u64(mirrors[j] ^ phash), popcount_u64(stored[j] ^ phash_mirror))
        distance[j] = np.uint8(min(direct, flipped))
        mirrored[j] = flipped < direct
    return distance, mirrored


def search_plan(phash: np.ndarray, phash_mirror: np.ndarray, radius_max: int,
                budget: int = COMPARISON_BUDGET) -> HashSearch:
    """The widest radius up to `radius_max` that one of the searches covers within `budget` comparisons.

    All pairs while the collection is small enough (every radius costs the same there); beyond, the
    multi-index search at the largest radius whose exact comparison count, read from the block
    keys' bucket sizes, fits. Radius -1 when not even identical hashes fit (a collection of mostly
    identical hashes: its pairs come from the other signals).
    """
    ph, pm = _check_hashes(phash, phash_mirror)
    n = len(ph)
    every = n * (n - 1) // 2
    if every <= budget:
        return HashSearch(radius_max, "all pairs", every)
    for radius in range(radius_max, -1, -1):
        comparisons = sum(_block_comparisons(keys, n) for keys in _block_keys(ph, pm, radius))
        if comparisons <= budget:
            return HashSearch(radius, "multi-index", comparisons)
    return HashSearch(-1, "multi-index", 0)


def pairs_within(phash: np.ndarray, phash_mirror: np.ndarray, radius: int,
                 method: str = "all pairs") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (left < right) whose mirror-aware distance is <= radius.

    Returns (left int32, right int32, distance uint8, mirrored bool), sorted by (left, right);
    `method` as `search_plan` chose it (both give the same pairs).
    """
    if not 0 <= radius <= 64:
        raise ValueError(f"Hamming radius must be between 0 and 64 bits, got {radius}")
    ph, pm = _check_hashes(phash, phash_mirror)
    if method == "multi-index":
        return _multi_index_pairs(ph, pm, radius)
    if method != "all pairs":
        raise ValueError(f"unknown Hamming search {method!r}: 'all pairs' or 'multi-index'")
    n = len(ph)
    counts = np.zeros(n, dtype=np.int64)
    if n > 1:
        _count_tiles(ph, pm, radius, counts)
    rows = np.flatnonzero(counts).astype(np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts[rows], out=offsets[1:])
    total = int(offsets[-1])
    left = np.empty(total, dtype=np.int32)
    right = np.empty(total, dtype=np.int32)
    dist = np.empty(total, dtype=np.uint8)
    mirrored = np.empty(total, dtype=np.bool_)
    if total:
        _fill_rows(ph, pm, radius, rows, offsets, left, right, dist, mirrored)
    return left, right, dist, mirrored


def _check_hashes(phash: np.ndarray, phash_mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ph = np.ascontiguousarray(phash, dtype=np.uint64)
    pm = np.ascontiguousarray(phash_mirror, dtype=np.uint64)
    if ph.shape != pm.shape or ph.ndim != 1:
        raise ValueError("phash and phash_mirror must be 1-D arrays of the same length")
    return ph, pm


def _block_keys(ph: np.ndarray, pm: np.ndarray, radius: int) -> Iterator[np.ndarray]:
    """Per block of the radius + 1 blocks of near-equal width: each image's hash and mirror bits there, (2n,)."""
    bounds = np.linspace(0, 64, radius + 2).round().astype(np.uint64)
    both = np.concatenate([ph, pm])
    for lo, hi in itertools.pairwise(bounds):
        yield (both >> lo) & ((np.uint64(1) << (hi - lo)) - np.uint64(1)) if hi - lo < 64 else both


def _block_comparisons(keys: np.ndarray, n: int) -> int:
    """Comparisons one block costs: in each bucket, hash against hash and hash against mirror."""
    if int(keys.max(initial=0)) < 1 << _BINCOUNT_MAX_BITS:
        direct = np.bincount(keys[:n].astype(np.int64)).astype(np.int64)
        mirror = np.bincount(keys[n:].astype(np.int64), minlength=len(direct)).astype(np.int64)[:len(direct)]
    else:
        values, inverse = np.unique(keys, return_inverse=True)
        direct = np.bincount(inverse[:n], minlength=len(values)).astype(np.int64)
        mirror = np.bincount(inverse[n:], minlength=len(values)).astype(np.int64)
    return int((direct * (direct - 1) // 2 + direct * mirror).sum())


def _multi_index_pairs(ph: np.ndarray, pm: np.ndarray,
                       radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`pairs_within` by multi-index hashing: pairs sharing a block, checked, each kept once."""
    n = len(ph)
    found = [np.empty(0, dtype=np.int64)]
    for keys in _block_keys(ph, pm, radius):
        order = np.argsort(keys, kind="stable").astype(np.int64)
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]).astype(np.int64)
        bounds = np.append(starts, len(keys)).astype(np.int64)
        image = np.where(order < n, order, order - n)
        entries = (order, ph[image], pm[image])  # in bucket order: each bucket's hashes lie side by side
        counts = np.zeros(len(starts), dtype=np.int64)
        _bucket_pairs(n, *entries, radius, bounds, counts, np.empty(0, dtype=np.int64))
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        if len(out):
            _bucket_pairs(n, *entries, radius, bounds, offsets, out)
        found.append(out)
    keys = np.unique(np.concatenate(found))
    left, right = (keys // max(n, 1)).astype(np.int32), (keys % max(n, 1)).astype(np.int32)
    dist, mirrored = pair_distances(ph, pm, left, right)
    return left, right, dist, mirrored


@intrinsic
def popcount_u64(typingctx, x):  # pragma: no cover - compiled
    """LLVM's ctpop: one popcnt instruction (vectorised where the CPU has VPOPCNTQ)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)]), args)

    return sig, codegen


@numba.njit(inline="always")
def _distance(a, am, b, bm):  # pragma: no cover - compiled
    d = popcount_u64(a ^ b)
    f = min(popcount_u64(a ^ bm), popcount_u64(am ^ b))
    return min(d, f), f < d


@numba.njit(cache=True)
def _count_tile(ph, pm, r, t, counts):  # pragma: no cover - compiled
    n = ph.shape[0]
    i0 = t * _TILE_ROWS
    i1 = min(n, i0 + _TILE_ROWS)
    for j0 in range(i0, n, _TILE_COLS):
        j1 = min(n, j0 + _TILE_COLS)
        for i in range(i0, i1):
            a = ph[i]
            am = pm[i]
            c = 0
            for j in range(max(j0, i + 1), j1):
                d = min(popcount_u64(a ^ ph[j]), popcount_u64(a ^ pm[j]), popcount_u64(am ^ ph[j]))
                c += d <= r
            counts[i] += c


@numba.njit(parallel=True, cache=True)
def _count_tiles(ph, pm, radius, counts):  # pragma: no cover - compiled
    n_tiles = (ph.shape[0] + _TILE_ROWS - 1) // _TILE_ROWS
    r = np.uint64(radius)
    # tile t compares against everything after it: pair a front tile with a back tile so that
    # every parallel task does about the same work
    for p in numba.prange((n_tiles + 1) // 2):
        _count_tile(ph, pm, r, p, counts)
        if n_tiles - 1 - p != p:
            _count_tile(ph, pm, r, n_tiles - 1 - p, counts)


@numba.njit(parallel=True, cache=True)
def _fill_rows(ph, pm, radius, rows, offsets, left, right, dist, mirrored):  # pragma: no cover - compiled
    n = ph.shape[0]
    m = rows.shape[0]
    n_groups = (m + _TILE_ROWS - 1) // _TILE_ROWS
    r = np.uint64(radius)
    for g in numba.prange(n_groups):
        g0 = g * _TILE_ROWS
        g1 = min(m, g0 + _TILE_ROWS)
        cursor = offsets[g0:g1].copy()
        for j0 in range(rows[g0], n, _TILE_COLS):
            j1 = min(n, j0 + _TILE_COLS)
            for q in range(g0, g1):
                i = rows[q]
                a = ph[i]
                am = pm[i]
                for j in range(max(j0, i + 1), j1):
                    d, flip = _distance(a, am, ph[j], pm[j])
                    if d <= r:
                        w = cursor[q - g0]
                        left[w] = i
                        right[w] = j
                        dist[w] = d
                        mirrored[w] = flip
                        cursor[q - g0] = w + 1


@numba.njit(parallel=True, cache=True)
def _bucket_pairs(n, order, hashes, mirrors, radius, bounds, slots, out):  # pragma: no cover - compiled
    """Per bucket of one block (entries `bounds[b]:bounds[b + 1]` of `order`, entry e < n being image
    e's hash, e >= n image e - n's mirror; `hashes`/`mirrors`: that image's two hashes, in the same
    order, so a bucket reads contiguous memory): count the pairs within `radius` into `slots` when
    `out` is empty, else write their keys (left * n + right) from `slots[b]` on. A pair sharing
    several blocks is written once per block; the caller keeps one."""
    r = np.uint64(radius)
    writing = out.shape[0] > 0
    for b in numba.prange(bounds.shape[0] - 1):
        s0 = bounds[b]
        s1 = bounds[b + 1]
        if s1 - s0 < 2:
            continue
        w = slots[b]
        c = 0
        for p in range(s0, s1):
            e = order[p]
            if e >= n:
                continue  # a mirror is only compared with hashes (mirror against mirror is the direct pair)
            a = hashes[p]
            am = mirrors[p]
            for q in range(s0, s1):
                f = order[q]
                j = f - n if f >= n else f
                if j == e or (f < n and f < e):
                    continue  # itself, or a direct pair counted from its other end
                d, _ = _distance(a, am, hashes[q], mirrors[q])
                if d <= r:
                    if writing:
                        out[w] = min(e, j) * n + max(e, j)
                        w += 1
                    else:
                        c += 1
        if not writing:
            slots[b] = c
