"""The 2-D map: UMAP on the shared graph, and sample-then-place for large collections."""

from __future__ import annotations

import numpy as np
import pytest

from core.analysis.neighbours import exact_graph
from core.analysis.projection import umap_projection


def two_groups(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)
    centres = 3.0 * rng.standard_normal((2, 32))
    x = centres[side] + rng.standard_normal((n, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), side


def separated(coords: np.ndarray, side: np.ndarray) -> bool:
    a, b = coords[side == 0], coords[side == 1]
    between = np.linalg.norm(a.mean(0) - b.mean(0))
    within = max(np.linalg.norm(a - a.mean(0), axis=1).mean(), np.linalg.norm(b - b.mean(0), axis=1).mean())
    return between > 2 * within


def test_map_keeps_groups_apart() -> None:
    x, side = two_groups(300)
    result = umap_projection(x, exact_graph(x, 15))
    assert result.coordinates.shape == (300, 2) and np.isfinite(result.coordinates).all()
    assert len(result.fitted) == 300
    assert separated(result.coordinates, side)


def test_large_collections_fit_a_sample_and_place_the_rest() -> None:
    x, side = two_groups(600, seed=1)
    result = umap_projection(x, exact_graph(x, 15), fit_max=200)
    assert len(result.fitted) == 200
    assert np.isfinite(result.coordinates).all()
    assert separated(result.coordinates, side)


def test_same_seed_same_map() -> None:
    x, _ = two_groups(120, seed=2)
    graph = exact_graph(x, 15)
    assert np.array_equal(umap_projection(x, graph).coordinates, umap_projection(x, graph).coordinates)


def test_tiny_and_mismatched_inputs() -> None:
    x, _ = two_groups(3)
    assert umap_projection(x, exact_graph(x, 5)).coordinates.shape == (3, 2)
    y, _ = two_groups(50)
    with pytest.raises(ValueError, match="rebuild or update"):
        umap_projection(y, exact_graph(y[:40], 5))
