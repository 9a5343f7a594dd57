"""Anomaly scores on constructed collections: a planted loner, a planted small group, exact copies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.analysis.anomalies import (
    METHODS,
    USES_PROPERTIES,
    anomaly_scores,
    knn_distance,
    kth_distance,
    select_anomalies,
)
from core.analysis.neighbours import exact_graph
from core.analysis.quality import property_combination_scores, property_outlier_scores, quality_flags
from core.errors import InvalidRequest
from core.image_properties import PROPERTY_NAMES, ImageProperties

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


@pytest.mark.parametrize("method", [m for m in METHODS if m != "properties"])
def test_every_embedding_method_ranks_a_planted_loner_first(method: str) -> None:
    normal, rng = normal_collection(300, seed=1)
    x = unit(np.concatenate([normal, 3.0 * unit(rng.standard_normal((1, D)))]))
    result = anomaly_scores(x, exact_graph(x, 20), method=method)
    assert result.ranking()[0] == 300
    assert result.percentiles[300] == 100.0


@pytest.mark.parametrize("method", ["combined", "embedding", "fused"])
def test_group_aware_methods_catch_a_small_group_that_small_k_misses(method: str) -> None:
    x, foreign = with_planted_group(seed=1)
    graph = exact_graph(x, 30)
    aware = anomaly_scores(x, graph, method=method)
    local = anomaly_scores(x, graph, method="knn", k=5)
    assert roc_auc_score(foreign, aware.scores) >= 0.95 > roc_auc_score(foreign, local.scores)
    assert np.median(aware.percentiles[foreign]) >= 90


ICON = ImageProperties(width=256, height=256, aspect=1.0, pixels=65536, bytes_per_pixel=0.3, brightness=0.8,
                       dark_level=0.3, bright_level=1.0, contrast=0.25, colourfulness=0.3, entropy=3.0,
                       sharpness=0.02, dominant_share=0.5, transparent_share=0.5, distinct_colours=300)
ODD_PROPERTIES = {  # images whose pictures embed like the rest but whose properties do not
    "blank": {"distinct_colours": 1, "contrast": 0.0, "entropy": 0.0, "sharpness": 0.0, "dominant_share": 1.0},
    "strip": {"width": 2000, "height": 40, "aspect": 50.0},
    "transparent": {"transparent_share": 1.0, "brightness": 1.0, "distinct_colours": 1, "contrast": 0.0},
}


def with_planted_properties(n: int, rng: np.random.Generator) -> np.ndarray:
    """Properties of ``n`` ordinary icons (each value within 3% of a typical icon's), then one row
    per kind of `ODD_PROPERTIES`."""
    typical = np.array([getattr(ICON, name) for name in PROPERTY_NAMES], dtype=np.float64)
    rows = typical * rng.uniform(0.97, 1.03, (n, len(PROPERTY_NAMES)))
    odd = [[changes.get(name, getattr(ICON, name)) for name in PROPERTY_NAMES] for changes in ODD_PROPERTIES.values()]
    return np.concatenate([rows, np.array(odd, dtype=np.float64)])


def test_fused_ranks_foreign_pictures_and_odd_files_above_the_normal_images() -> None:
    x, planted = with_planted_group(seed=5)  # 400 normal, a batch of 15 foreign pictures, 3 loners
    rng = np.random.default_rng(6)
    alike = x[rng.choice(400, len(ODD_PROPERTIES), replace=False)] + 0.02 * rng.standard_normal((len(ODD_PROPERTIES), D))
    x = np.concatenate([x, unit(alike)])  # pictures like the rest ...
    properties = with_planted_properties(len(planted), rng)  # ... whose files are blank, a strip, transparent
    planted = np.r_[planted, np.ones(len(ODD_PROPERTIES), dtype=bool)]
    odd_files = np.arange(len(x) - len(ODD_PROPERTIES), len(x))
    graph = exact_graph(x, 30)
    fused = anomaly_scores(x, graph, properties=properties)
    embedding = anomaly_scores(x, graph, method="embedding", properties=properties)
    by_properties = anomaly_scores(x, graph, method="properties", properties=properties)
    assert fused.method == "fused"
    auc = {name: roc_auc_score(planted, r.scores) for name, r in
           (("fused", fused), ("embedding", embedding), ("properties", by_properties))}
    assert auc["fused"] >= 0.9 and auc["fused"] > max(auc["embedding"], auc["properties"]), auc
    assert fused.percentiles[planted].min() >= 70  # every planted image above 70% of the collection
    assert set(odd_files) <= set(fused.ranking()[:10])
    assert np.median(embedding.percentiles[odd_files]) < 90  # blind to the files
    assert np.median(by_properties.percentiles[planted & (np.arange(len(x)) < 400 + 15)]) < 90  # blind to the batch


def with_odd_combination(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` icons whose brightness and contrast go together (a lighter icon has less contrast, as
    line art does), then one as light as the lightest with the contrast of the darkest: each value
    within the collection's range, the pair unlike any other image's. Rows of `PROPERTY_NAMES`."""
    typical = np.array([getattr(ICON, name) for name in PROPERTY_NAMES], dtype=np.float64)
    rows = typical * rng.uniform(0.9, 1.1, (n + 1, len(PROPERTY_NAMES)))
    light = rng.uniform(0.6, 0.95, n + 1)
    light[-1] = 0.93
    rows[:, PROPERTY_NAMES.index("brightness")] = light
    rows[:, PROPERTY_NAMES.index("contrast")] = 0.6 - 0.5 * light + rng.normal(0.0, 0.005, n + 1)
    rows[-1, PROPERTY_NAMES.index("contrast")] = 0.6 - 0.5 * 0.62
    return rows


def test_an_image_ordinary_in_each_property_but_not_in_their_combination_ranks_high() -> None:
    rng = np.random.default_rng(8)
    properties = with_odd_combination(300, rng)
    odd = len(properties) - 1
    combination = property_combination_scores(properties)
    assert int(np.argmax(combination)) == odd
    assert not quality_flags(properties).flagged[odd].any()  # no property is unusual alone ...
    outlier = property_outlier_scores(properties)
    assert (outlier > outlier[odd]).sum() >= 3  # ... nor far out in all of them together
    x, _ = normal_collection(len(properties), seed=9)
    graph = exact_graph(unit(x), 30)
    fused = anomaly_scores(unit(x), graph, properties=properties)
    without = anomaly_scores(unit(x), graph, method="embedding", properties=properties)
    assert fused.percentiles[odd] >= 95 > without.percentiles[odd]
    unmeasured = properties.copy()
    unmeasured[odd] = np.nan
    assert property_combination_scores(unmeasured)[odd] == 0.0
    independent = with_planted_properties(400, rng)  # no two properties go together: no new evidence
    combined, outlier = property_combination_scores(independent), property_outlier_scores(independent)
    assert np.corrcoef(combined, outlier)[0, 1] > 0.95 and np.allclose(combined.mean(), outlier.mean(), rtol=0.1)


@pytest.mark.parametrize("method", sorted(USES_PROPERTIES))
def test_without_properties_every_image_counts_as_typical_in_its_properties(method: str) -> None:
    x, _ = with_planted_group(seed=7)
    graph = exact_graph(x, 30)
    result = anomaly_scores(x, graph, method=method)
    if method == "properties":
        assert np.all(result.scores == 0)
    else:
        assert np.array_equal(result.ranking(), anomaly_scores(x, graph, method="embedding").ranking())
    with pytest.raises(ValueError, match="one row per vector"):
        anomaly_scores(x, graph, method=method, properties=np.zeros((3, len(PROPERTY_NAMES))))


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


@pytest.mark.parametrize("distance", [kth_distance, knn_distance])
def test_graph_distances_read_in_row_blocks_equal_a_direct_reading(distance) -> None:
    """Blocks of 7 rows (a large collection's 65,536, scaled down) give each row the distance a
    direct reading of its own neighbour list gives, duplicates skipped, unlisted slots ignored."""
    normal, rng = normal_collection(100, seed=4)
    x = unit(normal)
    graph = exact_graph(x, 6)
    graph.indices[::9, 4:] = -1  # fewer listed than k for some rows
    graph.similarities[::9, 4:] = -np.inf
    labels = rng.integers(0, 40, len(x))  # many rows share a label with a listed neighbour
    k = 3
    expected = []
    for row in range(len(x)):
        listed = [(j, s) for j, s in zip(graph.indices[row], graph.similarities[row], strict=True) if j >= 0]
        kept = [1.0 - s for j, s in listed if labels[j] != labels[row]][:k]
        if not kept:
            expected.append(max(1.0 - s for _, s in listed))
        else:
            expected.append(kept[-1] if distance is kth_distance else float(np.mean(kept)))
    np.testing.assert_allclose(distance(graph, k, labels, block=7), expected, rtol=1e-6)
    np.testing.assert_array_equal(distance(graph, k, labels, block=7), distance(graph, k, labels))


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
