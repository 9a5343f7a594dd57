"""visual-anomaly's public facade: everything the app, the HTTP API, the CLI and notebooks may use.

    from core import Collection, Settings
    with Collection.open(Settings.from_env()) as collection:
        alice = collection.as_user("alice")
        hits = alice.search(text="a red car", k=10)

Callers import from here and nowhere beneath: storage types, backends, sketches and blob keys are
the facade's own business (tests/test_layering.py enforces it). Long-running callers (the app, the
API) also start logs and metrics here (``setup_observability``) and count what they serve.
"""

from core.access import Action, Actor, Role
from core.analysis import METHODS, DuplicateThresholds
from core.collection import Collection, CollectionStatus, RepairReport
from core.embedding import ModelUnavailable
from core.errors import (
    AuthenticationFailed,
    Busy,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from core.ingest import FileOutcome, IngestReport, Shard
from core.observability import record_login, record_page_view
from core.observability import setup as setup_observability
from core.records import ImageFileName, ImageInfo
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
from core.search import SearchFilter, SearchResponse, SearchResult
from core.settings import Settings, SettingsError
from core.users import User

__all__ = [
    "METHODS",
    "Action",
    "Actor",
    "AnomaliesView",
    "AnomalyRow",
    "AuthenticationFailed",
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
    "ImageFileName",
    "ImageInfo",
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
    "SearchFilter",
    "SearchResponse",
    "SearchResult",
    "Settings",
    "SettingsError",
    "Shard",
    "Unavailable",
    "User",
    "record_login",
    "record_page_view",
    "setup_observability",
]
