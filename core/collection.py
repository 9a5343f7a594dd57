"""The facade: one object that the app, the CLI and notebooks call, over every store and the model.

    from core import Collection
    with Collection.open() as collection:          # settings from the environment
        report = collection.ingest(["./photos"], source="batch-2026-11")
        print(collection.status())

Nothing above this class knows which backends are in use; nothing below it knows about the UI.
The model is loaded on first use, so ``status()`` and browsing stay instant. Every call acts for
``collection.actor`` and checks its role first (see :mod:`core.access`); every expected failure is
a :mod:`core.errors` domain error (see :mod:`core.facade_errors`).
"""

from __future__ import annotations

import copy
import functools
import getpass
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from os import PathLike

import numpy as np

from core import uploads as presigned
from core import validation
from core.access import Action, Actor, Role, require
from core.analysis import METHODS, DuplicateThresholds
from core.analysis.anomalies import DEFAULT_METHOD, AnomalyScores
from core.analysis.heap import release_free_memory
from core.analysis.quality import DEFAULT_Z, FLAG_NAMES, check_threshold
from core.analysis_inputs import AnalysisRows, detail_pictures, read_analysis_rows, vector_dtype
from core.analysis_memo import waiting
from core.analysis_service import CollectionAnalysis, VectorSnapshot
from core.auth_secret import resolve_auth_secret
from core.backends import Backends, open_backends
from core.cache_codec import PROJECTION
from core.devices import resolve_device
from core.embedding import Embedder, ModelInfo, resolve_embedding_dim
from core.errors import InvalidRequest, NotFound, Unavailable
from core.facade_errors import domain_errors
from core.images import PreparedImage, difference_image, prepare_image
from core.ingest import (
    IngestItem,
    Ingestor,
    IngestReport,
    Progress,
    Shard,
    items_from_paths,
    items_from_uploads,
    lease_is_live,
)
from core.jobs import Jobs, JobState
from core.paging import DEFAULT_LIMIT, Page, check_page
from core.records import ImageFileName, ImageInfo
from core.reports import (
    AnomaliesView,
    AnomalyRow,
    DuplicateGroup,
    DuplicateLink,
    DuplicatesView,
    ImageDetail,
    IssuesView,
    MapView,
    Neighbour,
    SameBytesFiles,
)
from core.review import (
    Decision,
    DecisionBatch,
    DecisionEvent,
    ImageReview,
    KeepCandidate,
    KeepRulePlan,
    ReviewState,
    check_rule,
    plan_cluster,
)
from core.search import SearchFilter, SearchResponse, image_vector, nearest, text_vector
from core.settings import Settings
from core.storage.blobs import BLOB_PREFIXES, image_id_of, original_key, thumbnail_key
from core.storage.catalog import IMAGE_SORTS, LABELS, PURGING, READY, REMOVED, ImageRecord, Label
from core.storage.errors import StorageError
from core.storage.vectors import REMOVED as REMOVED_FLAG
from core.storage.vectors import VISIBILITY_FIELD
from core.storage.vectors import VISIBLE as VISIBLE_FLAG
from core.users import User, UserDirectory

_BACKFILL_BATCH = 500
DETAIL_NEIGHBOURS = 10

log = logging.getLogger(__name__)
DAY_S = 86_400
DEFAULT_ANOMALY_TOP = 20  # the selection the Anomalies page opens on, and the warm-up prepares
VECTOR_PAGE = 2_000  # vectors read at a time (they arrive as Python floats): 10k peaked 120 MB higher at 100k
OPTIMIZE_MIN_POINTS = 10_000  # below this, a full scan answers in a few milliseconds
OPTIMIZE_GROWTH = 0.25  # re-index when the collection grew by this fraction since the last index


@dataclass(frozen=True)
class CollectionStatus:
    images: int  # visible (ready) images
    pending: int  # started but not completed ingests (invisible; re-run the ingest or repair)
    vectors: int
    blobs: int
    thumbnails: int
    version: int
    backends: dict[str, str]
    model: dict[str, object]
    cache_healthy: bool = True  # False while the cache server is unreachable: everything works, slower
    removed: int = 0  # soft-deleted: invisible, restorable, still stored
    purging: int = 0  # purges a failure interrupted (invisible; repair finishes them)
    acting_as: dict[str, str] = field(default_factory=dict)  # {"name", "role"} of the caller

    @property
    def consistent(self) -> bool:
        """Every store agrees and no ingest or purge was left half done."""
        stored = self.images + self.removed
        return self.pending == 0 and self.purging == 0 and stored == self.vectors == self.blobs == self.thumbnails

    def to_json(self) -> dict:
        return asdict(self) | {"consistent": self.consistent}


@dataclass(frozen=True)
class RepairReport:
    removed_pending: int  # half-ingested images removed from every store
    sketches_added: int  # older images given the sketch that crop detection needs
    purges_finished: int = 0  # images an interrupted purge left, now deleted from every store
    orphans_removed: int = 0  # images whose blob or vector was stored without any catalog row, now deleted
    left_to_ingests: int = 0  # pending images an ingest still holds a live lease on, left alone
    properties_added: int = 0  # older images given the properties that quality flags need


@dataclass
class _Shared:
    """What every view of one collection shares (see :meth:`Collection.acting_as`): the model once
    loaded, the vector snapshot and the cached analysis. A view only differs in who it acts for."""

    embedder: Embedder | None
    analysis: CollectionAnalysis
    jobs: Jobs
    snapshot: VectorSnapshot | None = None
    embedder_lock: threading.Lock = field(default_factory=threading.Lock)
    snapshot_lock: threading.Lock = field(default_factory=threading.Lock)
    blob_counts: _BlobCounts | None = None


@dataclass(frozen=True)
class _BlobCounts:
    """The blob store's counts (originals, thumbnails) as of a catalog state and a moment."""

    catalog_state: tuple
    counted_at: float
    originals: int
    thumbnails: int


@domain_errors
class Collection:
    """An image collection over its stores and model (see the module docstring)."""

    def __init__(self, settings: Settings, backends: Backends, embedder: Embedder | None = None,
                 actor: Actor | None = None) -> None:
        self.settings = settings
        # Who calls act for: the machine's own user as an admin unless a caller names another
        # (the app and the API always do, per request); see as_user() and acting_as().
        self.actor = actor or local_admin()
        self.backends = backends
        self._users = UserDirectory(backends.catalog.users)
        analysis = CollectionAnalysis(
            backends.cache, backends.catalog.collection_id(), self.snapshot, device=resolve_device(settings.device),
            pictures=functools.partial(detail_pictures, backends.blobs),
        )
        self._shared = _Shared(embedder, analysis, Jobs(backends.cache, shared=settings.redis_url is not None))
        self._owns_stores = True  # views (acting_as) share the stores and never close them

    @property
    def analysis(self) -> CollectionAnalysis:
        return self._shared.analysis

    @classmethod
    def open(cls, settings: Settings | None = None, *, embedder: Embedder | None = None) -> Collection:
        """Open the collection the settings describe (the environment's by default)."""
        settings = settings or Settings.from_env()
        dim = embedder.dim if embedder is not None else resolve_embedding_dim(settings.model_name)
        return cls(settings, open_backends(settings, dim), embedder)

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the stores; on a view (acting_as, as_user) nothing happens: its original owns them."""
        if self._owns_stores:
            self.backends.close()

    # who acts -----------------------------------------------------------------------------------
    def acting_as(self, actor: Actor) -> Collection:
        """This collection acting for ``actor``: the same stores, model and caches (nothing is
        opened or copied), with every call checked against that actor's role."""
        view = copy.copy(self)
        view.actor = actor
        view._owns_stores = False
        return view

    def as_user(self, name: str) -> Collection:
        """This collection acting for the catalog user ``name`` (:class:`NotFound` if there is none,
        :class:`Forbidden` if the account is disabled): what the app and the API do per request."""
        return self.acting_as(self._users.actor(name))

    def _require(self, action: Action) -> None:
        require(self.actor, action)

    # users --------------------------------------------------------------------------------------
    def authenticate(self, name: str, password: str) -> Actor:
        """The enabled user whose password this is, or :class:`AuthenticationFailed` (the same for
        an unknown name, a wrong password and a disabled account, and equally slow)."""
        return self._users.authenticate(name, password)

    def add_user(self, name: str, role: Role | str, password: str) -> User:
        self._require(Action.MANAGE_USERS)
        return self._users.add(name, role, password)

    def users(self) -> list[User]:
        self._require(Action.MANAGE_USERS)
        return self._users.all()

    def set_password(self, name: str, password: str) -> None:
        self._require(Action.MANAGE_USERS)
        self._users.set_password(name, password)

    def disable_user(self, name: str) -> None:
        """Refuse the user's sign-ins and requests from now on (the last enabled admin stays)."""
        self._require(Action.MANAGE_USERS)
        self._users.disable(name)

    def remove_user(self, name: str) -> None:
        """Delete the account; what the user uploaded and labelled keeps their name."""
        self._require(Action.MANAGE_USERS)
        self._users.remove(name)

    def ensure_admin(self) -> str | None:
        """First run: with no user at all, create ``admin`` with a random password, keep it in
        ``DATA_DIR/initial-admin-password`` (mode 0600) and return it, for the caller to show once
        on its terminal (never in a log). None when any user exists."""
        self._require(Action.MANAGE_USERS)
        return self._users.ensure_admin(self.settings.data_dir)

    def login_credentials(self) -> dict[str, dict[str, dict[str, object]]]:
        """Enabled users with their bcrypt hashes, as streamlit-authenticator's ``credentials``."""
        self._require(Action.MANAGE_USERS)
        return self._users.login_credentials()

    def auth_secret(self) -> str:
        """The key that signs login cookies and API tokens: ``AUTH_SECRET``, required with any
        server backend; on the embedded default one generated once under ``DATA_DIR``."""
        self._require(Action.MANAGE_USERS)
        return resolve_auth_secret(self.settings)

    # model --------------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The model, loaded once on first use (seconds), shared by every caller of this collection."""
        shared = self._shared
        with shared.embedder_lock:
            if shared.embedder is None:
                shared.embedder = Embedder(self.settings)
            return shared.embedder

    def model_info(self) -> ModelInfo | None:
        """What the model is, if it has been loaded."""
        return None if self._shared.embedder is None else self._shared.embedder.info

    def model_config(self) -> dict[str, object]:
        """What the model is or will be, without loading it."""
        info = self.model_info()
        if info is not None:
            return asdict(info) | {"loaded": True}
        s = self.settings
        weights = (
            f"checkpoint {s.model_checkpoint}"
            if s.model_checkpoint
            else ("random (MODEL_PRETRAINED=none)" if s.random_weights else f"pretrained {s.model_pretrained}")
        )
        return {
            "name": s.model_name,
            "weights": weights,
            "random_weights": s.random_weights,
            "device": s.device,
            "precision": s.precision,
            "loaded": False,
        }

    # ingest -------------------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | PathLike[str]],
        *,
        source: str | None = None,
        progress: Progress | None = None,
        shard: Shard | None = None,
    ) -> IngestReport:
        """Ingest files and folders (recursively). Same bytes already stored are reported, not redone.
        The images are recorded as uploaded by the acting user. With ``shard``, only that worker's share
        of the files (see :class:`core.ingest.Shard`)."""
        self._require(Action.UPLOAD)
        return self._ingest(items_from_paths(paths, shard), source, progress)

    def ingest_uploads(
        self,
        uploads: Iterable[tuple[str, bytes]],
        *,
        source: str | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Ingest in-memory files (name, bytes), e.g. from the browser's upload widget. A file whose name
        is refused (:func:`core.validation.file_name`) is rejected alone, as ``invalid_name``."""
        self._require(Action.UPLOAD)
        return self._ingest(items_from_uploads(uploads), source, progress)

    def start_ingest_job(self, uploads: Iterable[tuple[str, bytes]], *, source: str | None = None) -> JobState:
        """:meth:`ingest_uploads` in the background, for batches too large to wait for; poll it with
        :meth:`job`. The source is checked now, so a bad one fails the call, not the job; a bad file
        name is rejected alone, as in :meth:`ingest_uploads`."""
        self._require(Action.UPLOAD)
        uploads = list(uploads)
        _source_label(source)
        return self._shared.jobs.start(
            self.actor.name, len(uploads), lambda progress: self.ingest_uploads(uploads, source=source, progress=progress))

    def job(self, job_id: str) -> JobState:
        """A job's progress and, once finished, its report; only its starter and admins see it."""
        self._require(Action.READ)
        jobs = self._shared.jobs
        found = jobs.get(job_id)
        if found is None or (found.owner != self.actor.name and self.actor.role is not Role.ADMIN):
            where = ("Jobs are kept for a day after their last progress." if jobs.shared else
                     "Without REDIS_URL a job is known only to the process (API worker) that started it: "
                     "with several workers, configure Redis so that any of them answers.")
            raise NotFound("job", str(job_id), where)
        return found

    def upload_slot(self, file_name: str, content_type: str, size: int) -> presigned.UploadSlot:
        """A presigned PUT URL for one file the caller uploads straight to S3, after checking its name,
        type and size; :class:`NotConfigured` without S3 blobs (see :mod:`core.uploads`)."""
        self._require(Action.UPLOAD)
        return presigned.open_slot(self.backends.blobs, self.settings, self.actor.name, file_name, content_type, size)

    def ingest_upload(self, key: str, *, source: str | None = None) -> IngestReport:
        """Ingest what was PUT to an :meth:`upload_slot` URL, checked like any upload (size on what is
        read, type by decoding). The uploaded object is removed once the file has an outcome, and kept
        when a store failed, so the same call can be retried."""
        self._require(Action.UPLOAD)
        name, data = presigned.claim(self.backends.blobs, self.settings, self.actor, key)
        report = self.ingest_uploads([(name, data)], source=source)
        if report.error is None and not report.failed:
            presigned.discard(self.backends.blobs, key)
        return report

    def _ingest(self, items: Sequence[IngestItem], source: str | None, progress: Progress | None) -> IngestReport:
        source = _source_label(source)
        arrival = self.analysis.arrival_context(self.backends.catalog)
        ingestor = Ingestor(self.settings, self.backends, lambda: self.embedder, arrival=arrival)
        report = ingestor.run(items, source=source, uploader=self.actor.name, progress=progress)
        if report.ingested:
            self.backends.vectors.flush()
            self._index_if_grown()
        return report

    def _index_if_grown(self) -> None:
        """Build the vector index when the collection has grown enough since it was last built."""
        catalog = self.backends.catalog
        count = self.backends.vectors.count()
        indexed = int(catalog.get_meta("indexed_count") or 0)
        if count >= OPTIMIZE_MIN_POINTS and count - indexed >= OPTIMIZE_GROWTH * count:
            self.backends.vectors.optimize()
            catalog.set_meta("indexed_count", str(count))

    def repair(self) -> RepairReport:
        """Remove what interrupted ingests left behind (pending rows and their blobs and vectors, then
        blobs and vectors no catalog row owns), and compute the crop sketches and properties of images
        stored before they existed (from their originals).

        Safe while ingests run: a pending row under a live lease (see :func:`core.ingest.lease_is_live`)
        belongs to an ingest still at work and is left alone, and a row is removed from the catalog,
        atomically with that check, before its blob and vector are deleted."""
        self._require(Action.REPAIR)
        leases = self.backends.catalog.pending_leases()
        now = time.time()
        removed = self.backends.catalog.remove_stale_pending(
            {i: lease for i, lease in leases.items() if not lease_is_live(lease, now)})
        self._delete_stored(removed)
        purging = self.backends.catalog.ids_in_state(PURGING)
        if purging:
            self._delete_stored(purging)
            self.backends.catalog.delete_purging(purging)
        self._flag_removed(self.backends.catalog.ids_in_state(REMOVED), True)
        catalog = self.backends.catalog
        missing = catalog.ids_without_sketch()
        unmeasured = set(catalog.ids_without_properties())
        for start in range(0, len(missing), _BACKFILL_BATCH):  # one decode gives both
            prepared = {i: self._prepare_stored(i) for i in missing[start:start + _BACKFILL_BATCH]}
            catalog.set_sketches({i: p.sketch for i, p in prepared.items()})
            catalog.set_properties({i: p.properties for i, p in prepared.items() if i in unmeasured})
        rest = catalog.ids_without_properties()
        for start in range(0, len(rest), _BACKFILL_BATCH):
            catalog.set_properties({i: self._prepare_stored(i).properties for i in rest[start:start + _BACKFILL_BATCH]})
        return RepairReport(removed_pending=len(removed), sketches_added=len(missing), purges_finished=len(purging),
                            orphans_removed=self._remove_orphans(), left_to_ingests=len(leases) - len(removed),
                            properties_added=len(unmeasured))

    def _prepare_stored(self, image_id: str) -> PreparedImage:
        """A stored original decoded again as ingest does, for what older versions did not store."""
        return prepare_image(self.original(image_id), max_bytes=1 << 62, max_pixels=1 << 62)

    def _remove_orphans(self) -> int:
        """Delete vectors and blobs whose image has no catalog row; returns how many images they were.

        The stores are listed before the catalog: an ingest writes its catalog row before its blob and
        vector, so anything listed whose row is missing from the later catalog read is truly orphaned."""
        vector_ids = [i for ids, _ in self.backends.vectors.iter_all() for i in ids]
        blob_keys = [k for prefix in BLOB_PREFIXES for k in self.backends.blobs.keys(prefix)]
        known = self.backends.catalog.all_ids()
        orphan_vectors = [i for i in vector_ids if i not in known]
        orphan_blobs = [k for k in blob_keys if image_id_of(k) not in known]
        if orphan_vectors:
            self.backends.vectors.delete(orphan_vectors)
        for key in orphan_blobs:
            self.backends.blobs.delete(key)
        return len(set(orphan_vectors) | {image_id_of(k) for k in orphan_blobs})

    def _delete_stored(self, ids: Sequence[str]) -> None:
        """Delete the vectors, originals and thumbnails of ``ids`` (missing ones are no error)."""
        self.backends.vectors.delete(ids)
        for image_id in ids:
            self.backends.blobs.delete(original_key(image_id))
            self.backends.blobs.delete(thumbnail_key(image_id))

    def _flag_removed(self, ids: Sequence[str], removed: bool) -> None:
        if ids:
            flag = REMOVED_FLAG if removed else VISIBLE_FLAG
            self.backends.vectors.set_payload(ids, [{VISIBILITY_FIELD: flag}] * len(ids))

    # analysis inputs ----------------------------------------------------------------------------
    def snapshot(self) -> VectorSnapshot:
        """Rows and vectors of every visible image, kept in memory and refreshed incrementally: after
        an ingest only the new vectors are fetched from the vector store."""
        self._require(Action.READ)
        shared = self._shared
        with shared.snapshot_lock:
            version = self.backends.catalog.version()
            old = shared.snapshot
            if old is not None and old.version == version:
                return old
            if old is None:
                rows, vectors = self._first_read()
            else:  # the previous snapshot's vectors, a page at a time; the new ones are fetched
                rows = read_analysis_rows(self.backends.catalog)
                kept = ((old.ids[s:s + VECTOR_PAGE], old.vectors[s:s + VECTOR_PAGE])
                        for s in range(0, len(old.ids), VECTOR_PAGE))
                vectors = self._all_vectors(rows.frame["id"].tolist(), kept)
            shared.snapshot = VectorSnapshot(version=version, frame=rows.frame, signals=rows.signals, vectors=vectors,
                                             properties=rows.properties)
            return shared.snapshot

    def _first_read(self) -> tuple[AnalysisRows, np.ndarray]:
        """The catalog's rows and every vector, for a first snapshot. The first page of vectors is
        scrolled before the catalog is read: an Edge shard made before its vectors were kept cold
        maps in its whole vector file while it loads (2.7 GB at a million images, handed back after
        each page), so it loads while little else is in memory, and is kept loaded until the scroll
        ends."""
        store = self.backends.vectors
        with store.kept_open():
            pages = store.iter_all(batch=VECTOR_PAGE)
            first = next(pages, None)
            rows = read_analysis_rows(self.backends.catalog)
            vectors = self._all_vectors(rows.frame["id"].tolist(), itertools.chain([first] if first else [], pages))
        store.rest()
        release_free_memory()  # what the shard's reading and the catalog's pages left on the heap
        return rows, vectors

    def _all_vectors(self, ids: list[str], pages: Iterable[tuple[list[str], np.ndarray]]) -> np.ndarray:
        """The vectors of ``ids``, in that order, from ``pages`` of (ids, vectors): the store's full
        scroll, or the previous snapshot's. Written a page at a time into one array (in
        `vector_dtype`): never a second copy of the collection's vectors, nor a dict of them. The
        images the pages lack (added since the previous snapshot, or visible only once the scroll
        had passed them) are fetched by id."""
        row_of = {image_id: row for row, image_id in enumerate(ids)}
        vectors = np.zeros((len(ids), self.backends.vectors.dim), vector_dtype(len(ids)))
        found = np.zeros(len(ids), dtype=bool)
        for batch_ids, batch in pages:
            rows = np.array([row_of.get(image_id, -1) for image_id in batch_ids])  # -1: not visible
            visible = rows >= 0
            vectors[rows[visible]] = batch[visible]
            found[rows[visible]] = True
        missing = np.flatnonzero(~found)
        if len(missing):
            try:
                vectors[missing] = self.backends.vectors.fetch([ids[row] for row in missing])
            except KeyError as exc:
                raise StorageError(
                    f"visible images (the first {exc.args[0]}) have no vector in "
                    f"{self.backends.vectors.describe()}: the catalog and the vector store do not belong together "
                    "(check DATA_DIR and the vector store settings)") from exc
        return vectors

    # analysis -----------------------------------------------------------------------------------
    # ``wait=False``: a value another caller is computing right now (a first graph or map build takes
    # minutes at 1M images) raises Busy with a retry hint instead of waiting for it.
    def duplicates(self, thresholds: DuplicateThresholds | None = None, *, wait: bool = True) -> DuplicatesView:
        """Exact and near duplicates as clusters. The neighbour graph and candidate pairs are cached
        per collection version, so calling this again with other thresholds is cheap."""
        self._require(Action.READ)
        with waiting(wait):
            view = self.analysis.duplicates(thresholds or DuplicateThresholds())
        same_bytes = tuple(
            SameBytesFiles(image_id, tuple((n.file_name, n.source) for n in names))
            for image_id, names in self.backends.catalog.repeated_names().items()
        )
        decisions = {image_id: d.decision for image_id, d in self.backends.catalog.decisions().items()}
        return replace(view, same_bytes=same_bytes, decisions=decisions)

    def duplicate_groups(self, thresholds: DuplicateThresholds | None = None, *, offset: int = 0,
                         limit: int = DEFAULT_LIMIT, wait: bool = True) -> Page[DuplicateGroup]:
        """One page of :meth:`duplicates`' groups, largest first, numbered as there."""
        check_page(offset, limit)
        with waiting(wait):
            return self.analysis.duplicate_groups(thresholds or DuplicateThresholds(), offset, limit)

    def duplicate_examples(
        self, signal: str, thresholds: DuplicateThresholds | None = None, count: int = 6
    ) -> tuple[list[DuplicateLink], list[DuplicateLink]]:
        """Pairs just inside and just outside the ``"cosine"``, ``"phash"`` or ``"crop"`` threshold."""
        self._require(Action.READ)
        validation.one_of("signal", signal, ("cosine", "phash", "crop"))
        return self.analysis.threshold_examples(thresholds or DuplicateThresholds(), signal, count)

    def anomalies(
        self,
        *,
        method: str = DEFAULT_METHOD,
        k: int | None = None,
        threshold: float | None = None,
        top: int | None = None,
        contamination: float | None = None,
        z_threshold: float = DEFAULT_Z,
        selected_only: bool = False,
        wait: bool = True,
    ) -> AnomaliesView:
        """Every image scored and ranked, most unusual first, with the analysts' labels, its reasons and
        its quality flags (robust z-score cut-off ``z_threshold``); at most one of ``threshold`` (raw
        score), ``top`` (N) or ``contamination`` (percent) marks a selection. ``selected_only`` builds
        the selected rows alone: 100,000 rows with their reasons take a page more than a second, and
        :meth:`anomaly_scores` gives every score without them."""
        self._check_anomaly_request(method, threshold, top, contamination)
        z_threshold = check_threshold(z_threshold)
        with waiting(wait):
            return self.analysis.anomalies(method=method, k=k, threshold=threshold, top=top,
                                           contamination=contamination, labels=self._labels(),
                                           z_threshold=z_threshold, selected_only=selected_only)

    def anomaly_scores(self, *, method: str = DEFAULT_METHOD, k: int | None = None,
                       wait: bool = True) -> AnomalyScores:
        """Every visible image's score and percentile under ``method`` as arrays, in the snapshot's
        order, with no row built: what a histogram or a threshold control needs (100,000 rows with
        their reasons cost a page more than a second; :meth:`anomaly_rows` pages those)."""
        self._check_anomaly_request(method, None, None, None)
        with waiting(wait):
            return self.analysis.anomaly_scores(self.snapshot(), method, k)

    def anomaly_rows(
        self,
        *,
        method: str = DEFAULT_METHOD,
        k: int | None = None,
        threshold: float | None = None,
        top: int | None = None,
        contamination: float | None = None,
        selected_only: bool = False,
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
        z_threshold: float = DEFAULT_Z,
        wait: bool = True,
    ) -> Page[AnomalyRow]:
        """One page of :meth:`anomalies`' rows, most unusual first (only the selected ones with
        ``selected_only``); sorted once per version, so paging recomputes nothing."""
        self._check_anomaly_request(method, threshold, top, contamination)
        check_page(offset, limit)
        z_threshold = check_threshold(z_threshold)
        with waiting(wait):
            return self.analysis.anomaly_rows(method=method, k=k, threshold=threshold, top=top,
                                              contamination=contamination, labels=self._labels(),
                                              selected_only=selected_only, offset=offset, limit=limit,
                                              z_threshold=z_threshold)[1]

    def issues(self, *, flag: str | None = None, z_threshold: float = DEFAULT_Z, wait: bool = True) -> IssuesView:
        """Images with quality issues (blank, dark, blurry, tiny, odd aspect, ...; ``FLAG_NAMES``),
        each judged against this collection's own distribution (robust z-score at least
        ``z_threshold``), by flag, most extreme first; only ``flag`` when given."""
        self._require(Action.READ)
        if flag is not None:
            validation.one_of("flag", flag, FLAG_NAMES)
        z_threshold = check_threshold(z_threshold)
        with waiting(wait):
            return self.analysis.issues(flag, z_threshold)

    def projection(self, *, wait: bool = True) -> MapView:
        """2-D UMAP coordinates of every image, from the shared neighbour graph (cached), each with its
        anomaly score, label, duplicate cluster and source, as columns (see :class:`MapView`)."""
        self._require(Action.READ)
        with waiting(wait):
            return self.analysis.projection(self._labels())

    def warm_up(self) -> None:
        """Load what the dashboard's first pages show into this process: the analysis snapshot (every
        vector: 9 s at 100,000 images), then the default duplicates, anomaly scores and map, from the
        cache backend where it holds them for this version, else computed. A server calls it once,
        in the background, after opening: otherwise the first visitor after a restart waits for it."""
        if len(self.snapshot().ids) < 2:
            return
        self.duplicates()
        self.anomalies(top=DEFAULT_ANOMALY_TOP, selected_only=True)  # as the Anomalies page opens
        self.projection()

    def warm_up_in_background(self) -> threading.Thread:
        """:meth:`warm_up` in a daemon thread, for a server that has just opened the collection. A
        failure is logged; the page or request that needs the value meets it again, with its message."""
        def run() -> None:
            try:
                self.warm_up()
            except Exception:
                log.exception("Preparing the analysis after the collection opened failed")

        thread = threading.Thread(target=run, name="warm-up", daemon=True)
        thread.start()
        return thread

    def _check_anomaly_request(self, method: str, threshold: float | None, top: int | None,
                               contamination: float | None) -> None:
        self._require(Action.READ)
        validation.one_of("method", method, METHODS)
        validation.optional_finite("threshold", threshold)
        validation.optional_finite("contamination", contamination)
        if sum(c is not None for c in (threshold, top, contamination)) > 1:
            raise InvalidRequest("threshold", "select anomalies by one of threshold, top or contamination, not several")

    def _labels(self) -> dict[str, Label]:
        """The analysts' labels with who and when, by image id."""
        return self.backends.catalog.labels()

    def labels(self) -> dict[str, str]:
        """Every image's review label ("anomaly" or "normal"), by image id; unlabelled images are absent."""
        self._require(Action.READ)
        return {image_id: label.label for image_id, label in self.backends.catalog.labels().items()}

    def label(self, image_id: str, label: str | None) -> None:
        """Store the acting user's review label ("anomaly" or "normal") with who and when; ``None``
        clears it."""
        self._require(Action.LABEL)
        if label is not None:
            validation.one_of("label", label, LABELS)
        if not self.backends.catalog.set_label(image_id, label, self.actor.name):
            raise NotFound("image", image_id)

    # review decisions ---------------------------------------------------------------------------
    def decide(self, image_ids: Sequence[str], decision: str | None) -> DecisionBatch:
        """Mark images ``keep`` or ``remove`` (``None`` clears), recorded with who and when; the
        returned token undoes it (:meth:`undo_decisions`). All or nothing: an unknown id changes none."""
        return self.decide_each(dict.fromkeys(image_ids, decision))

    def decide_each(self, changes: Mapping[str, str | None]) -> DecisionBatch:
        """Give each image its own decision (``None`` clears) in one batch that one token undoes:
        a cluster's "keep this one, remove the others" is one change for the analyst, not several.
        All or nothing, like :meth:`decide` (the catalog checks each decision before writing any)."""
        self._require(Action.DECIDE)
        token = self.backends.catalog.set_decisions(dict(changes), self.actor.name)
        return DecisionBatch(token, len(changes))

    def decisions(self) -> dict[str, Decision]:
        """Every image's current decision (visible and soft-deleted images), by image id."""
        self._require(Action.READ)
        return self.backends.catalog.decisions()

    def decision_history(self, image_id: str | None = None) -> list[DecisionEvent]:
        """Every change of a decision, oldest first, of one image when given."""
        self._require(Action.READ)
        return self.backends.catalog.decision_history(image_id)

    def duplicates_to_remove(self) -> list[Decision]:
        """The visible images marked ``remove``, earliest decision first: what an admin removes next."""
        self._require(Action.READ)
        marked = [d for d in self.backends.catalog.decisions().values() if d.decision == "remove"]
        visible = {r.id for r in self.backends.catalog.get([d.image_id for d in marked])}
        return sorted((d for d in marked if d.image_id in visible), key=lambda d: (d.decided_at, d.image_id))

    def preview_keep_rule(self, rule: str, thresholds: DuplicateThresholds | None = None, source: str | None = None,
                          *, override: bool = False) -> KeepRulePlan:
        """What keep rule ``rule`` (``resolution``, ``earliest``, ``source`` with ``source``, or
        ``size``; see :mod:`core.review`) would decide in every duplicate cluster at ``thresholds``.
        Nothing is written: the analyst confirms with :meth:`apply_keep_rule`. Images already decided
        are left alone unless ``override``."""
        self._require(Action.READ)
        check_rule(rule, source)
        view = self.duplicates(thresholds)
        ids = [m.image.image_id for g in view.groups for m in g.members]
        records = {r.id: r for r in self.backends.catalog.get(ids)}
        sources = self.backends.catalog.sources_of(ids)
        decided = dict(view.decisions)
        clusters = tuple(
            plan_cluster(
                group.cluster_id,
                [KeepCandidate(m.image.image_id, records[m.image.image_id].width, records[m.image.image_id].height,
                               records[m.image.image_id].size_bytes, records[m.image.image_id].created_at,
                               frozenset(sources.get(m.image.image_id, ())))
                 for m in group.members if m.image.image_id in records],
                decided, rule, source, override,
            )
            for group in view.groups
        )
        plan = KeepRulePlan(rule, source, override, clusters, {})
        return replace(plan, previous={i: decided.get(i) for i in plan.changes()})

    def apply_keep_rule(self, plan: KeepRulePlan) -> DecisionBatch:
        """Write a previewed plan's decisions in one transaction; refused (nothing written) when any
        of those images was decided by someone else since the preview. The token undoes it."""
        self._require(Action.DECIDE)
        changes = plan.changes()
        token = self.backends.catalog.set_decisions(dict(changes), self.actor.name, expected=dict(plan.previous))
        return DecisionBatch(token, len(changes))

    def undo_decisions(self, undo_token: str) -> DecisionBatch:
        """Give the images a decide or keep rule changed their decisions from before it; images
        decided again since are left as they are (counted in ``skipped``). Undoing the undo redoes."""
        self._require(Action.DECIDE)
        token, restored, skipped = self.backends.catalog.undo_decisions(undo_token, self.actor.name)
        return DecisionBatch(token, restored, skipped)

    def reviews(self) -> list[ImageReview]:
        """Every image with a label, a decision or a soft delete, with who and when: the export."""
        self._require(Action.READ)
        catalog = self.backends.catalog
        labels, decisions, removals = catalog.labels(), catalog.decisions(), catalog.removals()
        ids = sorted(set(labels) | set(decisions) | set(removals))
        found = []
        for record in catalog.get(ids, ready_only=False):
            if record.state == PURGING:
                continue
            found.append(ImageReview(record.id, record.file_name, record.source, ReviewState.of(
                record.state != REMOVED, labels.get(record.id), decisions.get(record.id), removals.get(record.id))))
        return found

    # soft delete and purge ----------------------------------------------------------------------
    def remove_images(self, image_ids: Sequence[str]) -> int:
        """Soft-delete images (admins): they leave search, analysis and the map at once (a new
        collection version) and stay stored, restorable with :meth:`restore_images`. Returns how
        many were visible; an unknown id removes none."""
        self._require(Action.DELETE)
        changed = self.backends.catalog.set_removed(list(dict.fromkeys(image_ids)), True, self.actor.name)
        try:  # the catalog already hides them; the flag keeps searches' k results full
            self._flag_removed(changed, True)
        except Exception as exc:
            raise Unavailable("vectors", f"the images are removed, but search could not be told ({exc}); "
                                         "run `visual-anomaly repair`") from exc
        return len(changed)

    def restore_images(self, image_ids: Sequence[str]) -> int:
        """Bring soft-deleted images back everywhere (a new collection version); returns how many."""
        self._require(Action.DELETE)
        ids = list(dict.fromkeys(image_ids))
        states = {r.id: r.state for r in self.backends.catalog.get(ids, ready_only=False)}
        unknown = [i for i in ids if states.get(i) not in (READY, REMOVED)]
        if unknown:
            raise NotFound("image", unknown[0])
        self._flag_removed([i for i in ids if states[i] == REMOVED], False)  # search first: the catalog decides
        return len(self.backends.catalog.set_removed(ids, False, self.actor.name))

    def removed_images(self) -> list[str]:
        """Ids of the soft-deleted images (what a purge would delete for good)."""
        self._require(Action.READ)
        return self.backends.catalog.ids_in_state(REMOVED)

    def purge_images(self, image_ids: Sequence[str]) -> int:
        """Delete images for good (admins): blob, thumbnail, vector and catalog row. The protocol
        mirrors ingest's: the rows are first marked ``purging`` (invisible from then on), then the
        vectors and blobs go, then the rows. If a store fails mid-way the images stay invisible and
        :meth:`repair` (or purging them again) finishes the job; none is left visible without its blob."""
        self._require(Action.PURGE)
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return 0
        catalog = self.backends.catalog
        catalog.mark_purging(ids)
        try:
            self._delete_stored(ids)
        except Exception as exc:
            raise Unavailable("blobs or vectors", f"the purge of {len(ids)} image(s) stopped half way ({exc}); "
                                                  "they are hidden, and `visual-anomaly repair` finishes it") from exc
        catalog.delete_purging(ids)
        return len(ids)

    # one image ----------------------------------------------------------------------------------
    def image_detail(self, image_id: str) -> ImageDetail:
        """Everything known about one image (see :class:`ImageDetail`), read from the catalog and the
        version's cached analysis; the map position only when the map was already computed."""
        self._require(Action.READ)
        found = self.backends.catalog.get([image_id], ready_only=False)
        if not found or found[0].state not in (READY, REMOVED):
            raise NotFound("image", image_id)
        record = found[0]
        catalog = self.backends.catalog
        review = ReviewState.of(record.state != REMOVED, catalog.labels([image_id]).get(image_id),
                                catalog.decisions([image_id]).get(image_id), catalog.removals([image_id]).get(image_id))
        analysed = self._analysis_of(image_id) if record.state != REMOVED else {}
        return ImageDetail(
            image_id=record.id,
            names=tuple(ImageFileName.from_name(n) for n in catalog.names(image_id)),
            size_bytes=record.size_bytes, format=record.format, width=record.width, height=record.height,
            sha256=record.sha256, phash=record.phash, dhash=record.dhash, created_at=record.created_at,
            uploader=record.uploader, review=review,
            anomaly_method=analysed.get("anomaly_method"), anomaly_score=analysed.get("anomaly_score"),
            anomaly_percentile=analysed.get("anomaly_percentile"), anomaly_rank=analysed.get("anomaly_rank"),
            cluster_id=analysed.get("cluster_id"), cluster_members=analysed.get("cluster_members", ()),
            neighbours=analysed.get("neighbours", ()), map_x=analysed.get("map_x"), map_y=analysed.get("map_y"),
            version=self.backends.catalog.version(), properties=catalog.properties([image_id]).get(image_id),
            flags=analysed.get("flags", ()), reasons=analysed.get("reasons", ()),
        )

    def _analysis_of(self, image_id: str) -> dict:
        """A visible image's analysis fields, from the version's graph, scores, clusters and map."""
        snap = self.snapshot()
        if len(snap.ids) < 2:
            return {}
        try:
            row = snap.ids.index(image_id)
        except ValueError:  # not visible (removed, or not ready yet)
            return {}
        graph = self.analysis.graph(snap)
        scale = self.analysis.scale(snap)
        scores = self.analysis.anomaly_scores(snap, DEFAULT_METHOD, None).scores
        score = scores[row]
        rank = int(np.sum(scores > score) + np.sum(scores[:row] == score)) + 1  # as AnomalyScores.ranking()
        listed = graph.indices[row][:DETAIL_NEIGHBOURS] >= 0
        cols, cosines = graph.indices[row][:DETAIL_NEIGHBOURS][listed], graph.similarities[row][:DETAIL_NEIGHBOURS][listed]
        neighbours = tuple(Neighbour(ref.image_id, ref.file_name, float(scale.similarity(cos)), float(cos))
                           for ref, cos in zip(snap.refs(cols), cosines, strict=True))
        group = next((g for g in self.analysis.duplicates(DuplicateThresholds()).groups
                      if any(m.image.image_id == image_id for m in g.members)), None)
        fields = {
            "flags": self.analysis.quality(snap, DEFAULT_Z).of(row),
            "reasons": self.analysis.reasons(snap, None, DEFAULT_Z)[row],
            "anomaly_method": DEFAULT_METHOD, "anomaly_score": float(score),
            "anomaly_percentile": float(self.analysis.anomaly_scores(snap, DEFAULT_METHOD, None).percentiles[row]),
            "anomaly_rank": rank, "neighbours": neighbours,
            "cluster_id": group and group.cluster_id,
            "cluster_members": tuple(m.image.image_id for m in group.members) if group else (),
        }
        projection = self.analysis.computed(snap, "projection", PROJECTION)
        if projection is not None:
            x, y = projection.coordinates[row]  # type: ignore[attr-defined]
            fields |= {"map_x": float(x), "map_y": float(y)}
        return fields

    # search -------------------------------------------------------------------------------------
    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        image_id: str | None = None,
        k: int = 20,
        min_score: float | None = None,
        filters: SearchFilter | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> SearchResponse:
        """Images nearest to a text, an uploaded image, or an image in the collection (exactly one):
        the ``k`` nearest, as the page of ``limit`` (all ``k`` by default) from ``offset``."""
        self._require(Action.READ)
        given = [q for q in (text, image, image_id) if q is not None]
        if len(given) != 1:
            raise InvalidRequest("text", "search by exactly one of: text, image, image_id")
        if filters is not None and not isinstance(filters, SearchFilter):
            raise InvalidRequest("filters", f"expected a SearchFilter, got {type(filters).__name__}")
        min_score = validation.optional_finite("min_score", min_score)
        exclude: tuple[str, ...] = ()
        if image_id is None:
            vector, query = self._query_vector(text, image)
        else:
            image_id = self._visible(image_id).id
            vector, query = self.backends.vectors.fetch([image_id])[0], f"similar to: {image_id}"
            exclude = (image_id,)
        flt = None if filters is None else filters.to_vector_filter()
        return nearest(self.backends, vector, query=query, k=k, min_score=min_score, flt=flt, exclude_ids=exclude,
                       offset=offset, limit=limit)

    def embed(self, *, text: str | None = None, image: bytes | None = None) -> np.ndarray:
        """The model's embedding of a text or an image (exactly one), for callers with their own store;
        nothing is stored."""
        self._require(Action.READ)
        if (text is None) == (image is None):
            raise InvalidRequest("text", "embed exactly one of: text, image")
        return self._query_vector(text, image)[0]

    def _query_vector(self, text: str | None, image: bytes | None) -> tuple[np.ndarray, str]:
        """A text's or an image's embedding and how to describe it as a query."""
        if text is not None:
            text = validation.text("text", text, max_length=validation.MAX_FILE_NAME)
            return text_vector(text, self.embedder, self.backends), f"text: {text}"
        return image_vector(image, self.embedder, self.settings), "image: uploaded"

    # browse -------------------------------------------------------------------------------------
    def version(self) -> int:
        """The collection's version: changes whenever the visible images do. One catalog read (no
        blob listing, no vector count), so callers can cache by it and the API can send it as an ETag."""
        self._require(Action.READ)
        return self.backends.catalog.version()

    def list_images(self, *, offset: int = 0, limit: int = DEFAULT_LIMIT, sort: str = "arrival",
                    descending: bool = False, source: str | None = None,
                    name_contains: str | None = None) -> Page[ImageInfo]:
        """One page of the visible images, sorted by ``sort`` (``arrival``, ``name``, ``source``,
        ``size`` or ``pixels``); ``source`` and ``name_contains`` (case-insensitive) match any name an
        image arrived under. A catalog query: nothing else is read."""
        self._require(Action.READ)
        check_page(offset, limit)
        validation.one_of("sort", sort, tuple(IMAGE_SORTS))
        source = validation.optional_text("source", source)
        name_contains = validation.optional_text("name_contains", name_contains, max_length=validation.MAX_FILE_NAME)
        records, total = self.backends.catalog.list_ready(offset=offset, limit=limit, sort=sort,
                                                          descending=descending, source=source,
                                                          name_contains=name_contains)
        return Page(tuple(ImageInfo.from_record(r) for r in records), offset, limit, total)

    def status(self, *, blob_counts_max_age_s: float = 0.0) -> CollectionStatus:
        """What every store holds and whether they agree. Counting blobs lists the blob store (seconds
        on a large collection, longer on S3): with ``blob_counts_max_age_s`` the counts of an earlier
        call are reused while they are younger than that and the catalog has not changed since (its
        version and its count of images in each state), which every ingest, removal, purge and repair
        changes. A page shown on every visit asks for that; the CLI and ``repair`` count afresh."""
        self._require(Action.READ)
        counts = self.backends.catalog.counts()
        version = self.version()
        blobs = self._blob_counts((version, *sorted(counts.items())), blob_counts_max_age_s)
        return CollectionStatus(
            images=counts["ready"],
            pending=counts["pending"],
            removed=counts[REMOVED],
            purging=counts[PURGING],
            vectors=self.backends.vectors.count(),
            blobs=blobs.originals,
            thumbnails=blobs.thumbnails,
            version=version,
            backends=self.backends.describe(),
            model=self.model_config(),
            cache_healthy=self.backends.cache.healthy,
            acting_as={"name": self.actor.name, "role": self.actor.role.value},
        )

    def _blob_counts(self, catalog_state: tuple, max_age_s: float) -> _BlobCounts:
        known = self._shared.blob_counts
        now = time.monotonic()
        if known is None or known.catalog_state != catalog_state or now - known.counted_at >= max_age_s:
            known = _BlobCounts(catalog_state, now, self.backends.blobs.count("originals/"),
                                self.backends.blobs.count("thumbnails/"))
            self._shared.blob_counts = known
        return known

    def image_count(self) -> int:
        """How many images are visible: one catalog count, cheap enough for every page render
        (``status()`` also counts every store, which lists the blob store)."""
        self._require(Action.READ)
        return self.backends.catalog.counts()["ready"]

    def _visible(self, image_id: str) -> ImageRecord:
        """The visible image ``image_id``, or :class:`NotFound` (pending and unknown ids alike)."""
        found = self.backends.catalog.get([image_id]) if isinstance(image_id, str) else []
        if not found:
            raise NotFound("image", str(image_id))
        return found[0]

    def images(self, ids: Sequence[str]) -> list[ImageInfo]:
        """The visible images among ``ids``, in the order given (unknown ids are left out)."""
        self._require(Action.READ)
        return [ImageInfo.from_record(r) for r in self.backends.catalog.get(list(ids))]

    def names(self, image_id: str) -> list[ImageFileName]:
        """Every file name and source the image arrived under, first first."""
        self._require(Action.READ)
        return [ImageFileName.from_name(n) for n in self.backends.catalog.names(self._visible(image_id).id)]

    def thumbnail(self, image_id: str) -> bytes:
        self._require(Action.READ)
        return self.backends.blobs.get(thumbnail_key(self._visible(image_id).id))

    def original(self, image_id: str) -> bytes:
        self._require(Action.READ)
        return self.backends.blobs.get(original_key(self._visible(image_id).id))

    def thumbnail_url(self, image_id: str) -> str | None:
        """A URL the browser can load directly (S3 presigned), or ``None`` to serve the bytes."""
        self._require(Action.READ)
        return self.backends.blobs.url(thumbnail_key(self._visible(image_id).id))

    def original_url(self, image_id: str) -> str | None:
        """As :meth:`thumbnail_url`, for the original bytes."""
        self._require(Action.READ)
        return self.backends.blobs.url(original_key(self._visible(image_id).id))

    def thumbnail_sources(self, image_ids: Sequence[str]) -> dict[str, bytes | str]:
        """What a browser shows for each visible image among ``image_ids``: a URL it loads directly
        (S3 presigned) or the thumbnail's bytes. One catalog read for all of them: a page of
        clusters shows a hundred thumbnails, and one read each made a slider move slow."""
        self._require(Action.READ)
        blobs = self.backends.blobs
        found = {}
        for record in self.backends.catalog.get(list(dict.fromkeys(image_ids))):
            key = thumbnail_key(record.id)
            found[record.id] = blobs.url(key) or blobs.get(key)
        return found

    def sources(self) -> list[str]:
        self._require(Action.READ)
        return self.backends.catalog.sources()

    def pair_difference(self, left_id: str, right_id: str) -> bytes | None:
        """A PNG of where two images differ (a mirrored copy flipped back), for the pair inspector,
        or ``None`` when they are not aligned (another shape: a crop or a reframing)."""
        self._require(Action.READ)
        return difference_image(self.original(left_id), self.original(right_id))

    def growth(self) -> tuple[tuple[str, int], ...]:
        """``(day, images visible by the end of that day)`` for each UTC day images arrived on."""
        self._require(Action.READ)
        days, counts = np.unique(self.backends.catalog.arrival_times() // DAY_S, return_counts=True)
        return tuple((time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S)), int(total))
                     for day, total in zip(days, np.cumsum(counts), strict=True))


def _source_label(source: str | None) -> str:
    """The checked source label an ingest records (``default`` when none is given)."""
    return validation.text("source", "default" if source is None else source)


def local_admin() -> Actor:
    """Who a process on the machine that holds the data acts as unless told otherwise: its own
    OS user, as an admin (the CLI, a notebook)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(name, Role.ADMIN)
