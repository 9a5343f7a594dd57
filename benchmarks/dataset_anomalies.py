"""A labelled folder of real images with planted anomalies of every kind, for the anomaly benchmark.

Normal images are real icons (line art, most with transparency) from `benchmarks.real_images`,
drawn from the Debian icon themes it names (never `openclipart-*`, `gnome-backgrounds`,
`mate-backgrounds` or `ukui-wallpapers`: a held-out collection uses those). Planted among them,
one kind per label:
- "photo_group": 25 crops of real wallpaper photos, a foreign batch whose members are each
  other's nearest neighbours;
- "solid": single-colour images; "tiny": 8x8 icons and one 1x1 pixel; "strip": a 2000x40 and a
  40x2000 stretched icon; "noise": uniform noise; "transparent": a fully transparent PNG;
- "dark", "bright" (over-exposed), "blurred": normal icons made so.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

PLANTED = {"photo_group": 25, "solid": 5, "tiny": 4, "strip": 2, "noise": 2, "transparent": 1, "dark": 2,
           "bright": 2, "blurred": 2}
ICON_SIDE = 256


@dataclass(frozen=True)
class AnomalyImage:
    file_name: str
    kind: str  # "normal" or a key of PLANTED


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _on_white(img: Image.Image) -> Image.Image:
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")


def build_anomaly_folder(root: Path, pool_cache: Path, seed: int = 0, n_normal: int = 800) -> list[AnomalyImage]:
    """Write `root` (replacing it): `n_normal` real icons and the planted anomalies; labels beside it."""
    from benchmarks.real_images import real_pool

    rng = np.random.default_rng(seed)
    pool = real_pool(pool_cache, seed=seed, icons_per_theme=300)
    icons = [s for s in pool if s.kind == "icon"]
    photos = [s for s in pool if s.kind == "photo"]
    needed = n_normal + PLANTED["tiny"] + PLANTED["strip"] + PLANTED["dark"] + PLANTED["bright"] + PLANTED["blurred"]
    if len(icons) < needed:
        raise ValueError(f"the real-image pool holds {len(icons)} distinct icons, fewer than the {needed} needed")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    labels: list[AnomalyImage] = []

    def add(name: str, data: bytes, kind: str) -> None:
        (root / name).write_bytes(data)
        labels.append(AnomalyImage(name, kind))

    def icon(i: int) -> Image.Image:
        with Image.open(icons[i].path) as img:
            return img.convert("RGBA")

    for i in range(n_normal):
        add(f"icon{i:04d}.png", icons[i].path.read_bytes(), "normal")
    spare = iter(range(n_normal, len(icons)))
    for i in range(PLANTED["photo_group"]):
        src = photos[i % len(photos)]
        with Image.open(src.path) as img:
            img = img.convert("RGB")
            side = int(rng.integers(200, min(img.size) + 1))
            x0, y0 = (int(rng.integers(0, d - side + 1)) for d in img.size)
            add(f"group{i:02d}.jpg", _jpeg(img.crop((x0, y0, x0 + side, y0 + side)).resize((ICON_SIDE, ICON_SIDE))),
                "photo_group")
    for i in range(PLANTED["solid"]):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        add(f"solid{i}.png", _png(Image.new("RGB", (ICON_SIDE, ICON_SIDE), colour)), "solid")
    for i in range(PLANTED["tiny"] - 1):
        add(f"tiny{i}.png", _png(icon(next(spare)).resize((8, 8), Image.Resampling.LANCZOS)), "tiny")
    add("tiny_1x1.png", _png(Image.new("RGB", (1, 1), tuple(int(c) for c in rng.integers(0, 256, 3)))), "tiny")
    for size in ((2000, 40), (40, 2000)):
        add(f"strip{size[0]}x{size[1]}.png", _png(icon(next(spare)).resize(size, Image.Resampling.BILINEAR)), "strip")
    for i in range(PLANTED["noise"]):
        add(f"noise{i}.png", _png(Image.fromarray(rng.integers(0, 256, (ICON_SIDE, ICON_SIDE, 3), dtype=np.uint8))),
            "noise")
    transparent = np.concatenate([rng.integers(0, 256, (ICON_SIDE, ICON_SIDE, 3), dtype=np.uint8),
                                  np.zeros((ICON_SIDE, ICON_SIDE, 1), dtype=np.uint8)], axis=2)
    add("transparent.png", _png(Image.fromarray(transparent, "RGBA")), "transparent")
    for i in range(PLANTED["dark"]):
        add(f"dark{i}.png", _png(ImageEnhance.Brightness(_on_white(icon(next(spare)))).enhance(0.12)), "dark")
    for i in range(PLANTED["bright"]):
        add(f"bright{i}.png", _png(ImageEnhance.Brightness(_on_white(icon(next(spare)))).enhance(3.0)), "bright")
    for i in range(PLANTED["blurred"]):
        img = icon(next(spare))
        add(f"blurred{i}.png", _png(img.filter(ImageFilter.GaussianBlur(0.04 * max(img.size)))), "blurred")
    _labels_file(root).write_text(json.dumps([asdict(lab) for lab in labels], indent=1))
    return labels


def _labels_file(root: Path) -> Path:
    return root.parent / f"{root.name}.labels.json"
