"""Ingest speed against this machine's compute floor, measured side by side in one run.

Prints one markdown table: the torch matmul peak on the device the model runs on (fp32, and the
lower precision PRECISION=auto chose, if any), the ViT-B-32 image tower's FLOPs per image, the
compute floor in images/s, and measured images/s for embedding alone (batch 1 and 32), decode+hash
alone, and end-to-end ``Collection.ingest`` of generated 1024x768 JPEGs, each as a fraction of the
fp32 floor (and of the lower-precision floor where one is in use). Run: ``python benchmarks/ingest.py [--images 500]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.collection import Collection
from core.embedding import LOW_PRECISION, Embedder
from core.images import prepare_image
from core.settings import Settings
from core.synthetic import encode, photo


@dataclass(frozen=True)
class Row:
    what: str
    images_per_s: float
    floor_fp32: float
    floor_low: float | None

    def cells(self) -> str:
        low = f"{self.images_per_s / self.floor_low:.0%}" if self.floor_low else "-"
        return f"| {self.what} | {self.images_per_s:.1f} | {self.images_per_s / self.floor_fp32:.0%} | {low} |"


def matmul_peak(dtype: torch.dtype, device: str, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul in ``dtype`` on ``device``, the one the model runs on (a GPU
    needs a larger n to reach its peak)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def image_tower_flops(embedder: Embedder) -> float:
    batch = torch.randn(1, 3, embedder.image_size, embedder.image_size, device=embedder.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        embedder._fp32.encode_image(batch)
    return float(counter.get_total_flops())


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
        image = prepare_image(path.read_bytes(), max_bytes=50 * 2**20, max_pixels=10**8)
        embedder.preprocess_image(image.model_image)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, files))
    return len(files) / (time.perf_counter() - start)


def ingest_rate(files_dir: Path, embedder: Embedder, count: int) -> float:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), model_pretrained="none")
        with Collection.open(settings, embedder=embedder) as collection:
            start = time.perf_counter()
            report = collection.ingest([files_dir])
            elapsed = time.perf_counter() - start
    if report.ingested != count:
        raise RuntimeError(f"expected {count} ingested, got {report.ingested}: {report.to_json()['error']}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()

    fp32 = Embedder(Settings(model_pretrained="none", precision="fp32"))
    auto = Embedder(Settings(model_pretrained="none", precision="auto"))
    low_dtype = LOW_PRECISION.get(auto.precision)
    flops = image_tower_flops(fp32)
    peak32 = matmul_peak(torch.float32, fp32.device)
    peak_low = matmul_peak(low_dtype, fp32.device) if low_dtype is not None else None
    floor32 = peak32 * 1e9 / flops
    floor_low = peak_low * 1e9 / flops if peak_low else None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"{i:05d}.jpg").write_bytes(encode(photo(i, size=(1024, 768)), quality=90))
        files = sorted(folder.iterdir())
        rows = [
            Row("embed fp32, batch 1", embed_rate(fp32, 1), floor32, None),
            Row("embed fp32, batch 32", embed_rate(fp32, 32), floor32, None),
        ]
        if low_dtype is not None:
            rows += [
                Row(f"embed {auto.precision}, batch 1", embed_rate(auto, 1), floor32, floor_low),
                Row(f"embed {auto.precision}, batch 32", embed_rate(auto, 32), floor32, floor_low),
            ]
        rows += [
            Row("decode+hash+preprocess, 1 thread", decode_rate(files, fp32, 1), floor32, floor_low),
            Row("decode+hash+preprocess, 2 threads", decode_rate(files, fp32, 2), floor32, floor_low),
            Row(f"end-to-end ingest fp32 ({args.images} x 1024x768 JPEG)", ingest_rate(folder, fp32, args.images), floor32, None),
        ]
        if low_dtype is not None:
            rows.append(
                Row(
                    f"end-to-end ingest {auto.precision} (chosen by PRECISION=auto)",
                    ingest_rate(folder, auto, args.images),
                    floor32,
                    floor_low,
                )
            )

    gpu = f", {torch.cuda.get_device_name()}" if fp32.device == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model on {fp32.device}{gpu}")
    print(f"precision choice: {auto.info.precision_note}")
    print(f"matmul peak fp32: {peak32:.0f} GFLOP/s" + (f", {auto.precision}: {peak_low:.0f} GFLOP/s" if peak_low else ""))
    print(f"ViT-B-32 image tower: {flops / 1e9:.2f} GFLOP/image")
    print(f"compute floor: fp32 {floor32:.1f} images/s" + (f", {auto.precision} {floor_low:.1f} images/s" if floor_low else ""))
    print()
    print("| measurement | images/s | of fp32 floor | of low-precision floor |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(row.cells())


if __name__ == "__main__":
    main()
