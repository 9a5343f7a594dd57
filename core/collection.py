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
import getpass
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from os import PathLike

import numpy as np

from core import validation
from core.access import Action, Actor, Role, require
from core.analysis import METHODS, DuplicateThresholds
from core.analysis_service import CollectionAnalysis, VectorSnapshot
from core.auth_secret import resolve_auth_secret
from core.backends import Backends, open_backends
from core.devices import resolve_device
from core.embedding import Embedder, ModelInfo, resolve_embedding_dim
from core.errors import InvalidRequest, NotFound
from core.facade_errors import domain_errors
from core.images import prepare_image
from core.ingest import (
    IngestItem,
    Ingestor,
    IngestReport,
    Progress,
    Shard,
    items_from_paths,
    items_from_uploads,
)
from core.records import ImageFileName, ImageInfo
from core.reports import AnomaliesView, DuplicateLink, DuplicatesView, MapView, SameBytesFiles
from core.search import SearchFilter, SearchResponse, image_vector, nearest, text_vector
from core.settings import Settings
from core.storage.blobs import original_key, thumbnail_key
from core.storage.catalog import LABELS, ImageRecord
from core.users import User, UserDirectory

_SKETCH_BATCH = 500

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
    acting_as: dict[str, str] = field(default_factory=dict)  # {"name", "role"} of the caller

    @property
    def consistent(self) -> bool:
        """Every store agrees and no ingest was left half done."""
        return self.pending == 0 and self.images == self.vectors == self.blobs == self.thumbnails

    def to_json(self) -> dict:
        return asdict(self) | {"consistent": self.consistent}


@dataclass(frozen=True)
class RepairReport:
    removed_pending: int  # half-ingested images removed from every store
    sketches_added: int  # older images given the sketch that crop detection needs


@dataclass
class _Shared:
    """What every view of one collection shares (see :meth:`Collection.acting_as`): the model once
    loaded, the vector snapshot and the cached analysis. A view only differs in who it acts for."""

    embedder: Embedder | None
    analysis: CollectionAnalysis
    snapshot: VectorSnapshot | None = None
    embedder_lock: threading.Lock = field(default_factory=threading.Lock)
    snapshot_lock: threading.Lock = field(default_factory=threading.Lock)


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
            backends.cache, backends.catalog.collection_id(), self.snapshot, device=resolve_device(settings.device)
        )
        self._shared = _Shared(embedder, analysis)
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
        """Ingest in-memory files (name, bytes), e.g. from the browser's upload widget."""
        self._require(Action.UPLOAD)
        uploads = [(validation.file_name(name), data) for name, data in uploads]
        return self._ingest(items_from_uploads(uploads), source, progress)

    def _ingest(self, items: Sequence[IngestItem], source: str | None, progress: Progress | None) -> IngestReport:
        source = validation.text("source", "default" if source is None else source)
        arrival = self.analysis.arrival_context(self.backends.catalog.ready_frame())
        ingestor = Ingestor(self.settings, self.backends, self.embedder, arrival=arrival)
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
        """Remove what interrupted ingests left behind (pending rows and their blobs and vectors), and
        compute the crop sketches of images stored before sketches existed (from their originals)."""
        self._require(Action.REPAIR)
        pending = self.backends.catalog.pending_ids()
        if pending:
            self.backends.vectors.delete(pending)
            for image_id in pending:
                self.backends.blobs.delete(original_key(image_id))
                self.backends.blobs.delete(thumbnail_key(image_id))
            self.backends.catalog.remove_pending(pending)
        missing = self.backends.catalog.ids_without_sketch()
        for start in range(0, len(missing), _SKETCH_BATCH):
            self.backends.catalog.set_sketches({
                image_id: prepare_image(self.original(image_id), max_bytes=1 << 62, max_pixels=1 << 62).sketch
                for image_id in missing[start:start + _SKETCH_BATCH]})
        return RepairReport(removed_pending=len(pending), sketches_added=len(missing))

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
            frame = self.backends.catalog.ready_frame().reset_index(drop=True)
            ids = frame["id"].tolist()
            dim = self.backends.vectors.dim
            if old is None:
                by_id = dict(zip(*self._all_vectors(), strict=True))
                vectors = np.stack([by_id[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)
            else:
                position = {image_id: row for row, image_id in enumerate(old.ids)}
                new = [i for i in ids if i not in position]
                fetched = dict(zip(new, self.backends.vectors.fetch(new), strict=True)) if new else {}
                vectors = np.zeros((len(ids), dim), np.float32)
                for row, image_id in enumerate(ids):
                    vectors[row] = old.vectors[position[image_id]] if image_id in position else fetched[image_id]
            shared.snapshot = VectorSnapshot(version=version, frame=frame, vectors=vectors)
            return shared.snapshot

    def _all_vectors(self) -> tuple[list[str], np.ndarray]:
        ids: list[str] = []
        chunks: list[np.ndarray] = []
        for batch_ids, batch in self.backends.vectors.iter_all():
            ids += batch_ids
            chunks.append(batch)
        return ids, (np.concatenate(chunks) if chunks else np.zeros((0, self.backends.vectors.dim), np.float32))

    # analysis -----------------------------------------------------------------------------------
    def duplicates(self, thresholds: DuplicateThresholds | None = None) -> DuplicatesView:
        """Exact and near duplicates as clusters. The neighbour graph and candidate pairs are cached
        per collection version, so calling this again with other thresholds is cheap."""
        self._require(Action.READ)
        view = self.analysis.duplicates(thresholds or DuplicateThresholds())
        same_bytes = tuple(
            SameBytesFiles(image_id, tuple((n.file_name, n.source) for n in names))
            for image_id, names in self.backends.catalog.repeated_names().items()
        )
        return replace(view, same_bytes=same_bytes)

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
        method: str = "combined",
        k: int | None = None,
        threshold: float | None = None,
        top: int | None = None,
        contamination: float | None = None,
    ) -> AnomaliesView:
        """Every image scored and ranked, most unusual first, with the analysts' labels; at most one
        of ``threshold`` (raw score), ``top`` (N) or ``contamination`` (percent) marks a selection."""
        self._require(Action.READ)
        validation.one_of("method", method, METHODS)
        if sum(c is not None for c in (threshold, top, contamination)) > 1:
            raise InvalidRequest("threshold", "select anomalies by one of threshold, top or contamination, not several")
        labels = {image_id: label.label for image_id, label in self.backends.catalog.labels().items()}
        return self.analysis.anomalies(
            method=method, k=k, threshold=threshold, top=top, contamination=contamination, labels=labels
        )

    def projection(self) -> MapView:
        """2-D UMAP coordinates of every image, from the shared neighbour graph (cached)."""
        self._require(Action.READ)
        return self.analysis.projection()

    def label(self, image_id: str, label: str | None) -> None:
        """Store the acting user's review label ("anomaly" or "normal") with who and when; ``None``
        clears it."""
        self._require(Action.LABEL)
        if label is not None:
            validation.one_of("label", label, LABELS)
        if not self.backends.catalog.set_label(image_id, label, self.actor.name):
            raise NotFound("image", image_id)

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
    ) -> SearchResponse:
        """Images nearest to a text, an uploaded image, or an image in the collection (exactly one)."""
        self._require(Action.READ)
        given = [q for q in (text, image, image_id) if q is not None]
        if len(given) != 1:
            raise InvalidRequest("text", "search by exactly one of: text, image, image_id")
        if filters is not None and not isinstance(filters, SearchFilter):
            raise InvalidRequest("filters", f"expected a SearchFilter, got {type(filters).__name__}")
        exclude: tuple[str, ...] = ()
        if text is not None:
            text = validation.text("text", text, max_length=validation.MAX_FILE_NAME)
            vector, query = text_vector(text, self.embedder, self.backends), f"text: {text}"
        elif image is not None:
            vector, query = image_vector(image, self.embedder, self.settings), "image: uploaded"
        else:
            image_id = self._visible(image_id).id
            vector, query = self.backends.vectors.fetch([image_id])[0], f"similar to: {image_id}"
            exclude = (image_id,)
        flt = None if filters is None else filters.to_vector_filter()
        return nearest(self.backends, vector, query=query, k=k, min_score=min_score, flt=flt, exclude_ids=exclude)

    # browse -------------------------------------------------------------------------------------
    def status(self) -> CollectionStatus:
        self._require(Action.READ)
        counts = self.backends.catalog.counts()
        return CollectionStatus(
            images=counts["ready"],
            pending=counts["pending"],
            vectors=self.backends.vectors.count(),
            blobs=self.backends.blobs.count("originals/"),
            thumbnails=self.backends.blobs.count("thumbnails/"),
            version=self.backends.catalog.version(),
            backends=self.backends.describe(),
            model=self.model_config(),
            cache_healthy=self.backends.cache.healthy,
            acting_as={"name": self.actor.name, "role": self.actor.role.value},
        )

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

    def sources(self) -> list[str]:
        self._require(Action.READ)
        return self.backends.catalog.sources()


def local_admin() -> Actor:
    """Who a process on the machine that holds the data acts as unless told otherwise: its own
    OS user, as an admin (the CLI, a notebook)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(name, Role.ADMIN)
