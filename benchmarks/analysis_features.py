"""Hashes and embeddings for the benchmark folder, through the project's own ingest code where it exists.

`core.images.prepare_image` and `core.embedding.Embedder` are used when importable, so the benchmark
measures what ingest stores; a stand-in (imagehash on RGB composited on white, OpenCLIP ViT-B-32 with
`torch.manual_seed(0)` random weights) is used otherwise, and the returned `source` says which.
Results are cached as .npz in `cache_dir`, keyed by the folder's content and the ingest code.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Features:
    file_names: list[str]
    vectors: np.ndarray  # (n, 512) float32, L2-normalised
    phash: list[str]
    phash_mirror: list[str]
    dhash: list[str]
    sha256: list[str]
    pixel_sha256: list[str]
    width: np.ndarray
    height: np.ndarray
    hash_seconds: float
    embed_seconds: float
    source: str


def _prepare_with_core(data: bytes):
    from core.images import prepare_image

    p = prepare_image(data, max_bytes=50 << 20, max_pixels=50_000_000)
    return p.sha256, p.pixel_sha256, p.phash, p.phash_mirror, p.dhash, p.width, p.height, p.model_image


def _prepare_standalone(data: bytes):
    import io

    import imagehash

    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        rgb = Image.new("RGB", img.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba)
    else:
        rgb = img.convert("RGB")
    grey = rgb.convert("L")
    return (hashlib.sha256(data).hexdigest(), hashlib.sha256(rgb.tobytes()).hexdigest(),
            str(imagehash.phash(grey)), str(imagehash.phash(ImageOps.mirror(grey))), str(imagehash.dhash(grey)),
            rgb.width, rgb.height, rgb)


def _embedder():
    """(embed(list of PIL RGB) -> (n, 512) array, description)."""
    try:
        from core.embedding import Embedder
        from core.settings import Settings

        settings = Settings.from_env({"MODEL_PRETRAINED": "none"})
        embedder = Embedder.load(settings) if hasattr(Embedder, "load") else Embedder(settings)
        info = getattr(embedder, "info", None)
        return embedder.embed_images, f"core.embedding.Embedder ({getattr(info, 'precision', '?')})"
    except ImportError:
        import open_clip
        import torch

        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        model.eval()

        def embed(images: list[Image.Image]) -> np.ndarray:
            with torch.inference_mode():
                f = model.encode_image(torch.stack([preprocess(i) for i in images]))
                return torch.nn.functional.normalize(f.float(), dim=-1).numpy()

        return embed, "open_clip ViT-B-32 random weights (stand-in)"


def compute_features(folder: Path, file_names: list[str], cache_dir: Path, batch: int = 32) -> Features:
    digest = hashlib.sha256()
    for module in ("core/images.py", "core/embedding.py"):
        source = Path(__file__).resolve().parents[1] / module
        digest.update(source.read_bytes() if source.exists() else b"")
    for name in file_names:
        digest.update(name.encode())
        digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
    cache = cache_dir / f"features-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return Features(file_names, z["vectors"], *(list(z[k]) for k in
                        ("phash", "phash_mirror", "dhash", "sha256", "pixel_sha256")),
                        z["width"], z["height"], float(z["hash_seconds"]), float(z["embed_seconds"]),
                        str(z["source"]))
    try:
        import core.images  # noqa: F401

        prepare, hash_source = _prepare_with_core, "core.images.prepare_image"
    except ImportError:
        prepare, hash_source = _prepare_standalone, "imagehash on RGB over white (stand-in)"
    t0 = time.perf_counter()
    rows = [prepare((folder / name).read_bytes()) for name in file_names]
    hash_seconds = time.perf_counter() - t0
    embed, embed_source = _embedder()
    t0 = time.perf_counter()
    model_images = [r[7] for r in rows]
    vectors = np.concatenate([embed(model_images[i:i + batch]) for i in range(0, len(rows), batch)])
    embed_seconds = time.perf_counter() - t0
    source = f"hashes: {hash_source}; embeddings: {embed_source}"
    cols = list(zip(*[r[:7] for r in rows], strict=True))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors.astype(np.float32), sha256=cols[0], pixel_sha256=cols[1], phash=cols[2],
             phash_mirror=cols[3], dhash=cols[4], width=np.array(cols[5]), height=np.array(cols[6]),
             hash_seconds=hash_seconds, embed_seconds=embed_seconds, source=source)
    return Features(file_names, vectors.astype(np.float32), list(cols[2]), list(cols[3]), list(cols[4]),
                    list(cols[0]), list(cols[1]), np.array(cols[5]), np.array(cols[6]), hash_seconds,
                    embed_seconds, source)
