"""visual-anomaly's public facade: everything the app, the HTTP API, the CLI and notebooks may use.

    from core import Collection, Settings
    with Collection.open(Settings.from_env()) as collection:
        alice = collection.as_user("alice")
        hits = alice.search(text="a red car", k=10)

Callers import from here and nowhere beneath: storage types, backends, sketches and blob keys are
the facade's own business (a test enforces it).
"""

from core.access import Action, Actor, Role
from core.analysis import METHODS, DuplicateThresholds
from core.collection import Collection, CollectionStatus, RepairReport
from core.embedding import ModelUnavailable
from core.errors import Busy, DomainError, Forbidden, InvalidRequest, NotFound, Unavailable
from core.ingest import FileOutcome, IngestReport, Shard
from core.reports import (
    AnomaliesView,
    AnomalyRow,
    DuplicateGroup,
    DuplicateLink,
    DuplicateMember,
    DuplicatesView,
    ImageRef,
    MapPoint,
    MapView,
    SameBytesFiles,
)
from core.search import SearchResponse, SearchResult
from core.settings import Settings, SettingsError

__all__ = [
    "METHODS",
    "Action",
    "Actor",
    "AnomaliesView",
    "AnomalyRow",
    "Busy",
    "Collection",
    "CollectionStatus",
    "DomainError",
    "DuplicateGroup",
    "DuplicateLink",
    "DuplicateMember",
    "DuplicateThresholds",
    "DuplicatesView",
    "FileOutcome",
    "Forbidden",
    "ImageRef",
    "IngestReport",
    "InvalidRequest",
    "MapPoint",
    "MapView",
    "ModelUnavailable",
    "NotFound",
    "RepairReport",
    "Role",
    "SameBytesFiles",
    "SearchResponse",
    "SearchResult",
    "Settings",
    "SettingsError",
    "Shard",
    "Unavailable",
]
