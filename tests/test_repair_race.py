"""Repair and ingest at the same time, and two ingests at once: real processes, real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.collection import Collection
from core.embedding import Embedder
from core.images import image_id, prepare_image
from core.ingest import PENDING_LEASE_S, lease_is_live
from core.search import SearchFilter
from core.settings import Settings
from core.storage.blobs import original_key, thumbnail_key
from core.storage.catalog import ImageName, ImageRecord, Lease
from core.synthetic import encode, photo

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 16  # four batches of 4: the ingest is still running when the repairs start


def _cli_ingest(settings: Settings, folder: Path, source: str) -> subprocess.Popen[bytes]:
    """``visual-anomaly ingest`` in its own process, in small batches so it runs for a while."""
    env = os.environ | {"DATA_DIR": str(settings.data_dir), "MODEL_PRETRAINED": "none", "EMBED_BATCH_SIZE": "4",
                        "PYTHONPATH": str(ROOT), "LOCK_TIMEOUT_S": "120"}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.Popen([sys.executable, "-m", "core.cli", "ingest", str(folder), "--source", source, "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finished(process: subprocess.Popen[bytes]) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()[-3000:]
    return json.loads(out)


def test_repair_while_an_ingest_runs_leaves_its_rows_and_every_image_becomes_visible(
    settings: Settings, embedder: Embedder, image_folder: Callable[..., Path]
) -> None:
    folder = image_folder(IMAGES)
    with Collection.open(replace(settings, lock_timeout_s=120), embedder=embedder) as collection:
        collection.status()  # the catalog exists before the ingest starts
        ingest = _cli_ingest(settings, folder, "racing")
        repairs = []
        while ingest.poll() is None:
            repairs.append(collection.repair())
            time.sleep(0.25)  # each repair takes the shard from the ingest for a moment
        report = _finished(ingest)
        assert report["ingested"] == IMAGES and report["error"] is None
        assert len(repairs) >= 2
        assert any(r.left_to_ingests for r in repairs)  # repair saw the ingest's rows and left them
        assert sum(r.removed_pending for r in repairs) == 0
        status = collection.status()
        assert (status.images, status.vectors, status.blobs, status.pending) == (IMAGES,) * 3 + (0,)
        assert status.consistent


def _record(seed: int) -> tuple[ImageRecord, bytes]:
    data = encode(photo(seed))
    image = prepare_image(data, max_bytes=1 << 30, max_pixels=1 << 30)
    record = ImageRecord(id=image_id(image.sha256), sha256=image.sha256, pixel_sha256=image.pixel_sha256,
                         phash=image.phash, phash_mirror=image.phash_mirror, dhash=image.dhash, width=image.width,
                         height=image.height, format=image.format, size_bytes=image.size_bytes,
                         file_name=f"p{seed}.jpg", source="s", uploader="u", created_at=time.time())
    return record, data


def test_repair_removes_dead_and_expired_leases_keeps_live_ones_and_sweeps_orphans(collection: Collection) -> None:
    catalog, blobs, vectors = collection.backends.catalog, collection.backends.blobs, collection.backends.vectors
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = os.uname().nodename
    now = time.time()
    leases = {
        "dead": Lease(f"{host}:{dead_pid}:x", now),
        "expired": Lease(f"{host}:{os.getpid()}:x", now - PENDING_LEASE_S - 1),
        "live": Lease(f"{host}:{os.getpid()}:x", now),
        "elsewhere": Lease(f"another-host:{dead_pid}:x", now),  # another host's pid says nothing here
    }
    records = {}
    for seed, (name, lease) in enumerate(leases.items()):
        record, data = _record(seed)
        records[name] = record
        catalog.add_pending([record], [ImageName(record.id, record.file_name, "s", "u", now)], lease)
        blobs.put(original_key(record.id), data, "image/jpeg")
    orphan = image_id("ab" * 32)
    vectors.upsert([orphan], np.ones((1, vectors.dim), dtype=np.float32), [{"sources": ["x"]}])
    blobs.put(thumbnail_key(orphan), b"jpeg", "image/jpeg")

    report = collection.repair()
    assert (report.removed_pending, report.left_to_ingests, report.orphans_removed) == (2, 2, 1)
    assert set(catalog.pending_ids()) == {records["live"].id, records["elsewhere"].id}
    assert not blobs.exists(original_key(records["dead"].id)) and blobs.exists(original_key(records["live"].id))
    assert vectors.count() == 0 and not blobs.exists(thumbnail_key(orphan))
    assert lease_is_live(leases["live"], now) and not lease_is_live(None, now)


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_two_ingests_with_different_sources_find_every_image_under_both(
    catalog: str, settings: Settings, embedder: Embedder, image_folder: Callable[..., Path],
    request: pytest.FixtureRequest,
) -> None:
    if catalog == "postgresql":
        settings = replace(settings, database_url=request.getfixturevalue("postgres_url"))
    folder = image_folder(24)
    with Collection.open(replace(settings, lock_timeout_s=120), embedder=embedder) as collection:
        collection.status()
        first, second = _cli_ingest(settings, folder, "alpha"), _cli_ingest(settings, folder, "beta")
        reports = [_finished(first), _finished(second)]
        assert sum(r["ingested"] for r in reports) >= 24 and all(r["error"] is None for r in reports)
        status = collection.status()
        assert (status.images, status.vectors) == (24, 24) and status.consistent
        for source in ("alpha", "beta"):
            found = collection.search(text="a photo", k=100, filters=SearchFilter(sources=(source,)))
            assert len(found.results) == 24, source
        for image in collection.snapshot().ids:
            assert {n.source for n in collection.names(image)} == {"alpha", "beta"}
