"""Vectors in a Qdrant Edge shard under ``DATA_DIR/vectors``: the embedded default.

Qdrant Edge is Qdrant's engine in-process (HNSW, payload indexes, filters, a write-ahead log) but
only one process may open a shard folder at a time. The app and a ``visual-anomaly ingest`` in a
shell both want it, so the shard is held on a *lease*: a process opens it when it needs it, keeps it
open while it keeps using it, and closes it (after a flush) once it has been idle for
``IDLE_RELEASE_S`` or as soon as another process signals that it is waiting. A waiter blocks for
at most ``lock_timeout_s`` and then gets a :class:`StoreBusy` that says who holds the shard. Both
processes keep working.

A shard folder this user cannot write (a read-only collection) is copied to a temporary folder on
first use and read from there, since Qdrant Edge cannot open a shard read-only; the copy costs time
in proportion to the shard's size, and every write raises :class:`StorageError`.

Edge runs nothing in the background: :meth:`optimize` builds the HNSW index, and is called by the
ingest pipeline when enough new points have arrived.

The vectors are kept *cold* (`VECTOR_MEMORY`): memory-mapped, read from the page cache as a search
touches them, not warmed into the process when the shard loads. Qdrant's default warms them, and a
process that loaded a million images' shard held its 2 GB vector file before doing anything else:
the analysis, which reads the vectors once a page at a time, peaked there, and an app that only
searched kept them all resident. A search reads a few thousand vectors through the HNSW graph.
Shards made before this keep the placement they were made with.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import qdrant_edge as qe

from core.storage.errors import StorageError, StoreBusy
from core.storage.mapped_pages import drop_mapped_pages
from core.storage.vectors import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    REMOVED,
    VISIBILITY_FIELD,
    VectorFilter,
    VectorHit,
    VectorStore,
    scroll_pages,
    vectors_in_order,
)

VECTOR_NAME = "image"
VECTOR_MEMORY = qe.Memory.Cold  # see the module docstring
# Loading a shard of 100,000 images takes 0.8 s (2 cores), and the app asks for it on every page
# visit: a lease handed back after 1 s idle made that most of the Home page's server time. Kept
# longer, it costs nothing to others: a waiting process still gets it within about 50 ms.
IDLE_RELEASE_S = 30.0
T = TypeVar("T")


def edge_filter(flt: VectorFilter | None, exclude_ids: Sequence[str] = ()) -> qe.Filter:
    """The Qdrant Edge filter for a :class:`VectorFilter` (soft-deleted images always left out)."""
    must: list = []
    if flt is not None:
        for key, values in (("sources", flt.sources), ("uploaders", flt.uploaders), ("format", flt.formats)):
            if values:
                must.append(qe.FieldCondition(key=key, match=qe.MatchAny(any=list(values))))
        if flt.created_from is not None or flt.created_to is not None:
            must.append(qe.FieldCondition(key="created_at", range=qe.RangeFloat(gte=flt.created_from, lte=flt.created_to)))
        if flt.min_size_bytes is not None or flt.max_size_bytes is not None:
            low = None if flt.min_size_bytes is None else float(flt.min_size_bytes)
            high = None if flt.max_size_bytes is None else float(flt.max_size_bytes)
            must.append(qe.FieldCondition(key="size_bytes", range=qe.RangeFloat(gte=low, lte=high)))
    must_not: list = [qe.FieldCondition(key=VISIBILITY_FIELD, match=qe.MatchValue(value=REMOVED))]
    if exclude_ids:
        must_not.append(qe.HasIdCondition(point_ids={uuid.UUID(i) for i in exclude_ids}))
    return qe.Filter(must=must or None, must_not=must_not)


class EdgeVectorStore(VectorStore):
    """A Qdrant Edge shard held on a lease shared between processes (see the module docstring)."""

    name = "qdrant-edge"

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        lock_timeout_s: float = 60.0,
        idle_release_s: float = IDLE_RELEASE_S,
        hnsw_ef: int = 128,
        vector_memory: qe.Memory = VECTOR_MEMORY,
    ) -> None:
        self.path = path
        self.vector_memory = vector_memory  # where a new shard's vectors live (`VECTOR_MEMORY`)
        self.dim = dim
        self.lock_timeout_s = lock_timeout_s
        self.idle_release_s = idle_release_s
        self.hnsw_ef = hnsw_ef
        self.path.mkdir(parents=True, exist_ok=True)
        self.read_only = not os.access(self.path, os.W_OK)
        self._copy: Path | None = None  # read-only: where the shard was copied to be opened
        self._shard_dir = path / "shard"
        self._mutex = threading.RLock()
        self._shard: qe.EdgeShard | None = None
        self._lock_file: IO[str] | None = None
        self._last_used = 0.0
        self._busy = 0
        self._kept = 0  # callers inside kept_open(): idle time does not count, a waiting process still does
        self._closed = False
        self._watcher: threading.Thread | None = None

    # lease --------------------------------------------------------------------------------------
    def _holder(self) -> str:
        try:
            return (self.path / "holder.json").read_text()
        except OSError:
            return "unknown"

    def _acquire(self) -> None:
        lock_file = open(self.path / "shard.lock", "a+")  # noqa: SIM115 (held for the lease's life)
        want_file = open(self.path / "want.lock", "a+")  # noqa: SIM115
        deadline = time.monotonic() + self.lock_timeout_s
        waiting = False
        try:
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting:
                        fcntl.flock(want_file, fcntl.LOCK_SH)  # tells the holder someone waits
                        waiting = True
                    if time.monotonic() >= deadline:
                        lock_file.close()
                        holder = self._holder()
                        raise StoreBusy(
                            f"The vector shard at {self._shard_dir} is held by another process "
                            f"({holder}) and was not released within {self.lock_timeout_s:g} s. "
                            "Wait for it to finish, or raise LOCK_TIMEOUT_S.",
                            what=f"The vector shard at {self._shard_dir}", holder=holder,
                            retry_after_s=max(float(self.lock_timeout_s), 1.0),
                        ) from None
                    time.sleep(0.05)
        finally:
            want_file.close()  # closing drops the shared lock
        self._lock_file = lock_file
        holder = {"pid": os.getpid(), "since": time.time()}
        (self.path / "holder.json").write_text(json.dumps(holder))

    def _open(self) -> qe.EdgeShard:
        if self._closed:
            raise StorageError("The vector store was closed.")
        if self._shard is not None:
            return self._shard
        if self.read_only:
            self._shard = self._open_copy()
            return self._shard
        self._acquire()
        try:
            if (self._shard_dir / "edge_config.json").exists():
                shard = qe.EdgeShard.load(str(self._shard_dir))
            else:
                self._shard_dir.mkdir(parents=True, exist_ok=True)
                shard = qe.EdgeShard.create(str(self._shard_dir), self._config())
                for key in KEYWORD_FIELDS:
                    shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
                for key in FLOAT_FIELDS + INTEGER_FIELDS:
                    shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Float))
        except Exception as exc:
            self._release_lock()
            raise StorageError(f"Cannot open the vector shard at {self._shard_dir}: {exc}") from exc
        self._shard = shard
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="edge-lease", daemon=True)
            self._watcher.start()
        return shard

    def _open_copy(self) -> qe.EdgeShard:
        """The read-only shard, opened from a private copy (no lease: nobody else can change it here)."""
        try:
            if self._copy is None:
                copy = Path(tempfile.mkdtemp(prefix="visual-anomaly-shard-"))
                self._copy = copy
                shutil.copytree(self._shard_dir, copy / "shard", copy_function=shutil.copyfile)
                for folder, _dirs, _files in os.walk(copy):  # copytree gave the folders the original's modes
                    os.chmod(folder, 0o700)
            return qe.EdgeShard.load(str(self._copy / "shard"))
        except Exception as exc:
            raise StorageError(f"Cannot open the read-only vector shard at {self._shard_dir}: {exc}") from exc

    def _writable(self) -> None:
        if self.read_only:
            raise StorageError(f"The vector shard at {self._shard_dir} is read-only for this user; "
                               "only reading commands (status, search, duplicates, anomalies) work on it.")

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={VECTOR_NAME: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine,
                                                           memory=self.vector_memory)},
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        )

    def _someone_waits(self) -> bool:
        with open(self.path / "want.lock", "a+") as want_file:
            try:
                fcntl.flock(want_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(want_file, fcntl.LOCK_UN)
            return False

    def _watch(self) -> None:
        """Hand the shard back when idle, or at once when another process is waiting for it."""
        while True:
            time.sleep(0.05)
            with self._mutex:
                if self._shard is None:
                    return
                if self._busy:
                    continue
                idle = time.monotonic() - self._last_used
                if (idle >= self.idle_release_s and not self._kept) or (idle >= 0.01 and self._someone_waits()):
                    self._release()
                    return

    def _release(self) -> None:
        if self._shard is not None:
            try:
                if not self.read_only:
                    self._shard.flush()
            finally:
                self._shard.close()
                self._shard = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    @contextmanager
    def _session(self) -> Iterator[qe.EdgeShard]:
        with self._mutex:
            shard = self._open()
            self._busy += 1
        try:
            yield shard
        finally:
            with self._mutex:
                self._busy -= 1
                self._last_used = time.monotonic()

    def _run(self, work: Callable[[qe.EdgeShard], T]) -> T:
        """Run ``work`` on the open shard; shard calls are serialised within this process."""
        with self._mutex, self._session() as shard:
            return work(shard)

    # interface ----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        self._writable()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"Expected {len(ids)} vectors of size {self.dim}, got shape {vectors.shape}.")
        points = [
            qe.Point(str(i), {VECTOR_NAME: v.tolist()}, dict(p)) for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        self._run(lambda shard: shard.update(qe.UpdateOperation.upsert_points(points)))

    def set_payload(self, ids: Sequence[str], payloads: Sequence[dict]) -> None:
        self._writable()

        def work(shard: qe.EdgeShard) -> None:
            for i, payload in zip(ids, payloads, strict=True):
                shard.update(qe.UpdateOperation.set_payload([str(i)], dict(payload)))

        self._run(work)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._writable()
            self._run(lambda shard: shard.update(qe.UpdateOperation.delete_points([str(i) for i in ids])))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        flt: VectorFilter | None = None,
        *,
        exact: bool = False,
        exclude_ids: Sequence[str] = (),
    ) -> list[VectorHit]:
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=VECTOR_NAME),
            filter=edge_filter(flt, exclude_ids),
            with_payload=False,
            params=qe.SearchParams(hnsw_ef=max(self.hnsw_ef, k), exact=exact),
        )
        points = self._run(lambda shard: shard.query(request))
        return [VectorHit(str(p.id), float(p.score)) for p in points]

    def fetch(self, ids: Sequence[str]) -> np.ndarray:
        records = self._run(lambda shard: shard.retrieve([str(i) for i in ids], False, True))
        by_id = {str(r.id): r.vector[VECTOR_NAME] for r in records}
        return vectors_in_order(ids, by_id, self.dim)

    def iter_all(self, batch: int = 10_000) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every point, a page at a time; the shard's mapped pages are handed back after each page
        (`drop_mapped_pages`), so a full read never holds the vector file beside its copy."""
        def page(offset: object | None) -> tuple[list, object | None]:
            request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=False, with_vector=True)
            found = self._run(lambda shard: shard.scroll(request))
            drop_mapped_pages(self._copy if self._copy is not None else self._shard_dir)
            return found

        return scroll_pages(page, VECTOR_NAME)

    def count(self) -> int:
        return int(self._run(lambda shard: shard.count(qe.CountRequest(exact=True))))

    def flush(self) -> None:
        """Without a flush, reopening replays the write-ahead log (seconds at 100k points)."""
        if not self.read_only:
            self._run(lambda shard: shard.flush())

    def optimize(self) -> None:
        self._writable()
        self._run(lambda shard: shard.optimize())

    def describe(self) -> str:
        return f"Qdrant Edge shard at {self._shard_dir}"

    @contextmanager
    def kept_open(self) -> Iterator[None]:
        """The shard stays loaded however long the caller is idle (reloading a shard made before
        vectors were kept cold maps its whole vector file in again: 2.7 GB at a million images;
        any reload costs seconds); another process waiting still gets it."""
        with self._mutex:
            self._kept += 1
        try:
            yield
        finally:
            with self._mutex:
                self._kept -= 1
                self._last_used = time.monotonic()

    def rest(self) -> None:
        """Hand the shard back now, not after the idle delay: a full scan leaves every page of it
        mapped (half a GiB at 100k images), which the analysis that follows never reads."""
        with self._mutex:
            if not self._busy:
                self._release()

    def close(self) -> None:
        with self._mutex:
            self._release()
            self._closed = True
            if self._copy is not None:
                shutil.rmtree(self._copy, ignore_errors=True)
                self._copy = None
