"""Fixtures for the production stack's servers, loaded by the test modules that need them
(``pytest_plugins = ("fixtures_servers",)``).

S3 is moto's server on a free loopback port, once per session; every test gets its own bucket.
Tests that stop Redis on purpose start their own ``redis-server`` on a free port, so the shared one
on 6379 (other tests, other sessions) is never touched. Nothing here skips: a missing
``redis-server`` binary fails the test with the command that installs it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from moto.server import ThreadedMotoServer
from qdrant_client import QdrantClient

from core.backends import Backends, open_blobs, open_cache, open_catalog
from core.collection import Collection
from core.embedding import Embedder
from core.settings import Settings
from core.storage.vectors_qdrant import QdrantVectorStore

# Credentials for moto only: it accepts any. Distinctive, so tests can prove they never leak.
S3_ACCESS_KEY = "moto-access-key-id"
S3_SECRET_KEY = "moto-secret-key-never-logged"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a server configured there is unreachable."""
    return free_port()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An S3 endpoint (``http://127.0.0.1:<port>``) served by moto in this process."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_settings(moto_endpoint: str) -> dict[str, str]:
    """Settings fields for S3 blobs in a bucket of this test's own."""
    return {
        "s3_endpoint": moto_endpoint,
        "s3_access_key": S3_ACCESS_KEY,
        "s3_secret_key": S3_SECRET_KEY,
        "s3_bucket": f"test-{uuid.uuid4().hex[:16]}",
    }


class RedisProcess:
    """A private ``redis-server`` (no persistence) that a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; install it with: apt-get install redis-server")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    pytest.fail(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_on_servers() -> Callable[[Settings, Embedder, QdrantClient], Collection]:
    return open_server_collection


def open_server_collection(settings: Settings, embedder: Embedder, qdrant_client: QdrantClient) -> Collection:
    """The facade over the server backends the settings choose (PostgreSQL, S3, Redis), with vectors
    in a Qdrant client given by the test (local mode stands in for a Qdrant server here)."""
    backends = Backends(
        blobs=open_blobs(settings),
        catalog=open_catalog(settings),
        vectors=QdrantVectorStore(qdrant_client, settings.qdrant_collection, embedder.dim, where="Qdrant local mode"),
        cache=open_cache(settings),
    )
    return Collection(settings, backends, embedder)


SECRETS = ("pg-pass-w0rd", "redis-pass-w0rd", "qdrant-key-w0rd", "s3-secret-w0rd", "s3-access-w0rd")


def unreachable_settings(port: int) -> Settings:
    return Settings(
        database_url=f"postgresql://app:pg-pass-w0rd@127.0.0.1:{port}/test",
        redis_url=f"redis://:redis-pass-w0rd@127.0.0.1:{port}/0",
        qdrant_url=f"http://127.0.0.1:{port}",
        qdrant_api_key="qdrant-key-w0rd",
        s3_endpoint=f"http://127.0.0.1:{port}",
        s3_access_key="s3-access-w0rd",
        s3_secret_key="s3-secret-w0rd",
    )
