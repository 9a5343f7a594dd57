"""The catalog: one row per image, every name it arrived under, review labels, and the collection's
version. One code path (SQLAlchemy Core) over SQLite, the embedded default, and PostgreSQL through
psycopg 3 with SQLAlchemy's connection pool.

An image row is written ``pending`` before its blob and vector exist and turned ``ready`` after both
do; only ``ready`` rows are visible. That is the commit point of the ingest protocol.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from core.errors import InvalidRequest, NotFound
from core.image_properties import ImageProperties
from core.review import DECISIONS, Decision, DecisionEvent, Removal
from core.storage.catalog_properties import (
    add_properties_table,
    frame_columns,
    from_row,
    image_properties,
    property_rows,
)
from core.storage.catalog_users import UserTable, add_users_table
from core.storage.errors import StorageError

PENDING = "pending"
READY = "ready"
REMOVED = "removed"  # soft-deleted: invisible everywhere, restorable, blob and vector kept
PURGING = "purging"  # being deleted for good: invisible; repair finishes what a failure interrupted
LABELS = ("anomaly", "normal")
READY_PAGE_ROWS = 20_000  # rows a page of visible images holds (20k sketches: 15 MB as bytes)

metadata = sa.MetaData()

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("pixel_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("phash", sa.String(16), nullable=False),
    sa.Column("phash_mirror", sa.String(16), nullable=False),
    sa.Column("dhash", sa.String(16), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("format", sa.String(8), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("uploader", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("state", sa.String(10), nullable=False, index=True),
    # RGB miniature for crop detection (core.images.sketch); NULL for images stored before v2
    sa.Column("sketch", sa.LargeBinary, nullable=True),
)

# Visible images in arrival order, read a page at a time (Catalog.ready_pages): without it SQLite
# picks the state index and sorts the whole table again for every page.
arrival_index = sa.Index("ix_images_state_arrival", images.c.state, images.c.created_at, images.c.id)

image_names = sa.Table(
    "image_names",
    metadata,
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("file_name", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("uploader", sa.Text, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("labelled_by", sa.Text, nullable=False),
    sa.Column("labelled_at", sa.Float, nullable=False),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("decided_by", sa.Text, nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("batch", sa.String(32), nullable=False),  # the call that made it: undo restores per batch
)

# Append-only: every change of a decision with what it replaced, so a batch can be undone.
decision_history = sa.Table(
    "decision_history",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("batch", sa.String(32), nullable=False, index=True),
    sa.Column("decision", sa.String(8), nullable=True),  # NULL: cleared
    sa.Column("decided_by", sa.Text, nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("previous", sa.String(8), nullable=True),
    sa.Column("previous_by", sa.Text, nullable=True),
    sa.Column("previous_at", sa.Float, nullable=True),
    sa.Column("previous_batch", sa.String(32), nullable=True),
)

removals = sa.Table(
    "removals",
    metadata,
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("removed_by", sa.Text, nullable=False),
    sa.Column("removed_at", sa.Float, nullable=False),
)

REVIEW_TABLES = (decisions, decision_history, removals)

# Who is storing a pending image, and since when: repair leaves rows under a live lease alone.
ingest_leases = sa.Table(
    "ingest_leases",
    metadata,
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("leased_at", sa.Float, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn)


def _add_sketch_v2(conn: Connection) -> None:
    """v1 created the tables from the current definition, so a new catalog already has the column."""
    if "sketch" not in {c["name"] for c in sa.inspect(conn).get_columns("images")}:
        blob = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
        conn.execute(sa.text(f"ALTER TABLE images ADD COLUMN sketch {blob}"))


# How list_ready() can sort visible images: name -> column
IMAGE_SORTS: dict[str, sa.ColumnElement] = {
    "arrival": images.c.created_at,
    "name": images.c.file_name,
    "source": images.c.source,
    "size": images.c.size_bytes,
    "pixels": images.c.width * images.c.height,
}

def _add_review_tables(conn: Connection) -> None:
    """Decisions, their history and soft deletes; a new catalog already has them from v1."""
    metadata.create_all(conn, tables=list(REVIEW_TABLES), checkfirst=True)


def _add_ingest_leases(conn: Connection) -> None:
    """Leases on pending rows; a new catalog already has the table from v1."""
    metadata.create_all(conn, tables=[ingest_leases], checkfirst=True)


def _add_arrival_index(conn: Connection) -> None:
    """The index :meth:`Catalog.ready_pages` reads by; a new catalog already has it from v1."""
    arrival_index.create(conn, checkfirst=True)


# Append-only: migration N brings schema_version N-1 to N. Never edit one that has shipped.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_create_v1, _add_sketch_v2, add_users_table,
                                                        _add_review_tables, _add_ingest_leases,
                                                        add_properties_table, _add_arrival_index)
VISIBLE_OR_REMOVED = (READY, REMOVED)


@dataclass(frozen=True)
class ImageRecord:
    """One image as the catalog knows it; ``file_name``/``source`` are the first it arrived under."""

    id: str
    sha256: str
    pixel_sha256: str
    phash: str
    phash_mirror: str
    dhash: str
    width: int
    height: int
    format: str
    size_bytes: int
    file_name: str
    source: str
    uploader: str
    created_at: float
    state: str = PENDING
    sketch: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ImageName:
    """A name an image arrived under: the same bytes may come from many files and batches."""

    image_id: str
    file_name: str
    source: str
    uploader: str
    added_at: float


@dataclass(frozen=True)
class Lease:
    """An ingest's claim on the pending rows it is storing: ``owner`` names the process (host, pid and
    a random token), ``leased_at`` when the batch began."""

    owner: str
    leased_at: float


@dataclass(frozen=True)
class Label:
    image_id: str
    label: str
    labelled_by: str
    labelled_at: float


def engine_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs to psycopg 3, the driver this project ships."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url(path: Path) -> str:
    """The catalog file's URL; read-only (``mode=ro``) when this user cannot write it, and also
    ``immutable`` when its folder is read-only too, since SQLite could not create the WAL index
    beside it: nobody can be writing it then (but its owner), and the read-only commands still work."""
    if path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        immutable = "" if os.access(path.parent, os.W_OK) else "&immutable=1"
        return f"sqlite:///file:{path.absolute()}?mode=ro{immutable}&uri=true"
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    _sqlite_read_pragmas(dbapi_conn, _record)


def _sqlite_read_pragmas(dbapi_conn: Any, _record: object) -> None:
    """What a read-only connection sets too (WAL mode is a write: the file keeps the mode it has)."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Catalog:
    """Image metadata in SQL. Safe for several processes (SQLite in WAL mode waits on locks; PostgreSQL
    is a server) and several threads (one pooled connection per operation)."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        kwargs: dict = {"future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=5, max_overflow=5, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        self.read_only = self.engine.dialect.name == "sqlite" and "mode=ro" in self.url
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_read_pragmas if self.read_only else _sqlite_pragmas)
        try:
            self._migrate()
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise StorageError(f"Cannot open the catalog at {self.describe()}: {exc.orig}") from exc
        self.users = UserTable(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # schema -----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the schema up to date; a current catalog is only read (so a read-only one opens)."""
        with self.engine.connect() as conn:
            if self._current(conn):
                return
        if self.read_only:
            raise StorageError(f"The catalog at {self.describe()} is read-only and needs an upgrade; open it once "
                               "with write access.")
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # One migrator at a time when several app replicas start together.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(715517)"))
            meta.create(conn, checkfirst=True)
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise StorageError(
                    f"The catalog at {self.describe()} has schema version {current}, newer than this "
                    f"program knows ({len(MIGRATIONS)}). Upgrade the program."
                )
            for migration in MIGRATIONS[current:]:
                migration(conn)
            self._put_meta(conn, "schema_version", str(len(MIGRATIONS)))
            if self._get_meta(conn, "version") is None:
                self._put_meta(conn, "version", "0")

    def _current(self, conn: Connection) -> bool:
        if not sa.inspect(conn).has_table(meta.name):
            return False
        return self._get_meta(conn, "schema_version") == str(len(MIGRATIONS)) and self._get_meta(conn, "version") is not None

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(self._get_meta(conn, "schema_version") or 0)

    def _insert(self, table: sa.Table) -> sa.Insert:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def _put_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._insert(meta).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value}))

    @staticmethod
    def _get_meta(conn: Connection, key: str) -> str | None:
        row = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).first()
        return row[0] if row else None

    def _bump_version(self, conn: Connection) -> int:
        conn.execute(
            meta.update()
            .where(meta.c.key == "version")
            .values(value=sa.cast(sa.cast(meta.c.value, sa.Integer) + 1, sa.Text))
        )
        return int(self._get_meta(conn, "version") or 0)

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return self._get_meta(conn, key)

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            self._put_meta(conn, key, value)

    def collection_id(self) -> str:
        """A random id given to the collection at creation: keys its cached analysis in a shared cache."""
        with self.engine.connect() as conn:
            found = self._get_meta(conn, "collection_id")
        if found is not None:
            return found
        with self.engine.begin() as conn:
            found = self._get_meta(conn, "collection_id")
            if found is None:
                found = uuid.uuid4().hex
                stmt = self._insert(meta).values(key="collection_id", value=found)
                conn.execute(stmt.on_conflict_do_nothing(index_elements=[meta.c.key]))
                found = self._get_meta(conn, "collection_id") or found
            return found

    def version(self) -> int:
        """Changes whenever the set of visible images changes: the key for cached analysis."""
        with self.engine.connect() as conn:
            return int(self._get_meta(conn, "version") or 0)

    # writes -----------------------------------------------------------------------------------
    def add_pending(self, records: Sequence[ImageRecord], names: Sequence[ImageName], lease: Lease | None = None,
                    properties: Mapping[str, ImageProperties] | None = None) -> None:
        """Record images about to be stored (existing rows are left as they are), their names and their
        measured properties (by image id), under ``lease`` (which replaces another ingest's lease on the
        same rows: the latest writer owns them).

        Rows go in key order: two ingest workers writing overlapping batches at once then wait for
        each other's keys in the same order, which cannot deadlock.
        """
        if not records and not names:
            return
        with self.engine.begin() as conn:
            if records:
                rows = [asdict(r) | {"state": PENDING} for r in sorted(records, key=lambda r: r.id)]
                # no target: a concurrent ingest of the same bytes may win on the sha256 constraint first
                conn.execute(self._insert(images).on_conflict_do_nothing(), rows)
                if lease is not None:
                    stmt = self._insert(ingest_leases)
                    stmt = stmt.on_conflict_do_update(index_elements=[ingest_leases.c.image_id], set_={
                        "owner": stmt.excluded.owner, "leased_at": stmt.excluded.leased_at})
                    conn.execute(stmt, [{"image_id": row["id"]} | asdict(lease) for row in rows])
                if properties:
                    conn.execute(self._insert(image_properties).on_conflict_do_nothing(
                        index_elements=[image_properties.c.image_id]), property_rows(properties))
            self._add_names(conn, sorted(names, key=lambda n: (n.image_id, n.file_name, n.source)))

    def add_names(self, names: Sequence[ImageName]) -> None:
        """Record more names for images already in the catalog (re-uploads of the same bytes)."""
        with self.engine.begin() as conn:
            self._add_names(conn, names)

    def _add_names(self, conn: Connection, names: Sequence[ImageName]) -> None:
        if names:
            stmt = self._insert(image_names).on_conflict_do_nothing(
                index_elements=[image_names.c.image_id, image_names.c.file_name, image_names.c.source]
            )
            conn.execute(stmt, [asdict(n) for n in names])

    def mark_ready(self, ids: Sequence[str]) -> int:
        """Make images visible, in one transaction; returns the new collection version."""
        with self.engine.begin() as conn:
            pending = sa.and_(images.c.id.in_(list(ids)), images.c.state == PENDING)  # never a purging row
            conn.execute(images.update().where(pending).values(state=READY))
            conn.execute(ingest_leases.delete().where(ingest_leases.c.image_id.in_(list(ids))))
            return self._bump_version(conn)

    def remove_pending(self, ids: Sequence[str], owner: str | None = None) -> list[str]:
        """Undo :meth:`add_pending` for images that did not become ready (their names go too); with
        ``owner``, only rows no other ingest holds a lease on. Returns the ids removed."""
        if not ids:
            return []
        with self.engine.begin() as conn:
            leases = ingest_leases.delete().where(ingest_leases.c.image_id.in_(list(ids)))
            conn.execute(leases if owner is None else leases.where(ingest_leases.c.owner == owner))
            return self._remove_unleased_pending(conn, ids)

    def remove_stale_pending(self, stale: dict[str, Lease | None]) -> list[str]:
        """Remove pending rows whose lease is still exactly the one in ``stale`` (``None``: no lease) in
        one transaction: a row an ingest leased again since it was judged stale stays. Returns the ids
        removed, whose blobs and vectors the caller then deletes."""
        if not stale:
            return []
        with self.engine.begin() as conn:
            for image_id, lease in stale.items():
                if lease is not None:
                    conn.execute(ingest_leases.delete().where(
                        ingest_leases.c.image_id == image_id, ingest_leases.c.owner == lease.owner,
                        ingest_leases.c.leased_at == lease.leased_at))
            return self._remove_unleased_pending(conn, list(stale))

    @staticmethod
    def _remove_unleased_pending(conn: Connection, ids: Sequence[str]) -> list[str]:
        leased = sa.select(ingest_leases.c.image_id)
        found = conn.execute(sa.select(images.c.id).where(
            images.c.id.in_(list(ids)), images.c.state == PENDING, images.c.id.not_in(leased))).scalars().all()
        if found:
            for table in (image_names, image_properties):
                conn.execute(table.delete().where(table.c.image_id.in_(found)))
            conn.execute(images.delete().where(images.c.id.in_(found), images.c.state == PENDING))
        return list(found)

    def release_leases(self, owner: str) -> None:
        """Drop every lease ``owner`` holds: its ingest is over, whatever it left pending is repair's."""
        with self.engine.begin() as conn:
            conn.execute(ingest_leases.delete().where(ingest_leases.c.owner == owner))

    def pending_leases(self) -> dict[str, Lease | None]:
        """Every pending row's lease (``None``: no ingest holds it)."""
        query = (sa.select(images.c.id, ingest_leases.c.owner, ingest_leases.c.leased_at)
                 .select_from(images.outerjoin(ingest_leases, ingest_leases.c.image_id == images.c.id))
                 .where(images.c.state == PENDING))
        with self.engine.connect() as conn:
            return {row.id: None if row.owner is None else Lease(row.owner, row.leased_at) for row in conn.execute(query)}

    def all_ids(self) -> set[str]:
        """The id of every row in any state: what a blob or vector must belong to."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(images.c.id)).scalars())

    @contextmanager
    def locked_names(self, ids: Sequence[str]) -> Iterator[dict[str, list[ImageName]]]:
        """Every name of the stored (ready or soft-deleted) images among ``ids``, read while no other
        writer can add a name to them, until the block ends. Copying them into the vector payload inside
        the block means the last copy made includes every name, whichever ingest wrote last."""
        ordered = sorted(set(ids))
        with self.engine.begin() as conn:
            if self.dialect == "sqlite":  # a write takes the database's one write lock until commit
                conn.execute(meta.update().where(meta.c.key == "names_lock").values(value=""))
            else:  # a name's foreign key check (KEY SHARE) waits for these row locks
                conn.execute(sa.select(images.c.id).where(images.c.id.in_(ordered))
                             .order_by(images.c.id).with_for_update())
            query = (sa.select(image_names).join(images, images.c.id == image_names.c.image_id)
                     .where(image_names.c.image_id.in_(ordered), images.c.state.in_(VISIBLE_OR_REMOVED))
                     .order_by(image_names.c.added_at))
            found: dict[str, list[ImageName]] = {}
            for row in conn.execute(query):
                found.setdefault(row.image_id, []).append(ImageName(**row._asdict()))
            yield found

    def set_label(self, image_id: str, label: str | None, labelled_by: str) -> bool:
        """Store an analyst's review label; ``None`` clears it. False (nothing written) when no
        visible image has that id."""
        if label is not None and label not in LABELS:
            raise ValueError(f"Label {label!r} is not one of {', '.join(LABELS)}.")
        with self.engine.begin() as conn:
            visible = sa.select(images.c.id).where(images.c.id == image_id, images.c.state == READY)
            if conn.execute(visible).first() is None:
                return False
            conn.execute(labels.delete().where(labels.c.image_id == image_id))
            if label is not None:
                conn.execute(
                    labels.insert().values(
                        image_id=image_id, label=label, labelled_by=labelled_by, labelled_at=time.time()
                    )
                )
        return True

    # reads ------------------------------------------------------------------------------------
    def states_by_sha(self, sha256s: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``{sha256: (image id, state)}`` for the hashes already known."""
        found: dict[str, tuple[str, str]] = {}
        wanted = list(dict.fromkeys(sha256s))
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                query = sa.select(images.c.sha256, images.c.id, images.c.state).where(images.c.sha256.in_(chunk))
                found.update({sha: (image_id, state) for sha, image_id, state in conn.execute(query)})
        return found

    def get(self, ids: Sequence[str], *, ready_only: bool = True) -> list[ImageRecord]:
        """Records for ``ids`` in the order given; unknown (or not yet ready) ids are left out."""
        by_id: dict[str, ImageRecord] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(images).where(images.c.id.in_(list(ids[start : start + 500])))
                if ready_only:
                    query = query.where(images.c.state == READY)
                by_id.update({row.id: ImageRecord(**row._asdict()) for row in conn.execute(query)})
        return [by_id[i] for i in ids if i in by_id]

    def names(self, image_id: str) -> list[ImageName]:
        with self.engine.connect() as conn:
            query = sa.select(image_names).where(image_names.c.image_id == image_id).order_by(image_names.c.added_at)
            return [ImageName(**row._asdict()) for row in conn.execute(query)]

    def repeated_names(self) -> dict[str, list[ImageName]]:
        """Visible images that arrived under more than one name (the same bytes in several files).

        The names are grouped alone, along their primary key's index, and only the repeated ones are
        joined to their images: joining every name first took 170 ms a call at 100,000 images (SQLite),
        this 30 ms, and the Home and Duplicates pages ask on every render."""
        with self.engine.connect() as conn:
            repeated = sa.select(image_names.c.image_id).group_by(image_names.c.image_id).having(sa.func.count() > 1)
            query = (
                sa.select(image_names)
                .join(images, images.c.id == image_names.c.image_id)
                .where(images.c.state == READY, image_names.c.image_id.in_(repeated))
                .order_by(image_names.c.image_id, image_names.c.added_at, image_names.c.file_name)
            )
            found: dict[str, list[ImageName]] = {}
            for row in conn.execute(query):
                found.setdefault(row.image_id, []).append(ImageName(**row._asdict()))
            return found

    def sources(self) -> list[str]:
        """Every source label that a visible image arrived under."""
        with self.engine.connect() as conn:
            query = (
                sa.select(image_names.c.source)
                .join(images, images.c.id == image_names.c.image_id)
                .where(images.c.state == READY)
                .distinct()
                .order_by(image_names.c.source)
            )
            return [row[0] for row in conn.execute(query)]

    def list_ready(self, *, offset: int, limit: int, sort: str = "arrival", descending: bool = False,
                   source: str | None = None, name_contains: str | None = None) -> tuple[list[ImageRecord], int]:
        """One page of visible images (without sketches) and how many match, sorted by ``sort`` (a key
        of :data:`IMAGE_SORTS`) then id, so pages never overlap. ``source`` and ``name_contains``
        (case-insensitive) match any name an image arrived under."""
        def arrived_under(test: sa.ColumnElement) -> sa.ColumnElement:
            return images.c.id.in_(sa.select(image_names.c.image_id).where(test))

        where = [images.c.state == READY]
        if source is not None:
            where.append(arrived_under(image_names.c.source == source))
        if name_contains is not None:
            where.append(arrived_under(image_names.c.file_name.icontains(name_contains, autoescape=True)))
        order = self._code_point(IMAGE_SORTS[sort])
        columns = [c for c in images.columns if c.name != "sketch"]
        query = (
            sa.select(*columns).where(*where)
            .order_by(order.desc() if descending else order, images.c.id.desc() if descending else images.c.id)
            .offset(offset).limit(limit)
        )
        with self.engine.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(images).where(*where)).scalar_one())
            return [ImageRecord(**row._asdict()) for row in conn.execute(query)], total

    def sources_of(self, ids: Sequence[str]) -> dict[str, list[str]]:
        """Every source label each image arrived under."""
        found: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = (sa.select(image_names.c.image_id, image_names.c.source).distinct()
                         .where(image_names.c.image_id.in_(list(ids[start:start + 500])))
                         .order_by(image_names.c.image_id, image_names.c.source))
                for image_id, source in conn.execute(query):
                    found.setdefault(image_id, []).append(source)
        return found

    def _code_point(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """``column`` ordered and compared by code point, as SQLite does, where it holds text: PostgreSQL
        would use the database's collation, and both backends must page alike."""
        return column.collate("C") if self.dialect == "postgresql" and isinstance(column.type, sa.String) else column

    def ready_frame(self) -> pd.DataFrame:
        """Every visible image as one table (ordered by arrival), for exports and ingest, with its
        properties as ``property_<name>`` columns (NaN for an image stored before they existed): the
        pages of :meth:`ready_pages` put together."""
        return pd.concat(list(self.ready_pages()), ignore_index=True)  # an empty page comes only alone

    def ready_pages(self, rows: int = READY_PAGE_ROWS) -> Iterator[pd.DataFrame]:
        """:meth:`ready_frame`'s rows, ``rows`` at a time, each page a frame with its columns; the last
        page is shorter (empty only when it is the first). A reader of the whole collection (the
        analysis snapshot) then holds one page of sketches as Python bytes at a time, never a
        million. Keyset pages by (created_at, id), each its own short query: no statement stays open
        between pages, and a page costs the same wherever it starts."""
        extra = frame_columns()
        names = [c.name for c in images.columns] + [c.name for c in extra]
        image_id = self._code_point(images.c.id)
        query = (sa.select(images, *extra).select_from(images.outerjoin(image_properties,
                                                                        image_properties.c.image_id == images.c.id))
                 .where(images.c.state == READY).order_by(images.c.created_at, image_id).limit(rows))
        after: tuple[float, str] | None = None
        while True:
            page_query = query if after is None else query.where(
                images.c.created_at >= after[0], sa.or_(images.c.created_at > after[0], image_id > after[1]))
            with self.engine.connect() as conn:
                page = pd.DataFrame.from_records(conn.execute(page_query).all(), columns=names)
            if len(page) or after is None:
                yield page.astype({c.name: "float64" for c in extra})
            if len(page) < rows:
                return
            after = (float(page["created_at"].iloc[-1]), str(page["id"].iloc[-1]))

    def ids_without_properties(self) -> list[str]:
        """Visible images stored before properties existed (quality flags skip them until backfilled)."""
        query = (sa.select(images.c.id).where(images.c.state == READY)
                 .where(~images.c.id.in_(sa.select(image_properties.c.image_id))))
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def set_properties(self, found: Mapping[str, ImageProperties]) -> None:
        """Store backfilled properties (replacing any); a new version, since analysis results change."""
        if not found:
            return
        with self.engine.begin() as conn:
            ids = sorted(found)
            for start in range(0, len(ids), 500):
                conn.execute(image_properties.delete().where(image_properties.c.image_id.in_(ids[start:start + 500])))
            conn.execute(image_properties.insert(), property_rows(found))
            self._bump_version(conn)

    def properties(self, ids: Sequence[str]) -> dict[str, ImageProperties]:
        """The stored properties of ``ids`` (images without any are left out)."""
        found: dict[str, ImageProperties] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(image_properties).where(image_properties.c.image_id.in_(list(ids[start:start + 500])))
                found.update({row.image_id: from_row(row._mapping) for row in conn.execute(query)})
        return found

    def ids_without_sketch(self) -> list[str]:
        """Visible images stored before sketches existed (crop detection skips them until backfilled)."""
        query = sa.select(images.c.id).where(images.c.state == READY, images.c.sketch.is_(None))
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def set_sketches(self, sketches: dict[str, bytes]) -> None:
        """Store backfilled sketches; a new version, since duplicate results may change."""
        if not sketches:
            return
        with self.engine.begin() as conn:
            conn.execute(images.update().where(images.c.id == sa.bindparam("image_id")).values(
                sketch=sa.bindparam("data")), [{"image_id": k, "data": v} for k, v in sketches.items()])
            self._bump_version(conn)

    def pending_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.select(images.c.id).where(images.c.state == PENDING))]

    def counts(self) -> dict[str, int]:
        """Images per state: ``{"ready": n, "pending": n, "removed": n, "purging": n}``."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(images.c.state, sa.func.count()).group_by(images.c.state)).all()
        found = dict(rows)
        return {state: int(found.get(state, 0)) for state in (READY, PENDING, REMOVED, PURGING)}

    def labels(self, ids: Sequence[str] | None = None) -> dict[str, Label]:
        """Review labels, of ``ids`` only when given."""
        query = sa.select(labels)
        if ids is not None:
            query = query.where(labels.c.image_id.in_(list(ids)))
        with self.engine.connect() as conn:
            return {row.image_id: Label(**row._asdict()) for row in conn.execute(query)}

    # review decisions -------------------------------------------------------------------------
    def set_decisions(self, changes: dict[str, str | None], decided_by: str, *,
                      expected: dict[str, str | None] | None = None) -> str:
        """Set (or clear, ``None``) the decisions of images in one transaction and log each change
        with what it replaced; returns the batch id that :meth:`undo_decisions` takes. With
        ``expected``, nothing is written unless those images still have those decisions (a preview
        another analyst overtook is refused rather than silently overwritten)."""
        for decision in changes.values():
            if decision is not None and decision not in DECISIONS:
                raise InvalidRequest("decision", f"{decision!r} is not one of {', '.join(DECISIONS)} or none")
        batch = uuid.uuid4().hex
        with self.engine.begin() as conn:
            self._require_reviewable(conn, list(changes))
            current = self._current_decisions(conn, list(changes))
            if expected is not None:
                moved = [i for i, d in expected.items() if (current[i].decision if i in current else None) != d]
                if moved:
                    raise InvalidRequest("plan", f"the decisions of {len(moved)} image(s) changed since the preview "
                                                 "(another analyst decided); preview again")
            now = time.time()
            targets = {i: None if d is None else Decision(i, d, decided_by, now) for i, d in changes.items()}
            self._write_decisions(conn, targets, current, batch, decided_by, now)
        return batch

    def undo_decisions(self, batch: str, decided_by: str) -> tuple[str, int, int]:
        """Give the images a batch changed back the decisions they had before it (who and when
        included), unless their decision changed again since. Returns the undo's own batch id (undo
        it to redo), how many images were restored and how many were left as they are."""
        undo = uuid.uuid4().hex
        with self.engine.begin() as conn:
            events = conn.execute(sa.select(decision_history).where(decision_history.c.batch == batch)
                                  .order_by(decision_history.c.seq)).all()
            if not events:
                raise NotFound("decision batch", batch)
            ids = list(dict.fromkeys(e.image_id for e in events))
            latest = dict(conn.execute(
                sa.select(decision_history.c.image_id, sa.func.max(decision_history.c.seq))
                .where(decision_history.c.image_id.in_(ids)).group_by(decision_history.c.image_id)).all())
            first = {}
            for e in events:
                first.setdefault(e.image_id, e)
            last_seq = {e.image_id: e.seq for e in events}
            restorable = [i for i in ids if latest.get(i) == last_seq[i]]
            current = self._current_decisions(conn, restorable)
            targets = {
                i: None if first[i].previous is None else Decision(
                    i, first[i].previous, first[i].previous_by, first[i].previous_at)
                for i in restorable
            }
            batches = {i: first[i].previous_batch for i in restorable}
            self._write_decisions(conn, targets, current, undo, decided_by, time.time(), batches)
        return undo, len(restorable), len(ids) - len(restorable)

    def _require_reviewable(self, conn: Connection, ids: list[str]) -> None:
        """:class:`NotFound` for the first id that is not a visible or soft-deleted image."""
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            query = sa.select(images.c.id).where(images.c.id.in_(ids[start:start + 500]),
                                                 images.c.state.in_(VISIBLE_OR_REMOVED))
            known.update(row[0] for row in conn.execute(query.with_for_update()))
        missing = [i for i in ids if i not in known]
        if missing:
            raise NotFound("image", missing[0])

    @staticmethod
    def _current_decisions(conn: Connection, ids: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(ids), 500):
            query = sa.select(decisions).where(decisions.c.image_id.in_(ids[start:start + 500]))
            found.update({row.image_id: row for row in conn.execute(query)})
        return found

    def _write_decisions(self, conn: Connection, targets: dict[str, Decision | None], current: dict[str, Any],
                         batch: str, decided_by: str, now: float,
                         batches: dict[str, str | None] | None = None) -> None:
        """Make ``targets`` the images' decisions (``None`` clears) and log one event per image."""
        history = []
        for image_id, target in targets.items():
            old = current.get(image_id)
            conn.execute(decisions.delete().where(decisions.c.image_id == image_id))
            if target is not None:
                conn.execute(decisions.insert().values(
                    image_id=image_id, decision=target.decision, decided_by=target.decided_by,
                    decided_at=target.decided_at, batch=(batches or {}).get(image_id) or batch))
            history.append({
                "image_id": image_id, "batch": batch, "decision": None if target is None else target.decision,
                "decided_by": decided_by, "decided_at": now,
                "previous": None if old is None else old.decision, "previous_by": None if old is None else old.decided_by,
                "previous_at": None if old is None else old.decided_at, "previous_batch": None if old is None else old.batch,
            })
        if history:
            conn.execute(decision_history.insert(), history)

    def decisions(self, ids: Sequence[str] | None = None) -> dict[str, Decision]:
        """Current decisions (of visible and soft-deleted images), of ``ids`` only when given."""
        query = sa.select(decisions.c.image_id, decisions.c.decision, decisions.c.decided_by, decisions.c.decided_at)
        if ids is not None:
            query = query.where(decisions.c.image_id.in_(list(ids)))
        with self.engine.connect() as conn:
            return {row.image_id: Decision(*row) for row in conn.execute(query)}

    def decision_history(self, image_id: str | None = None) -> list[DecisionEvent]:
        """Every change of a decision, oldest first (of one image when given)."""
        query = sa.select(decision_history).order_by(decision_history.c.seq)
        if image_id is not None:
            query = query.where(decision_history.c.image_id == image_id)
        with self.engine.connect() as conn:
            return [DecisionEvent(row.image_id, row.decision, row.decided_by, row.decided_at, row.batch, row.previous)
                    for row in conn.execute(query)]

    # soft delete and purge --------------------------------------------------------------------
    def set_removed(self, ids: Sequence[str], removed: bool, by: str) -> list[str]:
        """Soft-delete visible images (``removed``) or restore soft-deleted ones, in one transaction;
        returns the ids that changed (the others already were). A new version when any did."""
        source, target = (READY, REMOVED) if removed else (REMOVED, READY)
        with self.engine.begin() as conn:
            self._require_reviewable(conn, list(ids))
            query = sa.select(images.c.id).where(images.c.id.in_(list(ids)), images.c.state == source)
            found = {row[0] for row in conn.execute(query)}
            changing = [i for i in ids if i in found]  # in the order given
            if changing:
                conn.execute(images.update().where(images.c.id.in_(changing)).values(state=target))
                conn.execute(removals.delete().where(removals.c.image_id.in_(changing)))
                if removed:
                    now = time.time()
                    conn.execute(removals.insert(), [{"image_id": i, "removed_by": by, "removed_at": now}
                                                      for i in changing])
                self._bump_version(conn)
        return changing

    def mark_purging(self, ids: Sequence[str]) -> None:
        """Step 1 of a purge: the rows become invisible and say a purge is under way, so a failure in
        the later steps is finished by repair. A new version when a visible image goes."""
        with self.engine.begin() as conn:
            known = {row.id: row.state for row in conn.execute(
                sa.select(images.c.id, images.c.state).where(images.c.id.in_(list(ids))))}
            missing = [i for i in ids if known.get(i) not in (READY, REMOVED, PURGING)]
            if missing:
                raise NotFound("image", missing[0])
            conn.execute(images.update().where(images.c.id.in_(list(ids))).values(state=PURGING))
            if READY in known.values():
                self._bump_version(conn)

    def delete_purging(self, ids: Sequence[str]) -> None:
        """The last step of a purge: the rows (and their names, label, decisions) go."""
        with self.engine.begin() as conn:
            doomed = sa.select(images.c.id).where(images.c.id.in_(list(ids)), images.c.state == PURGING)
            for table in (image_names, labels, decisions, decision_history, removals, ingest_leases,
                          image_properties):
                conn.execute(table.delete().where(table.c.image_id.in_(doomed)))
            conn.execute(images.delete().where(images.c.id.in_(doomed)))

    def arrival_times(self) -> np.ndarray:
        """When each visible image arrived (epoch seconds, float64, in no order): one column, so a
        chart of growth never reads the rows' hashes and sketches."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(images.c.created_at).where(images.c.state == READY)).all()
        return np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))

    def ids_in_state(self, state: str) -> list[str]:
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.select(images.c.id).where(images.c.state == state))]

    def removals(self, ids: Sequence[str] | None = None) -> dict[str, Removal]:
        """Who soft-deleted which image and when, of ``ids`` only when given."""
        query = sa.select(removals)
        if ids is not None:
            query = query.where(removals.c.image_id.in_(list(ids)))
        with self.engine.connect() as conn:
            return {row.image_id: Removal(*row) for row in conn.execute(query)}
