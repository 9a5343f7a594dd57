"""Each analysis value is computed once, and nobody waits behind a computation of another value."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import analysis
from core.analysis import DuplicateThresholds
from core.analysis_memo import ComputedOnce, waiting
from core.collection import Collection
from core.embedding import Embedder
from core.errors import Busy
from core.settings import Settings
from core.synthetic import encode, photo


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Collection]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("concurrent") / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        collection.ingest_uploads([(f"c{i}.jpg", encode(photo(900 + i))) for i in range(30)])
        yield collection


def test_a_threshold_move_returns_while_a_slow_map_build_runs(
    photos: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos.duplicates()  # this version's graph and candidates exist
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []
    real = analysis.umap_projection

    def slow_projection(*args: object, **kwargs: object) -> analysis.Projection:
        builds.append(1)
        started.set()
        release.wait(60)  # held until the test lets it finish (an old lock would hold everyone here)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "umap_projection", slow_projection)
    with ThreadPoolExecutor(4) as pool:
        maps = [pool.submit(photos.projection) for _ in range(4)]
        try:
            assert started.wait(60)
            moved = photos.duplicates(DuplicateThresholds(similarity=0.5, hamming=4, rule="either"))
            page = photos.anomaly_rows(top=3, limit=5)
            assert not any(m.done() for m in maps)  # both answered while the map was still being built
            with pytest.raises(Busy) as busy:
                photos.projection(wait=False)
            assert busy.value.retry_after_s > 0 and "projection" in str(busy.value)
        finally:
            release.set()
        views = [m.result(timeout=120) for m in maps]
    assert builds == [1]  # four callers, one build
    assert moved.images == 30 and page.total == 30 and len(page.items) == 5
    assert all(v.image_id == views[0].image_id and (v.x == views[0].x).all() for v in views) and len(views[0]) == 30


def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    memo = ComputedOnce()
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        entered.set()
        release.wait(60)
        return "graph"

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(memo.get, 7, "graph", compute) for _ in range(4)]
        assert entered.wait(60)
        assert memo.get(7, "scale", lambda: "scale") == "scale"  # another value of the same version
        assert memo.get(6, "graph", lambda: "old graph") == "old graph"  # an older version
        with waiting(False), pytest.raises(Busy):
            memo.get(7, "graph", compute)
        release.set()
        assert [f.result(timeout=60) for f in futures] == ["graph"] * 4
    assert calls == [1]


def test_a_failed_computation_reaches_its_waiters_and_is_tried_again() -> None:
    memo = ComputedOnce()
    with pytest.raises(ZeroDivisionError):
        memo.get(1, "graph", lambda: 1 / 0)
    assert memo.get(1, "graph", lambda: "built") == "built"


def test_a_busy_first_caller_leaves_the_value_to_a_caller_that_waits() -> None:
    memo = ComputedOnce()
    entered, release = threading.Event(), threading.Event()

    def slow_graph() -> str:
        entered.set()
        release.wait(60)
        return "graph"

    def candidates() -> str:  # needs the graph, which another thread is building
        return "candidates from " + memo.get(1, "graph", slow_graph)

    with ThreadPoolExecutor(2) as pool:
        graph = pool.submit(memo.get, 1, "graph", slow_graph)
        assert entered.wait(60)
        with waiting(False), pytest.raises(Busy):
            memo.get(1, "candidates", candidates)
        release.set()
        assert graph.result(timeout=60) == "graph"
    assert memo.get(1, "candidates", candidates) == "candidates from graph"


def test_only_the_newest_version_and_the_latest_views_are_kept() -> None:
    memo = ComputedOnce(max_values=3)
    for version in (1, 2):
        memo.get(version, "graph", lambda: "g")
    assert len(memo) == 1  # version 1 went when version 2 arrived
    for name in "abcde":
        memo.get(2, name, lambda name=name: name)
    assert len(memo) == 3
    calls: list[str] = []
    assert memo.get(2, "e", lambda: calls.append("e") or "again") == "e" and calls == []
