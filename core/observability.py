"""Metrics and structured logs: what operators of the production stack watch.

Metrics are Prometheus collectors in this process, served on ``METRICS_PORT`` by
:func:`start_metrics_server` (the app starts it once; a short CLI run has nothing worth scraping).
Logs go to the ``visual_anomaly`` logger; with ``LOG_FORMAT=json`` each record is one JSON object on
one line: ``time``, ``level``, ``event`` and the event's fields. Fields pass through :func:`redact`
first, so a secret-looking field, a credential inside a URL or raw bytes never reach a log line.

Instrumented code uses three small tools: :func:`timed` around an image processing step,
:func:`observe_search` around a vector search and :func:`log_event` for anything worth a line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from core.display import printable

if TYPE_CHECKING:
    from core.settings import Settings

LOGGER_NAME = "visual_anomaly"
logger = logging.getLogger(LOGGER_NAME)
# Silent until configure_logging(): a CLI run prints its own summary, not a log line per file.
logger.addHandler(logging.NullHandler())
logger.propagate = False

PROCESSING_OPERATIONS = ("read", "hash", "decode", "sketch", "thumbnail", "preprocess", "embed", "arrival", "store")
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _collector(kind: type, name: str, documentation: str, labels: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Register a collector once per process, even if this module is imported again (Streamlit
    re-executes changed modules; a second registration under the same name would raise)."""
    existing = REGISTRY._names_to_collectors.get(name)  # no public lookup exists
    if existing is not None:
        return existing
    return kind(name, documentation, labels, **kwargs)


HTTP_REQUESTS = _collector(
    Counter, "http_requests", "Requests served; for Streamlit, page views by page.", ("method", "endpoint", "status")
)
HTTP_LATENCY = _collector(
    Histogram, "http_request_duration_seconds", "Seconds per API request, by route.", ("method", "endpoint"),
    buckets=_SECONDS,
)
IMAGE_PROCESSING = _collector(
    Histogram,
    "image_processing_duration_seconds",
    "Seconds per ingest step. Per image: read (the bytes), hash (SHA-256), decode (decode, validate, "
    "normalise, perceptual hashes, sketch, thumbnail), sketch and thumbnail (also inside decode), "
    "preprocess (the model's input tensor). Per batch: embed; arrival (the on-arrival duplicate check); "
    "store twice (catalog rows and blobs before embedding, vectors and the visibility commit after).",
    ("operation",),
    buckets=_SECONDS,
)
VECTOR_SEARCH = _collector(
    Histogram, "vector_search_duration_seconds", "Seconds per vector search.", ("search_type",), buckets=_SECONDS
)
ANALYSIS = _collector(
    Histogram, "analysis_duration_seconds", "Seconds per analysis run.", ("analysis",), buckets=(*_SECONDS, 60.0, 300.0)
)
IMAGES_INGESTED = _collector(Counter, "images_ingested", "Images stored and made visible.")
IMAGES_ALREADY_PRESENT = _collector(Counter, "images_already_present", "Files whose bytes were already stored.")
IMAGES_REJECTED = _collector(Counter, "images_rejected", "Files refused, by reason.", ("reason",))
IMAGES_FAILED = _collector(Counter, "images_failed", "Files not stored because a store failed (re-run the ingest).")
BACKEND_UP = _collector(Gauge, "backend_up", "1 when the store answered the last startup check.", ("store", "backend"))


# logs -------------------------------------------------------------------------------------------
# A field is secret when its name *ends* in a secret's name: ``auth_secret``, ``s3_secret_key`` and
# ``access_token`` are masked, while ``api_token_ttl_s`` (a lifetime) and ``password_file`` (a path) are not.
_SECRET_NAME = re.compile(
    r"(pass(w(or)?d)?|secret|secret[_-]?key|access[_-]?key|token|api[_-]?key|authorization|cookies?|credentials?)$", re.IGNORECASE
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def redact(value: Any, name: str = "") -> Any:
    """A log-safe copy: secret-named fields masked, URL credentials masked, bytes replaced by a size."""
    if name and _SECRET_NAME.search(name):
        return "***" if value else value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``event``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level event key=value ...`` for people reading a terminal (values through the one
    sanitiser: a file name must not forge a log line)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={printable(str(v))}" for k, v in getattr(record, "fields", {}).items())
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()} {fields}".rstrip()


_handler: logging.Handler | None = None


def configure_logging(log_format: str = "text", stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send the product's log events to ``stream`` (stderr) in ``text`` or ``json``; calling it again
    replaces the previous set-up, so it is safe on every Streamlit rerun."""
    global _handler
    if log_format not in ("text", "json"):
        raise ValueError(f"Log format {log_format!r} is not one of text, json.")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if _handler is not None:
        logger.removeHandler(_handler)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _handler = handler
    return handler


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (redacted)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": redact(fields)})


# timing -----------------------------------------------------------------------------------------
@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Time one ingest step into ``image_processing_duration_seconds{operation}``, failed or not."""
    start = time.perf_counter()
    try:
        yield
    finally:
        IMAGE_PROCESSING.labels(operation=operation).observe(time.perf_counter() - start)


def step_seconds() -> dict[str, tuple[float, int]]:
    """``{operation: (total seconds, observations)}`` of every ingest step since the process started:
    read it before and after a run to see where that run's time went (``benchmarks/ingest.py``)."""
    totals = {}
    for operation in PROCESSING_OPERATIONS:
        labels = {"operation": operation}
        total = REGISTRY.get_sample_value("image_processing_duration_seconds_sum", labels) or 0.0
        count = REGISTRY.get_sample_value("image_processing_duration_seconds_count", labels) or 0.0
        totals[operation] = (total, int(count))
    return totals


@contextmanager
def _observed(histogram: Any, event: str, label: str, value: str, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time a block into ``histogram{label=value}`` and log one ``event``; fields added to the
    yielded dict (e.g. ``hits``) join the log line."""
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        yield extra
    finally:
        seconds = time.perf_counter() - start
        histogram.labels(**{label: value}).observe(seconds)
        log_event(event, **{label: value}, duration_ms=round(seconds * 1000, 2), **fields, **extra)


def observe_search(search_type: str, **fields: Any) -> AbstractContextManager[dict[str, Any]]:
    """Time a search into ``vector_search_duration_seconds{search_type}`` and log a ``search`` event."""
    return _observed(VECTOR_SEARCH, "search", "search_type", search_type, **fields)


def observe_analysis(analysis: str, **fields: Any) -> AbstractContextManager[dict[str, Any]]:
    """Time an analysis (duplicates, anomalies, projection) and log an ``analysis`` event."""
    return _observed(ANALYSIS, "analysis", "analysis", analysis, **fields)


def record_page_view(page: str, *, method: str = "GET", status: int = 200) -> None:
    """Count a Streamlit page view as ``http_requests_total{method,endpoint,status}``."""
    HTTP_REQUESTS.labels(method=method, endpoint=page, status=str(status)).inc()


def record_request(method: str, endpoint: str, status: int, seconds: float) -> None:
    """Count and time one API request; ``endpoint`` is the route template (``/v1/images/{image_id}``),
    never the concrete path, so ids do not multiply the series."""
    HTTP_REQUESTS.labels(method=method, endpoint=endpoint, status=str(status)).inc()
    HTTP_LATENCY.labels(method=method, endpoint=endpoint).observe(seconds)


def record_login(user: str, *, success: bool) -> None:
    """Log a login attempt (the user name, never the password)."""
    log_event("login", logging.INFO if success else logging.WARNING, user=user, success=success)


# metrics server -----------------------------------------------------------------------------------
_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` on ``port`` (0 picks a free one) once per process; returns the port.

    A second call returns the running server's port: Streamlit re-runs the app script on every
    interaction, and only the first run may bind the port.
    """
    global _server_port
    with _server_lock:
        if _server_port is None:
            try:
                server, _thread = start_http_server(port, addr=addr)
            except OSError as exc:
                raise OSError(
                    f"Cannot serve metrics on {addr}:{port} ({exc}). Another process holds the port: "
                    "pick another METRICS_PORT, or unset it."
                ) from exc
            _server_port = int(server.server_port)
            log_event("metrics_server_started", port=_server_port)
        return _server_port


def setup(settings: Settings) -> int | None:
    """What a long-running process (the app) does once at start: logs in ``LOG_FORMAT`` and, when
    ``METRICS_PORT`` is set, the metrics server. Returns the metrics port, if any."""
    configure_logging(settings.log_format)
    log_event("startup", settings=settings.public())
    if settings.metrics_port is None:
        return None
    return start_metrics_server(settings.metrics_port)
