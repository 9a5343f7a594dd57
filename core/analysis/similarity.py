"""One similarity scale for a collection, calibrated on its own neighbour distances.

Raw cosine similarity means different things in different collections and models: CLIP embeddings
are anisotropic, and a random-weight ViT-B-32 puts unrelated clip art at cosine 0.99. So the
thresholds users move live on

    similarity = 1 - (1 - cosine) / (1 - reference_cosine)

where `reference_cosine` is the median cosine between an image and its `reference_rank`-th nearest
neighbour: 1 means identical vectors, 0 a pair as far apart as an image typically is from its
10th neighbour, 0.9 a pair ten times closer than that. It is a monotone map of cosine, so anything
that knows raw cosines (a vector-store search on arrival) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.analysis.neighbours import NeighbourGraph

REFERENCE_RANK = 10
HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class SimilarityScale:
    """The calibrated scale, and a histogram of each image's closest-neighbour similarity on it."""

    reference_cosine: float
    reference_rank: int
    histogram_edges: tuple[float, ...]  # HISTOGRAM_BINS + 1 edges over [-1, 1]; lower values land in bin 0
    histogram_counts: tuple[int, ...]  # per bin: images whose nearest neighbour is that similar

    def similarity(self, cosine: np.ndarray | float) -> np.ndarray:
        return 1.0 - (1.0 - np.asarray(cosine, dtype=np.float64)) / (1.0 - self.reference_cosine)

    def cosine(self, similarity: np.ndarray | float) -> np.ndarray:
        return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64)) * (1.0 - self.reference_cosine)


def similarity_scale(graph: NeighbourGraph, reference_rank: int = REFERENCE_RANK) -> SimilarityScale:
    """Calibrate on `graph` (the rank falls back to the graph's last column when k is smaller)."""
    if reference_rank < 1:
        raise ValueError(f"reference_rank must be at least 1, got {reference_rank}")
    column = graph.similarities[:, min(reference_rank, graph.k) - 1] if graph.k else np.empty(0)
    column = column[np.isfinite(column)]
    reference = float(np.median(column)) if len(column) else 0.0
    reference = min(reference, 1.0 - 1e-6)
    edges = np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)
    nearest = graph.similarities[:, 0] if graph.k else np.empty(0)
    nearest = nearest[np.isfinite(nearest)]
    nearest = np.clip(1.0 - (1.0 - nearest.astype(np.float64)) / (1.0 - reference), -1.0, 1.0)
    counts, _ = np.histogram(nearest, bins=edges)
    return SimilarityScale(reference, reference_rank, tuple(float(e) for e in edges), tuple(int(c) for c in counts))
