"""visual-anomaly's public facade: everything the app, the HTTP API, the CLI and notebooks may use.

    from core import Collection, Settings
    with Collection.open(Settings.from_env()) as collection:
        alice = collection.as_user("alice")
        hits = alice.search(text="a red car", k=10)

Callers import from here and nowhere beneath: storage types, backends, sketches and blob keys are
the facade's own business (tests/test_layering.py enforces it). Long-running callers (the app, the
API) also start logs and metrics here (``setup_observability``) and count what they serve.
"""

from core.access import Action, Actor, Role, require
from core.analysis import METHODS, DuplicateThresholds
from core.analysis.anomalies import DEFAULT_METHOD as DEFAULT_ANOMALY_METHOD
from core.analysis.anomalies import AnomalyScores
from core.analysis.duplicates import CROP_FLOOR, HAMMING_MAX, SIMILARITY_FLOOR
from core.analysis.duplicates import RULES as DUPLICATE_RULES
from core.analysis.duplicates import SIGNALS as DUPLICATE_SIGNALS
from core.analysis.quality import DEFAULT_Z, FLAG_NAMES, Flag
from core.collection import DEFAULT_ANOMALY_TOP, Collection, CollectionStatus, RepairReport
from core.display import printable
from core.embedding import ModelUnavailable
from core.errors import (
    AuthenticationFailed,
    Busy,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotConfigured,
    NotFound,
    Unavailable,
)
from core.health import ServerCheck, check_servers
from core.image_properties import PROPERTY_NAMES, ImageProperties
from core.images import ACCEPTED_FORMATS as IMAGE_FORMATS
from core.images import MEDIA_TYPES as IMAGE_MEDIA_TYPES
from core.ingest import FileOutcome, IngestReport, Shard
from core.jobs import JobState
from core.observability import record_login, record_page_view, record_request
from core.observability import setup as setup_observability
from core.paging import Page
from core.records import ImageFileName, ImageInfo
from core.reports import (
    ANOMALY_COLUMNS,
    DUPLICATE_COLUMNS,
    FLAG_COLUMNS,
    ISSUE_COLUMNS,
    AnomaliesView,
    AnomalyRow,
    DuplicateGroup,
    DuplicateLink,
    DuplicateMember,
    DuplicatesView,
    ImageDetail,
    ImageRef,
    IssueRow,
    IssuesView,
    MapView,
    Neighbour,
    SameBytesFiles,
    csv_chunks,
)
from core.review import (
    KEEP_RULES,
    ClusterKeepPlan,
    Decision,
    DecisionBatch,
    DecisionEvent,
    ImageReview,
    KeepRulePlan,
    ReviewState,
)
from core.search import SearchFilter, SearchResponse, SearchResult
from core.settings import Settings, SettingsError
from core.storage.catalog import LABELS
from core.uploads import UploadSlot
from core.users import User

__all__ = [
    "ANOMALY_COLUMNS",
    "CROP_FLOOR",
    "DEFAULT_ANOMALY_METHOD",
    "DEFAULT_ANOMALY_TOP",
    "DEFAULT_Z",
    "DUPLICATE_COLUMNS",
    "DUPLICATE_RULES",
    "DUPLICATE_SIGNALS",
    "FLAG_COLUMNS",
    "FLAG_NAMES",
    "HAMMING_MAX",
    "IMAGE_FORMATS",
    "IMAGE_MEDIA_TYPES",
    "ISSUE_COLUMNS",
    "KEEP_RULES",
    "LABELS",
    "METHODS",
    "PROPERTY_NAMES",
    "SIMILARITY_FLOOR",
    "Action",
    "Actor",
    "AnomaliesView",
    "AnomalyRow",
    "AnomalyScores",
    "AuthenticationFailed",
    "Busy",
    "ClusterKeepPlan",
    "Collection",
    "CollectionStatus",
    "Decision",
    "DecisionBatch",
    "DecisionEvent",
    "DomainError",
    "DuplicateGroup",
    "DuplicateLink",
    "DuplicateMember",
    "DuplicateThresholds",
    "DuplicatesView",
    "FileOutcome",
    "Flag",
    "Forbidden",
    "ImageDetail",
    "ImageFileName",
    "ImageInfo",
    "ImageProperties",
    "ImageRef",
    "ImageReview",
    "IngestReport",
    "InvalidRequest",
    "IssueRow",
    "IssuesView",
    "JobState",
    "KeepRulePlan",
    "MapView",
    "ModelUnavailable",
    "Neighbour",
    "NotConfigured",
    "NotFound",
    "Page",
    "RepairReport",
    "ReviewState",
    "Role",
    "SameBytesFiles",
    "SearchFilter",
    "SearchResponse",
    "SearchResult",
    "ServerCheck",
    "Settings",
    "SettingsError",
    "Shard",
    "Unavailable",
    "UploadSlot",
    "User",
    "check_servers",
    "csv_chunks",
    "printable",
    "record_login",
    "record_page_view",
    "record_request",
    "require",
    "setup_observability",
]
