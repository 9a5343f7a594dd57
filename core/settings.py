"""One settings object, read from the environment in one place and passed down.

No other module reads ``os.environ``: the facade, the CLI and the app build a :class:`Settings` once
and hand it to whatever needs it, so tests can build any configuration without touching the process
environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path


class SettingsError(ValueError):
    """A setting has a value the product cannot use; the message names the variable and the fix."""


@dataclass(frozen=True)
class Setting:
    """How one environment variable maps to a field: the table in the README is generated from these."""

    env: str
    default: str | None
    help: str


SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./data", "Home of the embedded default: vector shard, blob files, SQLite catalog."),
    Setting("DATABASE_URL", None, "Catalog on PostgreSQL (`postgresql://user:pass@host/db`); unset: SQLite in DATA_DIR."),
    Setting("QDRANT_URL", None, "Vectors on a Qdrant server (`http://host:6333`); unset: a Qdrant Edge shard in DATA_DIR."),
    Setting("QDRANT_API_KEY", None, "API key for QDRANT_URL."),
    Setting("QDRANT_COLLECTION", "images", "Collection name on the Qdrant server."),
    Setting("S3_ENDPOINT", None, "Blobs on MinIO/S3 (`http://host:9000`); unset: files under DATA_DIR."),
    Setting("S3_ACCESS_KEY", None, "Access key for S3_ENDPOINT."),
    Setting("S3_SECRET_KEY", None, "Secret key for S3_ENDPOINT."),
    Setting("S3_BUCKET", "images", "Bucket for originals and thumbnails (created if missing)."),
    Setting("S3_REGION", "us-east-1", "Region of S3_ENDPOINT (MinIO ignores it; AWS needs the bucket's)."),
    Setting("S3_PUBLIC_ENDPOINT", None, "Endpoint browsers reach for presigned gallery URLs, when not S3_ENDPOINT (e.g. behind compose)."),
    Setting("REDIS_URL", None, "Cache on Redis (`redis://host:6379/0`); unset: an in-process cache."),
    Setting("MODEL_NAME", "ViT-B-32", "OpenCLIP architecture."),
    Setting("MODEL_PRETRAINED", "laion2b_s34b_b79k", "OpenCLIP pretrained tag; `none` runs random weights (tests, offline trials)."),
    Setting("MODEL_CHECKPOINT", None, "Local weights file for MODEL_NAME; overrides MODEL_PRETRAINED."),
    Setting("DEVICE", "auto", "Where the model and the neighbour graph run: `auto` (CUDA when present, else CPU), `cpu` or `cuda`."),
    Setting("PRECISION", "auto", "`auto` (bf16/fp16 only where measured faster and giving the same duplicates, anomalies and search results as fp32), `fp32`, `bf16`, `fp16`, `int8` (dynamic quantisation)."),
    Setting("RUNTIME", "auto", "Image encoder runtime: `auto` (the one `make bench` recorded as fastest with unchanged results on this CPU, else torch), `torch`, `onnxruntime`, `openvino` (the last two need the `runtimes` extra)."),
    Setting("EMBED_BATCH_SIZE", "32", "Images per inference batch."),
    Setting("MAX_UPLOAD_MB", "10", "Largest accepted file, in MB."),
    Setting("MAX_IMAGE_PIXELS", "100000000", "Largest accepted width x height (decompression-bomb guard)."),
    Setting("LOCK_TIMEOUT_S", "60", "How long to wait for another process holding the embedded vector shard."),
    Setting("METRICS_PORT", None, "Serve Prometheus metrics on this port (`/metrics`); unset: no metrics server."),
    Setting("LOG_FORMAT", "text", "`text` for people, `json` for one JSON object per line (log collectors)."),
    Setting("API_TOKEN_TTL_S", "3600", "Lifetime of an API access token (`POST /v1/token`), in seconds."),
    Setting("API_MAX_FILES", "100", "Most files one `POST /v1/images` request may carry."),
    Setting("API_MAX_BODY_MB", "512", "Largest API request body, in MB (413 beyond)."),
    Setting("API_JOB_FILES", "20", "Uploads with more files than this run as a job (`202`, then `GET /v1/jobs/{id}`)."),
    Setting("API_RATE_LIMIT", "600", "Requests per minute per user on the API (429 with Retry-After beyond)."),
    Setting("API_CORS_ORIGINS", None, "Comma-separated origins allowed to call the API from a browser; unset: CORS off."),
    Setting("AUTH_SECRET", None, "Key that signs login cookies and API tokens. Required (not a placeholder such as `change-me`) with any server backend; unset on the embedded default: generated once into DATA_DIR/auth-secret."),
)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
# Values that ship in examples: a deployment still using one has a secret everybody knows.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "secret"})

_DEFAULTS = {s.env: s.default for s in SETTINGS_TABLE}


def _int(env: Mapping[str, str], name: str, minimum: int = 1) -> int:
    raw = env.get(name) or _DEFAULTS[name]
    try:
        value = int(str(raw))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}.")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or _DEFAULTS[name] or "").strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}.")
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything configurable, typed. Unset server variables select the embedded default backends."""

    data_dir: Path = Path("./data")
    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    qdrant_collection: str = "images"
    s3_endpoint: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_bucket: str = "images"
    s3_region: str = "us-east-1"
    s3_public_endpoint: str | None = None
    redis_url: str | None = None
    model_name: str = "ViT-B-32"
    model_pretrained: str = "laion2b_s34b_b79k"
    model_checkpoint: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    embed_batch_size: int = 32
    max_upload_mb: int = 10
    max_image_pixels: int = 100_000_000
    lock_timeout_s: int = 60
    metrics_port: int | None = None
    log_format: str = "text"
    auth_secret: str | None = field(default=None, repr=False)
    api_token_ttl_s: int = 3600
    api_max_files: int = 100
    api_max_body_mb: int = 512
    api_job_files: int = 20
    api_rate_limit: int = 600
    api_cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Notebook users pass plain strings for paths.
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.model_checkpoint is not None:
            object.__setattr__(self, "model_checkpoint", Path(self.model_checkpoint))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (the process environment by default) and validate it."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or _DEFAULTS[name]

        checkpoint = text("MODEL_CHECKPOINT")
        settings = cls(
            data_dir=Path(text("DATA_DIR") or "./data"),
            database_url=text("DATABASE_URL"),
            qdrant_url=text("QDRANT_URL"),
            qdrant_api_key=text("QDRANT_API_KEY"),
            qdrant_collection=text("QDRANT_COLLECTION") or "images",
            s3_endpoint=text("S3_ENDPOINT"),
            s3_access_key=text("S3_ACCESS_KEY"),
            s3_secret_key=text("S3_SECRET_KEY"),
            s3_bucket=text("S3_BUCKET") or "images",
            s3_region=text("S3_REGION") or "us-east-1",
            s3_public_endpoint=text("S3_PUBLIC_ENDPOINT"),
            redis_url=text("REDIS_URL"),
            model_name=text("MODEL_NAME") or "ViT-B-32",
            model_pretrained=(text("MODEL_PRETRAINED") or "none"),
            model_checkpoint=Path(checkpoint) if checkpoint else None,
            device=_choice(env, "DEVICE", ("auto", "cpu", "cuda")),
            precision=_choice(env, "PRECISION", ("auto", "fp32", "bf16", "fp16", "int8")),
            runtime=_choice(env, "RUNTIME", RUNTIMES),
            embed_batch_size=_int(env, "EMBED_BATCH_SIZE"),
            max_upload_mb=_int(env, "MAX_UPLOAD_MB"),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS"),
            lock_timeout_s=_int(env, "LOCK_TIMEOUT_S", minimum=0),
            metrics_port=_int(env, "METRICS_PORT") if text("METRICS_PORT") else None,
            log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
            auth_secret=text("AUTH_SECRET"),
            api_token_ttl_s=_int(env, "API_TOKEN_TTL_S"),
            api_max_files=_int(env, "API_MAX_FILES"),
            api_max_body_mb=_int(env, "API_MAX_BODY_MB"),
            api_job_files=_int(env, "API_JOB_FILES"),
            api_rate_limit=_int(env, "API_RATE_LIMIT"),
            api_cors_origins=tuple(o.strip() for o in (text("API_CORS_ORIGINS") or "").split(",") if o.strip()),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Reject configurations that are half set, before any heavy work starts."""
        if self.s3_endpoint and not (self.s3_access_key and self.s3_secret_key):
            raise SettingsError("S3_ENDPOINT is set but S3_ACCESS_KEY or S3_SECRET_KEY is missing.")
        if self.model_checkpoint is not None and not self.model_checkpoint.is_file():
            raise SettingsError(
                f"MODEL_CHECKPOINT={self.model_checkpoint} is not a file. Point it at a local OpenCLIP "
                "weights file, or unset it to use MODEL_PRETRAINED."
            )
        if self.auth_secret is not None and self.auth_secret.strip().lower() in PLACEHOLDER_SECRETS:
            raise SettingsError(
                "AUTH_SECRET is a placeholder everybody knows; set it to a random value, e.g. `openssl rand -hex 32`."
            )

    def check_data_dir(self) -> None:
        """One line naming DATA_DIR when the embedded stores that live there cannot: it is a file, or it
        is missing and cannot be created (a file on its path, or a read-only folder above it). An
        existing folder that is read-only is fine: the read-only commands work on it."""
        if self.database_url and self.qdrant_url and self.s3_endpoint:
            return  # nothing lives in DATA_DIR
        path = self.data_dir
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            raise SettingsError(f"DATA_DIR={path} is not a folder (it is a file or a broken link); "
                                "point DATA_DIR at a folder, which is created if missing.")
        above = path.absolute().parent
        while not above.exists() and above != above.parent:
            above = above.parent
        if not above.is_dir():
            raise SettingsError(f"DATA_DIR={path} cannot be created: {above} on its path is a file, not a folder.")
        if not os.access(above, os.W_OK | os.X_OK):
            raise SettingsError(f"DATA_DIR={path} cannot be created: {above} is read-only for this user; "
                                "create the folder first or point DATA_DIR somewhere writable.")

    @property
    def uses_servers(self) -> bool:
        """Whether any store is a server: then several processes or hosts share the collection."""
        return any((self.database_url, self.qdrant_url, self.s3_endpoint, self.redis_url))

    @property
    def random_weights(self) -> bool:
        return self.model_checkpoint is None and self.model_pretrained.lower() == "none"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public().items())
        return f"Settings({shown})"

    def public(self) -> dict[str, str | None]:
        """Settings as shown to users and logs: secrets and credentials in URLs never appear."""
        shown: dict[str, str | None] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else None
            elif isinstance(value, str) and "://" in value and "@" in value:
                scheme, rest = value.split("://", 1)
                value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
            shown[f.name] = None if value is None else str(value)
        return shown
