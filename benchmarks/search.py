"""Search latency and recall on the embedded default (Qdrant Edge) at collection scale.

Loads N synthetic clustered 512-d vectors (``dataset_vectors``) with the payload ingest writes, then
prints one table: upsert rate, index build time, reopen time, the resident size after reopening,
the first query's time and p50/p99 latency of a top-10 query with and without a source filter
(query encoding excluded), each with recall@10 against exact numpy search on the same vectors;
for the vectors kept cold (the store's placement) and cached (Qdrant's default), side by side. Run: ``python benchmarks/search.py [--points 100000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from benchmarks.analysis import resident_gib
from benchmarks.dataset_vectors import synthetic_collection
from core.storage.vectors import VectorFilter
from core.storage.vectors_edge import EdgeVectorStore

SOURCES = tuple(f"batch-{i}" for i in range(10))


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None) -> set[int]:
    scores = vectors @ query
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return set(np.argpartition(-scores, k)[:k].tolist())


def measure(store: EdgeVectorStore, vectors: np.ndarray, queries: np.ndarray, ids: list[str],
            source_of: np.ndarray, filtered: bool) -> tuple[float, float, float]:
    index_of = {i: n for n, i in enumerate(ids)}
    latencies, recalls = [], []
    for q_index, query in enumerate(queries):
        source = q_index % len(SOURCES)
        flt = VectorFilter(sources=(SOURCES[source],)) if filtered else None
        start = time.perf_counter()
        hits = store.search(query, 10, flt)
        latencies.append(time.perf_counter() - start)
        truth = exact_top(vectors, query, 10, source_of == source if filtered else None)
        recalls.append(len({index_of[h.id] for h in hits} & truth) / 10)
    ms = np.array(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(np.mean(recalls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef", default="128,256", help="hnsw_ef values to compare (the store's default is 128)")
    args = parser.parse_args()

    data = synthetic_collection(args.points, seed=1)
    vectors = data.vectors
    rng = np.random.default_rng(2)
    source_of = rng.integers(0, len(SOURCES), size=len(vectors))
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
    picks = rng.choice(len(vectors), size=args.queries, replace=False)
    noise = rng.standard_normal((args.queries, vectors.shape[1])).astype(np.float32) * 0.02
    queries = vectors[picks] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    placements = {"cold (ours)": qe.Memory.Cold, "cached (Qdrant's default)": qe.Memory.Cached}
    results = {name: _run(memory, vectors, queries, ids, source_of, args.ef) for name, memory in placements.items()}
    print(f"Qdrant Edge, {len(vectors):,} synthetic clustered 512-d vectors, {args.queries} queries; the vectors "
          "kept cold (memory-mapped, read as searches touch them) and cached (warmed when the shard loads), "
          "one after the other in this run")
    print(f"| measurement | {' | '.join(f'vectors {name}' for name in results)} |")
    print(f"|---|{'---|' * len(results)}")
    for i, (what, _) in enumerate(next(iter(results.values()))):
        print(f"| {what} | {' | '.join(rows[i][1] for rows in results.values())} |")


def _run(memory: qe.Memory, vectors: np.ndarray, queries: np.ndarray, ids: list[str], source_of: np.ndarray,
         efs: str) -> list[tuple[str, str]]:
    """The measurements on a fresh shard whose vectors are placed in `memory`."""
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeVectorStore(Path(tmp) / "v", vectors.shape[1], vector_memory=memory)
        start = time.perf_counter()
        for s in range(0, len(vectors), 1000):
            payloads = [
                {"sources": [SOURCES[source_of[i]]], "uploaders": ["bench"], "format": "JPEG",
                 "size_bytes": 100_000, "width": 1024, "height": 768, "created_at": float(i)}
                for i in range(s, min(s + 1000, len(vectors)))
            ]
            store.upsert(ids[s : s + 1000], vectors[s : s + 1000], payloads)
        rows.append(("upsert", f"{len(vectors) / (time.perf_counter() - start):,.0f} points/s"))
        p50, p99, recall = measure(store, vectors, queries[:50], ids, source_of, filtered=False)
        rows.append(("top-10 before index (full scan)", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, recall@10 {recall:.3f}"))
        start = time.perf_counter()
        store.optimize()
        rows.append(("build HNSW index (optimize)", f"{time.perf_counter() - start:.1f} s"))
        start = time.perf_counter()
        store.close()
        closed = resident_gib()
        store = EdgeVectorStore(Path(tmp) / "v", vectors.shape[1], vector_memory=memory)
        store.count()
        rows.append(("flush + reopen", f"{time.perf_counter() - start:.2f} s"))
        rows.append(("resident memory the loaded shard adds", f"{(resident_gib() - closed) * 1024:,.0f} MiB"))
        start = time.perf_counter()
        store.search(queries[0], 10)
        rows.append(("first top-10 after reopen", f"{(time.perf_counter() - start) * 1000:.1f} ms"))
        for ef in (int(e) for e in efs.split(",")):
            store.hnsw_ef = ef
            for filtered in (False, True):
                p50, p99, recall = measure(store, vectors, queries, ids, source_of, filtered=filtered)
                label = "filter on one source (10%)" if filtered else "no filter"
                rows.append((f"top-10, {label}, hnsw_ef {ef}", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, recall@10 {recall:.3f}"))
        store.close()
    return rows


if __name__ == "__main__":
    main()
