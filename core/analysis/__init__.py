"""Analysis over embeddings and per-image facts: numpy arrays in, frozen records out.

Nothing here knows about storage backends, settings or the UI. Build the neighbour graph once
per collection version (`build_graph`, or `update_graph` after adding images), then derive
duplicates, anomalies and the map from it; all results are picklable numpy/dataclass records.
"""

from core.analysis.anomalies import METHODS, AnomalyScores, anomaly_scores, select_anomalies
from core.analysis.arrival import (
    ArrivalCheck,
    StoredImage,
    arrival_neighbour_count,
    arrival_proposals,
    check_arrival,
    searches_crop_windows,
)
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
    "arrival_neighbour_count",
    "arrival_proposals",
    "build_graph",
    "check_arrival",
    "duplicate_candidates",
    "duplicate_clusters",
    "duplicate_pairs",
    "graph_recall",
    "hashes_from_hex",
    "pairs_within",
    "searches_crop_windows",
    "select_anomalies",
    "similarity_scale",
    "threshold_examples",
    "umap_projection",
    "update_graph",
]
