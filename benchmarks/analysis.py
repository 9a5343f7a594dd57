"""Benchmark of the analysis engine: labelled quality on real images, and scaling to 1M vectors.

    python benchmarks/analysis.py                       # every part, scaling at 10k and 100k
    python benchmarks/analysis.py --parts anomalies     # the anomaly benchmarks, cleanvision beside
    python benchmarks/analysis.py --parts scaling --sizes 10000,100000,1000000
    python benchmarks/analysis.py --parts scaling --sizes 1000000 --method approximate
    python benchmarks/analysis.py --parts quality --workdir /tmp/va-bench

Prints markdown tables. Per-run files (the image folder, cached features, vectors) go under
--workdir (default: a folder in the system temp dir), never into the repository. The graph runs
on the device that DEVICE chooses (`auto`: CUDA when present), as in the product.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.analysis_anomalies import anomaly_benchmarks  # noqa: E402
from benchmarks.analysis_metrics import (  # noqa: E402
    precision_recall_f1,
    recall_by_transform,
    truth_pairs,
)
from benchmarks.dataset_images import EXACT_KINDS, NEAR_KINDS, build_folder, build_real_folder  # noqa: E402
from core.runtime_agreement import pairs_from_groups  # noqa: E402

REPEATS = 5  # timed runs of each duplicate search in the quality part; medians are reported


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def graph_device() -> str:
    """The device DEVICE resolves to here, as the product's graph uses it."""
    from core.devices import resolve_device
    from core.settings import Settings

    return resolve_device(Settings.from_env().device)


# quality ----------------------------------------------------------------------------------------

REAL_SEEDS = (0, 1, 2)  # real-image draws (duplicates and anomalies): defaults must hold on each


def quality(workdir: Path, real_seeds: tuple[int, ...] = REAL_SEEDS) -> None:
    """The labelled benchmarks: synthetic clip art and photo tiles (with anomalies), then draws of real
    images only (each a different sample of the pool and of the copies), each reported on its own."""
    _quality(workdir, "synthetic", build_folder(workdir / "folder"), workdir / "folder")
    for seed in real_seeds:
        real = workdir / ("real" if seed == 0 else f"real-seed{seed}")
        _quality(workdir, f"real images, draw {seed}", build_real_folder(real, workdir / "real-pool", seed=seed), real)


def _quality(workdir: Path, title: str, labels: list, folder: Path) -> None:
    from benchmarks.analysis_features import compute_features
    from core.analysis import (
        DuplicateThresholds,
        ImageSignals,
        build_graph,
        duplicate_candidates,
        duplicate_clusters,
    )

    names = [lab.file_name for lab in labels]
    features = compute_features(folder, names, workdir / "cache")
    print(f"\n## Labelled set, {title}: {len(labels)} images in {folder}\n\n{features.source}; hashing "
          f"{features.hash_seconds:.1f} s, embedding {features.embed_seconds:.1f} s (measured when first computed)\n")
    x = features.vectors
    signals = ImageSignals.from_columns(sha256=features.sha256, pixel_sha256=features.pixel_sha256,
                                        phash=features.phash, phash_mirror=features.phash_mirror,
                                        width=features.width, height=features.height, sketch=features.sketch)
    truth = truth_pairs(labels)
    crop_rows = {i for i, lab in enumerate(labels) if lab.transform in ("crop", "crop_flip")}
    truth_no_crop = {p for p in truth if not crop_rows & set(p)}

    device = graph_device()
    timings = []
    for _ in range(1 + REPEATS):  # the first call in a process also loads compiled kernels: reported apart
        t0 = time.perf_counter()
        graph = build_graph(x, device=device)
        candidates = duplicate_candidates(graph, x, signals, details=features.details.__getitem__)
        t1 = time.perf_counter()
        report = duplicate_clusters(candidates, x, signals)
        t2 = time.perf_counter()
        timings.append((t1 - t0, t2 - t1))
    first = sum(timings[0])
    gather_s, cluster_s = (float(np.median(column)) for column in zip(*timings[1:], strict=True))
    t = report.thresholds
    rows = [_dup_row(f"ours (default: pHash<={t.hamming} or crop>={t.crop}, confirmed by pixels>={t.pixels}"
                     f" + {t.pixels_per_bit} per pHash bit, by {t.neighbour_margin} over each image's "
                     f"typical neighbour and by a local difference <= {t.local_difference} - "
                     f"{t.local_difference_per_bit} per pHash bit with fine details correlating >= "
                     f"{t.detail_agreement}, a crop's <= {t.crop_local_difference}; similarity>={t.similarity})",
                     [c.members for c in report.clusters], truth, truth_no_crop, labels, gather_s + cluster_s,
                     gather_s + cluster_s + features.hash_seconds + features.embed_seconds)]
    unconfirmed = {"pixels": -1.0, "pixels_per_bit": 0.0, "neighbour_margin": -1.0}
    nothing = np.full(len(candidates.left), np.nan, dtype=np.float32)  # as if no picture was looked at
    unlooked = replace(candidates, local_difference=nothing, detail=nothing, crop_local_difference=nothing)
    variants = {"ours + embedding (similarity>=0.95)": (candidates, DuplicateThresholds(similarity=0.95)),
                "ours, no per-image calibration (neighbour_margin=-1)":
                    (candidates, DuplicateThresholds(neighbour_margin=-1.0)),
                "ours, flat pixel bar (pixels_per_bit=0)": (candidates, DuplicateThresholds(pixels_per_bit=0.0)),
                "ours, no fine-detail check (detail_agreement=-1)":
                    (candidates, DuplicateThresholds(detail_agreement=-1.0)),
                "ours, no close look (local differences off)": (unlooked, DuplicateThresholds()),
                "ours, no pixel confirmation": (unlooked, DuplicateThresholds(**unconfirmed)),
                "ours before (similarity>=0.95, pHash<=8, no confirmation)":
                    (unlooked, DuplicateThresholds(similarity=0.95, hamming=8, **unconfirmed)),
                "ours without crops": (candidates, DuplicateThresholds(crop=1.01))}
    for label, (judged, rule_t) in variants.items():
        r = duplicate_clusters(judged, x, signals, rule_t)
        rows.append(_dup_row(label, [c.members for c in r.clusters], truth, truth_no_crop, labels, None, None))
    searched = million_image_radius()
    for radius in (searched, -1):
        scaled = duplicate_candidates(graph, x, signals, hamming_searched=radius, details=features.details.__getitem__)
        r = duplicate_clusters(scaled, x, signals)
        what = f"up to {radius} bits" if radius >= 0 else "not at all"
        rows.append(_dup_row(f"ours, pHash pairs searched {what} (beyond: pairs the graph, crops or sketch neighbours propose)",
                             [c.members for c in r.clusters], truth, truth_no_crop, labels, None, None))
    rows += _imagededup_rows(folder, names, truth, truth_no_crop, labels)
    kinds = list(NEAR_KINDS + EXACT_KINDS)
    print(table(["method", "precision", "recall", "F1", "F1 w/o crops", "largest cluster (true size)",
                 "clusters larger than their true group", "analysis s",
                 "total s"] + [f"recall {k}" for k in kinds], rows))
    print(f"\nOurs (graph on {device}): graph + candidates {gather_s:.3f} s, clusters at new thresholds {cluster_s:.3f} s "
          f"(medians of {REPEATS} runs; the first call in the process {first:.2f} s); calibrated "
          f"scale: reference cosine (median 10th-neighbour) {report.scale.reference_cosine:.5f}. 'analysis s' is the "
          f"time from stored hashes and embeddings; imagededup's is its search from its own encodings (both medians of {REPEATS} runs). 'total s' adds decoding and "
          "hashing the files, and for ours also the CLIP embedding that ingest computes anyway (single process). Ours: the pairs inside each cluster (every member matches its representative directly); imagededup: its "
          "reported pairs (its largest cluster: the largest set of files reported duplicates of one file).")


def million_image_radius() -> int:
    """The pHash radius `search_plan` searches exhaustively among a million random hashes."""
    from core.analysis.hamming import search_plan

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=(2, 1_000_000), dtype=np.uint64)
    return search_plan(hashes[0], hashes[1], 16).radius


def _dup_row(name: str, groups: list, truth: set, truth_no_crop: set, labels, analysis_s, total_s) -> list:
    """One table row from predicted groups (clusters, or a file with its reported duplicates)."""
    predicted = pairs_from_groups(groups)
    p, r, f1 = precision_recall_f1(predicted, truth)
    largest = max(groups, key=len, default=())
    group_size = Counter(lab.base for lab in labels)
    true_size = max((group_size[labels[m].base] for m in largest), default=0)
    oversized = sum(len(g) > max(group_size[labels[m].base] for m in g) for g in groups)
    no_crop = {q for q in predicted if q in truth_no_crop or q not in truth}
    _, _, f1_nc = precision_recall_f1(no_crop, truth_no_crop)
    per_kind = recall_by_transform(labels, predicted)
    timing = [f"{analysis_s:.2f}" if analysis_s is not None else "", f"{total_s:.2f}" if total_s is not None else ""]
    return [name, p, r, f1, f1_nc, f"{len(largest)} ({true_size})", oversized, *timing,
            *(per_kind[k] for k in NEAR_KINDS + EXACT_KINDS)]


def _imagededup_rows(folder: Path, names: list[str], truth: set, truth_no_crop: set, labels) -> list[list]:
    import logging

    from imagededup.methods import DHash, PHash

    logging.getLogger("imagededup").setLevel(logging.WARNING)
    index = {name: i for i, name in enumerate(names)}
    rows = []
    for method in (PHash, DHash):
        hasher = method(verbose=False)
        t0 = time.perf_counter()
        encodings = hasher.encode_images(image_dir=str(folder))
        t1 = time.perf_counter()
        searches = []
        for _ in range(REPEATS):
            s0 = time.perf_counter()
            found = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=10)
            searches.append(time.perf_counter() - s0)
        search_s = float(np.median(searches))
        groups = [[index[a], *(index[b] for b in dups)] for a, dups in found.items()]
        rows.append(_dup_row(f"imagededup {method.__name__} (distance<=10)", groups, truth, truth_no_crop, labels,
                             search_s, t1 - t0 + search_s))
    return rows


# scaling ----------------------------------------------------------------------------------------

def scaling(workdir: Path, sizes: list[int], method: str) -> None:
    rows = []
    for n in sizes:
        data = workdir / f"synthetic-{n}.npz"
        if not data.exists():
            subprocess.run([sys.executable, __file__, "--generate", str(n), "--out", str(data)], check=True)
        result = subprocess.run([sys.executable, __file__, "--measure", str(data), "--method", method], check=True,
                                capture_output=True, text=True)
        m = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append([f"{n:,}", f"{m['method']} on {m['device']}", *(f"{m[key]:.1f}" for key in ("graph_s", "duplicates_s", "anomalies_s", "total_s")),
                     m["peak_rss_gb"], m["baseline_rss_gb"], m["recall_at_10"], m["clusters"], m["planted_found"]])
        print(f"measured n={n}: {m}", file=sys.stderr)
    print("\n## Scaling: graph + duplicates + anomaly scores on synthetic clustered 512-d vectors\n")
    print(table(["n", "graph", "graph s", "duplicates s", "anomalies s", "total s", "peak RSS GiB",
                 "RSS before GiB", "recall@10", "clusters", "planted copies found"], rows))
    print("\nEach size runs in a fresh process; peak RSS includes the float32 vectors themselves "
          "(n x 512 x 4 bytes), the crop sketches (n x 384 bytes packed, read after the graph is built) and the "
          "Python/torch runtime ('RSS before' = after loading the vectors). "
          "recall@10 is measured against exact search on 1,000 rows not used for tuning (1.0 = exact graph).")


def peak_rss_gib() -> float:
    """This process's peak resident size so far, GiB.

    From VmHWM, which starts afresh when a process execs: Linux carries `ru_maxrss` across exec,
    so a measuring child would report its parent's peak (2.5 GiB after the quality part).
    """
    try:
        return _status_gib("VmHWM")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def resident_gib() -> float:
    """This process's resident size now, GiB (VmRSS; Linux)."""
    return _status_gib("VmRSS")


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:")) / 2**20


def _generate(n: int, out: Path) -> None:
    from benchmarks.dataset_vectors import synthetic_collection
    from core.analysis.crops import pack_sketches

    c = synthetic_collection(n)
    np.savez(out, vectors=c.vectors, phash=c.phash, phash_mirror=c.phash_mirror, duplicate_of=c.duplicate_of,
             sketch=pack_sketches(c.sketch))  # as analysis holds them (ImageSignals)


def _measure(data: Path, method: str) -> None:
    from core.analysis import (
        ImageSignals,
        anomaly_scores,
        build_graph,
        duplicate_candidates,
        duplicate_clusters,
    )

    z = np.load(data)
    x, phash, mirror, duplicate_of = z["vectors"], z["phash"], z["phash_mirror"], z["duplicate_of"]
    n = len(x)
    baseline = peak_rss_gib()
    rows = np.arange(n, dtype=np.int64)
    device = graph_device()
    t0 = time.perf_counter()
    graph = build_graph(x, method=method, device=device)
    graph_s = time.perf_counter() - t0
    # the graph needs only the vectors: the sketches (384 bytes an image) are read for the duplicate step
    signals = ImageSignals(bytes_group=rows, pixels_group=rows, phash=phash, phash_mirror=mirror,
                           pixels=np.full(n, 512 * 512, dtype=np.int64), created=rows.astype(np.float64),
                           sketch=z["sketch"], has_sketch=np.ones(n, dtype=bool))
    t1 = time.perf_counter()
    candidates = duplicate_candidates(graph, x, signals)
    report = duplicate_clusters(candidates, x, signals)
    t2 = time.perf_counter()
    anomaly_scores(x, graph)
    t3 = time.perf_counter()
    label = np.full(n, -1, dtype=np.int64)
    for i, c in enumerate(report.clusters):
        label[list(c.members)] = i
    copies = np.flatnonzero(duplicate_of >= 0)
    found = float(np.mean((label[copies] >= 0) & (label[copies] == label[duplicate_of[copies]])))
    print(json.dumps({
        "method": graph.method, "device": device, "graph_s": round(graph_s, 1), "duplicates_s": round(t2 - t1, 1),
        "anomalies_s": round(t3 - t2, 1), "total_s": round(graph_s + t3 - t1, 1),
        "peak_rss_gb": round(peak_rss_gib(), 2),
        "baseline_rss_gb": round(baseline, 2), "recall_at_10": round(graph.recall_at_10, 4),
        "clusters": len(report.clusters), "planted_found": round(found, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="quality,anomalies,scaling",
                        help="comma-separated: quality, anomalies, scaling")
    parser.add_argument("--sizes", default="10000,100000", help="scaling sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--method", default="auto", choices=("auto", "exact", "approximate"),
                        help="scaling: the graph method (auto: exact up to the device's limit)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "visual-anomaly-analysis-bench")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        return _generate(args.generate, args.out)
    if args.measure:
        return _measure(args.measure, args.method)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"quality", "anomalies", "scaling"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; use quality, anomalies and/or scaling")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if "quality" in parts:
        quality(args.workdir)
    if "anomalies" in parts:
        anomaly_benchmarks(args.workdir, table, graph_device(), REAL_SEEDS)
    if "scaling" in parts:
        scaling(args.workdir, [int(s) for s in args.sizes.split(",") if s.strip()], args.method)
    return None


if __name__ == "__main__":
    main()
