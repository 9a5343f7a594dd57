"""One ingest worker process for tests/test_ingest_workers.py (not a test module itself).

    python tests/ingest_worker.py HOST PORT AUTHKEY_HEX SHARD_OR_ALL FOLDER

Settings come from the environment (PostgreSQL, S3, the model). Vectors go to the one Qdrant
local-mode engine the test process serves to every worker (standing in for a Qdrant server, which
local mode cannot be: it lives inside one process). The worker loads its model, waits at a barrier
shared with the other worker so both ingest at the same time, and prints its report as JSON.
"""

from __future__ import annotations

import json
import sys
from multiprocessing.managers import BaseManager
from typing import Any

from core.embedding import Embedder
from core.ingest import Shard
from core.settings import Settings
from tests.fixtures_servers import open_server_collection


class RemoteQdrant:
    """A QdrantClient's calls forwarded to the engine the test serves; closing it leaves that open."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self._engine.call(name, *args, **kwargs)


def main(host: str, port: str, authkey: str, shard: str, folder: str) -> None:
    manager = BaseManager(address=(host, int(port)), authkey=bytes.fromhex(authkey))
    manager.register("qdrant")
    manager.register("barrier")
    manager.connect()
    settings = Settings.from_env()
    embedder = Embedder(settings)
    with open_server_collection(settings, embedder, RemoteQdrant(manager.qdrant())) as collection:
        manager.barrier().wait(timeout=120)
        report = collection.ingest([folder], shard=None if shard == "all" else Shard.parse(shard))
    print(json.dumps(report.to_json()))


if __name__ == "__main__":
    main(*sys.argv[1:])
