"""Search by text, by an uploaded image and by an image in the collection, with filters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.access import Actor, Role
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import InvalidRequest, NotFound
from core.search import SearchFilter
from core.settings import Settings
from core.synthetic import encode, photo


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Collection]:
    """One collection for the whole module: the tests only read it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("search") / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        yield _fill(collection)


def _fill(collection: Collection) -> Collection:
    collection.acting_as(Actor("ana", Role.ANALYST)).ingest_uploads(
        [(f"a{i}.jpg", encode(photo(i))) for i in range(6)], source="alpha"
    )
    time.sleep(0.01)
    collection.acting_as(Actor("ben", Role.ANALYST)).ingest_uploads(
        [(f"b{i}.png", encode(photo(100 + i), "PNG")) for i in range(4)], source="beta"
    )
    return collection


def test_search_by_uploaded_image_finds_that_image_first(searchable: Collection) -> None:
    response = searchable.search(image=encode(photo(3)), k=3)
    assert response.results[0].file_name == "a3.jpg"
    assert response.results[0].score == pytest.approx(1.0, abs=1e-3)
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)


def test_search_similar_to_stored_image_excludes_itself(searchable: Collection) -> None:
    target = searchable.search(image=encode(photo(2)), k=1).results[0].image_id
    response = searchable.search(image_id=target, k=20)
    assert target not in [r.image_id for r in response.results]
    assert len(response.results) == 9


@pytest.mark.parametrize(
    ("flt", "expected_names"),
    [
        (SearchFilter(sources=("beta",)), {f"b{i}.png" for i in range(4)}),
        (SearchFilter(uploaders=("ana",)), {f"a{i}.jpg" for i in range(6)}),
        (SearchFilter(formats=("PNG",)), {f"b{i}.png" for i in range(4)}),
        (SearchFilter(sources=("alpha", "beta"), formats=("JPEG",)), {f"a{i}.jpg" for i in range(6)}),
    ],
)
def test_filters_restrict_results(searchable: Collection, flt: SearchFilter, expected_names: set[str]) -> None:
    response = searchable.search(image=encode(photo(50)), k=50, filters=flt)
    assert {r.file_name for r in response.results} == expected_names


def test_time_and_size_filters(searchable: Collection) -> None:
    frame = searchable.backends.catalog.ready_frame()
    cut = frame.loc[frame["source"] == "beta", "created_at"].min()
    later = searchable.search(image=encode(photo(50)), k=50, filters=SearchFilter(created_from=cut))
    assert {r.source for r in later.results} == {"beta"}
    smallest = int(frame["size_bytes"].min())
    tiny = searchable.search(image=encode(photo(50)), k=50, filters=SearchFilter(max_size_bytes=smallest))
    assert [r.size_bytes for r in tiny.results] == [smallest]


def test_score_threshold_only_removes_results(searchable: Collection) -> None:
    query = encode(photo(4))
    everything = searchable.search(image=query, k=10).results
    middle = sorted(r.score for r in everything)[5]
    kept = searchable.search(image=query, k=10, min_score=middle).results
    assert [r.image_id for r in kept] == [r.image_id for r in everything if r.score >= middle]


def test_text_search_is_cached_and_returns_collection_images(searchable: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    first = searchable.search(text="a sunset over the sea", k=5)
    assert len(first.results) == 5
    monkeypatch.setattr(searchable.embedder, "embed_texts", lambda texts: pytest.fail("text was encoded twice"))
    again = searchable.search(text="a sunset over the sea", k=5)
    assert [r.image_id for r in again.results] == [r.image_id for r in first.results]


def test_search_needs_exactly_one_query(searchable: Collection) -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        searchable.search(text="x", image_id="y")
    with pytest.raises(InvalidRequest, match="empty") as empty:
        searchable.search(text="  ")
    assert empty.value.field == "text"
    with pytest.raises(NotFound):
        searchable.search(image_id="00000000-0000-0000-0000-000000000000")


def test_cli_search_by_image_and_text_prints_json(
    searchable: Collection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(searchable.settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    query = tmp_path / "q.png"
    query.write_bytes(encode(photo(101), "PNG"))
    assert cli_main(["search", "--image", str(query), "--k", "2", "--source", "beta", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"][0]["file_name"] == "b1.png"
    assert all(r["source"] == "beta" for r in answer["results"])
    assert cli_main(["search", "--similar-to", "00000000-0000-0000-0000-000000000000"]) == 2
    assert "No image '00000000-0000-0000-0000-000000000000'" in capsys.readouterr().err
