"""Ingest speed against this machine's compute floor, every runtime side by side, and where time goes.

Prints markdown tables, every figure beside its reference measured in the same run:

1. the floor: the image tower's FLOPs counted from its architecture (``benchmarks/flops.py``; the
   eval-mode FlopCounterMode figure is printed to show why it is not used) over the torch fp32
   matmul peak, and on a CPU also over the best fp32 GEMM of every library installed
   (``benchmarks/gemm.py``), which may be faster than torch's BLAS on the same cores; each peak
   is the higher of a measurement at the start and one at the end of the run;
2. every runtime (torch fp32/bf16/int8, ONNX Runtime and OpenVINO fp32/int8, as installed; torch bf16
   not where the CPU would emulate it) embedding the analysis benchmark's labelled images batch by batch in turn, so a loaded machine slows all
   alike: images/s, speed-up over torch fp32, and whether an analyst would see the same results
   (``core/runtime_agreement.py``). The fastest candidate that changes nothing is recorded
   under ``DATA_DIR/runtime/`` for ``RUNTIME=auto`` (``--no-record`` to skip);
3. images/s of the encoder alone, decode alone and end-to-end ``Collection.ingest`` of generated
   1024x768 JPEGs and of clip-art PNGs with transparency, with torch fp32 and with what
   ``RUNTIME=auto`` now picks, each as a share of both floors. A small ingest runs first, untimed:
   what a process pays once (loading compiled kernels, creating the stores) is not an image's cost;
4. per ingest step, milliseconds per image, from the pipeline's own timers, and the share of the wall
   clock the encoder was busy (what the overlapped stages leave it);
5. what the arrival check's scans over the whole stored collection (pHash matches; crop windows
   either way up to `EXHAUSTIVE_MAX_N` images) cost an arriving image in a collection of 20,000,
   100,000 and 1,000,000 images, wall and CPU, beside what the encoder costs it: the benchmark's
   own ingests start from an empty one.

Run: ``python -m benchmarks.ingest [--images 500] [--pngs 500] [--agreement-images 0 (all)]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.dataset_images import build_folder
from benchmarks.flops import counted_flops, vit_tower_flops
from benchmarks.gemm import best_rate, cpu_gemm_peaks
from core.analysis.arrival import arrival_proposals, searches_crop_windows
from core.analysis.crops import WINDOWS
from core.analysis.duplicates import DuplicateThresholds
from core.collection import Collection
from core.embedding import Embedder
from core.images import PreparedImage, prepare_image
from core.observability import PROCESSING_OPERATIONS, step_seconds
from core.runtime_agreement import TOP_ANOMALIES, RuntimeResult, compare_in_turn, decision_from, signals_of
from core.runtimes import (
    CPU_CANDIDATES,
    TORCH_FP32,
    Candidate,
    RuntimeUnavailable,
    available,
    bf16_emulated,
    cpu_description,
    machine_key,
    write_decision,
)
from core.settings import Settings
from core.synthetic import encode, photo

BATCH = 32
WARM_UP_IMAGES = 16
ARRIVALS = 20
ARRIVAL_COLLECTIONS = (20_000, 100_000, 1_000_000)
MAX_BYTES, MAX_PIXELS = 50 * 2**20, 10**8


def matmul_peak(dtype: torch.dtype, device: str, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul in ``dtype`` on ``device``, the one the model runs on (a GPU
    needs a larger n to reach its peak)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def run() -> None:
        a @ b
        _synchronize(device)  # a GPU's product is timed when done, not when queued

    return best_rate(run, 2 * n**3, repeats)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# runtimes side by side ---------------------------------------------------------------------------
def compare_runtimes(fp32: Embedder, prepared: list[PreparedImage]) -> tuple[list[RuntimeResult], list[str]]:
    """Every installed candidate embeds the same batches in turn (timed per call), then is judged
    on what an analyst would see against torch fp32."""
    candidates = CPU_CANDIDATES if fp32.device == "cpu" else (TORCH_FP32, Candidate("torch", "fp16"))
    encoders, skipped = {}, []
    for candidate in candidates:
        if candidate.precision == "bf16" and bf16_emulated():
            skipped.append(f"{candidate.name}: no native bf16 on this CPU (emulated: 0.13x fp32 on an AVX2 EPYC)")
            continue
        if not available(candidate.runtime):
            skipped.append(f"{candidate.name}: not installed (pip install 'visual-anomaly[runtimes]')")
            continue
        try:
            encoders[candidate] = fp32.encoder_for(candidate)
        except (RuntimeUnavailable, RuntimeError) as exc:
            skipped.append(f"{candidate.name}: {exc}")
    tensors = torch.stack([fp32.preprocess_image(p.model_image) for p in prepared])
    results = compare_in_turn(encoders, torch.split(tensors, BATCH), signals_of(prepared), fp32.embed_with)
    return results, skipped


def peaks(device: str) -> tuple[float, dict[str, float]]:
    """torch's fp32 matmul peak and, on a CPU, every installed library's fp32 GEMM peak. Measured at
    the start and at the end of a run, the floors take the higher of each: on a shared VM the same
    product moved by 13% between two runs an hour apart, and a floor measured low flatters every share."""
    peak32 = matmul_peak(torch.float32, device)
    return peak32, cpu_gemm_peaks(torch.get_num_threads()) if device == "cpu" else {"torch": peak32}


# rates -------------------------------------------------------------------------------------------
def embed_rate(embedder: Embedder, batch_size: int, seconds: float = 6.0) -> float:
    batch = torch.randn(batch_size, 3, embedder.image_size, embedder.image_size)
    warm_until = time.perf_counter() + 2.0  # first calls for a shape compile kernels
    while time.perf_counter() < warm_until:
        embedder.embed_tensors(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embedder.embed_tensors(batch)
        done += batch_size
    return done / (time.perf_counter() - start)


def decode_rate(files: list[Path], embedder: Embedder, workers: int) -> float:
    def work(path: Path) -> None:
        image = prepare_image(path.read_bytes(), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
        embedder.preprocess_image(image.model_image)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, files))
    return len(files) / (time.perf_counter() - start)


def ingest_rate(files_dir: Path, embedder: Embedder, count: int) -> tuple[float, dict[str, float]]:
    """End-to-end images/s of a fresh collection, and each step's milliseconds per image."""
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), model_pretrained="none")
        with Collection.open(settings, embedder=embedder) as collection:
            before = step_seconds()
            start = time.perf_counter()
            report = collection.ingest([files_dir])
            elapsed = time.perf_counter() - start
            after = step_seconds()
    if report.ingested != count:
        raise RuntimeError(f"expected {count} ingested, got {report.ingested}: {report.to_json()['error']}")
    steps = {op: 1000 * (after[op][0] - before[op][0]) / count for op in PROCESSING_OPERATIONS}
    steps["decode"] -= steps["sketch"] + steps["thumbnail"]  # the decode timer encloses both
    steps["wall clock"] = 1000 * elapsed / count
    steps["encoder busy, % of wall clock"] = 100 * steps["embed"] / steps["wall clock"]
    return count / elapsed, steps


def arrival_scan_ms(stored: int, arrivals: list[PreparedImage]) -> tuple[float, float]:
    """Wall and CPU milliseconds per arriving image of the arrival check's collection-wide scans
    (``arrival_proposals``: pHash matches, and crop windows either way where ``stored`` images'
    windows are searched) against ``stored`` random pHashes and crop windows: the part of an
    arrival's cost that grows with the collection (the rest looks at a few proposed images)."""
    rng = np.random.default_rng(0)
    phash, mirror = (rng.integers(0, 2**63, stored, dtype=np.uint64) for _ in range(2))
    windows = (rng.integers(0, 2**63, (stored, len(WINDOWS)), dtype=np.uint64) if searches_crop_windows(stored)
               else None)
    radius = DuplicateThresholds().highest_hamming
    first = arrivals[0]  # the first call loads compiled kernels (20 ms): not an arrival's cost
    arrival_proposals(first.sketch, first.phash, first.phash_mirror, phash, mirror, windows, radius)
    wall, cpu = time.perf_counter(), time.process_time()
    for image in arrivals:
        arrival_proposals(image.sketch, image.phash, image.phash_mirror, phash, mirror, windows, radius)
    return (1000 * (time.perf_counter() - wall) / len(arrivals), 1000 * (time.process_time() - cpu) / len(arrivals))


# main --------------------------------------------------------------------------------------------
def write_jpegs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:05d}.jpg").write_bytes(encode(photo(i, size=(1024, 768)), quality=90))


def copy_pngs(labelled: Path, folder: Path, count: int) -> int:
    """The labelled set's clip art (RGBA PNGs on transparent canvases), distinct bytes only."""
    folder.mkdir(parents=True)
    seen: set[bytes] = set()
    for path in sorted(labelled.glob("clip*.png")):
        data = path.read_bytes()
        if data not in seen and len(seen) < count:
            seen.add(data)
            shutil.copyfile(path, folder / path.name)
    return len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500, help="generated 1024x768 JPEGs to ingest")
    parser.add_argument("--pngs", type=int, default=500, help="clip-art PNGs with transparency to ingest")
    parser.add_argument("--agreement-images", type=int, default=0,
                        help="labelled images the runtimes embed and are judged on (0: all)")
    parser.add_argument("--pretrained", default="none", help="MODEL_PRETRAINED for the run (default: random weights)")
    parser.add_argument("--no-record", action="store_true", help="do not record the runtime decision for RUNTIME=auto")
    args = parser.parse_args()

    base = replace(Settings.from_env(), model_pretrained=args.pretrained, runtime="torch", precision="fp32")
    load_before = os.getloadavg()
    fp32 = Embedder(base)
    tower = vit_tower_flops(fp32._fp32)
    fused_count = sum(counted_flops(fp32._fp32, fp32.image_size, fused_attention=True).values())
    first_peaks = peaks(fp32.device)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = build_folder(work / "labelled")
        names = [lab.file_name for lab in labels]
        names = names[: args.agreement_images] if args.agreement_images else names
        prepared = [prepare_image((work / "labelled" / n).read_bytes(), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
                    for n in names]
        results, skipped = compare_runtimes(fp32, prepared)
        del prepared
        decision = decision_from(results)
        recorded = None
        if not args.no_record and fp32.device == "cpu":
            recorded = write_decision(base.data_dir / "runtime", machine_key(fp32.model_tag), decision)
        auto = Embedder(replace(base, runtime="auto", precision="auto"))

        write_jpegs(work / "warm-up", WARM_UP_IMAGES)
        ingest_rate(work / "warm-up", fp32, WARM_UP_IMAGES)
        write_jpegs(work / "jpegs", args.images)
        pngs = copy_pngs(work / "labelled", work / "pngs", args.pngs)
        jpegs = sorted((work / "jpegs").iterdir())
        chosen = f"{auto.runtime} {auto.precision}"
        rates: list[tuple[str, Callable[[], float]]] = [
            ("embed torch fp32, batch 1", lambda: embed_rate(fp32, 1)),
            ("embed torch fp32, batch 32", lambda: embed_rate(fp32, BATCH)),
            (f"embed {chosen} (RUNTIME=auto), batch 32", lambda: embed_rate(auto, BATCH)),
            ("decode+hash+preprocess JPEG, 1 thread", lambda: decode_rate(jpegs, fp32, 1)),
            ("decode+hash+preprocess JPEG, 2 threads", lambda: decode_rate(jpegs, fp32, 2)),
        ]
        rows = [[what, f"{rate():.1f}"] for what, rate in rates]
        steps: dict[str, dict[str, float]] = {}
        for label, folder, count in ((f"{args.images} JPEG 1024x768", work / "jpegs", args.images),
                                     (f"{pngs} PNG RGBA clip art", work / "pngs", pngs)):
            for name, embedder in (("torch fp32", fp32), (f"{chosen} (auto)", auto)):
                rate, steps[f"{label}, {name}"] = ingest_rate(folder, embedder, count)
                rows.append([f"end-to-end ingest, {label}, {name}", f"{rate:.1f}"])
        arrivals = [prepare_image(path.read_bytes(), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
                    for path in jpegs[:ARRIVALS]]
        scans = {stored: arrival_scan_ms(stored, arrivals) for stored in ARRIVAL_COLLECTIONS}
        auto_ms = 1000 / embed_rate(auto, BATCH)
    load_after = os.getloadavg()
    last_peaks = peaks(fp32.device)
    peak32 = max(first_peaks[0], last_peaks[0])
    gemm = {name: max(rate, last_peaks[1].get(name, 0.0)) for name, rate in first_peaks[1].items()}
    floor32 = peak32 * 1e9 / tower.total
    best_library, best_peak = max(gemm.items(), key=lambda item: item[1])
    floor_best = max(best_peak, peak32) * 1e9 / tower.total

    model, flags = cpu_description()
    print(f"machine: {model}; flags: {' '.join(flags) or 'none of avx2/avx512/amx'}; {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads; model on {fp32.device}; "
          f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end (other work shares this machine)")
    print(f"image tower FLOPs from the architecture: {tower.total / 1e9:.3f} GFLOP/image (patch embedding "
          f"{tower.patch_embedding / 1e9:.3f}, linear {tower.linear / 1e9:.3f}, attention matmuls "
          f"{tower.attention / 1e9:.3f}, projection {tower.projection / 1e9:.4f}); FlopCounterMode in eval mode "
          f"sees {fused_count / 1e9:.3f} (fused attention hidden), not used")
    print(f"fp32 matmul peak {peak32:.0f} GFLOP/s (the higher of {first_peaks[0]:.0f} at the start of the run and "
          f"{last_peaks[0]:.0f} at its end: a shared machine moves it) -> fp32 compute floor {floor32:.1f} images/s")
    print("fp32 GEMM peak of each library here (GFLOP/s, the higher of start and end): "
          + ", ".join(f"{name} {rate:.0f}" for name, rate in gemm.items())
          + f" -> best-GEMM floor {floor_best:.1f} images/s ({best_library})")
    print(f"\n## Runtimes on {len(names)} labelled images, batch {BATCH}, in turn on the same batches\n")
    print(table(
        ["runtime", "images/s", "x torch fp32", "search top-10 overlap", "duplicate pairs changed",
         f"top-{TOP_ANOMALIES} anomalies changed", "min cosine", "unchanged for an analyst"],
        [[r.candidate.name, f"{r.images_per_s:.1f}", f"{m.speedup:.2f}", f"{r.agreement.search_overlap:.3f}",
          r.agreement.duplicate_pairs_changed, r.agreement.top_anomalies_changed, f"{r.agreement.min_cosine:.5f}",
          "yes" if m.unchanged else "no"] for r, m in zip(results, decision.measured, strict=True)],
    ))
    for line in skipped:
        print(f"- not measured: {line}")
    print(f"\nRUNTIME=auto picks: {decision.chosen.name}" + (f" (recorded in {recorded})" if recorded else " (not recorded)"))
    print("\n## Rates\n")
    print(table(["measurement", "images/s", "of fp32 floor (torch)", f"of best-GEMM floor ({best_library})"],
                [[what, rate, f"{float(rate) / floor32:.0%}", f"{float(rate) / floor_best:.0%}"]
                 for what, rate in rows]))
    print("\n## Where an image's time goes (ms per image; read..preprocess run on decode threads, arrival "
          "and store on the store thread, both while the calling thread embeds, so they overlap the encoder; "
          "the last row says how much of the wall clock the encoder was busy)\n")
    print(table(["step", *steps], [[op, *(f"{s[op]:.1f}" for s in steps.values())]
                                   for op in (*PROCESSING_OPERATIONS, "wall clock", "encoder busy, % of wall clock")]))
    print(f"\n## The arrival check's scans over a larger collection (ms per arriving image, {ARRIVALS} "
          f"arrivals; the encoder ({chosen}) takes {auto_ms:.0f} ms of wall clock per image on every core)\n")
    print(table(["images stored", "wall ms", "CPU ms", "wall, share of the encoder's"],
                [[f"{n:,}", f"{w:.1f}", f"{c:.1f}", f"{w / auto_ms:.0%}"] for n, (w, c) in scans.items()]))


if __name__ == "__main__":
    main()
