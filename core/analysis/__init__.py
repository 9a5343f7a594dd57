"""Analysis over embeddings and per-image facts: numpy arrays in, frozen records out.

Nothing here knows about storage backends, settings or the UI. Build the neighbour graph once
per collection version (`build_graph`, or `update_graph` after adding images), then derive
duplicates, anomalies and the map from it; all results are picklable numpy/dataclass records.
"""

from core.analysis.anomalies import METHODS, AnomalyScores, anomaly_scores, select_anomalies
from core.analysis.arrival import ArrivalCheck, StoredImage, check_arrival, crop_candidates_for, hash_matches
from core.analysis.duplicates import (
    DuplicateCandidates,
    DuplicateCluster,
    DuplicatePair,
    DuplicateReport,
    DuplicateThresholds,
    ImageSignals,
    duplicate_candidates,
    duplicate_clusters,
    duplicate_pairs,
    threshold_examples,
)
from core.analysis.hamming import hashes_from_hex, pairs_within
from core.analysis.neighbours import NeighbourGraph, build_graph, graph_recall, update_graph
from core.analysis.projection import Projection, umap_projection
from core.analysis.similarity import SimilarityScale, similarity_scale

__all__ = [
    "METHODS",
    "AnomalyScores",
    "ArrivalCheck",
    "DuplicateCandidates",
    "DuplicateCluster",
    "DuplicatePair",
    "DuplicateReport",
    "DuplicateThresholds",
    "ImageSignals",
    "NeighbourGraph",
    "Projection",
    "SimilarityScale",
    "StoredImage",
    "anomaly_scores",
    "build_graph",
    "check_arrival",
    "crop_candidates_for",
    "duplicate_candidates",
    "duplicate_clusters",
    "duplicate_pairs",
    "graph_recall",
    "hash_matches",
    "hashes_from_hex",
    "pairs_within",
    "select_anomalies",
    "similarity_scale",
    "threshold_examples",
    "umap_projection",
    "update_graph",
]
