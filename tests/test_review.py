"""Review decisions, keep rules, soft delete, purge and the per-image record, through the facade and
the CLI, on both catalog backends (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from core.access import Actor, Role
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import Forbidden, InvalidRequest, NotFound, Unavailable
from core.settings import Settings
from core.storage.blobs import BlobStore, original_key, thumbnail_key
from core.synthetic import encode, photo

# One picture stored four ways, each the winner of one keep rule (sizes checked in the fixture).
COPIES = {
    "earliest": ("first.jpg", (320, 240), "JPEG", 90, "camera"),  # arrives in an earlier batch
    "resolution": ("large.jpg", (800, 600), "JPEG", 60, "camera"),
    "size": ("heavy.png", (400, 300), "PNG", None, "camera"),
    "source": ("archived.jpg", (560, 420), "JPEG", 80, "archive"),
}


def _copy(size: tuple[int, int], fmt: str, quality: int | None) -> bytes:
    return encode(photo(1, (320, 240)).resize(size, Image.LANCZOS), fmt, **({"quality": quality} if quality else {}))


@pytest.fixture(params=["sqlite", "postgresql"])
def reviewed(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[Collection]:
    """20 distinct photos, the four copies of photo 1 and a pair of photo 2 (two clusters)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    settings = Settings(data_dir=tmp_path / "data", model_pretrained="none", database_url=url)
    with Collection.open(settings, embedder=embedder) as collection:
        name, size, fmt, quality, source = COPIES["earliest"]
        collection.ingest_uploads([(name, _copy(size, fmt, quality))], source=source)
        collection.ingest_uploads([(f"other{i:02d}.jpg", encode(photo(100 + i))) for i in range(20)], source="camera")
        for rule in ("resolution", "size", "source"):
            name, size, fmt, quality, source = COPIES[rule]
            collection.ingest_uploads([(name, _copy(size, fmt, quality))], source=source)
        collection.ingest_uploads([("pair-a.jpg", encode(photo(2))),
                                   ("pair-b.jpg", encode(photo(2).resize((480, 360)), quality=70))], source="camera")
        yield collection


def _id(collection: Collection, name: str) -> str:
    frame = collection.backends.catalog.ready_frame()
    return str(frame.loc[frame["file_name"] == name, "id"].item())


def _ids(collection: Collection) -> dict[str, str]:
    return {rule: _id(collection, spec[0]) for rule, spec in COPIES.items()}


def _cluster_of(plan_or_view: object, image_id: str) -> object:
    for cluster in plan_or_view.clusters:  # type: ignore[attr-defined]
        if image_id == cluster.keep or image_id in cluster.remove or image_id in cluster.unchanged:
            return cluster
    raise AssertionError(f"{image_id} is in no cluster")


def test_decisions_are_set_cleared_logged_and_undone(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    alice = reviewed.acting_as(Actor("alice", Role.ANALYST))
    first = alice.decide([ids["size"], ids["source"]], "remove")
    assert first.images == 2
    decisions = reviewed.decisions()
    assert {i: (d.decision, d.decided_by) for i, d in decisions.items()} == {
        ids["size"]: ("remove", "alice"), ids["source"]: ("remove", "alice")}
    bob = reviewed.acting_as(Actor("bob", Role.ANALYST))
    second = bob.decide([ids["size"]], "keep")
    bob.decide([ids["source"]], None)
    assert {i: d.decision for i, d in reviewed.decisions().items()} == {ids["size"]: "keep"}
    history = reviewed.decision_history(ids["size"])
    assert [(e.decision, e.decided_by, e.previous) for e in history] == [("remove", "alice", None),
                                                                        ("keep", "bob", "remove")]
    undone = reviewed.undo_decisions(second.undo_token)  # size back to alice's remove, who and when too
    assert (undone.images, undone.skipped) == (1, 0)
    restored = reviewed.decisions()[ids["size"]]
    assert (restored.decision, restored.decided_by, restored.decided_at) == ("remove", "alice",
                                                                             decisions[ids["size"]].decided_at)
    undo_first = reviewed.undo_decisions(first.undo_token)  # both were decided again since: left alone
    assert (undo_first.images, undo_first.skipped) == (0, 2)
    redo = reviewed.undo_decisions(undone.undo_token)  # undoing an undo redoes
    assert (redo.images, reviewed.decisions()[ids["size"]].decided_by) == (1, "bob")

    before, decided = reviewed.decision_history(), reviewed.decisions()
    with pytest.raises(NotFound):
        reviewed.decide([ids["size"], "00000000-0000-0000-0000-000000000000"], "keep")
    with pytest.raises(InvalidRequest) as bad:
        reviewed.decide([ids["size"]], "delete")
    assert bad.value.field == "decision"
    with pytest.raises(NotFound):
        reviewed.undo_decisions("no-such-token")
    assert reviewed.decision_history() == before and reviewed.decisions() == decided  # nothing half-done


@pytest.mark.parametrize("rule", sorted(COPIES))
def test_each_keep_rule_keeps_its_image_and_removes_the_other_copies(reviewed: Collection, rule: str) -> None:
    ids = _ids(reviewed)
    sizes = {r: reviewed.images([i])[0].size_bytes for r, i in ids.items()}
    assert max(sizes, key=sizes.__getitem__) == "size"  # the fixture's premise
    plan = reviewed.preview_keep_rule(rule, source="archive" if rule == "source" else None)
    cluster = _cluster_of(plan, ids[rule])
    assert cluster.keep == ids[rule]
    assert set(cluster.remove) == set(ids.values()) - {ids[rule]}
    pair = _cluster_of(plan, _id(reviewed, "pair-a.jpg"))
    assert {pair.keep, *pair.remove} == {_id(reviewed, "pair-a.jpg"), _id(reviewed, "pair-b.jpg")}
    assert reviewed.decisions() == {}  # a preview writes nothing


def test_keep_rule_preview_apply_undo_and_the_decision_column(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    reviewed.decide([ids["size"]], "keep")  # an analyst's own choice, which the rule respects
    plan = reviewed.preview_keep_rule("resolution")
    cluster = _cluster_of(plan, ids["size"])
    assert (cluster.keep, cluster.unchanged) == (ids["size"], (ids["size"],))
    assert set(cluster.remove) == {ids["resolution"], ids["earliest"], ids["source"]}
    assert _cluster_of(reviewed.preview_keep_rule("resolution", override=True), ids["size"]).keep == ids["resolution"]

    applied = reviewed.apply_keep_rule(plan)
    assert applied.images == len(plan.changes())
    to_remove = {d.image_id for d in reviewed.duplicates_to_remove()}
    assert to_remove == {i for i, d in plan.changes().items() if d == "remove"}
    assert {ids["resolution"], ids["earliest"], ids["source"]} <= to_remove and ids["size"] not in to_remove
    rows = {r["image_id"]: r["decision"] for r in reviewed.duplicates().rows()}
    assert rows[ids["size"]] == "keep" and rows[ids["resolution"]] == "remove"

    reviewed.undo_decisions(applied.undo_token)
    assert {i: d.decision for i, d in reviewed.decisions().items()} == {ids["size"]: "keep"}
    assert reviewed.duplicates_to_remove() == []


def test_a_plan_overtaken_by_another_decision_is_refused_whole(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    plan = reviewed.preview_keep_rule("size")
    reviewed.decide([ids["earliest"]], "keep")
    with pytest.raises(InvalidRequest) as refused:
        reviewed.apply_keep_rule(plan)
    assert refused.value.field == "plan"
    assert {i: d.decision for i, d in reviewed.decisions().items()} == {ids["earliest"]: "keep"}


def test_soft_delete_leaves_search_duplicates_anomalies_and_map_and_restore_brings_it_back(
    reviewed: Collection,
) -> None:
    ids = _ids(reviewed)
    gone = ids["resolution"]

    def everywhere() -> dict[str, bool]:
        hits = reviewed.search(image_id=ids["earliest"], k=30).results
        return {
            "search": gone in {h.image_id for h in hits},
            "duplicates": gone in {m.image.image_id for g in reviewed.duplicates().groups for m in g.members},
            "anomalies": gone in {r.image.image_id for r in reviewed.anomalies().rows},
            "map": gone in reviewed.projection().image_id,
        }

    assert all(everywhere().values())
    version = reviewed.status().version
    assert reviewed.remove_images([gone]) == 1
    assert reviewed.remove_images([gone]) == 0  # already removed
    assert not any(everywhere().values())
    assert len(reviewed.search(image_id=ids["earliest"], k=5).results) == 5  # k stays full
    status = reviewed.status()
    assert status.version > version and (status.removed, status.consistent) == (1, True)
    assert reviewed.removed_images() == [gone]
    detail = reviewed.image_detail(gone)
    assert not detail.review.visible and detail.review.removed_by == reviewed.actor.name
    assert detail.anomaly_score is None
    # the same bytes uploaded again stay removed (an analyst decided), reported as already there
    report = reviewed.ingest_uploads([("again.jpg", _copy(*COPIES["resolution"][1:4]))])
    assert report.already_present == 1 and not everywhere()["duplicates"]

    with pytest.raises(NotFound):
        reviewed.restore_images([gone, "00000000-0000-0000-0000-000000000000"])
    assert reviewed.status().removed == 1
    assert reviewed.restore_images([gone]) == 1
    assert all(everywhere().values())
    assert reviewed.status().removed == 0 and reviewed.status().consistent


class FailingBlobs(BlobStore):
    """A real blob store that fails on its ``fail_on``-th delete (a network drop mid-purge)."""

    def __init__(self, inner: BlobStore, fail_on: int) -> None:
        self.inner, self.fail_on, self.deletes = inner, fail_on, 0
        self.name = inner.name

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.inner.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.deletes += 1
        if self.deletes == self.fail_on:
            raise OSError("connection reset by peer")
        self.inner.delete(key)

    def count(self, prefix: str) -> int:
        return self.inner.count(prefix)

    def keys(self, prefix: str) -> list[str]:
        return self.inner.keys(prefix)


@pytest.mark.parametrize("fail_on", [1, 2, 3])
def test_a_purge_failing_mid_way_hides_the_images_and_repair_finishes_it(reviewed: Collection, fail_on: int) -> None:
    ids = _ids(reviewed)
    doomed = [ids["resolution"], ids["source"]]
    reviewed.label(doomed[0], "anomaly")
    reviewed.decide(doomed, "remove")
    reviewed.remove_images(doomed[:1])  # one soft-deleted first, one still visible: both may be purged
    before = reviewed.status()
    real = reviewed.backends.blobs
    reviewed.backends.blobs = FailingBlobs(real, fail_on)
    try:
        with pytest.raises(Unavailable):
            reviewed.purge_images(doomed)
    finally:
        reviewed.backends.blobs = real
    status = reviewed.status()
    assert status.images == before.images - 1 and status.purging == 2 and not status.consistent
    for image_id in doomed:  # invisible, never a visible image without its blob
        with pytest.raises(NotFound):
            reviewed.image_detail(image_id)
        assert image_id not in {h.image_id for h in reviewed.search(image_id=ids["earliest"], k=30).results}
    report = reviewed.repair()
    assert report.purges_finished == 2
    after = reviewed.status()
    assert after.consistent and (after.images, after.removed, after.purging) == (before.images - 1, 0, 0)
    assert after.vectors == after.blobs == before.blobs - 2
    assert not any(real.exists(key(i)) for i in doomed for key in (original_key, thumbnail_key))
    assert set(reviewed.decisions()) & set(doomed) == set() and not reviewed.reviews()


def test_purge_deletes_blob_vector_and_row_for_good(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    assert reviewed.purge_images([ids["size"]]) == 1
    assert reviewed.status().consistent and ids["size"] not in reviewed.backends.catalog.states_by_sha(
        [reviewed.backends.catalog.get([ids["earliest"]])[0].sha256])
    with pytest.raises(NotFound):
        reviewed.purge_images([ids["size"]])
    report = reviewed.ingest_uploads([("heavy-again.png", _copy(*COPIES["size"][1:4]))])
    assert report.ingested == 1  # gone for good: the same bytes are a new arrival


def test_roles_guard_every_review_call(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    viewer = reviewed.acting_as(Actor("vera", Role.VIEWER))
    analyst = reviewed.acting_as(Actor("ana", Role.ANALYST))
    plan = viewer.preview_keep_rule("size")  # reading is a viewer's right
    token = analyst.decide([ids["size"]], "keep").undo_token
    calls = {
        "decide": lambda who: who.decide([ids["size"]], "remove"),
        "apply": lambda who: who.apply_keep_rule(plan),
        "undo": lambda who: who.undo_decisions(token),
        "label": lambda who: who.label(ids["size"], "normal"),
        "remove": lambda who: who.remove_images([ids["size"]]),
        "restore": lambda who: who.restore_images([ids["size"]]),
        "purge": lambda who: who.purge_images([ids["size"]]),
    }
    for name, call in calls.items():
        with pytest.raises(Forbidden):
            call(viewer)
        if name in ("remove", "restore", "purge"):  # deleting images is an admin's
            with pytest.raises(Forbidden):
                call(analyst)
    assert {i: d.decided_by for i, d in reviewed.decisions().items()} == {ids["size"]: "ana"}
    assert reviewed.status().removed == 0 and viewer.image_detail(ids["size"]).review.decision == "keep"


def test_image_detail_gathers_one_images_record(reviewed: Collection) -> None:
    ids = _ids(reviewed)
    image = ids["earliest"]
    reviewed.ingest_uploads([("renamed.jpg", _copy(*COPIES["earliest"][1:4]))], source="scanner")
    reviewed.acting_as(Actor("lee", Role.ANALYST)).label(image, "normal")
    reviewed.decide([image], "keep")
    detail = reviewed.image_detail(image)
    assert [(n.file_name, n.source) for n in detail.names] == [("first.jpg", "camera"), ("renamed.jpg", "scanner")]
    record = reviewed.images([image])[0]
    assert (detail.width, detail.height, detail.format, detail.size_bytes) == (320, 240, "JPEG", record.size_bytes)
    assert (detail.sha256, detail.phash, detail.dhash) == (record.sha256, record.phash, record.dhash)
    assert (detail.review.label, detail.review.labelled_by, detail.review.decision) == ("normal", "lee", "keep")
    row = next(r for r in reviewed.anomalies().rows if r.image.image_id == image)
    assert (detail.anomaly_score, detail.anomaly_rank, detail.anomaly_percentile) == (row.score, row.rank, row.percentile)
    assert (row.labelled_by, row.labelled_at) == ("lee", detail.review.labelled_at)
    assert set(detail.cluster_members) == set(ids.values()) and detail.cluster_id is not None
    assert len(detail.neighbours) == 10 and detail.neighbours[0].image_id in set(ids.values())
    assert [n.cosine for n in detail.neighbours] == sorted((n.cosine for n in detail.neighbours), reverse=True)
    assert detail.map_x is None  # the map is never built for a detail view
    view = reviewed.projection()
    at = view.image_id.index(image)
    assert (reviewed.image_detail(image).map_x, reviewed.image_detail(image).map_y) == (view.x[at], view.y[at])
    with pytest.raises(NotFound):
        reviewed.image_detail("00000000-0000-0000-0000-000000000000")


def test_cli_decides_runs_keep_rules_and_exports_reviews(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    with Collection.open(Settings.from_env(), embedder=embedder) as collection:
        collection.ingest_uploads([(f"other{i:02d}.jpg", encode(photo(100 + i))) for i in range(12)])
        collection.ingest_uploads([(spec[0], _copy(*spec[1:4])) for spec in COPIES.values()])
        ids = _ids(collection)
        collection.label(ids["size"], "anomaly")
    assert cli_main(["decide", ids["earliest"], "keep"]) == 0
    assert cli_main(["keep-rule", "size"]) == 0  # a preview: nothing written
    assert cli_main(["keep-rule", "size", "--apply"]) == 0  # earliest keeps its keep, the rest go
    dups, reviews, anomalies = tmp_path / "dups.csv", tmp_path / "reviews.csv", tmp_path / "anomalies.csv"
    assert cli_main(["duplicates", "--csv", str(dups)]) == 0
    assert cli_main(["export-reviews", "--csv", str(reviews)]) == 0
    assert cli_main(["anomalies", "--csv", str(anomalies)]) == 0
    decided = {r["image_id"]: r["decision"] for r in csv.DictReader(dups.open())}
    assert decided[ids["earliest"]] == "keep" and decided[ids["resolution"]] == "remove"
    exported = {r["image_id"]: r for r in csv.DictReader(reviews.open())}
    assert exported[ids["size"]]["label"] == "anomaly" and exported[ids["size"]]["decision"] == "remove"
    assert exported[ids["earliest"]]["decided_at"].endswith("Z")
    labelled = next(r for r in csv.DictReader(anomalies.open()) if r["image_id"] == ids["size"])
    assert labelled["labelled_by"] and labelled["labelled_at"].endswith("Z")
    assert cli_main(["decide", ids["resolution"], "clear"]) == 0
    assert cli_main(["remove", "--decided"]) == 0 and cli_main(["purge", "--removed"]) == 0
    with Collection.open(Settings.from_env(), embedder=embedder) as collection:
        assert collection.status().consistent and collection.status().removed == 0
        visible = {r.id for r in collection.images(list(ids.values()))}
        assert visible == {ids["earliest"], ids["resolution"]}  # kept, and cleared before the purge
