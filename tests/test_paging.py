"""Pages of duplicate groups, anomaly rows, search hits and images; cheap versions; map points."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import analysis
from core.analysis import DuplicateThresholds
from core.collection import Collection
from core.embedding import Embedder
from core.errors import InvalidRequest
from core.paging import MAX_LIMIT
from core.settings import Settings
from core.synthetic import encode, photo


def _fill(collection: Collection) -> None:
    collection.ingest_uploads([(f"p{i:02d}.jpg", encode(photo(1000 + i))) for i in range(30)], source="camera")
    copies = [(f"copy{i}.jpg", encode(photo(1000 + i), quality=60)) for i in range(4)]
    collection.ingest_uploads(copies, source="phone")


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Collection]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("paging") / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        _fill(collection)
        yield collection


def test_duplicate_pages_are_slices_of_the_whole_view(paged: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = DuplicateThresholds()
    whole = paged.duplicates(loose)
    assert len(whole.groups) >= 4  # at least each copy with its original
    monkeypatch.setattr(analysis, "duplicate_clusters", lambda *a, **k: pytest.fail("re-clustered for a page"))
    first = paged.duplicate_groups(loose, offset=0, limit=3)
    rest = paged.duplicate_groups(loose, offset=3, limit=MAX_LIMIT)
    assert first.total == rest.total == len(whole.groups)
    assert first.items + rest.items == whole.groups  # same order, same cluster numbers
    assert first.next_offset == 3 and rest.next_offset is None


def test_anomaly_pages_follow_the_ranking_and_can_hold_the_selection_only(paged: Collection) -> None:
    paged.label(paged.anomalies().rows[4].image.image_id, "anomaly")
    whole = paged.anomalies(top=5)
    page = paged.anomaly_rows(top=5, offset=2, limit=4)
    assert page.total == 34 and page.items == whole.rows[2:6]
    assert [r.rank for r in page.items] == [3, 4, 5, 6] and page.items[2].label == "anomaly"
    selected = paged.anomaly_rows(top=5, selected_only=True, limit=MAX_LIMIT)
    assert selected.total == 5 and selected.items == tuple(whole.selected)


def test_search_pages_slice_the_k_nearest(paged: Collection) -> None:
    query = encode(photo(1003))
    everything = paged.search(image=query, k=10)
    second = paged.search(image=query, k=10, offset=4, limit=4)
    assert everything.page.total == second.page.total == 10
    assert second.results == everything.results[4:8] and second.page.next_offset == 8


def test_images_are_listed_by_page_from_the_catalog(paged: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paged.backends.catalog, "ready_frame", lambda: pytest.fail("the whole frame was read"))
    page = paged.list_images(offset=30, limit=10)
    assert page.total == 34 and {r.file_name for r in page.items} == {f"copy{i}.jpg" for i in range(4)}
    assert paged.list_images(source="phone", sort="name", descending=True, limit=2).items[0].file_name == "copy3.jpg"
    assert paged.list_images(name_contains="COPY", limit=1).total == 4


@pytest.mark.parametrize(("call", "field"), [
    (lambda c: c.list_images(offset=-1), "offset"),
    (lambda c: c.list_images(limit=0), "limit"),
    (lambda c: c.list_images(limit=MAX_LIMIT + 1), "limit"),
    (lambda c: c.list_images(sort="colour"), "sort"),
    (lambda c: c.list_images(name_contains="a\x00b"), "name_contains"),
    (lambda c: c.duplicate_groups(offset=True), "offset"),
    (lambda c: c.anomaly_rows(limit=2.5), "limit"),
    (lambda c: c.search(text="a cat", k=0), "k"),
    (lambda c: c.search(text="a cat", offset=-3), "offset"),
])
def test_bad_page_arguments_name_their_field(paged: Collection, call, field: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        call(paged)
    assert error.value.field == field


def test_version_is_one_catalog_read(paged: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paged.backends.blobs, "count", lambda *a: pytest.fail("blobs listed"))
    monkeypatch.setattr(paged.backends.vectors, "count", lambda *a: pytest.fail("vectors counted"))
    before = paged.version()
    assert paged.version() == before == paged.backends.catalog.version()


def test_map_points_carry_id_score_label_cluster_and_source(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        _fill(collection)
        labelled = collection.list_images(limit=1).items[0].id
        collection.label(labelled, "normal")
        view = collection.projection()
        assert len(view) == 34 and len(set(view.image_id)) == 34
        for row in collection.anomalies().rows:
            at = view.image_id.index(row.image.image_id)
            assert (view.anomaly_score[at], view.anomaly_percentile[at]) == pytest.approx((row.score, row.percentile))
            assert (view.source[at], view.file_name[at]) == (row.image.source, row.image.file_name)
        clustered = {m.image.image_id: g.cluster_id for g in collection.duplicates().groups for m in g.members}
        assert clustered and {i: c for i, c in zip(view.image_id, view.cluster_id, strict=True) if c} == clustered
        assert view.label[view.image_id.index(labelled)] == "normal" and sum(label is not None for label in view.label) == 1
        assert set(view.source) == {"camera", "phone"}


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_image_pages_and_versions_agree_on_both_catalogs(
    catalog: str, tmp_path: Path, embedder: Embedder, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if catalog == "postgresql" else None
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none", database_url=url)
    with Collection.open(settings, embedder=embedder) as collection:
        assert collection.backends.catalog.dialect == catalog
        before = collection.version()
        collection.ingest_uploads([(name, encode(photo(1100 + i))) for i, name in
                                   enumerate(["b.jpg", "a.jpg", "C.jpg", "ab.jpg"])], source="s1")
        assert collection.version() > before
        page = collection.list_images(sort="name", offset=1, limit=2)
        assert (page.total, [r.file_name for r in page.items]) == (4, ["a.jpg", "ab.jpg"])  # "C" < "a"
        assert [r.file_name for r in collection.list_images(name_contains="A", sort="name").items] == ["a.jpg", "ab.jpg"]
