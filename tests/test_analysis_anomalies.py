"""Anomaly scores on constructed collections: a planted loner, a planted small group, exact copies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.analysis.anomalies import METHODS, anomaly_scores, select_anomalies
from core.analysis.neighbours import exact_graph
from core.errors import InvalidRequest

D = 48


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def normal_collection(n: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """Anisotropic like CLIP: a shared direction, a few topics, noise."""
    rng = np.random.default_rng(seed)
    common = 2.0 * unit(rng.standard_normal(D))
    topics = rng.standard_normal((6, D))
    return common + topics[rng.integers(0, 6, n)] + 0.6 * rng.standard_normal((n, D)), rng


def with_planted_group(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """400 normal images, a tight batch of 15 foreign ones, and 3 loners."""
    normal, rng = normal_collection(400, seed)
    elsewhere = 3.0 * unit(rng.standard_normal(D))
    group = elsewhere + 0.3 * rng.standard_normal((15, D))
    loners = 3.0 * unit(rng.standard_normal((3, D)))
    x = unit(np.concatenate([normal, group, loners]))
    return x, np.r_[np.zeros(400), np.ones(18)].astype(bool)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_ranks_a_planted_loner_first(method: str) -> None:
    normal, rng = normal_collection(300, seed=1)
    x = unit(np.concatenate([normal, 3.0 * unit(rng.standard_normal((1, D)))]))
    result = anomaly_scores(x, exact_graph(x, 20), method=method)
    assert result.ranking()[0] == 300
    assert result.percentiles[300] == 100.0


def test_default_catches_a_small_group_that_small_k_misses() -> None:
    x, foreign = with_planted_group(seed=1)
    graph = exact_graph(x, 30)
    combined = anomaly_scores(x, graph)
    local = anomaly_scores(x, graph, method="knn", k=5)
    assert combined.method == "combined"
    assert roc_auc_score(foreign, combined.scores) >= 0.95 > roc_auc_score(foreign, local.scores)
    assert np.median(combined.percentiles[foreign]) >= 90


def test_copies_of_an_outlier_do_not_hide_each_other() -> None:
    normal, rng = normal_collection(300, seed=2)
    odd = 3.0 * unit(rng.standard_normal((1, D)))
    x = unit(np.concatenate([normal, odd, odd, odd]))
    graph = exact_graph(x, 10)
    labels = np.r_[np.arange(300), 300, 300, 300]
    blind = anomaly_scores(x, graph, method="knn", k=2)
    aware = anomaly_scores(x, graph, method="knn", k=2, same_image=labels)
    assert blind.scores[300] < 1e-5  # its nearest neighbours are its own copies
    assert set(aware.ranking()[:3]) == {300, 301, 302}


def test_selection_by_threshold_top_or_contamination() -> None:
    x, _ = with_planted_group(seed=3)
    result = anomaly_scores(x, exact_graph(x, 10), method="knn")
    ranked = result.ranking()
    assert np.array_equal(select_anomalies(result, top=5), ranked[:5])
    assert len(select_anomalies(result, contamination=1.0)) == 5  # ceil(418 * 1%)
    threshold = result.scores[ranked[9]]
    assert np.array_equal(select_anomalies(result, threshold=threshold), ranked[: (result.scores >= threshold).sum()])
    for bad in ({}, {"top": 3, "contamination": 2.0}):
        with pytest.raises(ValueError):
            select_anomalies(result, **bad)
    with pytest.raises(InvalidRequest, match="contamination"):
        select_anomalies(result, contamination=0)


def test_percentiles_rank_the_scores() -> None:
    x, _ = with_planted_group(seed=4)
    result = anomaly_scores(x, exact_graph(x, 10), method="mahalanobis")
    order = np.argsort(result.scores)
    assert np.all(np.diff(result.percentiles[order]) >= 0)
    assert result.percentiles.max() == 100.0 and result.percentiles.min() > 0


def test_bad_arguments_are_refused() -> None:
    x, _ = with_planted_group()
    graph = exact_graph(x, 10)
    with pytest.raises(InvalidRequest, match="method"):
        anomaly_scores(x, graph, method="zscore")
    with pytest.raises(InvalidRequest, match="graph's k"):
        anomaly_scores(x, graph, method="knn", k=11)
    with pytest.raises(ValueError, match="rebuild or update"):
        anomaly_scores(x[:-1], graph)
