"""Startup checks: is every configured server reachable, and if not, which one and how was it set?

``visual-anomaly check`` prints one line per store and exits 2 when a required server does not
answer (Redis is optional: the app runs without it, slower). Nothing printed or logged carries a
password, API key or secret key: configuration is shown through :meth:`Settings.public` and every
secret value is scrubbed from error messages, which some drivers echo.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from core.observability import BACKEND_UP, log_event
from core.settings import Settings, SettingsError


@dataclass(frozen=True)
class ServerCheck:
    """The outcome of checking one store's backend."""

    store: str  # catalog | vectors | blobs | cache
    backend: str  # postgresql | qdrant | s3 | redis, or the embedded one
    configured: str  # the settings that chose it, secrets masked
    reachable: bool
    detail: str  # "answered in 3 ms", or what went wrong
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.reachable or not self.required

    def line(self) -> str:
        mark = "ok  " if self.reachable else ("FAIL" if self.required else "warn")
        return f"{mark} {self.store:8} {self.backend:11} {self.configured}: {self.detail}"


def _secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, including passwords inside URLs."""
    found = [settings.qdrant_api_key, settings.s3_secret_key, settings.s3_access_key]
    for url in (settings.database_url, settings.redis_url, settings.qdrant_url, settings.s3_endpoint):
        if url:
            parts = urlsplit(url)
            found.append(parts.password)
    return sorted({s for s in found if s and len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, settings: Settings) -> str:
    for secret in _secrets(settings):
        text = text.replace(secret, "***")
    return text


def _check_postgres(settings: Settings, timeout_s: float) -> None:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from core.storage.catalog import engine_url

    engine = sa.create_engine(
        engine_url(str(settings.database_url)), poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout_s))}
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def _check_qdrant(settings: Settings, timeout_s: float) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(
        url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=max(1, int(timeout_s)), check_compatibility=False
    )
    try:
        client.get_collections()
    finally:
        client.close()


def _check_s3(settings: Settings, timeout_s: float) -> None:
    from core.storage.blobs_s3 import minio_client

    if not (settings.s3_access_key and settings.s3_secret_key):
        raise SettingsError("S3_ACCESS_KEY or S3_SECRET_KEY is missing.")
    client = minio_client(
        str(settings.s3_endpoint), settings.s3_access_key, settings.s3_secret_key, settings.s3_region, timeout_s
    )
    client.bucket_exists(settings.s3_bucket)  # a round trip that also proves the keys work


def _check_redis(settings: Settings, timeout_s: float) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        str(settings.redis_url), socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    finally:
        client.close()


@dataclass(frozen=True)
class _Plan:
    store: str
    backend: str
    configured: str
    probe: Callable[[Settings, float], None] | None  # None: embedded, nothing to reach
    required: bool = True


def _plans(settings: Settings) -> list[_Plan]:
    shown = settings.public()
    data_dir = f"DATA_DIR={shown['data_dir']}"
    return [
        _Plan("catalog", "postgresql", f"DATABASE_URL={shown['database_url']}", _check_postgres)
        if settings.database_url
        else _Plan("catalog", "sqlite", data_dir, None),
        _Plan("vectors", "qdrant", f"QDRANT_URL={shown['qdrant_url']}", _check_qdrant)
        if settings.qdrant_url
        else _Plan("vectors", "qdrant-edge", data_dir, None),
        _Plan(
            "blobs",
            "s3",
            f"S3_ENDPOINT={shown['s3_endpoint']} S3_BUCKET={shown['s3_bucket']} S3_ACCESS_KEY={shown['s3_access_key']}",
            _check_s3,
        )
        if settings.s3_endpoint
        else _Plan("blobs", "files", data_dir, None),
        _Plan("cache", "redis", f"REDIS_URL={shown['redis_url']}", _check_redis, required=False)
        if settings.redis_url
        else _Plan("cache", "memory", "in-process", None, required=False),
    ]


def _run(plan: _Plan, settings: Settings, timeout_s: float) -> ServerCheck:
    if plan.probe is None:
        return ServerCheck(plan.store, plan.backend, plan.configured, True, "embedded, nothing to reach", plan.required)
    start = time.perf_counter()
    try:
        plan.probe(settings, timeout_s)
    except Exception as exc:
        detail = scrub(f"unreachable: {type(exc).__name__}: {exc}".strip(), settings)
        return ServerCheck(plan.store, plan.backend, plan.configured, False, " ".join(detail.split()), plan.required)
    ms = (time.perf_counter() - start) * 1000
    return ServerCheck(plan.store, plan.backend, plan.configured, True, f"answered in {ms:.0f} ms", plan.required)


def check_servers(settings: Settings, timeout_s: float = 3.0) -> list[ServerCheck]:
    """Check every store's backend at once (in parallel, each within about ``timeout_s``)."""
    plans = _plans(settings)
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        checks = list(pool.map(lambda p: _run(p, settings, timeout_s), plans))
    for check in checks:
        BACKEND_UP.labels(store=check.store, backend=check.backend).set(1 if check.reachable else 0)
        log_event("startup_check", **asdict(check))
    return checks


def unreachable_message(checks: Sequence[ServerCheck]) -> str | None:
    """One sentence naming every required server that did not answer, or ``None`` when all did."""
    failed = [c for c in checks if not c.ok]
    if not failed:
        return None
    parts = "; ".join(f"{c.store} ({c.backend}, {c.configured}) {c.detail}" for c in failed)
    return f"Cannot reach {parts}. Start the server or fix the setting, then try again."
