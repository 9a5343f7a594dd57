"""What benchmarks/api.py needs to drive a real ``visual-anomaly serve-api`` over a socket: start it
on a free port with an environment of its own, sign in, ingest a folder through it, and measure
concurrent requests. Plain functions over plain values, apart from the API and the facade."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from core import Collection, Settings

PASSWORD = "benchmark password"
USER = "bench"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_user(env: dict[str, str]) -> None:
    """The analyst the benchmark signs in as, added through the facade before the server starts."""
    with Collection.open(Settings.from_env(env)) as collection:
        collection.add_user(USER, "analyst", PASSWORD)


@dataclass(frozen=True)
class Server:
    base: str
    headers: dict[str, str]


@contextmanager
def serve_api(env: dict[str, str], workers: int) -> Iterator[Server]:
    """``visual-anomaly serve-api --workers N`` on a free port, signed in as :data:`USER`, with the
    model loaded in the worker that answered the warm-up."""
    port = free_port()
    command = [sys.executable, "-m", "core.cli", "serve-api", "--port", str(port), "--workers", str(workers)]
    log = Path(env["DATA_DIR"]).parent / f"serve-api-{port}.log"  # a file, not a pipe nobody reads: it never fills
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)} | env,
                                   stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # importing torch on a loaded shared machine has taken minutes
        while True:
            try:
                answer = httpx.post(f"{base}/v1/token", data={"username": USER, "password": PASSWORD}, timeout=30)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve-api did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        headers = {"Authorization": f"Bearer {answer.raise_for_status().json()['access_token']}"}
        for _ in range(2 * workers):  # load the model in each worker (a worker takes whichever request comes)
            httpx.post(f"{base}/v1/embed", headers=headers, data={"text": "warm-up"}, timeout=600).raise_for_status()
        yield Server(base, headers)
    finally:
        process.terminate()
        process.wait(timeout=60)


def ingest_through_api(server: Server, files: list[tuple[str, bytes]], batch: int) -> tuple[int, float]:
    """(images ingested, seconds) posting ``files`` in requests of ``batch`` files, one after another
    as a pipeline would; the bytes are read before the clock starts."""
    ingested = 0
    with httpx.Client(base_url=server.base, headers=server.headers, timeout=900) as client:
        start = time.perf_counter()
        for first in range(0, len(files), batch):
            chunk = files[first:first + batch]
            answer = client.post("/v1/images", files=[("files", (name, data, "image/jpeg")) for name, data in chunk])
            ingested += answer.raise_for_status().json()["ingested"]
        return ingested, time.perf_counter() - start


def ingest_through_cli(env: dict[str, str], folder: Path) -> tuple[int, float, float]:
    """(images ingested, the CLI's own pipeline seconds, wall seconds with start-up and model load)
    for ``visual-anomaly ingest FOLDER --json`` in a process of its own."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core.cli", "ingest", str(folder), "--json"], cwd=REPO,
                          env=os.environ | {"PYTHONPATH": str(REPO)} | env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    report = json.loads(done.stdout)
    return report["ingested"], report["seconds"], wall


@dataclass(frozen=True)
class Load:
    per_s: float
    p50_ms: float
    p99_ms: float


def drive(server: Server, call: Callable[[httpx.Client], httpx.Response], requests: int, concurrency: int) -> Load:
    """``requests`` calls spread over ``concurrency`` client threads, after a few warm-up calls:
    throughput over the wall time, and the latency percentiles."""
    latencies: list[float] = []
    with httpx.Client(base_url=server.base, headers=server.headers, timeout=300) as client:
        for _ in range(2 * concurrency):
            call(client).raise_for_status()

    def client_thread(count: int) -> None:
        with httpx.Client(base_url=server.base, headers=server.headers, timeout=300) as client:
            for _ in range(count):
                start = time.perf_counter()
                call(client).raise_for_status()
                latencies.append(time.perf_counter() - start)

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client_thread, shares))
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return Load(requests / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))
