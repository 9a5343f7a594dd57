"""The Streamlit pages render what the facade returns (AppTest drives them in-process)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core import SIMILARITY_FLOOR, Collection, Forbidden, Settings
from core.embedding import Embedder
from core.synthetic import encode, photo

APP = Path(__file__).resolve().parents[1] / "app"
PAGES = {
    "home": "Home.py",
    "upload": "pages/1_Upload.py",
    "search": "pages/2_Search.py",
    "duplicates": "pages/3_Duplicates.py",
    "anomalies": "pages/4_Anomalies.py",
}
PHOTOS = 24


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")
    monkeypatch.syspath_prepend(str(APP))
    st.cache_resource.clear()
    yield tmp_path / "data"
    st.cache_resource.clear()
    for module in [m for m in sys.modules if m == "shared" or m.split(".")[0] == "widgets"]:
        sys.modules.pop(module)


@pytest.fixture
def seeded(app_env: Path, embedder: Embedder) -> Path:
    """24 distinct photos, an exact copy of one (same pixels, other bytes) and a brightened, edited one."""
    first = encode(photo(0))
    brighter = Image.open(io.BytesIO(encode(photo(1)))).point(lambda v: min(255, v + 12))
    brighter.paste((255, 255, 255), (20, 20, 60, 60))  # an edit: the pixels agree less than fully
    uploads = [(f"photo_{i:02d}.jpg", encode(photo(i))) for i in range(PHOTOS)]
    uploads += [("copy_of_00.png", encode(Image.open(io.BytesIO(first)), "PNG")), ("brighter_01.jpg", encode(brighter))]
    with Collection.open(Settings(data_dir=app_env, model_pretrained="none"), embedder=embedder) as collection:
        collection.ingest_uploads(uploads, source="seed")
    return app_env


@pytest.fixture
def served_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the pages hand to the browser (downloads, images), by file name."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self: MemoryMediaFileStorage, data: str | bytes, mimetype: str, kind: object,
               filename: str | None = None) -> str:
        if filename and isinstance(data, bytes):
            files[filename] = data
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return files


def signed_in(name: str, user: str = "admin") -> AppTest:
    """A page in a session where ``user`` has signed in (the first run creates the admin)."""
    at = AppTest.from_file(str(APP / PAGES[name]), default_timeout=120)
    at.session_state["authentication_status"] = True
    at.session_state["username"] = user
    at.session_state["name"] = user
    return at


def run_page(name: str, user: str = "admin") -> AppTest:
    at = signed_in(name, user).run()
    assert not at.exception, at.exception
    return at


def opened(data_dir: Path) -> Collection:
    """The app's collection, opened beside it as the local admin (what a second process sees)."""
    return Collection.open(Settings(data_dir=data_dir, model_pretrained="none"))


def metric(at: AppTest, label: str) -> int:
    return int(next(m.value for m in at.metric if m.label == label))


def csv_rows(files: dict[str, bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[name].decode())))


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_on_an_empty_collection_says_what_to_do(app_env: Path, page: str) -> None:
    at = run_page(page)
    said = " ".join(i.value for i in at.info)
    assert ("The collection is empty" in said) or ("Drop one or more images" in said)
    assert any("Random weights" in w.value for w in at.warning)


def test_upload_states_the_products_own_size_limit(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_MB", "7")
    at = run_page("upload")
    assert any("Up to 7 MB per file" in c.value for c in at.caption)
    assert at.button[0].disabled  # nothing to ingest yet


def test_home_shows_counts_review_and_the_map_coloured_by_decision(seeded: Path) -> None:
    with opened(seeded) as collection:
        kept = collection.anomalies().rows[0].image.image_id
        collection.decide([kept], "keep")
    at = run_page("home")
    assert metric(at, "Images") == PHOTOS + 2 and metric(at, "Not labelled") == PHOTOS + 2
    assert "Qdrant Edge" in str(at.table[0].value)
    assert len(at.get("plotly_chart")) == 1
    at.button_group(key="home-map-colour").set_value("decision").run()
    assert not at.exception
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    points = {t["name"]: [c[0] for c in t["customdata"]] for t in traces}
    assert points["keep"] == [kept] and len(points["none"]) == PHOTOS + 1


def test_duplicates_slider_changes_the_clusters_shown_and_the_csv(seeded: Path,
                                                                  served_files: dict[str, bytes]) -> None:
    at = run_page("duplicates")
    strict = metric(at, "Images")
    rows = csv_rows(served_files, "duplicates.csv")
    assert {"photo_00.jpg", "copy_of_00.png"} <= {r["file_name"] for r in rows}
    assert len(rows) == strict
    at.slider(key="dup-pixels").set_value(0.5)
    at.slider(key="dup-similarity").set_value(SIMILARITY_FLOOR).run()  # the embedding proposes pairs too
    assert not at.exception
    assert metric(at, "Images") > strict
    assert len(csv_rows(served_files, "duplicates.csv")) == metric(at, "Images")
    loose = metric(at, "Images")
    at.slider(key="dup-local").set_value(3.0).run()  # a lenient close look can only add pairs
    assert not at.exception and metric(at, "Images") >= loose
    lenient = metric(at, "Images")
    # fine details that must agree perfectly can only remove pairs (these photos hold too few to compare)
    at.slider(key="dup-detail").set_value(1.0).run()
    assert not at.exception and metric(at, "Images") <= lenient


def test_anomaly_label_persists_and_the_csv_holds_the_selection(seeded: Path,
                                                                 served_files: dict[str, bytes]) -> None:
    at = run_page("anomalies")
    at.number_input(key="anom-top").set_value(5).run()
    rows = csv_rows(served_files, "anomalies.csv")
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["link"].endswith(f"?image={r['image_id']}") for r in rows)
    first = rows[0]["image_id"]
    at.button_group(key=f"anom-grid-{first}-label").set_value("anomaly").run()
    assert not at.exception
    again = run_page("anomalies")  # a new session: the label came from the catalog
    again.number_input(key="anom-top").set_value(5).run()
    labelled = csv_rows(served_files, "anomalies.csv")
    assert [r["label"] for r in labelled] == ["anomaly", "", "", "", ""]
    with Collection.open(Settings(data_dir=seeded, model_pretrained="none")) as collection:
        assert collection.labels() == {first: "anomaly"}


def test_search_more_like_this_shows_scored_neighbours(seeded: Path) -> None:
    at = signed_in("search")
    with Collection.open(Settings(data_dir=seeded, model_pretrained="none")) as collection:
        some = collection.anomalies().rows[0].image.image_id
    at.session_state["search_like"] = some
    at.run()
    assert not at.exception
    assert any("similar to:" in c.value for c in at.caption)
    scores = [c.value for c in at.caption if c.value.startswith("score ")]
    assert len(scores) == 16  # one page of the grid, not all 24 hits
    assert at.slider(key="search-k").value == 24


def test_file_names_are_shown_as_text_not_markup(app_env: Path, embedder: Embedder) -> None:
    name = "**bold** <b>x</b>.jpg"
    uploads = [(name, encode(photo(0)))] + [(f"p{i}.jpg", encode(photo(i))) for i in range(1, 3)]
    with Collection.open(Settings(data_dir=app_env, model_pretrained="none"), embedder=embedder) as collection:
        collection.ingest_uploads(uploads)
    at = run_page("anomalies")
    assert name in [t.value for t in at.text]
    assert not any(name in m.value for m in at.markdown)


def test_home_opens_without_loading_unavailable_weights(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import embedding

    monkeypatch.setenv("MODEL_PRETRAINED", "laion2b_s34b_b79k")
    monkeypatch.setattr(embedding, "_cached_pretrained_file", lambda cfg: None)
    monkeypatch.setattr(embedding, "_reachable", lambda host, port=443, timeout_s=3.0: False)
    at = run_page("home")
    assert any("laion2b_s34b_b79k" in c.value for c in at.caption)


def test_a_link_with_an_image_id_opens_its_detail_with_history_and_neighbours(seeded: Path) -> None:
    with opened(seeded) as collection:
        target = collection.anomalies().rows[0].image
        collection.decide([target.image_id], "remove")
        collection.decide([target.image_id], "keep")
        collection.label(target.image_id, "anomaly")
        detail = collection.image_detail(target.image_id)
    at = signed_in("home")
    at.query_params["image"] = target.image_id
    at.run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert target.file_name in texts
    tables = [d.value for d in at.dataframe]
    fields = dict(zip(tables[0]["field"], tables[0]["value"], strict=True))
    assert (fields["id"], fields["sha256"], fields["pHash"]) == (target.image_id, detail.sha256, detail.phash)
    assert fields["anomaly score"].endswith(f"rank {detail.anomaly_rank}, percentile {detail.anomaly_percentile:.1f}")
    history = next(t for t in tables if "before" in t.columns)
    assert list(history["decision"]) == ["keep", "remove"] and list(history["before"]) == ["remove", ""]
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"Decision: keep (by {detail.review.decided_by}") for c in captions)
    assert any(c.startswith(f"Label: anomaly (by {detail.review.labelled_by}") for c in captions)
    shown = [t for t in texts if t.endswith(detail.neighbours[0].file_name)]
    assert shown == [f"{detail.neighbours[0].similarity:.3f}  {detail.neighbours[0].file_name}"]
    assert "image" not in at.query_params  # a rerun does not open it again


def test_pair_inspector_shows_both_images_and_the_evidence(seeded: Path) -> None:
    at = run_page("duplicates")
    at.button(key="dup-inspect-1-1").click().run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert {"photo_00.jpg", "copy_of_00.png"} <= set(texts)
    assert any("same_pixels" in t for t in texts)


def test_a_viewer_sees_no_upload_label_or_decision_controls_and_core_refuses_them(seeded: Path) -> None:
    with opened(seeded) as collection:
        collection.add_user("vera", "viewer", "a long enough password")
        some = collection.anomalies().rows[0].image.image_id
        removed = collection.duplicates().groups[0].members[1].image.image_id
        collection.decide([removed], "remove")
        vera = collection.as_user("vera")
        for refused in (lambda: vera.label(some, "anomaly"), lambda: vera.decide([removed], "keep"),
                        lambda: vera.apply_keep_rule(vera.preview_keep_rule("size"))):
            with pytest.raises(Forbidden):
                refused()
    pages = {name: run_page(name, "vera") for name in ("upload", "anomalies", "duplicates")}
    assert all(any("vera" in m.value and "viewer" in m.value for m in at.sidebar.markdown) for at in pages.values())
    assert not pages["upload"].get("file_uploader")
    assert any("not upload" in i.value for i in pages["upload"].info)
    assert [g.key for g in pages["anomalies"].button_group] == ["anom-view"]  # no label switches
    duplicates = pages["duplicates"]
    assert [g.key for g in duplicates.button_group] == ["dup-example-signal"]  # no decision switches
    assert not [b.key for b in duplicates.button if (b.key or "").startswith(("dup-cluster-", "dup-rule-", "dup-undo"))]
    assert any(c.value.endswith("· remove") for c in duplicates.caption)  # the decision, read-only


@pytest.mark.parametrize("page", list(PAGES))
def test_signed_out_every_page_shows_only_the_login_form(seeded: Path, page: str) -> None:
    at = AppTest.from_file(str(APP / PAGES[page]), default_timeout=120).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert not at.metric and not at.get("plotly_chart") and not at.get("file_uploader") and not at.text


def test_signing_in_with_the_first_admins_password_opens_the_page(seeded: Path) -> None:
    at = AppTest.from_file(str(APP / PAGES["home"]), default_timeout=120).run()
    password = (seeded / "initial-admin-password").read_text().strip()
    at.text_input[0].input("admin")
    at.text_input[1].input("not the password")
    at.button[0].click().run()
    assert any("Wrong user name or password" in e.value for e in at.error) and not at.metric
    at.text_input[1].input(password)
    at.button[0].click().run()
    assert not at.exception
    assert metric(at, "Images") == PHOTOS + 2
    assert any("admin" in m.value for m in at.sidebar.markdown)


def test_a_duplicate_decision_made_on_the_page_persists_and_undo_reverts_the_latest_change(
        seeded: Path, served_files: dict[str, bytes]) -> None:
    with opened(seeded) as collection:
        members = [m.image for m in collection.duplicates().groups[0].members]
    representative, other, other_name = members[0].image_id, members[1].image_id, members[1].file_name
    at = run_page("duplicates")
    assert metric(at, "Decided") == 0
    at.button_group(key=f"dup-decision-{other}").set_value("remove").run()
    assert not at.exception
    with opened(seeded) as collection:
        decision = collection.decisions()[other]
    assert (decision.decision, decision.decided_by) == ("remove", "admin")

    again = run_page("duplicates")  # a new session reads it from the catalog
    assert again.button_group(key=f"dup-decision-{other}").value == "remove"
    assert {r["image_id"]: r["decision"] for r in csv_rows(served_files, "duplicates.csv")}[other] == "remove"
    clusters = metric(again, "Clusters")
    again.button(key="dup-cluster-1-Keep ★, remove the rest").click().run()
    assert metric(again, "Decided") == 1
    assert again.button_group(key=f"dup-decision-{representative}").value == "keep"
    again.toggle(key="dup-undecided-only").set_value(True).run()
    assert (metric(again, "Clusters"), metric(again, "Decided")) == (clusters - 1, 0)
    undo = again.button(key="dup-undo-button")
    assert undo.label == "Undo: keep ★ in cluster 1"
    undo.click().run()
    assert not again.exception
    with opened(seeded) as collection:
        assert {i: d.decision for i, d in collection.decisions().items()} == {other: "remove"}
    assert metric(again, "Clusters") == clusters and again.button(key="dup-undo-button").disabled
    assert other_name in [t.value for t in again.text]
    again.button(key="dup-remove-marked").click().run()  # admins remove what is marked remove
    assert not again.exception
    with opened(seeded) as collection:
        assert collection.removed_images() == [other]
    assert other_name not in [t.value for t in again.text]
    home = run_page("home")  # the removed image is counted apart, so the stores' counts add up
    assert metric(home, "Removed") == 1 and metric(home, "Images") + 1 == metric(home, "Vectors")


def test_a_keep_rule_preview_lists_exactly_what_apply_then_writes(seeded: Path) -> None:
    at = run_page("duplicates")
    at.slider(key="dup-pixels").set_value(0.5)
    at.slider(key="dup-similarity").set_value(SIMILARITY_FLOOR)  # the embedding proposes clusters too
    at.selectbox(key="dup-rule-name").set_value("size").run()
    marked = []
    for _ in range(2):
        at.button(key="dup-next").click().run()
        marked += [m.value for m in at.markdown if m.value.startswith("▶ ")]
    assert [m.split(":")[0] for m in marked] == ["▶ **Cluster 1**", "▶ **Cluster 2**"]
    at.button(key="dup-rule-preview").click().run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "decision" in d.value.columns)
    planned = dict(zip(table["image_id"], table["decision"], strict=True))
    assert len(planned) == metric(at, "Images") and list(planned.values()).count("keep") == metric(at, "Clusters")
    with opened(seeded) as collection:
        assert collection.decisions() == {}  # a preview writes nothing
    at.button(key="dup-rule-apply").click().run()
    with opened(seeded) as collection:
        assert {i: d.decision for i, d in collection.decisions().items()} == planned
    assert metric(at, "Decided") == metric(at, "Clusters")
    assert at.button(key="dup-undo-button").label == "Undo: keep rule 'largest file'"
