"""HTTP API throughput and latency, each beside its reference measured in the same run.

1. In-process: N synthetic images in a temporary embedded collection; per operation, requests/s and
   p50/p99 through the API (FastAPI's TestClient: routing, auth, validation, JSON, no socket) next to
   the facade call alone: the difference is what the HTTP layer costs.
2. Ingest, API against CLI: the same folder of M images ingested by ``visual-anomaly ingest`` (its
   own pipeline seconds, and its wall time with start-up) and through a real ``serve-api`` over a
   socket in requests of ``--batch`` files, each into a fresh embedded collection; rounds alternate
   which goes first, so a machine whose load changes slows both alike.
3. The server stack: PostgreSQL (the local one, a schema of its own), Redis (the local one), S3 on
   moto (in this process) and the default local Qdrant Edge shard; S images ingested through
   ``serve-api``, the collection topped up to T with synthetic rows, then the three read operations
   driven by ``--concurrency`` client threads against 1 and then 2 workers.

Run: ``python -m benchmarks.api [--images 2000 --ingest-images 300 --server-images 1000 --server-total 10000]``;
``--server-images 0`` skips part 3 (it needs PostgreSQL on 127.0.0.1:5432 and Redis on 6379).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from api.app import create_app
from benchmarks.api_server import (
    PASSWORD,
    Load,
    Server,
    add_user,
    drive,
    ingest_through_api,
    ingest_through_cli,
    serve_api,
)
from benchmarks.dataset_vectors import synthetic_collection
from benchmarks.synthetic_store import write_synthetic
from core import Collection, Settings
from core.synthetic import encode, photo

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


def timed(call: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) over ``repeats`` calls after one warm-up."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    ms = np.array(seconds) * 1000
    return repeats / sum(seconds), float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def in_process(images: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder, \
            Collection.open(Settings(data_dir=Path(folder), model_pretrained="none", api_rate_limit=10**9)) as collection:
        for start in range(0, images, 500):
            collection.ingest_uploads([(f"{i}.jpg", encode(photo(i))) for i in range(start, min(start + 500, images))])
        collection.add_user("bench", "viewer", PASSWORD)
        client = TestClient(create_app(collection))
        token = client.post("/v1/token", data={"username": "bench", "password": PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        viewer = collection.as_user("bench")
        image_id = viewer.search(text="a photo", k=1).results[0].image_id

        def get(path: str, **params: object) -> Callable[[], object]:
            return lambda: client.get(path, headers=headers, params=params).raise_for_status()

        rows = [
            ("GET /v1/images/{id}", get(f"/v1/images/{image_id}"),
             lambda: viewer.image_detail(image_id)),
            ("POST /v1/search by id (k=20)",
             lambda: client.post("/v1/search", headers=headers, data={"image_id": image_id}).raise_for_status(),
             lambda: viewer.search(image_id=image_id, k=20)),
            ("GET /v1/duplicates (cached, page of 100)", get("/v1/duplicates"), lambda: viewer.duplicates().rows()),
        ]
        print(f"\n## 1. In-process: {images} images, {repeats} requests each (TestClient), one worker\n")
        print("| operation | API req/s | p50 ms | p99 ms | facade calls/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|")
        for name, through_api, direct in rows:
            api_rate, api_p50, api_p99 = timed(through_api, repeats)
            rate, p50, p99 = timed(direct, repeats)
            print(f"| {name} | {api_rate:.0f} | {api_p50:.2f} | {api_p99:.2f} | {rate:.0f} | {p50:.2f} | {p99:.2f} |")


def write_folder(folder: Path, count: int) -> list[tuple[str, bytes]]:
    folder.mkdir(parents=True)
    files = [(f"img_{i:05d}.jpg", encode(photo(i))) for i in range(count)]
    for name, data in files:
        (folder / name).write_bytes(data)
    return files


def api_env(data_dir: Path, batch: int) -> dict[str, str]:
    return {"DATA_DIR": str(data_dir), "MODEL_PRETRAINED": "none", "API_RATE_LIMIT": str(10**9),
            "API_MAX_FILES": str(batch), "API_JOB_FILES": str(batch)}


def api_against_cli(work: Path, images: int, batch: int, rounds: int) -> None:
    files = write_folder(work / "folder", images)
    print(f"\n## 2. Ingest of the same {images} JPEGs (320x240): API (serve-api, 1 worker, {batch} files a request) "
          "against the CLI, each into a fresh embedded collection\n")
    print("| round | CLI images/s (pipeline) | CLI images/s (wall, with start-up) | API images/s | API / CLI pipeline |")
    print("|---|---|---|---|---|")
    ratios = []
    for round_ in range(rounds):
        results: dict[str, tuple[float, ...]] = {}
        order = ("cli", "api") if round_ % 2 == 0 else ("api", "cli")
        for kind in order:
            env = api_env(work / f"{kind}-{round_}", batch)
            if kind == "cli":
                count, seconds, wall = ingest_through_cli(env, work / "folder")
                results["cli"] = (count / seconds, count / wall)
            else:
                add_user(env)
                with serve_api(env, workers=1) as server:
                    count, seconds = ingest_through_api(server, files, batch)
                results["api"] = (count / seconds,)
            assert count == images, f"{kind} ingested {count} of {images}"
        ratios.append(results["api"][0] / results["cli"][0])
        print(f"| {round_ + 1} ({' then '.join(order)}) | {results['cli'][0]:.1f} | {results['cli'][1]:.1f} | "
              f"{results['api'][0]:.1f} | {ratios[-1]:.2f} |")
    print(f"\nMedian API / CLI (pipeline seconds): {statistics.median(ratios):.2f}")


@contextmanager
def server_stack(work: Path) -> Iterator[dict[str, str]]:
    """The environment of a server-stack deployment: a PostgreSQL schema and an S3 bucket of its own."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        yield {"DATABASE_URL": f"{POSTGRES}?options=-csearch_path%3D{schema}", "REDIS_URL": REDIS,
               "S3_ENDPOINT": f"http://{host}:{port}", "S3_ACCESS_KEY": "bench", "S3_SECRET_KEY": "bench-secret",
               "S3_BUCKET": f"bench-{uuid.uuid4().hex[:12]}", "AUTH_SECRET": uuid.uuid4().hex,
               "DATA_DIR": str(work / "servers")}
    finally:
        moto.stop()
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def read_operations(server: Server) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    """The three read operations, on the latest image (one that arrived through the API, with its files)."""
    latest = httpx.get(f"{server.base}/v1/images", headers=server.headers, timeout=60,
                       params={"limit": 1, "descending": True})
    image_id = latest.raise_for_status().json()["items"][0]["id"]
    return [
        ("GET /v1/images/{id}", lambda c: c.get(f"/v1/images/{image_id}")),
        ("POST /v1/search by id (k=20)", lambda c: c.post("/v1/search", data={"image_id": image_id})),
        ("GET /v1/duplicates (cached, page of 100)", lambda c: c.get("/v1/duplicates")),
    ]


def top_up(env: dict[str, str], total: int) -> int:
    """Synthetic rows (vectors, hashes, sketches; no files) written straight into the stack's stores,
    older than what the API ingested, until the collection holds ``total`` images (no server running:
    the embedded shard is this process's meanwhile). Returns how many were added."""
    settings = Settings.from_env(env)
    with Collection.open(settings) as collection:
        missing = total - collection.status().images
        if missing > 0:
            write_synthetic(collection, synthetic_collection(missing), settings.data_dir)
    return max(missing, 0)


def on_the_server_stack(work: Path, images: int, total: int, batch: int, requests: int, concurrency: int) -> None:
    files = [(f"img_{i:05d}.jpg", encode(photo(i))) for i in range(images)]
    with server_stack(work) as stack:
        env = api_env(work / "servers", batch) | stack
        add_user(env)
        with serve_api(env, workers=1) as server:
            count, seconds = ingest_through_api(server, files, batch)
        added = top_up(env, total)
        print(f"\n## 3. Server stack (PostgreSQL, Redis, S3 on moto, Qdrant Edge in DATA_DIR): {count} images "
              f"ingested through the API at {count / seconds:.1f} images/s, then {added} synthetic rows written "
              f"into the same stores ({count + added} images)\n")
        loads: dict[int, list[tuple[str, Load]]] = {}
        for workers in (1, 2):
            with serve_api(env, workers) as server:
                loads[workers] = [(name, drive(server, call, requests, concurrency))
                                  for name, call in read_operations(server)]
    print(f"{requests} requests per operation from {concurrency} client threads, over a socket\n")
    print("| operation | 1 worker req/s | p50 ms | p99 ms | 2 workers req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|")
    for (name, one), (_, two) in zip(loads[1], loads[2], strict=True):
        print(f"| {name} | {one.per_s:.0f} | {one.p50_ms:.1f} | {one.p99_ms:.1f} | "
              f"{two.per_s:.0f} | {two.p50_ms:.1f} | {two.p99_ms:.1f} |")
    print("\nNo Qdrant server runs here, so the vectors are an embedded Edge shard, which one process holds at a "
          "time: two workers take turns on it (a lease handed over when idle), and calls that read vectors wait. "
          "Production runs several workers against a Qdrant server (QDRANT_URL), where they do not.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000, help="part 1's collection")
    parser.add_argument("--repeats", type=int, default=200, help="part 1's requests per operation")
    parser.add_argument("--ingest-images", type=int, default=300, help="part 2's folder (0 skips)")
    parser.add_argument("--rounds", type=int, default=2, help="part 2's rounds")
    parser.add_argument("--batch", type=int, default=100, help="files per upload request")
    parser.add_argument("--server-images", type=int, default=1000, help="part 3's images ingested (0 skips part 3)")
    parser.add_argument("--server-total", type=int, default=10_000,
                        help="part 3's collection, topped up with synthetic rows past what was ingested")
    parser.add_argument("--requests", type=int, default=300, help="part 3's requests per operation")
    parser.add_argument("--concurrency", type=int, default=4, help="part 3's client threads")
    args = parser.parse_args()
    if args.images:
        in_process(args.images, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        if args.ingest_images:
            api_against_cli(Path(folder), args.ingest_images, args.batch, args.rounds)
        if args.server_images:
            on_the_server_stack(Path(folder), args.server_images, args.server_total, args.batch, args.requests,
                                args.concurrency)


if __name__ == "__main__":
    main()
