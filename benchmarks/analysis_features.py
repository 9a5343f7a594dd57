"""Hashes, sketches and embeddings for the benchmark folder, through the project's own ingest code.

`core.images.prepare_image` and `core.embedding.Embedder` (random weights; the precision and
runtime the environment asks for, `auto` choosing at run time as ingest does) compute what ingest
would store. Results are cached as .npz in `cache_dir`, keyed by the folder's content, the ingest
code and the requested precision and runtime.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.analysis.details import DETAIL_SIDE
from core.embedding import Embedder
from core.image_properties import PROPERTY_NAMES
from core.images import detail_picture, prepare_image
from core.settings import Settings

_CODE = ("core/images.py", "core/image_properties.py", "core/embedding.py")


@dataclass(frozen=True)
class Features:
    file_names: list[str]
    vectors: np.ndarray  # (n, 512) float32, L2-normalised
    phash: list[str]
    phash_mirror: list[str]
    dhash: list[str]
    sha256: list[str]
    pixel_sha256: list[str]
    sketch: list[bytes]
    width: np.ndarray
    height: np.ndarray
    properties: np.ndarray  # (n, len(PROPERTY_NAMES)) as ingest measures them
    details: np.ndarray  # (n, DETAIL_SIDE, DETAIL_SIDE) uint8: the close-up pictures of the stored thumbnails
    hash_seconds: float
    embed_seconds: float
    source: str


_COLUMNS = ("phash", "phash_mirror", "dhash", "sha256", "pixel_sha256")


def compute_features(folder: Path, file_names: list[str], cache_dir: Path, batch: int = 32) -> Features:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for module in _CODE:
        digest.update((root / module).read_bytes())
    digest.update(f"details {DETAIL_SIDE}".encode())
    for name in ("PRECISION", "RUNTIME"):
        digest.update(f"{name}={os.environ.get(name, 'auto')}".encode())
    for name in file_names:
        digest.update(name.encode())
        digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
    cache = cache_dir / f"features-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return Features(file_names, z["vectors"], *(list(z[k]) for k in _COLUMNS),
                        [bytes(row) for row in z["sketch"]], z["width"], z["height"], z["properties"], z["details"],
                        float(z["hash_seconds"]),
                        float(z["embed_seconds"]), str(z["source"]))
    t0 = time.perf_counter()
    prepared = [prepare_image((folder / name).read_bytes(), max_bytes=50 << 20, max_pixels=50_000_000)
                for name in file_names]
    hash_seconds = time.perf_counter() - t0
    embedder = Embedder(Settings.from_env({**os.environ, "MODEL_PRETRAINED": "none"}))
    t0 = time.perf_counter()
    images = [p.model_image for p in prepared]
    vectors = np.concatenate([embedder.embed_images(images[i:i + batch]) for i in range(0, len(images), batch)])
    embed_seconds = time.perf_counter() - t0
    source = (f"hashes: core.images.prepare_image; embeddings: core.embedding.Embedder "
              f"({embedder.info.precision} on {embedder.info.device})")
    columns = {k: [getattr(p, k) for p in prepared] for k in _COLUMNS}
    sketch = [p.sketch for p in prepared]
    width, height = np.array([p.width for p in prepared]), np.array([p.height for p in prepared])
    properties = np.array([[getattr(p.properties, k) for k in PROPERTY_NAMES] for p in prepared], dtype=np.float64)
    details = np.stack([detail_picture(p.thumbnail, DETAIL_SIDE) for p in prepared])
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors.astype(np.float32), **columns,
             sketch=np.frombuffer(b"".join(sketch), dtype=np.uint8).reshape(len(sketch), -1),
             width=width, height=height, properties=properties, details=details, hash_seconds=hash_seconds,
             embed_seconds=embed_seconds, source=source)
    return Features(file_names, vectors.astype(np.float32), *columns.values(), sketch, width, height, properties,
                    details, hash_seconds, embed_seconds, source)
