"""HTTP API throughput and latency, beside the same facade call made directly in the same run.

Ingests N synthetic images into a temporary embedded collection, then drives the API in-process
(FastAPI's TestClient: routing, auth, validation and JSON, without a socket) and prints, per
operation, requests/s and p50/p99 latency through the API next to the facade call alone: the
difference is what the HTTP layer costs. Run: ``python -m benchmarks.api [--images 10000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from api.app import create_app
from core import Collection, Settings
from core.synthetic import encode, photo

PASSWORD = "benchmark password"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, \
            Collection.open(Settings(data_dir=Path(folder), model_pretrained="none", api_rate_limit=10**9)) as collection:
        for start in range(0, args.images, 500):
            collection.ingest_uploads([(f"{i}.jpg", encode(photo(i))) for i in range(start, min(start + 500, args.images))])
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
             lambda: (viewer.images([image_id]), viewer.names(image_id))),
            ("POST /v1/search by id (k=20)",
             lambda: client.post("/v1/search", headers=headers, data={"image_id": image_id}).raise_for_status(),
             lambda: viewer.search(image_id=image_id, k=20)),
            ("GET /v1/duplicates (cached, page of 100)", get("/v1/duplicates"), lambda: viewer.duplicates().rows()),
        ]
        print(f"{args.images} images, {args.repeats} requests each, in-process (TestClient), one worker")
        print(f"{'operation':42} {'API req/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'facade /s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for name, through_api, direct in rows:
            api_rate, api_p50, api_p99 = timed(through_api, args.repeats)
            rate, p50, p99 = timed(direct, args.repeats)
            print(f"{name:42} {api_rate:10.0f} {api_p50:8.2f} {api_p99:8.2f} | {rate:10.0f} {p50:8.2f} {p99:8.2f}")


if __name__ == "__main__":
    main()
