"""Shared fixtures: a real model (random weights), real stores in temporary folders, real servers.

PostgreSQL and Redis run on every machine (CI's too); tests that need them use them for real and
fail, not skip, when they are down, with the command that starts them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.collection import Collection
from core.embedding import Embedder
from core.settings import Settings
from core.synthetic import encode, photo

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
# fp32 everywhere, subprocesses (the CLI, serve-api, the app) included: with PRECISION=auto each fresh
# DATA_DIR measures bf16 against fp32 at its first model load (half a minute), and results would depend
# on the CPU. tests/test_runtimes.py sets the automatic choice up itself.
FIXED_PRECISION = "fp32"
os.environ["PRECISION"] = FIXED_PRECISION


class SessionEmbedder(Embedder):
    """The suite's shared embedder: each distinct model input is embedded once per session.

    Dozens of fixtures ingest the same test pictures (the review fixture alone 26 images for each
    of its 34 tests), and on 2 AVX2 cores each costs about 0.1 s. An input is known by its bytes,
    so a picture one pixel apart is embedded afresh; the model runs as it would for any caller."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._known: dict[bytes, np.ndarray] = {}

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in batch]
        new = [i for i, key in enumerate(keys) if key not in self._known and key not in keys[:i]]
        if new:
            for i, vector in zip(new, super().embed_tensors(batch[new]), strict=True):
                self._known[keys[i]] = vector
        return np.stack([self._known[key] for key in keys]) if keys else super().embed_tensors(batch)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real ViT-B-32 architecture with deterministic random weights, loaded once per session."""
    return SessionEmbedder(Settings(model_pretrained="none", precision=FIXED_PRECISION))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_pretrained="none", embed_batch_size=8, lock_timeout_s=20,
                    precision=FIXED_PRECISION)


@pytest.fixture
def collection(settings: Settings, embedder: Embedder) -> Iterator[Collection]:
    with Collection.open(settings, embedder=embedder) as opened:
        yield opened


def _require_port(port: int, what: str, start: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pytest.fail(f"{what} is not running on 127.0.0.1:{port}; start it with: {start}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the local PostgreSQL `test` database, dropped afterwards."""
    import psycopg

    _require_port(5432, "PostgreSQL", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> str:
    _require_port(
        6379,
        "Redis",
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
        "--dir /var/lib/redis --logfile /var/log/redis/ci.log",
    )
    return REDIS_URL


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Writes ``count`` distinct JPEGs (optionally in subfolders) and returns the folder."""

    def make(count: int, name: str = "photos", start: int = 0) -> Path:
        folder = tmp_path / name
        for i in range(start, start + count):
            target = folder / (f"sub{i % 3}" if i % 2 else "") / f"img_{i:04d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode(photo(i)))
        return folder

    return make
