"""One contract for every storage backend, like qdrant-client's congruence tests: the same calls run
against each implementation of an interface, and the answers must be equal.

- vectors: the Qdrant Edge shard (default) and :class:`QdrantVectorStore` over qdrant-client in local
  mode, which stands in for a Qdrant server (there is none on these machines);
- catalog: SQLite (default) and the local PostgreSQL;
- blobs: files (default) and S3 on moto's server;
- cache: in-process (default) and the local Redis.

Each ``*_transcript`` function makes the calls and records what a caller would see; the congruence
tests compare the transcripts across backends, and the parametrised tests check the transcript (or a
single behaviour) against the answer worked out independently.
"""

from __future__ import annotations

import hashlib
import math
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import sqlalchemy as sa
from qdrant_client import QdrantClient

from core.image_properties import ImageProperties
from core.storage.blobs import BlobStore
from core.storage.blobs_files import FileBlobStore
from core.storage.blobs_s3 import S3BlobStore, minio_client
from core.storage.cache import Cache
from core.storage.cache_memory import MemoryCache
from core.storage.cache_redis import RedisCache
from core.storage.catalog import MIGRATIONS, Catalog, ImageName, ImageRecord, _add_review_tables, sqlite_url
from core.storage.catalog_users import UserRow, UserTable, add_users_table
from core.storage.errors import StorageError
from core.storage.vectors import VectorFilter, VectorStore
from core.storage.vectors_edge import EdgeVectorStore
from core.storage.vectors_qdrant import QdrantVectorStore, collection_config

pytest_plugins = ("fixtures_servers",)
pytestmark = pytest.mark.filterwarnings("ignore:.*(local Qdrant|Local mode).*:UserWarning")

DIM = 32
POINTS = 240


# vectors ----------------------------------------------------------------------------------------
def _open_vectors(kind: str, tmp_path: Path) -> VectorStore:
    if kind == "edge":
        return EdgeVectorStore(tmp_path / f"vectors-{uuid.uuid4().hex[:6]}", DIM, lock_timeout_s=10)
    return QdrantVectorStore(QdrantClient(location=":memory:"), "images", DIM, where="Qdrant local mode")


@pytest.fixture(params=["edge", "qdrant"])
def vector_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    store = _open_vectors(request.param, tmp_path)
    try:
        yield store
    finally:
        store.close()


def _vector_data() -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(POINTS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(POINTS)]
    payloads = [
        {
            "sources": ["batch-a"] if i % 3 == 0 else (["batch-b", "batch-c"] if i % 3 == 1 else ["batch-c"]),
            "uploaders": ["ana" if i % 2 else "bo"],
            "format": "WEBP" if i % 5 == 0 else ("PNG" if i % 2 else "JPEG"),
            "size_bytes": 1_000 + 37 * i,
            "width": 320,
            "height": 240,
            "created_at": 1_700_000_000.0 + 60.0 * i,
        }
        for i in range(POINTS)
    ]
    return ids, vectors, payloads


FILTERS: dict[str, VectorFilter] = {
    "none": VectorFilter(),
    "one source": VectorFilter(sources=("batch-a",)),
    "any of two sources": VectorFilter(sources=("batch-a", "batch-b")),
    "uploader and format": VectorFilter(uploaders=("ana",), formats=("PNG", "WEBP")),
    "time window": VectorFilter(created_from=1_700_000_000.0 + 600, created_to=1_700_000_000.0 + 3_000),
    "open-ended time": VectorFilter(created_from=1_700_000_000.0 + 12_000),
    "size range": VectorFilter(min_size_bytes=2_000, max_size_bytes=5_000),
    "max size only": VectorFilter(max_size_bytes=1_500),
    "everything": VectorFilter(
        sources=("batch-c",), uploaders=("bo",), formats=("JPEG", "WEBP"), created_from=1_700_000_000.0,
        min_size_bytes=1_100,
    ),
    "nothing matches": VectorFilter(sources=("no-such-batch",)),
}


def _matches(payload: dict, flt: VectorFilter) -> bool:
    """The filter semantics, written out: empty fields do not restrict; lists match on any value."""
    return (
        (not flt.sources or bool(set(flt.sources) & set(payload["sources"])))
        and (not flt.uploaders or bool(set(flt.uploaders) & set(payload["uploaders"])))
        and (not flt.formats or payload["format"] in flt.formats)
        and (flt.created_from is None or payload["created_at"] >= flt.created_from)
        and (flt.created_to is None or payload["created_at"] <= flt.created_to)
        and (flt.min_size_bytes is None or payload["size_bytes"] >= flt.min_size_bytes)
        and (flt.max_size_bytes is None or payload["size_bytes"] <= flt.max_size_bytes)
    )


def vector_transcript(store: VectorStore) -> list[tuple[str, Any]]:
    """Every vector store call a caller makes, and what it answered."""
    ids, vectors, payloads = _vector_data()
    seen: list[tuple[str, Any]] = []

    def hits(name: str, found: list) -> None:
        seen.append((name, [(h.id, h.score) for h in found]))

    for start in range(0, POINTS, 100):
        store.upsert(ids[start : start + 100], vectors[start : start + 100], payloads[start : start + 100])
    seen.append(("count", store.count()))
    queries = vectors[[0, 5, 77]] * 0.8 + vectors[[1, 9, 200]] * 0.2
    for name, flt in FILTERS.items():
        for q, query in enumerate(queries):
            hits(f"search {name} #{q}", store.search(query, 10, flt))
    hits("exact", store.search(queries[0], 10, exact=True))
    hits("exclude ids", store.search(vectors[0], 5, exclude_ids=ids[:3]))
    hits("exclude with filter", store.search(vectors[3], 5, FILTERS["one source"], exclude_ids=[ids[3]]))
    hits("k above matches", store.search(vectors[0], 5, VectorFilter(max_size_bytes=1_100)))
    seen.append(("fetch order", store.fetch([ids[9], ids[2], ids[9]]).tolist()))
    store.set_payload(ids[:4], [{"sources": ["batch-a", "late"]}] * 4)
    hits("after set_payload", store.search(vectors[0], 10, VectorFilter(sources=("late",))))
    hits("other fields kept", store.search(vectors[0], 10, VectorFilter(sources=("late",), formats=("JPEG",))))
    store.delete(ids[:10])
    store.delete(ids[:2])  # deleting again is not an error
    seen.append(("count after delete", store.count()))
    hits("search after delete", store.search(vectors[0], 3))
    store.upsert(ids[10:11], -vectors[10:11], payloads[10:11])  # overwrite in place
    seen.append(("overwritten", store.fetch([ids[10]]).tolist()))
    every: dict[str, list[float]] = {}
    for batch_ids, batch in store.iter_all(batch=64):
        every.update(zip(batch_ids, batch.tolist(), strict=True))
    seen.append(("iter_all", sorted(every.items())))
    return seen


def test_vector_backends_agree_on_every_call(tmp_path: Path) -> None:
    edge, qdrant = _open_vectors("edge", tmp_path), _open_vectors("qdrant", tmp_path)
    try:
        expected, got = vector_transcript(edge), vector_transcript(qdrant)
    finally:
        edge.close()
        qdrant.close()
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, want), (_, have) in zip(expected, got, strict=True):
        assert congruent(have, want), name


def congruent(a: Any, b: Any, tol: float = 1e-5) -> bool:
    """Equal, except that floats may differ by ``tol`` (float32 in one engine, float64 in another)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, abs_tol=tol)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(congruent(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def test_vector_search_matches_brute_force(vector_store: VectorStore) -> None:
    ids, vectors, payloads = _vector_data()
    vector_store.upsert(ids, vectors, payloads)
    query = vectors[11] * 0.6 + vectors[12] * 0.4
    for name, flt in FILTERS.items():
        allowed = np.array([_matches(p, flt) for p in payloads])
        scores = np.where(allowed, vectors @ (query / np.linalg.norm(query)), -np.inf)
        order = [i for i in np.argsort(-scores, kind="stable")[:10] if allowed[i]]
        found = vector_store.search(query, 10, flt)
        assert [h.id for h in found] == [ids[i] for i in order], name
        np.testing.assert_allclose([h.score for h in found], scores[order], atol=1e-5, err_msg=name)


def test_vector_fetch_names_the_first_missing_id(vector_store: VectorStore) -> None:
    ids, vectors, payloads = _vector_data()
    vector_store.upsert(ids[:3], vectors[:3], payloads[:3])
    missing = str(uuid.uuid4())
    with pytest.raises(KeyError, match=missing):
        vector_store.fetch([ids[0], missing, str(uuid.uuid4())])


def test_vector_upsert_rejects_wrong_shapes(vector_store: VectorStore) -> None:
    ids, vectors, payloads = _vector_data()
    with pytest.raises(ValueError, match="Expected 2 vectors"):
        vector_store.upsert(ids[:2], vectors[:3], payloads[:2])


def test_qdrant_collection_is_created_with_the_seed_index_settings_and_payload_indexes() -> None:
    client = QdrantClient(location=":memory:")
    QdrantVectorStore(client, "fresh", 512)
    config = client.get_collection("fresh").config
    params = config.params.vectors["image"]
    assert (params.size, params.distance.value) == (512, "Cosine")
    hnsw = config.hnsw_config
    assert (hnsw.m, hnsw.ef_construct, hnsw.full_scan_threshold) == (16, 100, 10_000)
    # local mode keeps no optimizer settings: check the request the server gets
    assert collection_config(512)["optimizers_config"].memmap_threshold == 20_000
    QdrantVectorStore(client, "fresh", 512)  # reopening an existing collection is fine


def test_qdrant_refuses_a_collection_built_for_another_model() -> None:
    client = QdrantClient(location=":memory:")
    QdrantVectorStore(client, "images", 512)
    with pytest.raises(StorageError, match=r"size 512.*768-d vectors"):
        QdrantVectorStore(client, "images", 768)


def test_qdrant_neighbour_matrix_matches_exact_neighbours() -> None:
    ids, vectors, payloads = _vector_data()
    store = QdrantVectorStore(QdrantClient(location=":memory:"), "images", DIM)
    store.upsert(ids[:60], vectors[:60], payloads[:60])
    matrix = store.search_matrix_offsets(4)
    assert sorted(matrix.ids) == sorted(ids[:60])
    position = {i: n for n, i in enumerate(ids)}
    for row in range(len(matrix.ids)):
        me = position[matrix.ids[row]]
        found = [matrix.ids[c] for c in matrix.cols[matrix.rows == row]]
        exact = [ids[i] for i in np.argsort(-(vectors[:60] @ vectors[me])) if i != me][:4]
        assert found == exact


# catalog ----------------------------------------------------------------------------------------
def _open_catalog(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Catalog:
    if kind == "sqlite":
        return Catalog(sqlite_url(tmp_path / f"catalog-{uuid.uuid4().hex[:6]}.sqlite3"))
    return Catalog(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    opened = _open_catalog(request.param, tmp_path, request)
    try:
        yield opened
    finally:
        opened.close()


def _record(n: int, source: str = "batch-a") -> ImageRecord:
    sha = hashlib.sha256(f"image {n}".encode()).hexdigest()
    return ImageRecord(
        id=str(uuid.UUID(sha[:32])), sha256=sha, pixel_sha256=f"{n % 3:064x}", phash=f"{n:016x}",
        phash_mirror=f"{n + 1:016x}", dhash=f"{n * 7:016x}", width=100 + n, height=80, format="JPEG",
        size_bytes=5_000_000_000 + n, file_name=f"img {n}.jpg", source=source, uploader="ana",
        created_at=1_700_000_000.5 + n, sketch=bytes([n]) * 768 if n % 2 == 0 else None,
    )


def _properties(n: int) -> ImageProperties:
    return ImageProperties(width=100 + n, height=80, aspect=(100 + n) / 80, pixels=(100 + n) * 80,
                           bytes_per_pixel=0.25 + n, brightness=0.5, dark_level=0.125, bright_level=0.875,
                           contrast=0.2, colourfulness=0.1 * n, entropy=6.5, sharpness=1e-3 * n,
                           dominant_share=0.75, transparent_share=0.0625 * n, distinct_colours=40 + n)


def catalog_transcript(catalog: Catalog) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = [("schema", catalog.schema_version()), ("version", catalog.version())]
    records = [_record(n, "batch-a" if n < 4 else "batch-b") for n in range(6)]
    names = [ImageName(r.id, r.file_name, r.source, r.uploader, r.created_at) for r in records]
    catalog.add_pending(records, names, properties={r.id: _properties(n) for n, r in enumerate(records[:3])})
    catalog.add_pending(records[:2], [])  # existing rows are left as they are
    seen.append(("counts pending", catalog.counts()))
    seen.append(("hidden while pending", catalog.get([r.id for r in records])))
    seen.append(("pending ids", sorted(catalog.pending_ids())))
    seen.append(("version after ready", catalog.mark_ready([r.id for r in records[:5]])))
    seen.append(("without sketch", sorted(catalog.ids_without_sketch())))
    catalog.set_sketches({records[1].id: bytes(range(256)) * 3})
    seen.append(("version after sketches", catalog.version()))
    seen.append(("without sketch after", sorted(catalog.ids_without_sketch())))
    seen.append(("states", sorted(catalog.states_by_sha([r.sha256 for r in records] + ["f" * 64]).items())))
    seen.append(("get in given order", catalog.get([records[3].id, "missing", records[0].id])))
    seen.append(("get pending too", catalog.get([records[5].id], ready_only=False)))
    catalog.add_names([ImageName(records[0].id, "copy é.jpg", "batch-z", "bo", 1_800_000_000.0)])
    catalog.add_names([ImageName(records[0].id, "copy é.jpg", "batch-z", "bo", 1_900_000_000.0)])  # known: kept
    seen.append(("names", catalog.names(records[0].id)))
    seen.append(("sources", catalog.sources()))
    catalog.remove_pending([r.id for r in records])  # only the pending one goes
    seen.append(("counts after remove", catalog.counts()))
    seen.append(("names of removed", catalog.names(records[5].id)))
    catalog.set_label(records[1].id, "anomaly", "ana")
    catalog.set_label(records[2].id, "normal", "bo")
    catalog.set_label(records[2].id, None, "bo")
    seen.append(("labels", sorted((k, v.label, v.labelled_by) for k, v in catalog.labels().items())))
    try:
        catalog.set_label(records[1].id, "weird", "ana")
        seen.append(("unknown label", "accepted"))
    except ValueError as exc:
        seen.append(("unknown label", type(exc).__name__))
    seen.append(("unknown image", catalog.set_label(str(uuid.uuid4()), "normal", "ana")))
    seen.append(("pending image", catalog.set_label(records[5].id, "normal", "ana")))
    seen += users_transcript(catalog.users)
    first = catalog.set_decisions({records[0].id: "keep", records[1].id: "remove"}, "ana")
    catalog.set_decisions({records[0].id: None}, "bo")
    seen.append(("decisions", sorted((d.image_id, d.decision, d.decided_by) for d in catalog.decisions().values())))
    seen.append(("undo", catalog.undo_decisions(first, "cy")[1:]))  # 0 cleared since: skipped
    seen.append(("history", [(e.image_id, e.decision, e.decided_by, e.previous) for e in catalog.decision_history()]))
    seen.append(("removed", catalog.set_removed([records[1].id, records[2].id], True, "ad")))
    seen.append(("removed again", catalog.set_removed([records[1].id], True, "ad")))
    seen.append(("restored", catalog.set_removed([records[2].id], False, "ad")))
    seen.append(("removals", sorted((r.image_id, r.removed_by) for r in catalog.removals().values())))
    seen.append(("counts removed", catalog.counts()))
    catalog.mark_purging([records[1].id, records[4].id])
    seen.append(("purging", sorted(catalog.ids_in_state("purging"))))
    catalog.delete_purging([records[1].id, records[4].id])
    seen.append(("counts purged", catalog.counts()))
    seen.append(("decisions purged", catalog.decisions()))
    seen.append(("sources of", catalog.sources_of([records[0].id])))
    catalog.set_meta("indexed_count", "5")
    catalog.set_meta("indexed_count", "6")
    seen.append(("meta", (catalog.get_meta("indexed_count"), catalog.get_meta("absent"))))
    seen.append(("without properties", sorted(catalog.ids_without_properties())))
    catalog.set_properties({records[3].id: _properties(9), records[0].id: _properties(8)})
    seen.append(("properties", catalog.properties([records[0].id, records[2].id, records[3].id, "missing"])))
    frame = catalog.ready_frame()
    seen.append(("frame columns", list(frame.columns)))
    # NaN (an image without properties) never equals itself: compared as None
    seen.append(("frame rows", frame.astype(object).where(frame.notna(), None).to_dict("records")))
    seen.append(("arrival times", sorted(catalog.arrival_times().tolist())))
    seen.append(("pages of 2", [page["id"].tolist() for page in catalog.ready_pages(rows=2)]))
    seen.append(("pages of 3", [page["id"].tolist() for page in catalog.ready_pages(rows=3)]))
    seen.append(("version", catalog.version()))
    return seen


def users_transcript(table: UserTable) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = [("no users", table.count())]
    row = UserRow("ana", "analyst", "$2b$12$" + "a" * 53, 1_700_000_000.25, False)
    seen.append(("add", table.add(row)))
    seen.append(("add taken name", table.add(replace(row, role="admin"))))
    table.add(replace(row, name="bo", role="viewer"))
    seen.append(("disable", table.update("bo", disabled=True)))
    seen.append(("update unknown", table.update("cy", disabled=True)))
    seen.append(("users", table.all()))
    seen.append(("get unknown", table.get("cy")))
    seen.append(("remove", (table.remove("ana"), table.remove("ana"))))
    seen.append(("after remove", (table.count(), table.get("bo"))))
    return seen


def test_catalog_backends_agree_on_every_call(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sqlite_catalog = _open_catalog("sqlite", tmp_path, request)
    pg_catalog = _open_catalog("postgresql", tmp_path, request)
    try:
        assert pg_catalog.dialect == "postgresql"
        assert catalog_transcript(pg_catalog) == catalog_transcript(sqlite_catalog)
    finally:
        sqlite_catalog.close()
        pg_catalog.close()


def test_catalog_transcript_is_what_the_protocol_promises(catalog: Catalog) -> None:
    seen = dict(catalog_transcript(catalog))
    assert seen["counts pending"] == {"ready": 0, "pending": 6, "removed": 0, "purging": 0}
    assert seen["hidden while pending"] == []
    assert seen["version after ready"] == 1
    assert seen["without sketch"] == sorted([_record(1).id, _record(3).id])  # ready ones only, not 5 (pending)
    assert seen["version after sketches"] == 2 and seen["without sketch after"] == [_record(3).id]
    assert [r.file_name for r in seen["get in given order"]] == ["img 3.jpg", "img 0.jpg"]
    assert [n.added_at for n in seen["names"]] == [1_700_000_000.5, 1_800_000_000.0]
    assert seen["sources"] == ["batch-a", "batch-b", "batch-z"]
    assert seen["counts after remove"] == {"ready": 5, "pending": 0, "removed": 0, "purging": 0}
    assert seen["names of removed"] == []
    assert seen["labels"] == [(_record(1).id, "anomaly", "ana")]
    assert (seen["unknown label"], seen["unknown image"], seen["pending image"]) == ("ValueError", False, False)
    assert seen["meta"] == ("6", None)
    assert seen["decisions"] == [(_record(1).id, "remove", "ana")] and seen["undo"] == (1, 1)
    assert seen["history"][-1] == (_record(1).id, None, "cy", "remove")  # the undo cleared what "ana" set
    assert (seen["removed"], seen["removed again"], seen["restored"]) == ([_record(1).id, _record(2).id], [],
                                                                         [_record(2).id])
    assert seen["removals"] == [(_record(1).id, "ad")]
    assert seen["counts removed"] == {"ready": 4, "pending": 0, "removed": 1, "purging": 0}
    assert seen["counts purged"] == {"ready": 3, "pending": 0, "removed": 0, "purging": 0}
    assert seen["decisions purged"] == {} and seen["sources of"] == {_record(0).id: ["batch-a", "batch-z"]}
    assert (seen["no users"], seen["add"], seen["add taken name"], seen["update unknown"]) == (0, True, False, False)
    assert [(u.name, u.role, u.disabled) for u in seen["users"]] == [("ana", "analyst", False), ("bo", "viewer", True)]
    assert seen["remove"] == (True, False) and seen["after remove"][0] == 1 and seen["after remove"][1].disabled
    assert [row["size_bytes"] for row in seen["frame rows"]] == [5_000_000_000 + n for n in (0, 2, 3)]  # 1, 4 purged
    assert [row["sketch"] for row in seen["frame rows"]][:2] == [bytes([0]) * 768, bytes([2]) * 768]
    in_order = [row["id"] for row in seen["frame rows"]]
    assert seen["pages of 2"] == [in_order[:2], in_order[2:]] and seen["pages of 3"] == [in_order]


def test_ready_pages_cross_equal_arrival_times_keeping_every_row_once(catalog: Catalog) -> None:
    records = [replace(_record(n), created_at=1_700_000_000.5 + n // 4) for n in range(9)]  # ties across pages
    catalog.add_pending(records, [])
    catalog.mark_ready([r.id for r in records])
    pages = list(catalog.ready_pages(rows=3))
    expected = sorted(records, key=lambda r: (r.created_at, r.id))
    assert [len(page) for page in pages] == [3, 3, 3]
    assert [i for page in pages for i in page["id"]] == [r.id for r in expected]
    assert catalog.ready_frame()["id"].tolist() == [r.id for r in expected]


def test_ready_pages_of_an_empty_catalog_are_one_empty_page_with_the_columns(catalog: Catalog) -> None:
    pages = list(catalog.ready_pages(rows=3))
    assert len(pages) == 1 and len(pages[0]) == 0
    assert list(pages[0].columns) == list(catalog.ready_frame().columns)


def test_catalog_reopens_at_the_current_schema(catalog: Catalog) -> None:
    again = Catalog(catalog.engine.url.render_as_string(hide_password=False))
    try:
        assert again.schema_version() == catalog.schema_version() >= 1
    finally:
        again.close()


def test_a_version_1_catalog_gains_the_sketch_column_and_keeps_its_rows(catalog: Catalog) -> None:
    record = _record(1)
    catalog.add_pending([record], [])
    catalog.mark_ready([record.id])
    with catalog.engine.begin() as conn:  # back to the v1 schema, as a catalog written before sketches
        conn.execute(sa.text("ALTER TABLE images DROP COLUMN sketch"))
        conn.execute(sa.text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    again = Catalog(catalog.engine.url.render_as_string(hide_password=False))
    try:
        assert again.schema_version() == len(MIGRATIONS)
        assert again.ids_without_sketch() == [record.id]
        assert again.get([record.id])[0].file_name == record.file_name
    finally:
        again.close()


def test_a_version_2_catalog_gains_the_users_table_and_keeps_its_rows(catalog: Catalog) -> None:
    record = _record(1)
    catalog.add_pending([record], [])
    catalog.mark_ready([record.id])
    with catalog.engine.begin() as conn:  # back to a catalog written before users existed
        conn.execute(sa.text("DROP TABLE users"))
        conn.execute(sa.text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    again = Catalog(catalog.engine.url.render_as_string(hide_password=False))
    try:
        assert again.schema_version() == len(MIGRATIONS) and again.users.count() == 0
        assert again.get([record.id])[0].file_name == record.file_name
        with again.engine.begin() as conn:  # idempotent: the lead may renumber it at a merge
            add_users_table(conn)
        assert again.users.add(UserRow("ana", "viewer", "x", 1.0, False))
    finally:
        again.close()


def test_a_version_3_catalog_gains_the_review_tables_and_keeps_its_rows(catalog: Catalog) -> None:
    record = _record(1)
    catalog.add_pending([record], [])
    catalog.mark_ready([record.id])
    with catalog.engine.begin() as conn:  # back to the v3 schema, as a catalog written before decisions
        for table in ("decision_history", "decisions", "removals"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
    again = Catalog(catalog.engine.url.render_as_string(hide_password=False))
    try:
        assert again.schema_version() == len(MIGRATIONS)
        again.set_decisions({record.id: "keep"}, "ana")
        assert again.decisions()[record.id].decision == "keep" and again.get([record.id])[0].id == record.id
        with again.engine.begin() as conn:  # running it again changes nothing
            _add_review_tables(conn)
        assert again.decisions()[record.id].decided_by == "ana"
    finally:
        again.close()


# blobs ------------------------------------------------------------------------------------------
def _open_blobs(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    if kind == "files":
        return FileBlobStore(tmp_path / f"blobs-{uuid.uuid4().hex[:6]}")
    s3 = request.getfixturevalue("s3_settings")
    client = minio_client(s3["s3_endpoint"], s3["s3_access_key"], s3["s3_secret_key"], "us-east-1")
    return S3BlobStore(client, f"{s3['s3_bucket']}-{uuid.uuid4().hex[:6]}", where="moto")


@pytest.fixture(params=["files", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    store = _open_blobs(request.param, tmp_path, request)
    try:
        yield store
    finally:
        store.close()


def blob_transcript(store: BlobStore) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    payload = bytes(range(256)) * 40
    store.put("originals/a", payload, "image/jpeg")
    store.put("originals/b", b"\xff\xd8 b", "image/jpeg")
    store.put("thumbnails/a.jpg", b"thumb", "image/jpeg")
    store.put("originals/b", b"\xff\xd8 b, second version", "image/jpeg")
    seen.append(("get", (store.get("originals/a") == payload, store.get("originals/b"))))
    seen.append(("get with a limit", (store.get("originals/a", limit=10) == payload[:10], store.get("originals/b", limit=10**6))))
    seen.append(("exists", (store.exists("originals/a"), store.exists("originals/zz"), store.exists("originals"))))
    seen.append(("counts", (store.count("originals/"), store.count("thumbnails/"), store.count("nothing/"))))
    url = store.url("thumbnails/a.jpg", expires_s=60)
    seen.append(("url serves the bytes", url is None or urllib.request.urlopen(url, timeout=5).read() == b"thumb"))
    store.delete("originals/a")
    store.delete("originals/a")  # deleting a missing key is not an error
    try:
        store.get("originals/a")
        seen.append(("get deleted", "found"))
    except KeyError as exc:
        seen.append(("get deleted", str(exc)))
    seen.append(("counts after delete", (store.count("originals/"), store.count("thumbnails/"))))
    return seen


def test_blob_backends_agree_on_every_call(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    files, s3 = _open_blobs("files", tmp_path, request), _open_blobs("s3", tmp_path, request)
    assert blob_transcript(s3) == blob_transcript(files)


def test_blob_transcript_is_what_the_interface_promises(blob_store: BlobStore) -> None:
    seen = dict(blob_transcript(blob_store))
    assert seen["get"] == (True, b"\xff\xd8 b, second version")
    assert seen["get with a limit"] == (True, b"\xff\xd8 b, second version")
    assert seen["exists"] == (True, False, False)
    assert seen["counts"] == (2, 1, 0)
    assert seen["url serves the bytes"] is True
    assert seen["get deleted"] == "'originals/a'"
    assert seen["counts after delete"] == (1, 1)


def test_s3_gallery_urls_are_presigned_and_short_lived(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = _open_blobs("s3", tmp_path, request)
    store.put("thumbnails/x.jpg", b"t", "image/jpeg")
    url = store.url("thumbnails/x.jpg")
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=900" in url
    with pytest.raises(ValueError, match="1 to 3600"):
        store.url("thumbnails/x.jpg", expires_s=7 * 24 * 3600)


def test_s3_upload_urls_take_a_put_of_the_bytes(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = _open_blobs("s3", tmp_path, request)
    url = store.upload_url("uploads/u", expires_s=60)
    assert url is not None and "X-Amz-Expires=60" in url
    assert httpx.put(url, content=b"put straight to S3", timeout=5).status_code == 200
    assert store.get("uploads/u") == b"put straight to S3"
    assert FileBlobStore(tmp_path / "files").upload_url("uploads/u") is None  # files take no uploads past the app


def test_s3_bucket_is_created_once_even_when_opened_twice(request: pytest.FixtureRequest) -> None:
    s3 = request.getfixturevalue("s3_settings")
    client = minio_client(s3["s3_endpoint"], s3["s3_access_key"], s3["s3_secret_key"], "us-east-1")
    assert not client.bucket_exists(s3["s3_bucket"])
    first = S3BlobStore(client, s3["s3_bucket"], where="moto")
    first.put("originals/k", b"v", "image/png")
    second = S3BlobStore(client, s3["s3_bucket"], where="moto")
    assert second.get("originals/k") == b"v"


# cache ------------------------------------------------------------------------------------------
def _open_cache(kind: str, request: pytest.FixtureRequest) -> Cache:
    if kind == "memory":
        return MemoryCache()
    url = request.getfixturevalue("redis_url")
    namespace = f"test-{uuid.uuid4().hex[:12]}:"
    cache = RedisCache(url, namespace=namespace)

    def forget() -> None:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=namespace + "*"))
        if keys:
            client.delete(*keys)
        client.close()
        cache.close()

    request.addfinalizer(forget)
    return cache


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Cache:
    return _open_cache(request.param, request)


def cache_before_wait(cache: Cache) -> list[tuple[str, Any]]:
    """Cache calls up to the moment a 1 s TTL runs out; :func:`cache_after_wait` goes on from there."""
    seen: list[tuple[str, Any]] = [("healthy", cache.healthy), ("missing", cache.get("q:none"))]
    cache.set("q:text:a cat", b"\x00\x01vector", ttl_s=60)
    cache.set("analysis:v3", b"result", ttl_s=None)
    cache.set("short", b"gone soon", ttl_s=1)
    cache.set("expired on arrival", b"x", ttl_s=0)
    seen.append(("get", [cache.get(k) for k in ("q:text:a cat", "analysis:v3", "short", "expired on arrival")]))
    cache.set("analysis:v3", b"newer", ttl_s=60)
    seen.append(("overwritten", cache.get("analysis:v3")))
    cache.delete("q:text:a cat")
    cache.delete("q:text:a cat")
    seen.append(("deleted", cache.get("q:text:a cat")))
    return seen


def cache_after_wait(cache: Cache) -> list[tuple[str, Any]]:
    return [("after ttl", (cache.get("short"), cache.get("analysis:v3")))]


TTL_WAIT_S = 1.3


def test_cache_backends_agree_on_every_call(request: pytest.FixtureRequest) -> None:
    memory, redis_cache = _open_cache("memory", request), _open_cache("redis", request)
    before = [cache_before_wait(memory), cache_before_wait(redis_cache)]
    time.sleep(TTL_WAIT_S)
    after = [cache_after_wait(memory), cache_after_wait(redis_cache)]
    assert before[1] + after[1] == before[0] + after[0]


def test_cache_transcript_is_what_the_interface_promises(cache: Cache) -> None:
    seen = cache_before_wait(cache)
    time.sleep(TTL_WAIT_S)
    assert seen + cache_after_wait(cache) == [
        ("healthy", True),
        ("missing", None),
        ("get", [b"\x00\x01vector", b"result", b"gone soon", None]),
        ("overwritten", b"newer"),
        ("deleted", None),
        ("after ttl", (None, b"newer")),
    ]


def test_unreachable_redis_answers_none_at_once_and_says_unhealthy(closed_port: int) -> None:
    cache = RedisCache(f"redis://:never-logged-pw@127.0.0.1:{closed_port}/0")
    start = time.monotonic()
    cache.set("k", b"v", ttl_s=10)
    assert cache.get("k") is None
    assert cache.healthy is False
    assert time.monotonic() - start < 2
    assert "unreachable" in cache.describe() and "never-logged-pw" not in cache.describe()


def test_catalog_pages_visible_images_sorted_and_filtered(catalog: Catalog) -> None:
    records = [_record(n, "batch-a" if n % 2 else "batch-b") for n in range(12)]
    catalog.add_pending(records, [ImageName(r.id, r.file_name, r.source, r.uploader, r.created_at) for r in records])
    catalog.mark_ready([r.id for r in records[:11]])  # the last one stays pending: never listed
    catalog.add_names([ImageName(records[0].id, "Holiday.JPG", "batch-z", "bo", 1_800_000_000.0)])

    def ids(**query: Any) -> tuple[list[str], int]:
        page, total = catalog.list_ready(**{"offset": 0, "limit": 100} | query)
        assert all(r.sketch is None and r.state == "ready" for r in page)
        return [r.id for r in page], total

    arrival = [r.id for r in records[:11]]
    assert ids() == (arrival, 11)
    assert ids(offset=4, limit=3) == (arrival[4:7], 11)
    assert ids(offset=20) == ([], 11)
    assert ids(descending=True) == (arrival[::-1], 11)
    by_name = sorted(records[:11], key=lambda r: r.file_name)
    assert ids(sort="name") == ([r.id for r in by_name], 11)
    assert ids(sort="size", descending=True, limit=2) == ([records[10].id, records[9].id], 11)
    assert ids(source="batch-a") == ([r.id for r in records[:11] if r.source == "batch-a"], 5)
    assert ids(source="batch-z") == ([records[0].id], 1)  # any name it arrived under
    assert ids(name_contains="holiday") == ([records[0].id], 1)
    assert ids(name_contains="%") == ([], 0)  # a wildcard is matched as text
    assert ids(name_contains="g 1", sort="name") == ([records[1].id, records[10].id], 2)
