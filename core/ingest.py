"""The ingest pipeline and its consistency protocol.

Three stages overlap, so the encoder (the slowest, on every core of a CPU) never waits: a small
thread pool reads, hashes, decodes and preprocesses files ahead of it (a bounded window); the calling
thread embeds batch after batch; one store thread commits each embedded batch, with its on-arrival
duplicate checks, while the next is embedded. Pipeline threads run torch single-threaded and the
decode pool is sized to leave the encoder its cores. Each batch is committed in this order:

1. catalog rows written ``pending`` (with every name the image arrived under);
2. original and thumbnail written to the blob store;
3. vectors upserted (durable when the call returns);
4. catalog rows turned ``ready`` in one transaction: only now is the image visible.

If any step fails, the batch is rolled back in every store (vectors, blobs, pending rows), so no
store holds half of an image; if the process dies instead, the ``pending`` rows stay invisible and
running the same ingest again completes them (every write is idempotent, keyed by content hash).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import validation
from core.analysis import DuplicateThresholds
from core.analysis_service import ArrivalContext, stored_image
from core.backends import Backends
from core.devices import resolve_device
from core.embedding import Embedder
from core.errors import InvalidRequest
from core.facade_errors import public_reason
from core.images import ImageRejected, PreparedImage, image_id, prepare_image
from core.observability import (
    IMAGES_ALREADY_PRESENT,
    IMAGES_FAILED,
    IMAGES_INGESTED,
    IMAGES_REJECTED,
    log_event,
    timed,
)
from core.reports import ArrivalMatch
from core.settings import Settings
from core.storage.blobs import original_key, thumbnail_key
from core.storage.catalog import PURGING, READY, REMOVED, ImageName, ImageRecord, Lease

INGESTED = "ingested"
ALREADY_PRESENT = "already_present"
REJECTED = "rejected"
FAILED = "failed"

Progress = Callable[[int, int], None]
_MB = 1024 * 1024
_READ_CHUNK = 1 << 20
# How long a pending row stays an ingest's own (its lease) when its owner cannot be seen to have
# died: far longer than one batch takes from its catalog row to its commit point.
PENDING_LEASE_S = 15 * 60


@dataclass(frozen=True)
class IngestItem:
    """One file to ingest: a display name and a way to read its bytes (from disk or an upload).

    ``read(max_bytes)`` returns the bytes, or raises :class:`ImageRejected` (too large, not a regular
    file, a bad name ...) having read at most ``max_bytes + 1`` of them.
    """

    name: str
    read: Callable[[int], bytes]


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file."""

    file: str
    status: str  # ingested | already_present | rejected | failed
    image_id: str | None = None
    reason: str | None = None  # rejected: why; failed: the store error
    reason_code: str | None = None
    nearest: ArrivalMatch | None = None  # ingested: the closest image stored before, and the verdict

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if v is not None and k != "nearest"}
        if self.nearest is not None:
            data["nearest"] = self.nearest.to_json()
        return data


@dataclass(frozen=True)
class IngestReport:
    outcomes: tuple[FileOutcome, ...]
    seconds: float
    error: str | None = None  # a store failure that stopped the run

    def _with(self, status: str) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def ingested(self) -> int:
        return len(self._with(INGESTED))

    @property
    def already_present(self) -> int:
        return len(self._with(ALREADY_PRESENT))

    @property
    def rejected(self) -> list[FileOutcome]:
        return self._with(REJECTED)

    @property
    def failed(self) -> list[FileOutcome]:
        return self._with(FAILED)

    def to_json(self) -> dict:
        return {
            "ingested": self.ingested,
            "already_present": self.already_present,
            "rejected": [{"file": o.file, "reason": o.reason, "code": o.reason_code} for o in self.rejected],
            "failed": [{"file": o.file, "reason": o.reason} for o in self.failed],
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "files": [o.to_json() for o in self.outcomes],
        }


@dataclass(frozen=True)
class Shard:
    """One worker's share of an ingest split over ``count`` workers (``ingest --shard I/N``).

    A file belongs to shard ``int(sha256(absolute path)[:16], 16) % count``: every worker computes the
    same split on its own, with no coordinator, and a file keeps its shard when others are added or
    removed. The path is the resolved absolute one, so workers must see the files under the same path
    (mount the volume at the same place in every pod). Files given to two workers anyway are still
    stored once: ingest is idempotent by content hash.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidRequest("shard", f"{self.index}/{self.count}: expected I/N with 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (e.g. ``"0/4"``; Kubernetes' JOB_COMPLETION_INDEX gives I)."""
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise InvalidRequest("shard", f"{text!r} is not I/N, e.g. 0/4")
        return cls(int(index), int(count))

    def holds(self, path: Path) -> bool:
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
        return int(digest[:16], 16) % self.count == self.index


def items_from_paths(paths: Iterable[str | os.PathLike], shard: Shard | None = None) -> list[IngestItem]:
    """Expand folders recursively (sorted, hidden files skipped), drop repeated paths and, with a
    ``shard``, keep only that shard's files.

    Inside a folder, a symbolic link is followed only when its target lies inside the same folder;
    one leading outside it (a file or a folder) becomes a rejected item saying so, as does a link
    that loops or points nowhere. A file or folder named on the command line is taken as given.
    """
    seen: set[Path] = set()
    items: list[IngestItem] = []

    def add(path: Path, root: Path | None) -> None:
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            items.append(IngestItem(str(path), _refuse(unreadable(exc))))
            return
        if root is not None and not resolved.is_relative_to(root):
            items.append(IngestItem(str(path), _refuse(outside_folder(resolved, root))))
            return
        if resolved.is_dir():  # a link to a folder inside the one being walked: reached through its real path
            return
        if resolved in seen or (shard is not None and not shard.holds(resolved)):
            return
        seen.add(resolved)
        items.append(IngestItem(str(path), _file_reader(path, resolved)))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            root = path.resolve()
            for folder, dirs, files in os.walk(path):
                visible = sorted(d for d in dirs if not d.startswith("."))
                dirs[:] = [d for d in visible if not (Path(folder) / d).is_symlink()]
                for name in [d for d in visible if d not in dirs] + sorted(files):
                    if not name.startswith("."):
                        add(Path(folder) / name, root)
        elif path.exists() or path.is_symlink():
            add(path, None)
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a folder.")
    return items


def items_from_uploads(uploads: Iterable[tuple[str, bytes]]) -> list[IngestItem]:
    """Uploaded files; a name the catalog would refuse rejects that file alone, before any store is written."""
    return [IngestItem(name, _upload_reader(name, data)) for name, data in uploads]


def _refuse(error: ImageRejected) -> Callable[[int], bytes]:
    def read(_max_bytes: int) -> bytes:
        raise error

    return read


def _upload_reader(name: str, data: bytes) -> Callable[[int], bytes]:
    try:
        validation.file_name(name)
    except InvalidRequest as exc:
        return _refuse(invalid_name(exc))

    def read(max_bytes: int) -> bytes:
        if len(data) > max_bytes:
            raise too_large(f"{len(data) / _MB:.1f} MB", max_bytes)
        return data

    return read


def _file_reader(path: Path, resolved: Path) -> Callable[[int], bytes]:
    try:
        validation.path_name(str(path))
    except InvalidRequest as exc:
        return _refuse(invalid_name(exc))
    return lambda max_bytes: read_regular_file(resolved, max_bytes)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, reading at most ``max_bytes + 1`` of them.

    The file is opened without blocking and checked *after* opening (``fstat`` on the open file, so it
    cannot be swapped in between): a named pipe, a device or a socket is refused instead of read, which
    would block forever (a FIFO) or never end (``/dev/zero``). The size is enforced on what is read,
    not on what ``stat`` says, since files grow and ``/proc``-like files report 0 bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        mode = _mode(path)
        if mode is not None and not stat.S_ISREG(mode):
            raise not_a_file(mode) from exc
        raise unreadable(exc) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_a_file(mode)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise too_large(f"over {max_bytes / _MB:.1f} MB", max_bytes)
        return b"".join(chunks)
    except OSError as exc:
        raise unreadable(exc) from exc
    finally:
        os.close(fd)


@dataclass
class _Prepared:
    item: IngestItem
    data: bytes
    image: PreparedImage
    tensor: torch.Tensor


@dataclass
class _Known:
    """An input whose bytes are already stored (earlier run) or earlier in this batch."""

    item: IngestItem
    sha256: str
    image_id: str


@dataclass
class _Rejected:
    item: IngestItem
    sha256: str | None
    error: ImageRejected


class _FirstOccurrence:
    """Which input position first holds each content, decided in input order although workers hash
    in any order: a worker asks only once every earlier input is hashed (hashing is quick), so the
    same bytes are decoded once, at their first position, however the workers race."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._first: dict[str, int] = {}
        self._hashed: set[int] = set()
        self._next = 0  # every position below this one is hashed

    def hashed(self, index: int, sha: str | None) -> None:
        """Position ``index`` is hashed (``sha`` None: it ended before, e.g. rejected or unreadable)."""
        with self._changed:
            if sha is not None and index < self._first.get(sha, index + 1):
                self._first[sha] = index
            self._hashed.add(index)
            while self._next in self._hashed:
                self._hashed.discard(self._next)
                self._next += 1
            self._changed.notify_all()

    def position(self, index: int, sha: str) -> int:
        """The first position holding ``sha``, once every position up to ``index`` is hashed."""
        with self._changed:
            self._changed.wait_for(lambda: self._next > index)
            return self._first[sha]


@dataclass
class _Batch:
    """Accepted inputs in input order, and where each came in the whole run."""

    entries: list[_Prepared | _Known] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    @property
    def prepared(self) -> list[_Prepared]:
        return [e for e in self.entries if isinstance(e, _Prepared)]

    @property
    def known(self) -> list[_Known]:
        return [e for e in self.entries if isinstance(e, _Known)]


class Ingestor:
    """Runs one ingest over the collection's backends with the collection's model."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        embedder: Callable[[], Embedder],
        *,
        arrival: ArrivalContext | None = None,
        thresholds: DuplicateThresholds | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self._embedder = embedder  # called only once an image decodes: a folder of non-images never loads the model
        self.arrival = arrival
        self.thresholds = thresholds or DuplicateThresholds()
        self._stored_vectors = False  # once this run stores a batch, the vector store is not empty
        # names this process on every pending row it writes (its lease): repair leaves them alone
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run(
        self,
        items: Sequence[IngestItem],
        *,
        source: str,
        uploader: str,
        progress: Progress | None = None,
    ) -> IngestReport:
        start = time.perf_counter()
        now = time.time()
        outcomes: dict[int, FileOutcome] = {}
        first_by_sha: dict[str, _Prepared | _Known | _Rejected] = {}  # first occurrence, in input order
        batch = _Batch()
        error: str | None = None
        done = 0

        first = _FirstOccurrence()

        def prepare(index: int, item: IngestItem) -> _Prepared | _Known | _Rejected:
            sha: str | None = None
            try:
                with timed("read"):
                    try:
                        data = item.read(self.settings.max_upload_bytes)
                    except ImageRejected as exc:
                        return _Rejected(item, None, exc)
                with timed("hash"):
                    sha = hashlib.sha256(data).hexdigest()
            finally:
                first.hashed(index, sha)
            if first.position(index, sha) < index:  # an earlier file has these bytes: decode them once, there
                return _Known(item, sha, image_id(sha))
            state = self.backends.catalog.states_by_sha([sha]).get(sha)
            if state is not None and state[1] in (READY, REMOVED):  # a removed image stays removed
                return _Known(item, sha, state[0])
            if state is not None and state[1] == PURGING:
                return _Rejected(item, sha, ImageRejected(
                    "being_purged", "This image is being deleted for good; upload it again once the purge "
                                    "has finished (an admin's `visual-anomaly repair` finishes it)."))
            try:
                with timed("decode"):
                    image = prepare_image(
                        data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_image_pixels
                    )
            except ImageRejected as exc:
                return _Rejected(item, sha, exc)
            with timed("preprocess"):
                tensor = self._embedder().preprocess_image(image.model_image)
            return _Prepared(item, data, image, tensor)

        storing: tuple[_Batch, Future[list[FileOutcome]]] | None = None  # the batch on the store thread

        def settle() -> None:
            """Wait for the batch being stored and take its outcomes."""
            nonlocal storing, error
            if storing is None:
                return
            stored, future = storing
            storing = None
            results = future.result()
            outcomes.update(zip(stored.indexes, results, strict=True))
            failed = [o for o in results if o.status == FAILED]
            if failed and error is None:
                error = failed[0].reason

        def flush() -> None:
            """Embed ``batch`` here while the previous one is stored, then hand it to the store thread."""
            nonlocal batch, storing, error
            embedded = self._embed(batch)
            settle()
            if error is None and not isinstance(embedded, str):
                storing = (batch, stores.submit(self._commit, batch, embedded, source=source, uploader=uploader, now=now))
            else:
                reason = f"not processed: {error}" if error is not None else str(embedded)
                error = error or reason
                outcomes.update((i, FileOutcome(e.item.name, FAILED, reason=reason))
                                for i, e in zip(batch.indexes, batch.entries, strict=True))
            batch = _Batch()

        with (
            ThreadPoolExecutor(self._workers(), "ingest-decode", _single_threaded_torch) as pool,
            ThreadPoolExecutor(1, "ingest-store", _single_threaded_torch) as stores,
            self._leases(),
        ):
            for index, future in self._ordered(pool, prepare, items):
                item = items[index]
                if error is not None:
                    if future.cancel():
                        first.hashed(index, None)  # never ran: later workers must not wait for it
                    outcomes[index] = FileOutcome(item.name, FAILED, reason=f"not processed: {error}")
                    continue
                try:
                    result = future.result()
                except OSError as exc:
                    result = _Rejected(item, None, unreadable(exc))
                result = self._repeat_of_earlier(result, first_by_sha)
                if isinstance(result, _Rejected):
                    error_ = result.error
                    outcomes[index] = FileOutcome(item.name, REJECTED, reason=str(error_), reason_code=error_.reason)
                else:
                    batch.entries.append(result)
                    batch.indexes.append(index)
                    if len(batch.entries) >= self.settings.embed_batch_size:
                        flush()
                done += 1
                if progress is not None:
                    progress(done, len(items))
            if batch.entries:
                flush()
            settle()
        ordered = tuple(outcomes[i] for i in range(len(items)))
        report = IngestReport(outcomes=ordered, seconds=time.perf_counter() - start, error=error)
        record_ingest(report, source=source, uploader=uploader)
        return report

    @contextmanager
    def _leases(self) -> Iterator[None]:
        """Hold this run's leases while it runs; when it ends, however it ends, whatever it left
        pending (a batch whose rollback failed) is no longer anybody's and repair may remove it."""
        try:
            yield
        finally:
            try:
                self.backends.catalog.release_leases(self.owner)
            except Exception as exc:  # the leases then expire by age (PENDING_LEASE_S)
                log_event("lease_release_failed", logging.WARNING, error=public_reason(exc))

    @staticmethod
    def _repeat_of_earlier(
        result: _Prepared | _Known | _Rejected, first_by_sha: dict[str, _Prepared | _Known | _Rejected]
    ) -> _Prepared | _Known | _Rejected:
        """The same bytes met again in this run share the first occurrence's fate: stored once, or
        rejected for the same reason. Decided in input order, whichever worker finished first."""
        sha = result.image.sha256 if isinstance(result, _Prepared) else result.sha256
        if sha is None:
            return result
        first = first_by_sha.setdefault(sha, result)
        if first is result:
            return result
        if isinstance(first, _Rejected):
            return _Rejected(result.item, sha, first.error)
        return _Known(result.item, sha, image_id(sha))

    def _workers(self) -> int:
        """Decode threads sized together with the encoder's. On the CPU the encoder runs on every core
        and decoding an image costs about a tenth of embedding it, so half the cores (at most four)
        keep it fed without taking cores from it; on a GPU the CPU's only job is decoding."""
        cores = os.cpu_count() or 2
        if resolve_device(self.settings.device) == "cpu":  # asked of the settings: the model may never load
            return max(1, min(4, cores // 2))
        return cores

    def _ordered(
        self, pool: ThreadPoolExecutor, work: Callable[[int, IngestItem], object], items: Sequence[IngestItem]
    ) -> Iterator[tuple[int, Future]]:
        """Futures in input order with a bounded number in flight, so memory stays flat."""
        window = 2 * self.settings.embed_batch_size
        pending: list[tuple[int, Future]] = []
        for index, item in enumerate(items):
            pending.append((index, pool.submit(work, index, item)))
            if len(pending) >= window:
                yield pending.pop(0)
        yield from pending

    def _embed(self, batch: _Batch) -> np.ndarray | str:
        """The embeddings of the batch's new images, or why they could not be made (the batch fails)."""
        prepared = batch.prepared
        if not prepared:
            return np.zeros((0, self._embedder().dim), dtype=np.float32)
        try:
            with timed("embed"):
                return self._embedder().embed_tensors(torch.stack([p.tensor for p in prepared]))
        except Exception as exc:  # e.g. out of memory: the batch fails, the run stops as for a store failure
            return f"{type(exc).__name__}: {exc}"

    def _commit(self, batch: _Batch, embeddings: np.ndarray, *, source: str, uploader: str,
                now: float) -> list[FileOutcome]:
        """Store one embedded batch following the protocol in the module docstring; outcomes in batch
        order. Runs on the store thread, one batch at a time, so each batch's arrival checks see every
        earlier batch's vectors."""
        catalog, blobs, vectors = self.backends.catalog, self.backends.blobs, self.backends.vectors
        records = [self._record(p, source, uploader, now) for p in batch.prepared]
        ids = [r.id for r in records]
        names = [ImageName(r.id, p.item.name, source, uploader, now) for r, p in zip(records, batch.prepared, strict=True)]
        known_names = [ImageName(k.image_id, k.item.name, source, uploader, now) for k in batch.known]
        try:
            with timed("store"):
                catalog.add_pending(records, names + [n for n in known_names if n.image_id in set(ids)],
                                    Lease(self.owner, time.time()),
                                    {r.id: p.image.properties for r, p in zip(records, batch.prepared, strict=True)})
                for record, prepared in zip(records, batch.prepared, strict=True):
                    blobs.put(original_key(record.id), prepared.data, f"image/{record.format.lower()}")
                    blobs.put(thumbnail_key(record.id), prepared.image.thumbnail, "image/jpeg")
            nearest: dict[str, ArrivalMatch] = {}
            if records:
                with timed("arrival"):
                    nearest = self._arrival_checks(batch.prepared, embeddings)
                with timed("store"):
                    vectors.upsert(ids, embeddings, [payload(r, [source], [uploader]) for r in records])
                    self._stored_vectors = True
                    catalog.mark_ready(ids)
            old_names = [n for n in known_names if n.image_id not in set(ids)]
            catalog.add_names(old_names)
            self._refresh_payloads(ids + [n.image_id for n in old_names])
        except Exception as exc:  # any store may fail; roll the whole batch back everywhere
            self._rollback(ids)
            reason = public_reason(exc)
            return [FileOutcome(e.item.name, FAILED, reason=reason) for e in batch.entries]
        return [
            FileOutcome(e.item.name, INGESTED, image_id=image_id(e.image.sha256), nearest=nearest.get(e.image.sha256))
            if isinstance(e, _Prepared)
            else FileOutcome(e.item.name, ALREADY_PRESENT, image_id=e.image_id)
            for e in batch.entries
        ]

    def _arrival_checks(self, prepared: Sequence[_Prepared], embeddings: np.ndarray) -> dict[str, ArrivalMatch]:
        """The on-arrival duplicate checks, which only inform: when they fail, the images are still
        stored (without a `nearest`) and the failure is logged, rather than the batch being lost."""
        try:
            return self._nearest_stored(prepared, embeddings)
        except Exception as exc:
            log_event("arrival_check_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}",
                      files=len(prepared))
            return {}

    def _nearest_stored(self, prepared: Sequence[_Prepared], embeddings: np.ndarray) -> dict[str, ArrivalMatch]:
        """For each new image, the closest image stored before it and whether it duplicates it, judged
        with the duplicate view's own thresholds, without recomputing anything over the collection."""
        if self.arrival is None:
            return {}
        # counting the store costs a round trip (a sixth of a second on the Edge shard): ask only
        # until this run has stored vectors itself
        if not self.arrival.ids and not self._stored_vectors and self.backends.vectors.count() == 0:
            return {}
        hits = [self.backends.vectors.search(v, self.arrival.neighbour_count) for v in embeddings]
        known = {r.id: r for r in self.backends.catalog.get(list({h.id for row in hits for h in row}))}
        matches = {}
        for p, row in zip(prepared, hits, strict=True):
            neighbours = [stored_image(known[h.id], h.score) for h in row if h.id in known]
            image = p.image
            matches[image.sha256] = self.arrival.judge(
                sha256=image.sha256, pixel_sha256=image.pixel_sha256, phash=image.phash,
                phash_mirror=image.phash_mirror, sketch=image.sketch, neighbours=neighbours,
                thresholds=self.thresholds, thumbnail=image.thumbnail,
            )
        return matches

    def _refresh_payloads(self, ids: Sequence[str]) -> None:
        """Give the vectors of ``ids`` every source and uploader their images arrived with, as the
        catalog holds them now. Another ingest may store the same bytes at the same time under another
        source, each writing its own payload; each then copies the catalog's names into the payload
        while holding their rows (:meth:`Catalog.locked_names`), so whichever copies last copies all."""
        if not ids:
            return
        catalog = self.backends.catalog
        with catalog.locked_names(list(dict.fromkeys(ids))) as names:
            stored = list(names)
            if stored:
                self.backends.vectors.set_payload(stored, [
                    {"sources": sorted({n.source for n in names[i]}), "uploaders": sorted({n.uploader for n in names[i]})}
                    for i in stored])

    def _rollback(self, ids: Sequence[str]) -> None:
        """Best effort: remove every trace of a failed batch, store by store, never raising."""
        steps: list[Callable[[], None]] = [lambda: self.backends.vectors.delete(ids)]
        for image in ids:
            steps += [
                lambda i=image: self.backends.blobs.delete(original_key(i)),
                lambda i=image: self.backends.blobs.delete(thumbnail_key(i)),
            ]
        steps.append(lambda: self.backends.catalog.remove_pending(ids, self.owner))
        for step in steps:
            try:
                step()
            except Exception:
                continue

    @staticmethod
    def _record(prepared: _Prepared, source: str, uploader: str, now: float) -> ImageRecord:
        image = prepared.image
        return ImageRecord(
            id=image_id(image.sha256),
            sha256=image.sha256,
            pixel_sha256=image.pixel_sha256,
            phash=image.phash,
            phash_mirror=image.phash_mirror,
            dhash=image.dhash,
            width=image.width,
            height=image.height,
            format=image.format,
            size_bytes=image.size_bytes,
            file_name=prepared.item.name,
            source=source,
            uploader=uploader,
            created_at=now,
            sketch=image.sketch,
        )


def _single_threaded_torch() -> None:
    """Pipeline threads run their few torch operations (preprocessing) on one core: left at the
    default, each would start its own team of threads on every core, fighting the encoder's."""
    torch.set_num_threads(1)


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def lease_is_live(lease: Lease | None, now: float) -> bool:
    """Whether an ingest may still be storing the rows under ``lease``: it is younger than
    ``PENDING_LEASE_S`` and its owner is not a process of this host that has exited."""
    if lease is None or now - lease.leased_at > PENDING_LEASE_S:
        return False
    host, _, rest = lease.owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def too_large(size: str, max_bytes: int) -> ImageRejected:
    return ImageRejected(
        "too_large", f"The file is {size}, over the {max_bytes / _MB:.1f} MB limit (MAX_UPLOAD_MB)."
    )


def unreadable(exc: BaseException) -> ImageRejected:
    loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
    what = "it is a symbolic link that loops" if loop else (exc.strerror if isinstance(exc, OSError) and exc.strerror
                                                          else str(exc))
    return ImageRejected("unreadable", f"The file cannot be read ({what}); it was skipped.")


def not_a_file(mode: int) -> ImageRejected:
    kind = ("a named pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return ImageRejected("not_a_file", f"It is {kind}, not a regular file; it was skipped without being read.")


def outside_folder(target: Path, root: Path) -> ImageRejected:
    return ImageRejected(
        "outside_folder",
        f"It is a symbolic link to {target}, outside the folder being ingested ({root}); links are followed "
        "only inside it. Ingest the target itself to include it.",
    )


def invalid_name(exc: InvalidRequest) -> ImageRejected:
    return ImageRejected("invalid_name", f"Invalid name: {exc.reason}. Rename the file and upload it again.")


def payload(record: ImageRecord, sources: Sequence[str], uploaders: Sequence[str]) -> dict:
    """The vector payload: every field that search filters on."""
    return {
        "sources": list(sources),
        "uploaders": list(uploaders),
        "format": record.format,
        "size_bytes": record.size_bytes,
        "width": record.width,
        "height": record.height,
        "created_at": record.created_at,
    }


def record_ingest(report: IngestReport, *, source: str, uploader: str) -> None:
    """Count an ingest's outcomes and log one event per file and one summary. (Here, not in
    core.observability, which must not import the ingest records it would describe.)"""
    IMAGES_INGESTED.inc(report.ingested)
    IMAGES_ALREADY_PRESENT.inc(report.already_present)
    IMAGES_FAILED.inc(len(report.failed))
    for outcome in report.rejected:
        IMAGES_REJECTED.labels(reason=outcome.reason_code or "unknown").inc()
    for outcome in report.outcomes:
        level = logging.WARNING if outcome.status in ("rejected", "failed") else logging.INFO
        log_event(
            f"image_{outcome.status}",
            level,
            image_id=outcome.image_id,
            file=outcome.file,
            source=source,
            reason=outcome.reason_code or outcome.reason,
        )
    log_event(
        "ingest_finished",
        logging.ERROR if report.error else logging.INFO,
        source=source,
        uploader=uploader,
        files=len(report.outcomes),
        ingested=report.ingested,
        already_present=report.already_present,
        rejected=len(report.rejected),
        failed=len(report.failed),
        duration_s=round(report.seconds, 3),
        error=report.error,
    )
