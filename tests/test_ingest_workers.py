"""Many ingest workers: a stable split of the input (``--shard I/N``), and two worker processes with
overlapping inputs at the same time storing each image once on PostgreSQL, S3 (moto) and one
vector store.

What the two-process test runs for real: two OS processes, each with its own model and its own
connections to the local PostgreSQL and to moto's S3 server, released together by a barrier. The
vector store is one Qdrant local-mode engine served from this test process to both workers (local
mode lives inside one process, and no Qdrant server binary runs here), so the vector store's own
behaviour under concurrent writers is not what this test checks: the catalog's, the blobs' and the
ingest protocol's are.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from test_server_stack import assert_consistent

from core.backends import open_blobs, open_catalog
from core.cli import main as cli_main
from core.errors import InvalidRequest
from core.ingest import Shard, items_from_paths
from core.settings import Settings
from core.storage.vectors_qdrant import QdrantVectorStore
from core.synthetic import encode, photo

pytest_plugins = ("fixtures_servers",)
pytestmark = pytest.mark.filterwarnings("ignore:.*(local Qdrant|Local mode).*:UserWarning")

ROOT = Path(__file__).resolve().parents[1]


def write_photos(folder: Path, count: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (folder / f"img_{i:03d}.jpg").write_bytes(encode(photo(i, size=(160, 120))))


def test_shards_split_the_files_into_disjoint_stable_parts(tmp_path: Path) -> None:
    write_photos(tmp_path / "in", 30)
    everything = {i.name for i in items_from_paths([tmp_path / "in"])}
    parts = [{i.name for i in items_from_paths([tmp_path / "in"], Shard(k, 3))} for k in range(3)]
    assert set().union(*parts) == everything
    assert sum(len(p) for p in parts) == len(everything)
    assert all(parts)  # 30 files over 3 shards: none is empty
    # adding files never moves an existing file to another shard; the same path is the same shard
    write_photos(tmp_path / "in", 10, start=30)
    again = [{i.name for i in items_from_paths([tmp_path / "in"], Shard(k, 3))} for k in range(3)]
    assert all(old <= new for old, new in zip(parts, again, strict=True))
    given_as_file = items_from_paths([tmp_path / "in" / "img_000.jpg"], Shard(0, 3))
    assert bool(given_as_file) == any(n.endswith("img_000.jpg") for n in parts[0])


@pytest.mark.parametrize("text", ["3/3", "1", "a/2", "-1/2", "0/0"])
def test_a_bad_shard_is_refused_naming_the_field(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidRequest, match="shard"):
        Shard.parse(text)
    with pytest.raises(SystemExit):
        cli_main(["ingest", "somewhere", "--shard", text])
    assert "--shard" in capsys.readouterr().err


class _Serialised:
    """One Qdrant local-mode engine, one call at a time, for every worker process."""

    def __init__(self) -> None:
        self.client = QdrantClient(location=":memory:")
        self._lock = threading.Lock()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return getattr(self.client, name)(*args, **kwargs)


@pytest.fixture
def shared_vectors() -> Iterator[tuple[_Serialised, tuple[str, int], bytes]]:
    engine, barrier, key = _Serialised(), threading.Barrier(2), secrets.token_bytes(16)
    manager = BaseManager(address=("127.0.0.1", 0), authkey=key)
    manager.register("qdrant", callable=lambda: engine)
    manager.register("barrier", callable=lambda: barrier)
    server = manager.get_server()

    def serve() -> None:
        with contextlib.suppress(SystemExit):  # how serve_forever ends once stop_event is set
            server.serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    yield engine, server.address, key
    server.stop_event.set()


def test_two_workers_with_overlapping_inputs_store_each_image_once(
    tmp_path: Path, postgres_url: str, s3_settings: dict[str, str], shared_vectors: Any, embedder: Any
) -> None:
    engine, (host, port), key = shared_vectors
    folder = tmp_path / "in"
    write_photos(folder, 24)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, model_pretrained="none",
                        precision="fp32", runtime="torch", embed_batch_size=4, **s3_settings)
    # the first start creates the schema, the bucket and the vector collection (see the README:
    # run one `visual-anomaly check` or `status` before starting many workers on new stores)
    open_catalog(settings).close()
    open_blobs(settings).close()
    QdrantVectorStore(engine.client, settings.qdrant_collection, embedder.dim)
    env = os.environ | {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
        "DATA_DIR": str(settings.data_dir), "DATABASE_URL": postgres_url, "MODEL_PRETRAINED": "none",
        "PRECISION": "fp32", "RUNTIME": "torch", "EMBED_BATCH_SIZE": "4",
        "S3_ENDPOINT": s3_settings["s3_endpoint"], "S3_ACCESS_KEY": s3_settings["s3_access_key"],
        "S3_SECRET_KEY": s3_settings["s3_secret_key"], "S3_BUCKET": s3_settings["s3_bucket"],
    }
    # one worker takes everything, the other its shard of the same folder: every file of the second
    # is also the first's, and both run at once
    workers = [
        subprocess.Popen([sys.executable, str(ROOT / "tests" / "ingest_worker.py"), host, str(port), key.hex(), shard,
                          str(folder)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for shard in ("all", "1/2")
    ]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=400)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    whole, half = reports
    assert whole["error"] is None and half["error"] is None
    assert not whole["failed"] and not half["failed"] and not whole["rejected"] and not half["rejected"]
    assert whole["ingested"] + whole["already_present"] == 24
    expected_half = {i.name for i in items_from_paths([folder], Shard(1, 2))}
    assert {f["file"] for f in half["files"]} == expected_half
    assert half["ingested"] + half["already_present"] == len(expected_half)

    from fixtures_servers import open_server_collection

    with open_server_collection(settings, embedder, engine.client) as collection:
        assert_consistent(collection, 24)  # one row, one vector, one original and thumbnail per image
