"""The analysis cache runs no code: values are plain data, and anything else under a key is ignored."""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from core import DEFAULT_ANOMALY_METHOD, analysis
from core.analysis import DuplicateThresholds
from core.cache_codec import (
    ANOMALY_SCORES,
    CANDIDATES,
    GRAPH,
    LATEST_GRAPH,
    PROJECTION,
    SCALE,
    VECTOR,
    CodecError,
    LatestGraph,
)
from core.collection import Collection
from core.embedding import Embedder
from core.settings import Settings
from core.synthetic import encode, photo


class _Planted:
    """Unpickling this runs a shell command that creates ``marker``: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _map(collection: Collection) -> zip:
    view = collection.projection()
    return zip(view.image_id, view.x, view.y, strict=True)


def _values(collection: Collection) -> dict[str, object]:
    """What each cached value decides, as a user sees it."""
    return {
        "clusters": [[m.image.image_id for m in g.members] for g in collection.duplicates().groups],
        "pairs": collection.duplicates(DuplicateThresholds(similarity=0.5)).pair_count,
        "ranking": [(r.image.image_id, round(r.score, 9)) for r in collection.anomalies(method="knn").rows],
        "map": [(i, round(float(x), 5), round(float(y), 5)) for i, x, y in _map(collection)],
    }


def test_a_planted_pickle_in_redis_is_ignored_not_run(
    tmp_path: Path, embedder: Embedder, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none", redis_url=redis_url)
    with Collection.open(settings, embedder=embedder) as first:
        first.ingest_uploads([(f"p{i}.jpg", encode(photo(700 + i))) for i in range(30)])
        expected = _values(first)
        version, service = first.version(), first.analysis

    # Everything the service reads from Redis for this version, and the "latest" entries it reuses
    # across versions, now holds a pickle that would create the marker file when unpickled.
    marker = tmp_path / "pwned"
    planted = pickle.dumps(_Planted(marker))
    names = ["graph:k30", "scale", "candidates", "anomalies:knn:kNone", f"anomalies:{DEFAULT_ANOMALY_METHOD}:kNone", "projection"]
    keys = [service._key(version, n) for n in names] + [service._latest_key(n) for n in ("graph:k30", "scale")]
    server = redis.Redis.from_url(redis_url)
    for key in keys:
        assert server.get("visual-anomaly:" + key) is not None, f"the service never wrote {key}"
        server.set("visual-anomaly:" + key, planted)

    builds: list[int] = []
    real_build = analysis.build_graph
    monkeypatch.setattr(analysis, "build_graph", lambda v, **kw: builds.append(len(v)) or real_build(v, **kw))
    with caplog.at_level(logging.WARNING), Collection.open(settings, embedder=embedder) as second:
        assert _values(second) == expected
        for key in keys:  # the recomputed values replaced the planted ones
            assert server.get("visual-anomaly:" + key) != planted
    assert not marker.exists()
    assert builds == [30]  # the planted graph was read, refused and rebuilt from the vectors
    ignored = [r.getMessage() for r in caplog.records if "Ignoring the cached value" in r.getMessage()]
    assert len(ignored) == len(keys) - 1  # each planted key once; the latest scale is read on arrival only
    server.close()


def test_garbage_under_a_key_is_recomputed(
    tmp_path: Path, embedder: Embedder, redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none", redis_url=redis_url)
    with Collection.open(settings, embedder=embedder) as first:
        first.ingest_uploads([(f"g{i}.jpg", encode(photo(800 + i))) for i in range(25)])
        expected = _values(first)
        key = first.analysis._key(first.version(), "graph:k30")
    server = redis.Redis.from_url(redis_url)
    good = server.get("visual-anomaly:" + key)
    assert good is not None
    another_type = SCALE.encode(SCALE.decode(server.get("visual-anomaly:" + key.replace("graph:k30", "scale"))))
    another_size = GRAPH.encode(_graph(n=6))  # well formed, but for another number of images
    for bad in (b"\x00garbage", good[:-7], good[:8] + b"{not json" + good[17:], another_type, another_size):
        server.set("visual-anomaly:" + key, bad)
        with Collection.open(settings, embedder=embedder) as again:
            assert _values(again) == expected
    server.close()


def _graph(n: int = 6, k: int = 3) -> analysis.NeighbourGraph:
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return analysis.build_graph(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), k=k)


def test_every_cached_type_comes_back_equal() -> None:
    graph = _graph()
    back = GRAPH.decode(GRAPH.encode(graph))
    assert np.array_equal(back.indices, graph.indices) and np.array_equal(back.similarities, graph.similarities)
    assert (back.method, back.recall_at_10, back.recall_sample) == (graph.method, graph.recall_at_10,
                                                                    graph.recall_sample)
    scale = analysis.similarity_scale(graph)
    assert SCALE.decode(SCALE.encode(scale)) == scale
    latest = LATEST_GRAPH.decode(LATEST_GRAPH.encode(LatestGraph(6, "ab" * 32, graph)))
    assert (latest.count, latest.ids_sha256) == (6, "ab" * 32) and np.array_equal(latest.graph.indices,
                                                                                   graph.indices)
    scores = analysis.AnomalyScores("knn", 3, np.arange(6.0), np.linspace(10, 100, 6))
    again = ANOMALY_SCORES.decode(ANOMALY_SCORES.encode(scores))
    assert (again.method, again.k) == ("knn", 3) and np.array_equal(again.scores, scores.scores)
    projection = analysis.Projection(np.ones((6, 2), np.float32), np.arange(6))
    assert np.array_equal(PROJECTION.decode(PROJECTION.encode(projection)).coordinates, projection.coordinates)
    m = 4
    candidates = analysis.DuplicateCandidates(
        left=np.arange(m, dtype=np.int32), right=np.arange(1, m + 1, dtype=np.int32),
        cosine=np.full(m, 0.9, np.float32), phash_distance=np.arange(m, dtype=np.uint8),
        mirrored=np.zeros(m, bool), same_bytes=np.zeros(m, bool), same_pixels=np.ones(m, bool),
        crop_score=np.array([np.nan, 0.8, np.nan, 0.95], np.float32),
        pixel_score=np.array([0.99, np.nan, 0.7, 0.95], np.float32),
        neighbour_score=np.array([0.9, -np.inf, 0.8, 0.85], np.float32),
        local_difference=np.array([0.4, np.nan, np.nan, 1.7], np.float32),
        detail=np.array([0.9, np.nan, np.nan, 0.2], np.float32),
        crop_local_difference=np.array([np.nan, 0.9, np.nan, 1.1], np.float32), scale=scale, similarity_floor=0.5,
        hamming_max=12, hamming_searched=7, crop_floor=0.6)
    got = CANDIDATES.decode(CANDIDATES.encode(candidates))
    assert got.scale == scale
    assert (got.similarity_floor, got.hamming_max, got.hamming_searched, got.crop_floor) == (0.5, 12, 7, 0.6)
    for name in ("left", "right", "cosine", "phash_distance", "mirrored", "same_bytes", "same_pixels", "crop_score",
                 "pixel_score", "neighbour_score", "local_difference", "detail", "crop_local_difference"):
        assert np.array_equal(getattr(got, name), getattr(candidates, name), equal_nan=True), name
    assert np.array_equal(VECTOR.decode(VECTOR.encode(np.ones(4, np.float32))), np.ones(4))


def test_a_value_of_another_type_or_with_a_pickled_array_is_refused(tmp_path: Path) -> None:
    graph = _graph()
    with pytest.raises(CodecError, match="not a scale"):
        SCALE.decode(GRAPH.encode(graph))
    with pytest.raises(CodecError):
        GRAPH.decode(pickle.dumps(graph))
    # a well-formed header whose first array is an object array: np.save pickles its items
    marker = tmp_path / "pwned"
    good = GRAPH.encode(graph)
    planted = io.BytesIO()
    np.save(planted, np.array([_Planted(marker)], dtype=object), allow_pickle=True)
    header_end = good.index(b"\x93NUMPY")
    with pytest.raises(CodecError, match="allow_pickle"):
        GRAPH.decode(good[:header_end] + planted.getvalue() + good[header_end:])
    assert not marker.exists()
