"""The ingest pipeline and its consistency protocol.

Files are read, hashed and decoded by a small thread pool while the main thread runs inference, so
the model never waits on I/O. Each batch is committed in this order:

1. catalog rows written ``pending`` (with every name the image arrived under);
2. original and thumbnail written to the blob store;
3. vectors upserted (durable when the call returns);
4. catalog rows turned ``ready`` in one transaction: only now is the image visible.

If any step fails, the batch is rolled back in every store (vectors, blobs, pending rows), so no
store holds half of an image; if the process dies instead, the ``pending`` rows stay invisible and
running the same ingest again completes them (every write is idempotent, keyed by content hash).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.analysis import DuplicateThresholds, StoredImage
from core.analysis_service import ARRIVAL_NEIGHBOURS, ArrivalContext
from core.backends import Backends
from core.embedding import Embedder
from core.errors import InvalidRequest
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
from core.storage.catalog import PURGING, READY, REMOVED, ImageName, ImageRecord

INGESTED = "ingested"
ALREADY_PRESENT = "already_present"
REJECTED = "rejected"
FAILED = "failed"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IngestItem:
    """One file to ingest: a display name and a way to read its bytes (from disk or an upload)."""

    name: str
    read: Callable[[], bytes]
    size: int | None = None  # known size, checked against the limit before reading


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
    ``shard``, keep only that shard's files."""
    seen: set[Path] = set()
    items: list[IngestItem] = []

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved in seen or (shard is not None and not shard.holds(resolved)):
            return
        seen.add(resolved)
        items.append(IngestItem(name=str(path), read=resolved.read_bytes, size=resolved.stat().st_size))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        add(Path(root) / name)
        elif path.is_file():
            add(path)
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a folder.")
    return items


def items_from_uploads(uploads: Iterable[tuple[str, bytes]]) -> list[IngestItem]:
    return [IngestItem(name=name, read=lambda data=data: data, size=len(data)) for name, data in uploads]


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
        embedder: Embedder,
        *,
        arrival: ArrivalContext | None = None,
        thresholds: DuplicateThresholds | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.embedder = embedder
        self.arrival = arrival
        self.thresholds = thresholds or DuplicateThresholds()
        self._stored_vectors = False  # once this run stores a batch, the vector store is not empty

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
                if item.size is not None and item.size > self.settings.max_upload_bytes:
                    return _Rejected(item, None, too_large(item.size, self.settings.max_upload_mb))
                with timed("read"):
                    data = item.read()
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
                tensor = self.embedder.preprocess_image(image.model_image)
            return _Prepared(item, data, image, tensor)

        def flush() -> None:
            nonlocal batch, error
            results = self._commit(batch, source=source, uploader=uploader, now=now)
            outcomes.update(zip(batch.indexes, results, strict=True))
            failed = [o for o in results if o.status == FAILED]
            if failed and error is None:
                error = failed[0].reason
            batch = _Batch()

        with ThreadPoolExecutor(max_workers=self._workers(), thread_name_prefix="ingest-decode") as pool:
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
                    result = _Rejected(item, None, ImageRejected("unreadable", f"The file cannot be read: {exc}"))
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
        ordered = tuple(outcomes[i] for i in range(len(items)))
        report = IngestReport(outcomes=ordered, seconds=time.perf_counter() - start, error=error)
        record_ingest(report, source=source, uploader=uploader)
        return report

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
        return max(2, min(4, os.cpu_count() or 2))

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

    def _commit(self, batch: _Batch, *, source: str, uploader: str, now: float) -> list[FileOutcome]:
        """Store one batch following the protocol in the module docstring; outcomes in batch order."""
        catalog, blobs, vectors = self.backends.catalog, self.backends.blobs, self.backends.vectors
        records = [self._record(p, source, uploader, now) for p in batch.prepared]
        ids = [r.id for r in records]
        names = [ImageName(r.id, p.item.name, source, uploader, now) for r, p in zip(records, batch.prepared, strict=True)]
        known_names = [ImageName(k.image_id, k.item.name, source, uploader, now) for k in batch.known]
        try:
            with timed("store"):
                catalog.add_pending(records, names + [n for n in known_names if n.image_id in set(ids)],
                                    {r.id: p.image.properties for r, p in zip(records, batch.prepared, strict=True)})
                for record, prepared in zip(records, batch.prepared, strict=True):
                    blobs.put(original_key(record.id), prepared.data, f"image/{record.format.lower()}")
                    blobs.put(thumbnail_key(record.id), prepared.image.thumbnail, "image/jpeg")
            nearest: dict[str, ArrivalMatch] = {}
            if records:
                with timed("embed"):
                    embeddings = self.embedder.embed_tensors(torch.stack([p.tensor for p in batch.prepared]))
                with timed("arrival"):
                    nearest = self._arrival_checks(batch.prepared, embeddings)
                with timed("store"):
                    vectors.upsert(ids, embeddings, [payload(r, [source], [uploader]) for r in records])
                    self._stored_vectors = True
                    catalog.mark_ready(ids)
            self._record_names(known_names, set(ids))
        except Exception as exc:  # any store may fail; roll the whole batch back everywhere
            self._rollback(ids)
            reason = f"{type(exc).__name__}: {exc}"
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
        if self.arrival.frame.empty and not self._stored_vectors and self.backends.vectors.count() == 0:
            return {}
        hits = [self.backends.vectors.search(v, ARRIVAL_NEIGHBOURS) for v in embeddings]
        known = {r.id: r for r in self.backends.catalog.get(list({h.id for row in hits for h in row}))}
        matches = {}
        for p, row in zip(prepared, hits, strict=True):
            neighbours = [
                StoredImage(h.id, h.score, known[h.id].sha256, known[h.id].pixel_sha256, known[h.id].phash,
                            known[h.id].phash_mirror, known[h.id].sketch)
                for h in row
                if h.id in known
            ]
            image = p.image
            matches[image.sha256] = self.arrival.judge(
                sha256=image.sha256, pixel_sha256=image.pixel_sha256, phash=image.phash,
                phash_mirror=image.phash_mirror, sketch=image.sketch, neighbours=neighbours,
                thresholds=self.thresholds,
            )
        return matches

    def _record_names(self, names: Sequence[ImageName], new_ids: set[str]) -> None:
        """Remember new names of stored images and let search filter on their new source labels."""
        old = [n for n in names if n.image_id not in new_ids]
        if not old:
            return
        catalog = self.backends.catalog
        catalog.add_names(old)
        ids = list(dict.fromkeys(n.image_id for n in old))
        present = {r.id for r in catalog.get(ids)}
        ids = [i for i in ids if i in present]
        payloads = []
        for image in ids:
            entries = catalog.names(image)
            payloads.append(
                {
                    "sources": sorted({e.source for e in entries}),
                    "uploaders": sorted({e.uploader for e in entries}),
                }
            )
        self.backends.vectors.set_payload(ids, payloads)

    def _rollback(self, ids: Sequence[str]) -> None:
        """Best effort: remove every trace of a failed batch, store by store, never raising."""
        steps: list[Callable[[], None]] = [lambda: self.backends.vectors.delete(ids)]
        for image in ids:
            steps += [
                lambda i=image: self.backends.blobs.delete(original_key(i)),
                lambda i=image: self.backends.blobs.delete(thumbnail_key(i)),
            ]
        steps.append(lambda: self.backends.catalog.remove_pending(ids))
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


def too_large(size: int, limit_mb: int) -> ImageRejected:
    return ImageRejected(
        "too_large", f"The file is {size / 1e6:.1f} MB, over the {limit_mb} MB limit (MAX_UPLOAD_MB)."
    )


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
