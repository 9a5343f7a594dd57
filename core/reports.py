"""What the facade returns from analysis: records in terms of images (ids, names, sources), never
row positions, ready for the app to render and the CLI to print or write as CSV."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.analysis import DuplicateThresholds, SimilarityScale
from core.analysis.duplicates import HAMMING_MAX
from core.analysis.quality import FLAG_NAMES, Flag
from core.image_properties import ImageProperties
from core.records import ImageFileName
from core.review import ReviewState

# The columns of the duplicates and anomalies CSVs (CLI --csv, API Accept: text/csv), in order.
DUPLICATE_COLUMNS = (
    "cluster_id", "image_id", "file_name", "source", "is_representative", "similarity_to_representative",
    "cosine_to_representative", "phash_distance", "crop_score", "signals", "same_bytes_as", "decision",
)
FLAG_COLUMNS = tuple(f"flag_{name}" for name in FLAG_NAMES)  # the triggering value, empty when not flagged
ANOMALY_COLUMNS = ("image_id", "file_name", "source", "score", "percentile", "rank", "label", "labelled_by",
                   "labelled_at", "selected", "reasons", *FLAG_COLUMNS)
ISSUE_COLUMNS = ("flag", "image_id", "file_name", "source", "property", "value", "z", "explanation")


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell made inert for spreadsheets, as OWASP recommends: one starting with ``= + - @``,
    a tab or a carriage return gets a leading ``'``. Numbers (negative scores) stay numbers."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(rows: Sequence[Mapping[str, object]], columns: Sequence[str], chunk: int = 500) -> Iterator[str]:
    """Every CSV export (the CLI's files, the API's ``text/csv``, the app's downloads): the header, then
    ``rows`` with every cell through :func:`csv_cell`, ``chunk`` rows at a time so a large export
    can start at once."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for start in range(0, len(rows), chunk):
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows[start:start + chunk])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


@dataclass(frozen=True, slots=True)  # slots: a full export lists a million at once (0.1 GB less)
class ImageRef:
    image_id: str
    file_name: str
    source: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class DuplicateMember:
    image: ImageRef
    is_representative: bool
    similarity_to_representative: float  # on the calibrated scale (1 = identical)
    cosine_to_representative: float
    phash_distance: int  # bits, mirror-aware, to the representative
    crop_score: float | None  # when one is a verified crop of the other: the window's correlation
    signals: tuple[str, ...]  # what matched the representative directly; () if joined through others


@dataclass(frozen=True, slots=True)
class DuplicateLink:
    """One pair of a cluster and the evidence that made it a duplicate."""

    left: str
    right: str
    similarity: float
    cosine: float
    phash_distance: int
    mirrored: bool
    crop_score: float | None
    signals: tuple[str, ...]


@dataclass(frozen=True)
class DuplicateGroup:
    cluster_id: int
    members: tuple[DuplicateMember, ...]  # representative first, then most similar first
    exact: bool  # every member has the representative's bytes or pixels
    weakest_link: DuplicateLink  # moving a threshold past it splits the cluster


@dataclass(frozen=True)
class SameBytesFiles:
    """One stored image that arrived as several files with identical bytes."""

    image_id: str
    files: tuple[tuple[str, str], ...]  # (file name, source), first arrival first


@dataclass(frozen=True)
class DuplicatesView:
    groups: tuple[DuplicateGroup, ...]  # largest first
    thresholds: DuplicateThresholds
    scale: SimilarityScale  # the calibrated scale and its histogram, for the slider
    pair_count: int
    images: int
    same_bytes: tuple[SameBytesFiles, ...] = ()  # byte-identical files, stored once
    decisions: Mapping[str, str] = field(default_factory=dict)  # image id -> keep | remove
    hamming_searched: int = HAMMING_MAX  # every pair within it was compared; beyond, sketch neighbours propose

    def is_decided(self, group: DuplicateGroup) -> bool:
        """Every image of the cluster has a keep or remove decision: the cluster is reviewed."""
        return all(m.image.image_id in self.decisions for m in group.members)

    def other_names(self, image_id: str) -> list[str]:
        """The other files an image arrived as (same bytes), beside the name it is shown under."""
        for entry in self.same_bytes:
            if entry.image_id == image_id:
                return [name for name, _ in entry.files[1:]]
        return []

    @property
    def same_bytes_only(self) -> tuple[SameBytesFiles, ...]:
        """Byte-identical files whose image is in no cluster: each set is a cluster of its own in the export."""
        clustered = {m.image.image_id for group in self.groups for m in group.members}
        return tuple(entry for entry in self.same_bytes if entry.image_id not in clustered)

    @property
    def cluster_count(self) -> int:
        """Clusters of the export: the groups, then one per set of byte-identical files in no group."""
        return len(self.groups) + len(self.same_bytes_only)

    def rows(self) -> list[dict]:
        """The CSV export: one row per file that has a duplicate, each with its cluster.

        A stored image that arrived as several byte-identical files gives one row per file name;
        when it is in no cluster, its files form a cluster of their own (numbered after the groups).
        """
        rows = []
        for group in self.groups:
            for m in group.members:
                row = {
                    "cluster_id": group.cluster_id,
                    "image_id": m.image.image_id,
                    "file_name": m.image.file_name,
                    "source": m.image.source,
                    "is_representative": m.is_representative,
                    "similarity_to_representative": round(m.similarity_to_representative, 6),
                    "cosine_to_representative": round(m.cosine_to_representative, 6),
                    "phash_distance": m.phash_distance,
                    "crop_score": "" if m.crop_score is None else round(m.crop_score, 4),
                    "signals": "+".join(m.signals),
                    "same_bytes_as": ";".join(self.other_names(m.image.image_id)),
                    "decision": self.decisions.get(m.image.image_id, ""),
                }
                rows.append(row)
                rows += [_same_bytes_row(row, name, source) for name, source in self._files(m.image.image_id)
                         if name != m.image.file_name]
        for number, entry in enumerate(self.same_bytes_only, len(self.groups) + 1):
            (first, first_source), *others = entry.files
            row = {"cluster_id": number, "image_id": entry.image_id, "file_name": first, "source": first_source,
                   "is_representative": True, "similarity_to_representative": 1.0, "cosine_to_representative": 1.0,
                   "phash_distance": 0, "crop_score": "", "signals": "",
                   "same_bytes_as": ";".join(name for name, _ in others),
                   "decision": self.decisions.get(entry.image_id, "")}
            rows += [row, *(_same_bytes_row(row, name, source) for name, source in others)]
        return rows

    def _files(self, image_id: str) -> tuple[tuple[str, str], ...]:
        return next((entry.files for entry in self.same_bytes if entry.image_id == image_id), ())


def _same_bytes_row(shown: dict, file_name: str, source: str) -> dict:
    """The row of another file with the bytes of the file in `shown`: same image, same cluster."""
    signals = "same_bytes" if shown["is_representative"] else shown["signals"]
    return {**shown, "file_name": file_name, "source": source, "is_representative": False, "signals": signals,
            "same_bytes_as": shown["file_name"]}


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    image: ImageRef
    score: float  # higher = more unusual; raw, on the method's own scale
    percentile: float  # share of the collection scoring the same or lower, in (0, 100]
    rank: int  # 1 = most unusual
    label: str | None  # the analysts' review label: "anomaly", "normal" or None
    selected: bool  # flagged under the chosen threshold / top-N / contamination
    labelled_by: str | None = None
    labelled_at: float | None = None  # seconds since the epoch
    reasons: tuple[str, ...] = ()  # why it ranks unusual, strongest first (core.analysis.reasons)
    flags: tuple[Flag, ...] = ()  # the quality issues it raised against the collection


@dataclass(frozen=True)
class AnomaliesView:
    method: str
    k: int | None
    rows: tuple[AnomalyRow, ...]  # most unusual first

    @property
    def selected(self) -> list[AnomalyRow]:
        return [r for r in self.rows if r.selected]

    def to_rows(self, *, selected_only: bool = False) -> list[dict]:
        """One row per image (per selected image with ``selected_only``): the CSV export."""
        return [
            {
                "image_id": r.image.image_id,
                "file_name": r.image.file_name,
                "source": r.image.source,
                "score": r.score,
                "percentile": round(r.percentile, 4),
                "rank": r.rank,
                "label": r.label or "",
                "labelled_by": r.labelled_by or "",
                "labelled_at": iso_time(r.labelled_at),
                "selected": r.selected,
                "reasons": "; ".join(r.reasons),
                **flag_cells(r.flags),
            }
            for r in (self.selected if selected_only else self.rows)
        ]


def flag_cells(flags: tuple[Flag, ...]) -> dict[str, object]:
    """One CSV cell per flag: the value that raised it, empty when it was not raised."""
    raised = {f"flag_{f.name}": round(f.value, 6) for f in flags}
    return {column: raised.get(column, "") for column in FLAG_COLUMNS}


@dataclass(frozen=True)
class IssueRow:
    """One flagged image under one flag."""

    image: ImageRef
    flag: str
    explanation: str
    property: str
    value: float  # the property's value that raised the flag
    z: float  # its robust z-score against the collection


@dataclass(frozen=True)
class IssuesView:
    """The flagged images, by flag, most extreme first within each flag."""

    z_threshold: float
    rows: tuple[IssueRow, ...]
    images: int  # images judged

    def to_rows(self) -> list[dict]:
        """One row per flag raised: the CSV export."""
        return [{"flag": r.flag, "image_id": r.image.image_id, "file_name": r.image.file_name,
                 "source": r.image.source, "property": r.property, "value": round(r.value, 6), "z": round(r.z, 3),
                 "explanation": r.explanation} for r in self.rows]


@dataclass(frozen=True, eq=False)
class MapView:
    """Every visible image on the map, as columns: entry i of each is one image. A selection maps
    back to images by ``image_id``. Columns, not a record per image: at a million images the
    records took seconds to build and held about a gigabyte."""

    image_id: tuple[str, ...]
    file_name: tuple[str, ...]
    source: tuple[str, ...]
    x: np.ndarray  # (n,) float32
    y: np.ndarray  # (n,) float32
    anomaly_score: np.ndarray  # (n,) float32, default method, higher = more unusual
    anomaly_percentile: np.ndarray  # (n,) float32, share of the collection scoring the same or lower, in (0, 100]
    label: tuple[str | None, ...]  # the analysts' review label
    cluster_id: np.ndarray  # (n,) int32, duplicate cluster at the default thresholds (as duplicates() numbers it), 0: none
    fitted: int  # images UMAP was fitted on; the rest were placed by their neighbours

    def __len__(self) -> int:
        return len(self.image_id)


@dataclass(frozen=True)
class ArrivalMatch:
    """For a newly ingested image: the closest image already stored, and whether it duplicates it."""

    verdict: str  # "exact" | "near" | "none"
    image_id: str | None
    similarity: float | None  # calibrated; None when the collection is too small to calibrate
    cosine: float | None
    phash_distance: int | None
    crop_score: float | None  # verified crop correlation, when one image is a crop of the other
    signals: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "image_id": self.image_id,
            "similarity": _finite(self.similarity),
            "cosine": _finite(self.cosine),
            "phash_distance": self.phash_distance,
            "crop_score": _finite(self.crop_score),
            "signals": list(self.signals),
        }


def iso_time(seconds: float | None) -> str:
    """A CSV's time: ISO 8601 in UTC, empty for none."""
    return "" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Neighbour:
    """One of an image's nearest images, from the neighbour graph."""

    image_id: str
    file_name: str
    similarity: float  # on the calibrated scale (1 = identical)
    cosine: float


@dataclass(frozen=True)
class ImageDetail:
    """Everything a detail view shows about one image, in one record. Analysis fields are ``None``
    for a soft-deleted image, and the map position until the map has been computed."""

    image_id: str
    names: tuple[ImageFileName, ...]  # every file it arrived as, first arrival first
    size_bytes: int
    format: str
    width: int
    height: int
    sha256: str
    phash: str
    dhash: str
    created_at: float  # first arrival
    uploader: str  # who uploaded it first
    review: ReviewState  # label, decision, soft delete: who and when
    anomaly_method: str | None
    anomaly_score: float | None
    anomaly_percentile: float | None
    anomaly_rank: int | None
    cluster_id: int | None  # at the default thresholds
    cluster_members: tuple[str, ...]  # ids, representative first; () when in no cluster
    neighbours: tuple[Neighbour, ...]  # up to 10, most similar first
    map_x: float | None
    map_y: float | None
    version: int
    properties: ImageProperties | None = None  # measured at ingest; None until repair for older images
    flags: tuple[Flag, ...] = ()  # quality issues against the collection (default cut-off)
    reasons: tuple[str, ...] = ()  # why the default ranking finds it unusual


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)
