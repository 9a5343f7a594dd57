"""Ingest end to end on the embedded default: counts, idempotence, consistency after failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from core import analysis_inputs
from core.access import Actor, Role
from core.cli import main as cli_main
from core.collection import Collection
from core.embedding import Embedder
from core.errors import Unavailable
from core.settings import Settings
from core.storage.vectors import VectorFilter
from core.synthetic import encode, photo

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_folder_recursively_reports_every_file(collection: Collection, image_folder: Callable[..., Path]) -> None:
    folder = image_folder(12)
    (folder / "notes.png").write_text("not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "copy_of_first.jpg").write_bytes((folder / "img_0000.jpg").read_bytes())

    report = collection.ingest([folder], source="batch-1")

    assert report.ingested == 12
    assert report.already_present == 1
    assert {Path(o.file).name: o.reason_code for o in report.rejected} == {"notes.png": "not_an_image", "empty.jpg": "empty"}
    status = collection.status()
    assert (status.images, status.vectors, status.blobs, status.thumbnails, status.pending) == (12, 12, 12, 12, 0)
    assert status.consistent


def test_reingest_same_bytes_is_noop(collection: Collection, image_folder: Callable[..., Path]) -> None:
    folder = image_folder(6)
    collection.ingest([folder], source="first")
    version = collection.status().version

    again = collection.ingest([folder, folder / "img_0000.jpg"], source="second")

    assert again.ingested == 0
    assert again.already_present == 6  # the repeated path is ingested once
    assert collection.status().images == 6
    assert collection.status().version == version
    image_id = again.outcomes[0].image_id
    assert image_id is not None
    assert {n.source for n in collection.names(image_id)} == {"first", "second"}
    vector = collection.backends.vectors.fetch([image_id])[0]
    hits = collection.backends.vectors.search(vector, 1, VectorFilter(sources=("second",)))
    assert [h.id for h in hits] == [image_id]  # search can filter on the new source label


def test_same_bytes_twice_in_one_batch_are_stored_once(collection: Collection) -> None:
    data = encode(photo(1))
    report = collection.ingest_uploads([("a.jpg", data), ("b.jpg", data), ("c.jpg", encode(photo(2)))])
    assert [o.status for o in report.outcomes] == ["ingested", "already_present", "ingested"]
    assert report.outcomes[0].image_id == report.outcomes[1].image_id
    assert collection.status().images == 2
    assert {n.file_name for n in collection.names(report.outcomes[0].image_id)} == {"a.jpg", "b.jpg"}


def test_duplicate_of_a_rejected_file_is_rejected_too(collection: Collection) -> None:
    truncated = encode(photo(3))[:500]
    report = collection.ingest_uploads([("a.jpg", truncated), ("b.jpg", truncated)])
    assert [o.status for o in report.outcomes] == ["rejected", "rejected"]
    assert collection.status().consistent


def test_stored_image_keeps_bytes_thumbnail_and_metadata(collection: Collection) -> None:
    data = encode(photo(4, size=(640, 480)))
    report = collection.acting_as(Actor("ana", Role.ANALYST)).ingest_uploads([("x.jpg", data)], source="s")
    image_id = report.outcomes[0].image_id
    [record] = collection.images([image_id])
    assert collection.original(image_id) == data
    assert collection.thumbnail(image_id)[:2] == b"\xff\xd8"
    assert (record.width, record.height, record.format, record.size_bytes) == (640, 480, "JPEG", len(data))
    assert (record.source, record.uploader, record.file_name) == ("s", "ana", "x.jpg")
    vector = collection.backends.vectors.fetch([image_id])[0]
    assert vector.shape == (512,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_vector_store_failure_rolls_back_batch_and_rerun_completes(
    collection: Collection, image_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = image_folder(20)  # batches of 8: the second batch fails
    real_upsert = collection.backends.vectors.upsert
    calls = {"n": 0}

    def failing_upsert(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("vector store went away")
        real_upsert(*args, **kwargs)

    monkeypatch.setattr(collection.backends.vectors, "upsert", failing_upsert)
    report = collection.ingest([folder])

    assert report.error is not None and "vector store went away" in report.error
    assert report.ingested == 8
    assert len(report.failed) == 12  # the failed batch and everything after it
    status = collection.status()
    assert (status.images, status.vectors, status.blobs, status.thumbnails, status.pending) == (8, 8, 8, 8, 0)

    monkeypatch.setattr(collection.backends.vectors, "upsert", real_upsert)
    rerun = collection.ingest([folder])
    assert (rerun.ingested, rerun.already_present) == (12, 8)
    assert collection.status().consistent and collection.status().images == 20


def test_a_batch_is_stored_while_the_next_is_embedded(
    collection: Collection, image_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder does not wait for the stores: the first batch's vectors are written only once the
    second batch is being embedded (a pipeline that stored before embedding on would wait in vain)."""
    folder = image_folder(16)  # two batches of 8
    second_batch_embedding = threading.Event()
    embedded: list[int] = []
    overlapped: list[bool] = []
    real_embed, real_upsert = collection.embedder.embed_tensors, collection.backends.vectors.upsert

    def embed(batch: torch.Tensor) -> np.ndarray:
        embedded.append(len(batch))
        if len(embedded) == 2:
            second_batch_embedding.set()
        return real_embed(batch)

    def upsert(*args: object, **kwargs: object) -> None:
        if not overlapped:
            overlapped.append(second_batch_embedding.wait(timeout=120))
        real_upsert(*args, **kwargs)

    monkeypatch.setattr(collection.embedder, "embed_tensors", embed)
    monkeypatch.setattr(collection.backends.vectors, "upsert", upsert)
    report = collection.ingest([folder])
    assert overlapped == [True] and embedded == [8, 8]
    assert report.ingested == 16 and collection.status().consistent


def test_a_failing_arrival_check_stores_the_images_without_a_verdict(
    collection: Collection, image_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collection.ingest([image_folder(3)])

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("analysis bug")

    monkeypatch.setattr("core.analysis.check_arrival", broken)
    report = collection.ingest_uploads([(f"new{i}.jpg", encode(photo(500 + i))) for i in range(2)])
    assert report.ingested == 2 and all(o.nearest is None for o in report.outcomes)
    assert collection.status().consistent and collection.status().images == 5
    assert any(r.getMessage() == "arrival_check_failed" and "analysis bug" in str(r.fields) for r in caplog.records)


def test_process_killed_mid_ingest_leaves_nothing_visible_and_rerun_completes(
    settings: Settings, image_folder: Callable[..., Path]
) -> None:
    folder = image_folder(20)
    script = textwrap.dedent(
        f"""
        import os
        from core.collection import Collection
        from core.settings import Settings
        from core.storage.catalog import Catalog
        settings = Settings(data_dir={str(settings.data_dir)!r}, model_pretrained="none", embed_batch_size=8,
                            precision={settings.precision!r})
        real = Catalog.mark_ready
        calls = []
        def mark_ready_then_die(self, ids):
            calls.append(1)
            if len(calls) == 2:
                os._exit(9)  # killed after blobs and vectors were written, before the commit point
            return real(self, ids)
        Catalog.mark_ready = mark_ready_then_die
        Collection.open(settings).ingest([{str(folder)!r}])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == 9, done.stderr.decode()[-2000:]

    with Collection.open(settings) as collection:
        status = collection.status()
        assert status.images == 8 and status.pending == 8 and not status.consistent
        ready_ids = set(collection.backends.catalog.ready_frame()["id"])
        assert len(ready_ids) == 8
        rerun = collection.ingest([folder])
        assert (rerun.ingested, rerun.already_present) == (12, 8)
        status = collection.status()
        assert status.consistent and status.images == 20


def test_repair_removes_what_an_interrupted_ingest_left(collection: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.ingest import Ingestor

    monkeypatch.setattr(Ingestor, "_rollback", lambda self, ids: None)  # as if the process had died
    monkeypatch.setattr(collection.backends.catalog, "mark_ready", lambda ids: (_ for _ in ()).throw(OSError("disk")))
    collection.ingest_uploads([("a.jpg", encode(photo(7)))])
    assert collection.status().pending == 1 and collection.status().vectors == 1
    assert collection.repair().removed_pending == 1
    status = collection.status()
    assert (status.pending, status.vectors, status.blobs, status.thumbnails) == (0, 0, 0, 0)


def test_cli_ingest_and_status_print_one_json_object(
    settings: Settings, image_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = image_folder(4)
    (folder / "bad.png").write_text("text")
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MODEL_PRETRAINED", "none")

    assert cli_main(["ingest", str(folder), "--source", "cli", "--json"]) == 0
    ingest = json.loads(capsys.readouterr().out)
    assert ingest["ingested"] == 4 and ingest["already_present"] == 0
    assert [Path(r["file"]).name for r in ingest["rejected"]] == ["bad.png"]
    assert ingest["rejected"][0]["reason"]

    assert cli_main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["images"], status["vectors"], status["blobs"]) == (4, 4, 4)
    assert status["backends"]["vectors"].startswith("Qdrant Edge")
    assert status["model"]["random_weights"] is True


def test_cli_reports_configuration_errors_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBED_BATCH_SIZE", "lots")
    assert cli_main(["status"]) == 2
    err = capsys.readouterr().err
    assert "EMBED_BATCH_SIZE" in err and "Traceback" not in err


def test_cli_ingest_and_app_process_share_the_embedded_shard(settings: Settings, image_folder: Callable[..., Path]) -> None:
    """An analyst runs `visual-anomaly ingest` while another process (the app) keeps using the store."""
    folder = image_folder(40)
    env = os.environ | {"DATA_DIR": str(settings.data_dir), "MODEL_PRETRAINED": "none", "EMBED_BATCH_SIZE": "4"}
    with Collection.open(settings) as app_side:
        app_side.ingest_uploads([("seed.jpg", encode(photo(999)))])
        seen_counts = []
        cli = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "ingest", str(folder), "--json"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 240
        while cli.poll() is None and time.monotonic() < deadline:
            seen_counts.append(app_side.backends.vectors.count())  # the app keeps answering
            time.sleep(0.2)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, err.decode()[-2000:]
        assert json.loads(out)["ingested"] == 40
        assert app_side.status().images == 41 and app_side.status().consistent
        assert len(seen_counts) >= 3 and seen_counts == sorted(seen_counts)


def test_unreadable_file_is_rejected_and_the_rest_go_on(collection: Collection) -> None:
    from core.ingest import IngestItem, Ingestor

    def vanished(_max_bytes: int) -> bytes:
        raise FileNotFoundError("gone.jpg was removed before it could be read")

    items = [IngestItem("gone.jpg", vanished), IngestItem("ok.jpg", lambda _max_bytes: encode(photo(8)))]
    report = Ingestor(collection.settings, collection.backends, lambda: collection.embedder).run(items, source="s", uploader="u")
    assert [o.status for o in report.outcomes] == ["rejected", "ingested"]
    assert report.outcomes[0].reason_code == "unreadable" and "removed" in (report.outcomes[0].reason or "")


def test_snapshot_matches_catalog_and_refreshes_only_new_vectors(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection.ingest_uploads([(f"a{i}.jpg", encode(photo(i))) for i in range(5)])
    first = collection.snapshot()
    assert first.vectors.shape == (5, 512)
    for row, image_id in enumerate(first.ids):
        assert np.allclose(first.vectors[row], collection.backends.vectors.fetch([image_id])[0])
    assert collection.snapshot() is first  # same version: nothing reloaded

    fetched: list[list[str]] = []
    real_fetch = collection.backends.vectors.fetch
    monkeypatch.setattr(collection.backends.vectors, "fetch", lambda ids: fetched.append(list(ids)) or real_fetch(ids))
    collection.ingest_uploads([("b.jpg", encode(photo(50)))])
    second = collection.snapshot()
    assert len(second.ids) == 6 and second.ids[:5] == first.ids
    assert [len(f) for f in fetched] == [1]  # only the new image's vector was fetched


def test_a_first_snapshot_fetches_what_the_scroll_missed_and_names_a_vector_that_is_gone(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first snapshot starts scrolling the vector store before it reads the catalog, so an image
    that became visible behind the scroll is fetched by id; one the store does not have at all is a
    storage error naming it, not a zero vector."""
    collection.ingest_uploads([(f"a{i}.jpg", encode(photo(i))) for i in range(4)])
    ids = collection.backends.catalog.ready_frame()["id"].tolist()
    stored = collection.backends.vectors.fetch(ids)
    real_iter_all = collection.backends.vectors.iter_all

    def behind(batch: int = 10_000):  # the scroll never yields the first image
        for page_ids, page in real_iter_all(batch=batch):
            keep = [i != ids[0] for i in page_ids]
            yield [i for i in page_ids if i != ids[0]], page[keep]

    monkeypatch.setattr(collection.backends.vectors, "iter_all", behind)
    snap = collection.snapshot()
    assert np.allclose(snap.vectors[snap.ids.index(ids[0])], stored[0])

    collection.backends.vectors.delete([ids[1]])  # behind the facade's back: the catalog still shows it
    collection._shared.snapshot = None
    with pytest.raises(Unavailable, match=ids[1]):
        collection.snapshot()


def test_a_large_collection_holds_half_precision_vectors_with_the_same_results(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From HALF_PRECISION_MIN_IMAGES images the snapshot holds float16 vectors (1 GB instead of 2 at
    a million); what an analyst sees, the clusters and the anomaly ranking, stays float32's."""
    uploads = [(f"p{i}.jpg", encode(photo(i))) for i in range(30)]
    uploads += [(f"p{i}-copy.jpg", encode(photo(i), quality=40)) for i in range(0, 30, 5)]
    seen = {}
    for half_from in (10**9, 1):
        monkeypatch.setattr(analysis_inputs, "HALF_PRECISION_MIN_IMAGES", half_from)
        settings = Settings(data_dir=tmp_path / str(half_from), model_pretrained="none", precision="fp32")
        with Collection.open(settings, embedder=embedder) as opened:
            opened.ingest_uploads(uploads[:-1])
            first = opened.snapshot()
            opened.ingest_uploads(uploads[-1:])  # the incremental refresh keeps the dtype
            snap = opened.snapshot()
            stored = opened.backends.vectors.fetch(snap.ids)
            clusters = {frozenset(m.image.file_name for m in g.members) for g in opened.duplicates().groups}
            ranking = [r.image.file_name for r in opened.anomalies().rows]
            seen[half_from] = (first.vectors.dtype, snap.vectors.dtype, clusters, ranking)
        assert np.abs(snap.vectors.astype(np.float32) - stored).max() < 1e-3
    assert seen[10**9][:2] == (np.float32, np.float32) and seen[1][:2] == (np.float16, np.float16)
    assert len(seen[1][2]) == 6 and seen[1][2] == seen[10**9][2]
    assert seen[1][3][:10] == seen[10**9][3][:10]


def test_repeats_across_batches_keep_the_first_occurrence_in_input_order(collection: Collection) -> None:
    """Workers finish in any order; the report must still name the first file as the ingested one."""
    uploads = []
    for i in range(12):  # 24 files over several batches of 8, each image twice in a row
        data = encode(photo(200 + i))
        uploads += [(f"{i}-first.jpg", data), (f"{i}-again.jpg", data)]
    report = collection.ingest_uploads(uploads)
    assert [o.status for o in report.outcomes] == ["ingested", "already_present"] * 12
    assert collection.status().consistent and collection.status().images == 12


def test_status_reuses_blob_counts_only_while_the_catalog_is_unchanged(collection: Collection) -> None:
    from core.storage.blobs import thumbnail_key

    collection.ingest_uploads([(f"p{i}.jpg", encode(photo(i))) for i in range(3)])
    assert collection.status(blob_counts_max_age_s=600).consistent
    lost = collection.backends.catalog.ready_frame()["id"].iloc[0]
    collection.backends.blobs.delete(thumbnail_key(lost))  # behind the facade's back: no catalog change
    assert collection.status(blob_counts_max_age_s=600).thumbnails == 3  # the recent count
    assert collection.status().thumbnails == 2  # counted afresh
    collection.backends.blobs.put(thumbnail_key(lost), collection.original(lost), "image/jpeg")
    assert collection.status(blob_counts_max_age_s=600).thumbnails == 2  # still the recent count
    collection.ingest_uploads([("p3.jpg", encode(photo(3)))])  # a new catalog state counts again
    status = collection.status(blob_counts_max_age_s=600)
    assert (status.images, status.blobs, status.thumbnails) == (4, 4, 4) and status.consistent


def test_arrival_check_reads_the_catalog_in_pages_and_reuses_the_windows_it_made(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ingest judges against every visible image without the whole catalog as one frame, and
    makes crop windows only for images the previous ingest had not seen (here: pages of 2 rows)."""
    from core import analysis_service

    originals = [photo(i) for i in range(6)]
    collection.ingest_uploads([(f"p{i}.png", encode(img, "PNG")) for i, img in enumerate(originals)])
    catalog = collection.backends.catalog
    monkeypatch.setattr(catalog, "ready_frame", lambda: pytest.fail("the whole catalog was read as one frame"))
    monkeypatch.setattr(catalog, "ready_pages", lambda *_, real=catalog.ready_pages: real(rows=2))
    made: list[int] = []
    real_windows = analysis_service.window_hashes
    monkeypatch.setattr(analysis_service, "window_hashes", lambda pixels: made.append(len(pixels)) or real_windows(pixels))
    first = collection.ingest_uploads([("copy0.jpg", encode(originals[0], quality=70))])
    second = collection.ingest_uploads([("copy1.jpg", encode(originals[1], quality=70))])
    assert sum(made) == 6 + 1  # all six at first (none seen yet), then only the copy stored since
    names = {item.id: item.file_name for item in collection.list_images(limit=10).items}
    for report, original in ((first, "p0.png"), (second, "p1.png")):
        nearest = report.outcomes[0].nearest
        assert nearest is not None and nearest.verdict == "near" and names[nearest.image_id] == original
