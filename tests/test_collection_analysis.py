"""Duplicates, anomalies, the map and arrival checks through the facade and the CLI."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageOps

from core import analysis
from core.access import Actor, Role
from core.analysis import DuplicateThresholds
from core.analysis.crops import DEFAULT_CROP_MATCH
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import InvalidRequest
from core.reports import DuplicatesView
from core.settings import Settings
from core.synthetic import encode, photo


def drawing(seed: int) -> Image.Image:
    """Line art on white: a different kind of image from the photos."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (320, 240), "white")
    pen = ImageDraw.Draw(image)
    for _ in range(12):
        pen.line([tuple(rng.integers(0, 320, 2)), tuple(rng.integers(0, 240, 2))], fill="black", width=3)
    return image


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Collection]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("analysis") / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        # one kind of image (line art), as a real collection mostly is
        collection.ingest_uploads([(f"drawing{i:02d}.png", encode(drawing(i), "PNG")) for i in range(40)], source="art")
        yield collection


def _id_of(collection: Collection, name: str) -> str:
    frame = collection.snapshot().frame
    return str(frame.loc[frame["file_name"] == name, "id"].item())


def _cluster_of(view: DuplicatesView, name: str) -> set[str]:
    for group in view.groups:
        names = {m.image.file_name for m in group.members}
        if name in names:
            return names
    return set()


def test_copies_arrive_flagged_and_form_one_cluster_with_their_signals(analysed: Collection) -> None:
    original = drawing(7)
    report = analysed.ingest_uploads(
        [
            ("copy-reencoded.jpg", encode(original, quality=70)),
            ("copy-flipped.png", encode(ImageOps.mirror(original), "PNG")),
            ("copy-pixels.bmp", encode(original, "BMP")),
            ("copy-cropped.png", encode(original.crop((30, 10, 300, 214)), "PNG")),  # 84% x 85%
            ("unrelated.png", encode(drawing(900), "PNG")),
        ],
        source="copies",
    )
    arrivals = {Path(o.file).name: o.nearest for o in report.outcomes}
    drawing7 = _id_of(analysed, "drawing07.png")
    for name in ("copy-reencoded.jpg", "copy-flipped.png"):
        assert arrivals[name].verdict == "near" and arrivals[name].image_id == drawing7, name
    assert arrivals["copy-pixels.bmp"].verdict == "exact"  # same decoded pixels as the stored PNG
    assert "same_pixels" in arrivals["copy-pixels.bmp"].signals
    assert "phash" in arrivals["copy-flipped.png"].signals  # the mirror-aware pHash sees the flip
    cropped = arrivals["copy-cropped.png"]
    assert (cropped.verdict, cropped.image_id, cropped.signals) == ("near", drawing7, ("crop",))
    assert cropped.crop_score is not None and cropped.crop_score >= DEFAULT_CROP_MATCH
    assert arrivals["unrelated.png"].verdict == "none"
    assert arrivals["unrelated.png"].similarity < arrivals["copy-reencoded.jpg"].similarity

    view = analysed.duplicates()
    cluster = _cluster_of(view, "drawing07.png")
    assert {"copy-reencoded.jpg", "copy-flipped.png", "copy-pixels.bmp", "copy-cropped.png"} <= cluster
    assert "unrelated.png" not in cluster
    group = next(g for g in view.groups if "drawing07.png" in {m.image.file_name for m in g.members})
    assert group.members[0].is_representative and sum(m.is_representative for m in group.members) == 1
    assert not group.exact  # near copies are in it, not only same bytes or pixels


def test_beyond_the_exhaustive_size_an_arrival_finds_its_crop_among_its_nearest_vectors(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        collection.ingest_uploads([(f"drawing{i:02d}.png", encode(drawing(i), "PNG")) for i in range(12)])
        assert collection.analysis.arrival_context(collection.backends.catalog).windows.shape[0] == 12
        monkeypatch.setattr(analysis.arrival, "EXHAUSTIVE_MAX_N", 11)  # as if the collection were large
        context = collection.analysis.arrival_context(collection.backends.catalog)
        assert context.windows is None and context.neighbour_count == analysis.neighbours.DEFAULT_K
        assert collection.analysis._windows[1].shape[0] == 0  # nor kept for the next ingest
        report = collection.ingest_uploads([("cropped.png", encode(drawing(3).crop((30, 10, 300, 214)), "PNG"))])
        cropped = report.outcomes[0].nearest
        assert (cropped.verdict, cropped.image_id, cropped.signals) == ("near", _id_of(collection, "drawing03.png"),
                                                                        ("crop",))


def test_repair_gives_older_images_sketches_and_their_crops_are_found(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none")
    with Collection.open(settings, embedder=embedder) as collection:
        files = [(f"drawing{i:02d}.png", encode(drawing(i), "PNG")) for i in range(12)]
        collection.ingest_uploads([*files, ("cropped.png", encode(drawing(3).crop((0, 30, 270, 230)), "PNG"))])
        with collection.backends.catalog.engine.begin() as conn:  # as if stored before sketches existed
            conn.execute(sa.text("UPDATE images SET sketch = NULL"))
            conn.execute(sa.text("UPDATE meta SET value = '99' WHERE key = 'version'"))
        assert _cluster_of(collection.duplicates(), "cropped.png") == set()
        report = collection.repair()
        assert (report.removed_pending, report.sketches_added) == (0, 13)
        assert _cluster_of(collection.duplicates(), "cropped.png") == {"drawing03.png", "cropped.png"}
        assert collection.repair().sketches_added == 0


def test_thresholds_change_results_without_recomputing_the_graph(
    analysed: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysed.duplicates()  # graph and candidates cached for this version
    monkeypatch.setattr(analysis, "build_graph", lambda *a, **k: pytest.fail("graph rebuilt"))
    monkeypatch.setattr(analysis, "duplicate_candidates", lambda *a, **k: pytest.fail("candidates recomputed"))
    sizes = []
    for similarity in (0.3, 0.6, 0.9, 0.99, 1.0):
        view = analysed.duplicates(DuplicateThresholds(similarity=similarity, hamming=4, rule="either", pixels=-1.0))
        sizes.append(sum(len(g.members) for g in view.groups))
    assert sizes == sorted(sizes, reverse=True)  # a stricter threshold never adds images
    assert sizes[0] > sizes[-1]


def test_adding_images_updates_the_graph_instead_of_rebuilding(
    analysed: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysed.duplicates()
    updates = []
    real_update = analysis.update_graph
    monkeypatch.setattr(analysis, "build_graph", lambda *a, **k: pytest.fail("full rebuild after an append"))
    monkeypatch.setattr(analysis, "update_graph",
                        lambda g, v, **kw: updates.append(len(v)) or real_update(g, v, **kw))
    analysed.ingest_uploads([("late.png", encode(drawing(500), "PNG"))])
    view = analysed.duplicates()
    assert updates == [view.images]
    # the embedded cache is in this process: the graph the analysis holds is not copied into it
    cache, service = analysed.backends.cache, analysed.analysis
    assert cache.in_process and cache.get(service._key(analysed.version(), "graph:k30")) is None
    assert cache.get(service._latest_key("graph:k30")) is None


def test_planted_foreign_group_ranks_on_top_and_labels_come_back(analysed: Collection) -> None:
    analysed.ingest_uploads([(f"foreign{i}.jpg", encode(photo(1000 + i))) for i in range(3)], source="odd")
    view = analysed.anomalies(top=3)
    assert {r.image.file_name for r in view.rows[:3]} == {"foreign0.jpg", "foreign1.jpg", "foreign2.jpg"}
    assert len(view.selected) == 3 and all(r.selected for r in view.rows[:3])
    assert [r.rank for r in view.rows] == list(range(1, len(view.rows) + 1))
    assert view.rows[0].percentile == pytest.approx(100.0)

    target = view.rows[0].image.image_id
    analysed.acting_as(Actor("ana", Role.ANALYST)).label(target, "anomaly")
    assert analysed.anomalies().rows[0].label == "anomaly"
    analysed.label(target, None)
    assert analysed.anomalies().rows[0].label is None
    with pytest.raises(InvalidRequest, match="one of"):
        analysed.anomalies(top=3, contamination=5)


@pytest.mark.parametrize("method", ["knn", "lof", "iforest", "mahalanobis"])
def test_every_method_scores_every_image(analysed: Collection, method: str) -> None:
    view = analysed.anomalies(method=method, contamination=10)
    assert len(view.rows) == analysed.status().images
    assert 1 <= len(view.selected) <= len(view.rows) // 10 + 1
    scores = [r.score for r in view.rows]
    assert scores == sorted(scores, reverse=True)
    arrays = analysed.anomaly_scores(method=method)  # the same scores as arrays, in the snapshot's order
    by_id = dict(zip(analysed.snapshot().ids, arrays.scores.tolist(), strict=True))
    assert [by_id[r.image.image_id] for r in view.rows] == scores and arrays.method == method
    assert analysed.anomalies(method=method, contamination=10, selected_only=True).rows == tuple(view.selected)


def test_projection_places_every_image(analysed: Collection) -> None:
    view = analysed.projection()
    assert len(view) == analysed.status().images
    coords = np.stack([view.x, view.y], axis=1)
    assert np.isfinite(coords).all() and coords.std(axis=0).min() > 0


def test_cli_exports_duplicates_and_anomalies_as_csv(
    analysed: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(analysed.settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    dup_csv, anom_csv = tmp_path / "dups.csv", tmp_path / "anoms.csv"
    assert cli_main(["duplicates", "--csv", str(dup_csv), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(dup_csv.open()))
    assert rows and len(rows) == len(answer["rows"])
    assert set(rows[0]) >= {"cluster_id", "image_id", "file_name", "source", "is_representative",
                            "similarity_to_representative", "phash_distance"}
    assert {r["file_name"] for r in rows} >= {"drawing07.png", "copy-reencoded.jpg"}

    assert cli_main(["anomalies", "--method", "knn", "--k", "5", "--top", "3", "--csv", str(anom_csv)]) == 0
    capsys.readouterr()
    ranked = list(csv.DictReader(anom_csv.open()))
    assert len(ranked) == analysed.status().images
    assert [r["rank"] for r in ranked[:3]] == ["1", "2", "3"] and [r["selected"] for r in ranked[:4]] == ["True"] * 3 + ["False"]
    assert cli_main(["anomalies", "--contamination", "250"]) == 2
    assert "contamination" in capsys.readouterr().err


def test_analysis_is_shared_through_the_cache_backend(
    tmp_path: Path, embedder: Embedder, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none", redis_url=redis_url)
    with Collection.open(settings, embedder=embedder) as first:
        first.ingest_uploads([(f"p{i}.jpg", encode(photo(300 + i))) for i in range(25)])
        expected = first.duplicates().pair_count
    monkeypatch.setattr(analysis, "build_graph", lambda *a, **k: pytest.fail("graph not found in the cache"))
    monkeypatch.setattr(analysis, "update_graph", lambda *a, **k: pytest.fail("graph not found in the cache"))
    with Collection.open(settings, embedder=embedder) as second:  # as another process would
        assert second.duplicates().pair_count == expected
        # the image signals (with their sketches) are rebuilt from the catalog, not sent through Redis
        version = second.backends.catalog.version()
        assert second.backends.cache.get(second.analysis._key(version, "signals")) is None
        assert second.backends.cache.get(second.analysis._key(version, "graph:k30")) is not None


def test_warm_up_leaves_the_first_pages_nothing_to_read_or_compute(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Collection.open(Settings(data_dir=tmp_path / "data", model_pretrained="none"), embedder=embedder) as c:
        c.ingest_uploads([(f"p{i}.jpg", encode(photo(400 + i))) for i in range(25)])
    with Collection.open(Settings(data_dir=tmp_path / "data", model_pretrained="none"), embedder=embedder) as c:
        c.warm_up_in_background().join()  # a fresh process, as a server starts it
        for name in ("build_graph", "update_graph", "duplicate_candidates", "duplicate_clusters",
                     "umap_projection", "anomaly_scores"):
            monkeypatch.setattr(analysis, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran after the warm-up"))
        monkeypatch.setattr(c, "_all_vectors", lambda ids, pages: pytest.fail("the vectors were read after the warm-up"))
        viewer = c.acting_as(Actor("v", Role.VIEWER))
        assert viewer.duplicates().pair_count >= 0 and len(viewer.anomalies().rows) == 25
        assert len(viewer.projection()) == 25


def test_a_failed_warm_up_is_logged_and_leaves_the_collection_usable(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with Collection.open(Settings(data_dir=tmp_path / "data", model_pretrained="none"), embedder=embedder) as c:
        c.ingest_uploads([(f"p{i}.jpg", encode(photo(500 + i))) for i in range(3)])
        monkeypatch.setattr(c, "duplicates", lambda *a, **k: (_ for _ in ()).throw(OSError("the disk went away")))
        c.warm_up_in_background().join()
        assert "Preparing the analysis" in caplog.text and "the disk went away" in caplog.text
        assert len(c.anomaly_scores().scores) == 3  # nothing half-loaded stands in the way


def test_byte_identical_files_are_listed_and_exported(
    analysed: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = (tmp_path / "a" / "drawing03-again.png")
    first.parent.mkdir()
    data = encode(drawing(3), "PNG")  # the same bytes as the stored drawing03.png
    first.write_bytes(data)
    report = analysed.ingest([first], source="second-batch")
    assert report.already_present == 1
    view = analysed.duplicates()
    entry = next(e for e in view.same_bytes if e.image_id == _id_of(analysed, "drawing03.png"))
    assert [f for f, _ in entry.files] == ["drawing03.png", str(first)]
    assert ("drawing03.png", "art") in entry.files and (str(first), "second-batch") in entry.files

    monkeypatch.setenv("DATA_DIR", str(analysed.settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    assert cli_main(["duplicates", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {"image_id": entry.image_id, "files": ["drawing03.png", str(first)]} in answer["same_bytes"]

    csv_path = tmp_path / "dups.csv"
    assert cli_main(["duplicates", "--csv", str(csv_path)]) == 0
    with csv_path.open() as handle:
        exported = list(csv.DictReader(handle))
    by_name = {row["file_name"]: row for row in exported}
    assert by_name["drawing03.png"]["cluster_id"] == by_name[str(first)]["cluster_id"]  # one cluster, both files
    assert sum(row["cluster_id"] == by_name[str(first)]["cluster_id"] for row in exported) >= 2
    assert len({row["cluster_id"] for row in exported}) == answer["clusters"] == view.cluster_count
    assert [row["file_name"] for row in answer["rows"]] == [row["file_name"] for row in exported]


def test_arrival_checks_reuse_the_latest_scale_instead_of_recomputing(
    analysed: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysed.duplicates()  # the scale exists for some version
    analysed.ingest_uploads([("bump.png", encode(drawing(600), "PNG"))])  # the version moves on
    monkeypatch.setattr(analysis, "build_graph", lambda *a, **k: pytest.fail("graph built to judge an arrival"))
    monkeypatch.setattr(analysis, "update_graph", lambda *a, **k: pytest.fail("graph updated to judge an arrival"))
    report = analysed.ingest_uploads([("again07.jpg", encode(drawing(7), quality=80))])
    nearest = report.outcomes[0].nearest
    assert nearest is not None and nearest.verdict == "near" and nearest.similarity is not None


def test_cli_ingest_summary_names_arrivals_that_duplicate_stored_images(
    analysed: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(analysed.settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    (tmp_path / "copy11.jpg").write_bytes(encode(drawing(11), quality=75))
    (tmp_path / "fresh.png").write_bytes(encode(photo(4321), "PNG"))
    assert cli_main(["ingest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"near duplicate of {_id_of(analysed, 'drawing11.png')}: {tmp_path / 'copy11.jpg'}" in out
    assert "fresh.png (" not in out


def test_siblings_that_differ_in_one_place_are_told_apart_from_the_stored_thumbnails(
    tmp_path: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    from core.storage.blobs import thumbnail_key
    from tests.drawings import folder_icon

    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none")
    icons = [("folder-music.png", folder_icon("note")), ("folder-gitlab.png", folder_icon("fox")),
             ("folder-music-copy.png", ImageOps.scale(folder_icon("note"), 0.6))]
    with Collection.open(settings, embedder=embedder) as collection:
        collection.ingest_uploads([*((f"drawing{i:02d}.png", encode(drawing(i), "PNG")) for i in range(12)),
                                   ("folder-music.png", encode(icons[0][1], "PNG"))])
        report = collection.ingest_uploads([(name, encode(img, "PNG")) for name, img in icons[1:]])
        arrivals = {Path(o.file).name: o.nearest for o in report.outcomes}
        music = _id_of(collection, "folder-music.png")
        assert (arrivals["folder-music-copy.png"].verdict, arrivals["folder-music-copy.png"].image_id) == ("near", music)
        assert arrivals["folder-gitlab.png"].verdict == "none"  # the same close look on arrival
        assert _cluster_of(collection.duplicates(), "folder-music.png") == {"folder-music.png", "folder-music-copy.png"}
        lost = _id_of(collection, "folder-gitlab.png")
        collection.backends.blobs.delete(thumbnail_key(lost))  # behind the facade's back
    with Collection.open(settings, embedder=embedder) as collection:  # a new process: nothing cached
        with caplog.at_level("WARNING"):
            view = collection.duplicates()
        # without its thumbnail the sibling is judged by the whole sketches alone, which take it in
        assert _cluster_of(view, "folder-music.png") == {"folder-music.png", "folder-music-copy.png",
                                                         "folder-gitlab.png"}
        assert "1 of" in caplog.text and "thumbnails could not be read" in caplog.text
