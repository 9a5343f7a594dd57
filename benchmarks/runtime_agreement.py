"""Whether another runtime's embeddings change what an analyst sees, against torch fp32's.

A cosine between two embeddings of one image says little about int8: small errors everywhere can
still reorder neighbours near a threshold. So a candidate is compared on outcomes, over the analysis
benchmark's labelled images: the duplicate pairs the product reports (default thresholds), the top
of the anomaly ranking (default method), and search top-10 for every image used as a query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.analysis_metrics import pairs_from_groups
from core.analysis import ImageSignals, anomaly_scores, build_graph, duplicate_candidates, duplicate_clusters

SEARCH_K = 10
TOP_ANOMALIES = 20


@dataclass(frozen=True)
class Outcomes:
    """What an analyst sees from one set of embeddings."""

    vectors: np.ndarray
    duplicate_pairs: frozenset[tuple[int, int]]
    top_anomalies: tuple[int, ...]
    search: np.ndarray  # (n, SEARCH_K) neighbours of every image, itself excluded


@dataclass(frozen=True)
class Agreement:
    search_overlap: float  # mean share of fp32's search top-10 found in the candidate's
    duplicate_pairs_changed: int  # pairs reported by one and not the other
    top_anomalies_changed: int  # of the top TOP_ANOMALIES, how many are not in fp32's
    min_cosine: float

    @property
    def same_duplicates(self) -> bool:
        return self.duplicate_pairs_changed == 0

    @property
    def same_top_anomalies(self) -> bool:
        return self.top_anomalies_changed == 0


def outcomes(vectors: np.ndarray, signals: ImageSignals) -> Outcomes:
    graph = build_graph(vectors)
    report = duplicate_clusters(duplicate_candidates(graph, vectors, signals), vectors, signals)
    scores = anomaly_scores(vectors, graph, same_image=signals.bytes_group).scores
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    search = np.argsort(-similarity, axis=1, kind="stable")[:, :SEARCH_K]
    return Outcomes(
        vectors=vectors,
        duplicate_pairs=frozenset(pairs_from_groups(c.members for c in report.clusters)),
        top_anomalies=tuple(int(i) for i in np.argsort(-scores, kind="stable")[:TOP_ANOMALIES]),
        search=search,
    )


def agreement(reference: Outcomes, candidate: Outcomes) -> Agreement:
    overlap = np.mean([len(set(a) & set(b)) / SEARCH_K for a, b in zip(reference.search, candidate.search, strict=True)])
    return Agreement(
        search_overlap=float(overlap),
        duplicate_pairs_changed=len(reference.duplicate_pairs ^ candidate.duplicate_pairs),
        top_anomalies_changed=len(set(reference.top_anomalies) - set(candidate.top_anomalies)),
        min_cosine=float((reference.vectors * candidate.vectors).sum(axis=1).min()),
    )
