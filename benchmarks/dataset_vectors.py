"""Synthetic embeddings and hashes with the structure of a real collection, for scaling runs.

Unit vectors share a common direction (CLIP embeddings are anisotropic) and are organised in two
levels: topics of Pareto-distributed size, and within them groups of ~40 similar images that vary
along a shared 16-d basis plus isotropic noise. At 100k rows the median cosine to the nearest
neighbour is ~0.93, to the 10th ~0.89 and between random rows ~0.45. 1% of rows are
near-duplicate copies of another row (tiny vector noise, pHash within 4 bits, the same sketch
with pixel noise). Sketches (16 x 16 RGB, as ingest stores) are smooth random colour fields.
Generated in chunks into one preallocated float32 array, so peak memory is the array itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIM = 512


@dataclass(frozen=True)
class SyntheticCollection:
    vectors: np.ndarray  # (n, DIM) float32, L2-normalised
    phash: np.ndarray  # (n,) uint64
    phash_mirror: np.ndarray  # (n,) uint64
    duplicate_of: np.ndarray  # (n,) int64: the row this one copies, or -1
    sketch: np.ndarray  # (n, 16, 16, 3) uint8


def synthetic_collection(n: int, seed: int = 0, chunk: int = 32768) -> SyntheticCollection:
    rng = np.random.default_rng(seed)
    n_topics, n_groups = max(4, n // 2000), max(8, n // 40)
    common = _unit(rng.standard_normal(DIM))
    topics = _unit(rng.standard_normal((n_topics, DIM)))
    topic_weight = rng.pareto(1.5, n_topics) + 1.0
    group_topic = rng.choice(n_topics, size=n_groups, p=topic_weight / topic_weight.sum())
    groups = _unit(rng.standard_normal((n_groups, DIM))) * 0.5 + topics[group_topic] * 0.6
    group_weight = rng.pareto(2.0, n_groups) + 1.0
    group = rng.choice(n_groups, size=n, p=group_weight / group_weight.sum())
    basis = np.linalg.qr(rng.standard_normal((DIM, 16)))[0].astype(np.float32)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        low = rng.standard_normal((e - s, 16), dtype=np.float32) @ basis.T * 0.1
        iso = rng.standard_normal((e - s, DIM), dtype=np.float32) * np.float32(0.2 / np.sqrt(DIM))
        vectors[s:e] = _unit(0.8 * common + groups[group[s:e]] + low + iso)
    phash = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    phash_mirror = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    copies = rng.choice(n, size=n // 100, replace=False)
    sources = rng.choice(n, size=len(copies))
    keep = copies != sources
    copies, sources = copies[keep], sources[keep]
    noisy = vectors[sources] + rng.standard_normal((len(copies), DIM), dtype=np.float32) * 0.004
    vectors[copies] = _unit(noisy)
    flips = np.zeros(len(copies), dtype=np.uint64)
    for _ in range(4):
        flips |= np.uint64(1) << rng.integers(0, 64, size=len(copies)).astype(np.uint64)
    phash[copies] = phash[sources] ^ flips
    duplicate_of[copies] = sources
    sketch = np.empty((n, 16, 16, 3), dtype=np.uint8)
    for s in range(0, n, chunk):
        coarse = rng.integers(0, 256, size=(min(n, s + chunk) - s, 4, 4, 3)).astype(np.float32)
        sketch[s:s + chunk] = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)
    noise = rng.integers(-6, 7, size=(len(copies), 16, 16, 3))
    sketch[copies] = np.clip(sketch[sources].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return SyntheticCollection(vectors, phash, phash_mirror, duplicate_of, sketch)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)
