"""A labelled image folder for the analysis benchmark, built from what this machine has.

Normal content is clip art drawn here (RGBA, transparent background) and photo tiles cut from
scikit-image's bundled colour photos. Some of them get transformed copies (the near duplicates to find,
one transform kind per copy), some a crop that is also flipped, and a few byte-identical or
pixel-identical copies. A planted group of
microscopy tiles and a handful of loners are the anomalies to find.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from core.synthetic import COPY_KINDS, clipart, save_as, transform

NEAR_KINDS = (*COPY_KINDS, "crop_flip")  # a crop, flipped: a common pair of training augmentations
EXACT_KINDS = ("same_bytes", "same_pixels")


@dataclass(frozen=True)
class LabelledImage:
    """One file of the folder and what it is."""

    file_name: str
    base: str  # files sharing a base are duplicates of each other
    kind: str  # clipart | photo | group | loner
    transform: str  # "original" or one of NEAR_KINDS / EXACT_KINDS


def _photo_sources() -> dict[str, np.ndarray]:
    import skimage.data as data

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "colorwheel"]
    return {n: getattr(data, n)() for n in names}


def _group_sources() -> dict[str, np.ndarray]:
    import skimage.data as data

    return {n: getattr(data, n)() for n in ("immunohistochemistry", "retina")}


def _tiles(sources: dict[str, np.ndarray], tile: int, per_source: int, rng: np.random.Generator,
           min_std: float = 18.0) -> list[Image.Image]:
    """Non-overlapping, non-flat tiles, at most `per_source` from each source image."""
    out: list[Image.Image] = []
    for arr in sources.values():
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            arr = (255 * (arr.astype(np.float64) / max(1e-9, float(arr.max())))).astype(np.uint8)
        h, w = arr.shape[:2]
        cells = [(y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
        rng.shuffle(cells)
        taken = 0
        for y, x in cells:
            crop = arr[y:y + tile, x:x + tile]
            if crop.std() < min_std:
                continue
            img = Image.fromarray(crop)
            out.append(img.convert("RGBA") if img.mode == "RGBA" else img.convert("RGB"))
            taken += 1
            if taken == per_source:
                break
    return out


def _loners(rng: np.random.Generator) -> list[Image.Image]:
    import skimage.data as data

    noise = Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
    checker = Image.fromarray(data.checkerboard()).convert("RGB")
    blobs = Image.fromarray((data.binary_blobs(length=192, rng=1) * 255).astype(np.uint8)).convert("RGB")
    phantom = Image.fromarray((data.shepp_logan_phantom() * 255).astype(np.uint8)).convert("RGB")
    page = Image.fromarray(data.page()).convert("RGB")
    stripes = Image.fromarray(np.tile((np.arange(200) // 10 % 2 * 255).astype(np.uint8), (200, 1))).convert("RGB")
    return [noise, checker, blobs, phantom, page, stripes]


def build_folder(root: Path, seed: int = 0, n_clipart: int = 500, per_photo_source: int = 16,
                 n_group: int = 25, n_with_copies: int = 200, copies_each: int = 3,
                 n_flipped_crops: int = 40) -> list[LabelledImage]:
    """Write the labelled folder `root` (replacing it) and return its labels (also saved beside it)."""
    rng = np.random.default_rng(seed)
    originals: list[_Original] = []
    for i in range(n_clipart):
        originals.append((f"clip{i:04d}", "clipart", clipart(rng), "PNG"))
    for i, tile in enumerate(_tiles(_photo_sources(), 128, per_photo_source, rng)):
        originals.append((f"photo{i:04d}", "photo", tile, "JPEG" if tile.mode == "RGB" else "PNG"))
    group = _tiles(_group_sources(), 128, 16, rng)
    rng.shuffle(group)
    for i, tile in enumerate(group[:n_group]):
        originals.append((f"micro{i:04d}", "group", tile, "JPEG"))
    for i, img in enumerate(_loners(rng)):
        originals.append((f"odd{i:04d}", "loner", img, "PNG"))
    normal = [o for o in originals if o[1] in ("clipart", "photo")]
    exact_sources = [o[0] for o in normal[:20]] + [o[0] for o in originals if o[1] == "loner"][:2]
    return _write_folder(root, originals, normal, exact_sources, rng, np.random.default_rng(seed + 1),
                         n_with_copies=n_with_copies, copies_each=copies_each, n_flipped_crops=n_flipped_crops)


def build_real_folder(root: Path, pool_cache: Path, seed: int = 0, n_icons: int = 1175, n_photos: int = 25,
                      n_with_copies: int = 200, copies_each: int = 2, n_flipped_crops: int = 50,
                      more_copies: int = 80, n_exact: int = 20) -> list[LabelledImage]:
    """The labelled folder of real images only (`benchmarks.real_images`), shaped like a real collection.

    Mostly icons (line art, transparency) and a few photos, as the held-out collection is: with the
    defaults 1,200 originals, 200 with two transformed copies and 80 of those with a third, 50
    flipped crops (530 copies), and 10 byte-identical and 10 pixel-identical files. Same transform
    kinds and strengths as the synthetic folder.
    """
    from benchmarks.real_images import real_pool

    rng = np.random.default_rng(seed)
    pool = real_pool(pool_cache, seed=seed)
    icons = [s for s in pool if s.kind == "icon"][:n_icons]
    photos = [s for s in pool if s.kind == "photo"]
    photos = [photos[i] for i in sorted(rng.choice(len(photos), size=min(n_photos, len(photos)), replace=False))]
    if len(icons) < n_icons:
        raise ValueError(f"the real-image pool holds {len(icons)} distinct icons, fewer than the {n_icons} asked for")
    originals: list[_Original] = []
    for i, src in enumerate(icons):
        with Image.open(src.path) as img:
            originals.append((f"icon{i:04d}", "clipart", img.convert("RGBA"), "PNG"))
    for i, src in enumerate(photos):
        with Image.open(src.path) as img:
            originals.append((f"photo{i:04d}", "photo", img.convert("RGB"), "JPEG"))
    order = rng.permutation(len(originals))
    exact_sources = [originals[j][0] for j in order[:n_exact]]
    return _write_folder(root, originals, originals, exact_sources, rng, np.random.default_rng(seed + 1),
                         n_with_copies=n_with_copies, copies_each=copies_each, n_flipped_crops=n_flipped_crops,
                         more_copies=more_copies)


_Original = tuple[str, str, Image.Image, str]  # base name, kind, picture, format of the original file


def _write_folder(root: Path, originals: list[_Original], normal: list[_Original], exact_sources: list[str],
                  rng: np.random.Generator, flips: np.random.Generator, *, n_with_copies: int, copies_each: int,
                  n_flipped_crops: int, more_copies: int = 0) -> list[LabelledImage]:
    """Write the originals, then transformed copies of `n_with_copies` of `normal` (`copies_each`
    kinds each, one more for the first `more_copies` of them), byte- or pixel-identical copies of
    `exact_sources` (alternately), and flipped crops drawn from `flips`, a stream of its own."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    labels: list[LabelledImage] = []
    payloads: dict[str, bytes] = {}

    def add(name: str, data: bytes, base: str, kind: str, how: str) -> None:
        payloads[name] = data
        labels.append(LabelledImage(name, base, kind, how))

    for base, kind, img, fmt in originals:
        add(f"{base}.{fmt.lower().replace('jpeg', 'jpg')}", save_as(img, fmt), base, kind, "original")

    chosen = rng.choice(len(normal), size=n_with_copies, replace=False)
    for rank, j in enumerate(chosen):
        base, kind, img, fmt = normal[j]
        for how in rng.choice(COPY_KINDS, size=copies_each + (rank < more_copies), replace=False):
            copy = transform(img, str(how), rng)
            out_fmt = "JPEG" if how == "jpeg" else fmt
            quality = int(rng.integers(25, 50)) if how == "jpeg" else 90
            add(f"{base}_{how}.{out_fmt.lower().replace('jpeg', 'jpg')}", save_as(copy, out_fmt, quality),
                base, kind, str(how))
    by_base = {o[0]: o for o in originals}
    for k, base in enumerate(exact_sources):
        _, kind, img, fmt = by_base[base]
        first = next(name for name, lab in zip(payloads, labels, strict=True)
                     if lab.base == base and lab.transform == "original")
        if k % 2 == 0 or kind == "loner":
            add(f"{base}_same_bytes.{first.rsplit('.', 1)[1]}", payloads[first], base, kind, "same_bytes")
        else:
            decoded = Image.open(io.BytesIO(payloads[first]))
            add(f"{base}_same_pixels.png", save_as(decoded, "PNG", compress_level=1), base, kind, "same_pixels")

    for j in flips.choice(len(normal), size=n_flipped_crops, replace=False):
        base, kind, img, fmt = normal[j]
        add(f"{base}_crop_flip.{fmt.lower().replace('jpeg', 'jpg')}",
            save_as(ImageOps.mirror(transform(img, "crop", flips)), fmt), base, kind, "crop_flip")

    for name, data in payloads.items():
        (root / name).write_bytes(data)
    _labels_file(root).write_text(json.dumps([asdict(lab) for lab in labels], indent=1))
    return labels


def load_labels(root: Path) -> list[LabelledImage]:
    return [LabelledImage(**d) for d in json.loads(_labels_file(root).read_text())]


def _labels_file(root: Path) -> Path:
    return root.parent / f"{root.name}.labels.json"
