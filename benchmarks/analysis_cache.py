"""What the pickle-free cache and the per-key computation cost, beside what they replaced.

    python benchmarks/analysis_cache.py                  # graphs of 100k images, k=30
    python benchmarks/analysis_cache.py --sizes 10000,1000000

Prints markdown tables: for each size, the bytes and the encode/decode times (medians of 5) of a
neighbour graph through core.cache_codec and through pickle (the old format, measured in the same
run); then the time one already computed value takes to come back from ComputedOnce while another
key's computation is in flight, beside a plain dict lookup.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.analysis import NeighbourGraph  # noqa: E402
from core.analysis_memo import ComputedOnce  # noqa: E402
from core.cache_codec import GRAPH  # noqa: E402

REPEATS = 5


def median_s(work: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def codec_table(sizes: list[int], k: int) -> None:
    print("| images | format | bytes (MB) | encode (ms) | decode (ms) |")
    print("|---:|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for n in sizes:
        graph = NeighbourGraph(rng.integers(0, n, (n, k), dtype=np.int32),
                               rng.random((n, k), dtype=np.float32), "exact", 1.0)
        for name, dumps, loads in (("codec (np.save + JSON)", GRAPH.encode, GRAPH.decode),
                                   ("pickle (before)", lambda g: pickle.dumps(g, protocol=5), pickle.loads)):
            data = dumps(graph)
            print(f"| {n:,} | {name} | {len(data) / 1e6:.1f} | {median_s(dumps, graph) * 1e3:.1f} | "
                  f"{median_s(loads, data) * 1e3:.1f} |")


def memo_table() -> None:
    memo = ComputedOnce()
    memo.get(1, "candidates", lambda: "ready")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait()
        return "graph"

    plain = {(1, "candidates"): "ready"}
    idle = median_s(lambda: [memo.get(1, "candidates", str) for _ in range(1000)]) / 1000
    builder = threading.Thread(target=memo.get, args=(1, "projection", slow))
    builder.start()
    started.wait()
    busy = median_s(lambda: [memo.get(1, "candidates", str) for _ in range(1000)]) / 1000
    release.set()
    builder.join()
    lookup = median_s(lambda: [plain[(1, "candidates")] for _ in range(1000)]) / 1000
    print("\n| a computed value, read | µs per read |")
    print("|---|---:|")
    print(f"| dict lookup (reference) | {lookup * 1e6:.2f} |")
    print(f"| ComputedOnce, nothing in flight | {idle * 1e6:.2f} |")
    print(f"| ComputedOnce, another key being computed | {busy * 1e6:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated graph sizes (images)")
    parser.add_argument("--k", type=int, default=30)
    args = parser.parse_args()
    codec_table([int(s) for s in args.sizes.split(",")], args.k)
    memo_table()


if __name__ == "__main__":
    main()
