"""The analysis through the product's own path: stores filled with synthetic rows, then the facade.

A catalog (SQLite) and a vector store (Qdrant Edge) under a fresh DATA_DIR get ``n`` synthetic
images (`benchmarks.synthetic_store`: vectors, hashes, sketches; no encoder, no files). Then a
fresh process opens the collection and times `Collection.duplicates()` and `Collection.anomalies()`
cold (nothing cached), with its peak resident memory: reading the catalog and the vectors, the
graph, the candidates, the clusters and the scores, as a user's first visit to those pages pays.
Then the map, `Collection.projection()`, first (UMAP on a sample, the rest placed by their
neighbours) and again from the cache, as each later page render asks for it. A second table says
where the peak is: resident memory sampled every 0.2 s against the analysis stages the facade
logs (`core.observability.observe_analysis`; nested stages run inside their caller's window).

    python -m benchmarks.facade                     # 100,000 images
    python -m benchmarks.facade --sizes 10000,1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.analysis import peak_rss_gib, resident_gib, table


def _build(n: int, data_dir: Path) -> None:
    from benchmarks.dataset_vectors import synthetic_collection
    from benchmarks.synthetic_store import write_synthetic
    from core.collection import Collection
    from core.settings import Settings

    with Collection.open(Settings(data_dir=data_dir, model_pretrained="none")) as collection:
        # no vector index: the analysis never uses it, and at 1M images building it on 2 cores took
        # longer than the analysis itself
        write_synthetic(collection, synthetic_collection(n), data_dir, index=False)


class _Stages(logging.Handler):
    """Resident size sampled in a thread, and each analysis stage's window from its log event."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[float, float]] = []
        self.stages: list[tuple[str, float, float]] = []  # (name, start, end), wall-clock seconds
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.time(), resident_gib()))

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        if record.msg == "analysis":
            self.stages.append((fields["analysis"], record.created - fields["duration_ms"] / 1000, record.created))

    def mark(self, name: str, start: float, end: float) -> None:
        self.stages.append((name, start, end))

    def table(self, origin: float) -> list[list[object]]:
        """[stage, start s, seconds, peak GiB] in start order, as text (the peak sampled inside the window)."""
        self._stop.set()
        rows = []
        for name, start, end in sorted(self.stages, key=lambda s: (s[1], -s[2])):
            inside = [rss for t, rss in self.samples if start <= t <= end]
            rows.append([name, f"{start - origin:.1f}", f"{end - start:.1f}",
                         f"{max(inside):.2f}" if inside else "(under a sample)"])
        return rows


def _measure(data_dir: Path) -> None:
    from core.collection import Collection
    from core.observability import LOGGER_NAME
    from core.settings import Settings

    stages = _Stages()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(stages)
    logger.setLevel(logging.INFO)
    baseline = peak_rss_gib()
    with Collection.open(Settings(data_dir=data_dir, model_pretrained="none")) as collection:
        origin = time.time()
        t0 = time.perf_counter()
        collection.snapshot()  # timed apart: reading the catalog and the vectors
        stages.mark("snapshot (catalog rows and vectors)", origin, time.time())
        duplicates = collection.duplicates()
        t1 = time.perf_counter()
        stages.mark("Collection.duplicates()", origin, time.time())
        start = time.time()
        collection.anomalies()
        t2 = time.perf_counter()
        stages.mark("Collection.anomalies()", start, time.time())
        before_map = peak_rss_gib()
        collection.projection()
        t3 = time.perf_counter()
        collection.projection()  # cached: what each later page render asks for
        t4 = time.perf_counter()
    print(json.dumps({"duplicates_s": round(t1 - t0, 1), "anomalies_s": round(t2 - t1, 1),
                      "map_s": round(t3 - t2, 1), "map_cached_s": round(t4 - t3, 2),
                      "peak_before_map_gb": round(before_map, 2),
                      "clusters": duplicates.cluster_count, "peak_rss_gb": round(peak_rss_gib(), 2),
                      "baseline_rss_gb": round(baseline, 2), "stages": stages.table(origin)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="collection sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "visual-anomaly-facade-bench")
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return _build(args.build, args.data_dir)
    if args.measure:
        return _measure(args.data_dir)
    rows, stage_rows = [], []
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        data_dir = args.workdir / f"n{n}"
        if not (data_dir / "built").exists():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "benchmarks.facade", "--build", str(n), "--data-dir", str(data_dir)],
                           check=True)
            (data_dir / "built").write_text(f"{time.perf_counter() - t0:.0f} s\n")
        result = subprocess.run([sys.executable, "-m", "benchmarks.facade", "--measure", "--data-dir", str(data_dir)], check=True,
                                capture_output=True, text=True)
        m = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"measured n={n}: {m}", file=sys.stderr)
        rows.append([f"{n:,}", *(f"{v:.1f}" for v in (m["duplicates_s"], m["anomalies_s"],
                                                      m["duplicates_s"] + m["anomalies_s"])),
                     f"{m['peak_before_map_gb']:.2f}", f"{m['baseline_rss_gb']:.2f}", m["clusters"],
                     f"{m['map_s']:.1f}", f"{m['map_cached_s']:.2f}", f"{m['peak_rss_gb']:.2f}"])
        stage_rows += [[f"{n:,}", *stage] for stage in m["stages"]]
    print("\n## Through the facade: Collection.duplicates() then .anomalies(), cold, in a fresh process\n")
    print(table(["n", "duplicates s", "anomalies s", "total s", "peak RSS GiB", "RSS before GiB", "clusters",
                 "then map s", "map again s", "peak with map GiB"], rows))
    print("\nSQLite catalog and Qdrant Edge vectors under a fresh DATA_DIR, filled with synthetic rows (vectors, "
          "hashes, sketches; no encoder); the times include reading the catalog and the vectors.")
    print("\n## Where the peak is: each stage's window and the highest resident size sampled inside it\n")
    print(table(["n", "stage", "from s", "seconds", "peak RSS GiB"], stage_rows))
    return None


if __name__ == "__main__":
    main()
