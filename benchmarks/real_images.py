"""A pool of real, distinct images for the benchmarks, drawn from Debian packages and scikit-image.

Why: a benchmark of drawn shapes flattered the duplicate finder; real icons (line art, large empty
areas, transparency) and real photos are what a user brings. The benchmarks plant their own duplicates
on top of this pool, so the pool itself must hold none.

What is drawn (installed with apt-get when missing; rendering needs `rsvg-convert`, librsvg2-bin):
- icons (kind "icon", RGBA with transparency):
  - `oxygen-icon-theme`: PNGs, each name at the largest size shipped (64 px at least);
  - `tango-icon-theme`: the scalable SVGs;
  - `papirus-icon-theme` (the `Papirus` folder only) and `breeze-icon-theme` (the `breeze` folder
    only): SVGs, each name at its largest design size;
  every SVG is rendered to PNG with `rsvg-convert` at a size drawn per icon from 128-512 px and cached.
- photos (kind "photo", opaque): one picture per wallpaper of `plasma-workspace-wallpapers`, one per
  theme of `desktop-base` (its SVG wallpaper rendered), and scikit-image's bundled photographs; each
  scaled to a long side drawn from 640-1024 px and cached as JPEG.

What is excluded:
- `openclipart-*`, `gnome-backgrounds`, `mate-backgrounds` and `ukui-wallpapers`: a held-out
  collection draws on them and must stay an independent check;
- symbolic links (aliases of another icon), the dark/light theme copies (`Papirus-Dark`,
  `breeze-dark`, `images_dark`, ...), HiDPI copies (`@2x`), `symbolic` icons and names marked as a
  variant (`-symbolic`, `-dark`, `-light`, `-rtl`, `-ltr`), all sizes of a name but one, the other
  resolutions of a wallpaper, the stereo twin `motorcycle_right`;
- near-empty images (under 2% of the canvas opaque, or flat);
- byte-identical files, then any image near-identical to one already kept: their 32x32 grey renders
  of what they draw (cut to the opaque part and centred on a square, so one drawing shipped with
  different margins is one source; on white and on black, which carries the transparency)
  correlate at 0.9 or more, also against the kept image mirrored left-right, upside down, or both.
  This check shares nothing with the duplicate finder's signals (embeddings, pHash, sketches), so
  it cannot hide what the finder misses.

The pool is cached per seed under `cache_dir`; a second call reads the cached manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ICONS = Path("/usr/share/icons")
WALLPAPERS = Path("/usr/share/wallpapers")
DESKTOP_BASE = Path("/usr/share/desktop-base")
_NEEDED = {  # a path this module reads -> the Debian package that ships it
    ICONS / "oxygen": "oxygen-icon-theme",
    ICONS / "Tango": "tango-icon-theme",
    ICONS / "Papirus": "papirus-icon-theme",
    ICONS / "breeze": "breeze-icon-theme",
    WALLPAPERS: "plasma-workspace-wallpapers",
    DESKTOP_BASE: "desktop-base",
}
_VARIANT_MARKS = ("-symbolic", "-dark", "-light", "-rtl", "-ltr")
_SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "moon", "coins",
                   "motorcycle_left")
ICON_SIZES = (128, 192, 256, 384, 512)
PHOTO_SIDES = (640, 800, 1024)
NEAR_IDENTICAL = 0.9  # correlation of the 32x32 renders at or above which two sources count as one
_MANIFEST_VERSION = 2


@dataclass(frozen=True)
class RealSource:
    """One distinct real image of the pool."""

    path: Path  # a PNG or JPEG file, in the system folders or rendered into the cache
    origin: str  # the theme or package it came from (oxygen, tango, papirus, breeze, wallpapers, ...)
    name: str  # its name there (icon name, wallpaper name)
    kind: str  # icon | photo


@dataclass(frozen=True)
class _Candidate:
    source: Path  # the file in the package
    origin: str
    name: str
    kind: str
    size: int  # the design size it was picked at (icons), 0 for photos


def real_pool(cache_dir: Path, *, seed: int, icons_per_theme: int = 800) -> list[RealSource]:
    """The pool of distinct real images: up to `icons_per_theme` icons drawn per theme, every photo.

    Icons come first in a seeded shuffle so that a benchmark taking the first N gets a mix of themes.
    """
    cache_dir = Path(cache_dir)
    manifest = cache_dir / f"real_pool_v{_MANIFEST_VERSION}_seed{seed}_{icons_per_theme}.json"
    if manifest.exists():
        pool = [RealSource(**{**d, "path": Path(d["path"])}) for d in json.loads(manifest.read_text())]
        if all(s.path.exists() for s in pool):
            return pool
    ensure_packages()
    rng = np.random.default_rng(seed)
    candidates = [*_icon_candidates(rng, icons_per_theme), *_photo_candidates()]
    rendered = _materialise(candidates, cache_dir / "real_pool", rng)
    pool = _distinct(rendered)
    icons = [s for s in pool if s.kind == "icon"]
    order = rng.permutation(len(icons))
    pool = [icons[i] for i in order] + [s for s in pool if s.kind == "photo"]
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps([{**asdict(s), "path": str(s.path)} for s in pool], indent=1))
    return pool


def ensure_packages() -> None:
    """Install the Debian packages the pool reads (and the SVG renderer) when they are missing."""
    missing = sorted({pkg for path, pkg in _NEEDED.items() if not path.is_dir()})
    if shutil.which("rsvg-convert") is None:
        missing.append("librsvg2-bin")
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip().splitlines()[-1] if getattr(exc, "stderr", None) else str(exc)
        raise RuntimeError(
            f"the real-image benchmark needs the Debian packages {', '.join(missing)} and could not install "
            f"them ({detail}); install them with: sudo apt-get install {' '.join(missing)}") from exc


def _is_variant(name: str) -> bool:
    return any(mark in name for mark in _VARIANT_MARKS)


def _design_size(folder: str) -> int:
    """`256x256` or `48` -> the size in pixels; 0 for folders that are no plain size (`@2x`, `symbolic`)."""
    head = folder.split("x")[0]
    return int(head) if head.isdigit() and "@" not in folder else 0


def _largest_per_name(files: Iterable[tuple[str, int, Path]]) -> dict[str, tuple[int, Path]]:
    best: dict[str, tuple[int, Path]] = {}
    for name, size, path in files:
        if size and not _is_variant(name) and not path.is_symlink() and size > best.get(name, (0, path))[0]:
            best[name] = (size, path)
    return best


def _theme_files(theme: str) -> dict[str, tuple[int, Path]]:
    """name -> (largest design size, file) for one icon theme, aliases and variants left out."""
    root = ICONS / theme
    if theme == "oxygen":  # base/<size>/<context>/<name>.png
        files = ((p.stem, _design_size(p.parts[-3]), p) for p in root.glob("base/*/*/*.png"))
        return {n: v for n, v in _largest_per_name(files).items() if v[0] >= 64}
    if theme == "Tango":  # scalable/<context>/<name>.svg
        return _largest_per_name((p.stem, 256, p) for p in root.glob("scalable/*/*.svg"))
    if theme == "Papirus":  # <size>/<context>/<name>.svg
        return _largest_per_name((p.stem, _design_size(p.parts[-3]), p) for p in root.glob("*/*/*.svg"))
    if theme == "breeze":  # <context>/<size>/<name>.svg
        return _largest_per_name((p.stem, _design_size(p.parts[-2]), p) for p in root.glob("*/*/*.svg"))
    raise ValueError(f"unknown icon theme {theme!r}")


def _icon_candidates(rng: np.random.Generator, per_theme: int) -> list[_Candidate]:
    out: list[_Candidate] = []
    for theme in ("oxygen", "Tango", "Papirus", "breeze"):
        files = _theme_files(theme)
        names = sorted(files)
        for i in rng.permutation(len(names))[:per_theme]:
            size, path = files[names[i]]
            out.append(_Candidate(path, theme.lower(), names[i], "icon", size))
    return out


def _photo_candidates() -> list[_Candidate]:
    out: list[_Candidate] = []
    for folder in sorted(p for p in WALLPAPERS.iterdir() if p.is_dir() and not p.is_symlink()):
        pictures = sorted((folder / "contents" / "images").glob("*.[jpsJP][pnvPN][gG]"))
        if pictures:  # resolutions of one picture: the largest, scaled down later
            out.append(_Candidate(max(pictures, key=lambda p: p.stat().st_size), "wallpapers", folder.name,
                                  "photo", 0))
    themes = {p.resolve() for p in DESKTOP_BASE.glob("*-theme") if p.is_dir()}
    for theme in sorted(themes):
        pictures = sorted((theme / "wallpaper" / "contents" / "images").glob("*.*"))
        if pictures:
            wide = [p for p in pictures if p.stem == "1920x1080"]
            out.append(_Candidate((wide or pictures)[0], "desktop-base", theme.name, "photo", 0))
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    for name in _SKIMAGE_PHOTOS:
        found = sorted(folder.glob(f"{name}.*"))
        if found:
            out.append(_Candidate(found[0], "scikit-image", name, "photo", 0))
    return out


def _render_svg(svg: Path, out: Path, width: int) -> None:
    subprocess.run(["rsvg-convert", "--width", str(width), "--keep-aspect-ratio", "--output", str(out), str(svg)],
                   check=True, capture_output=True)


def _materialise(candidates: list[_Candidate], folder: Path, rng: np.random.Generator) -> list[RealSource]:
    """Each candidate as a file the benchmark can read: PNGs as shipped, SVGs rendered, photos scaled."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = rng.choice(ICON_SIZES, size=len(candidates))
    sides = rng.choice(PHOTO_SIDES, size=len(candidates))

    def one(job: tuple[_Candidate, int, int]) -> RealSource | None:
        cand, size, side = job
        if cand.kind == "icon" and cand.source.suffix == ".png":
            return RealSource(cand.source, cand.origin, cand.name, cand.kind)
        stem = f"{cand.origin}__{cand.name}"
        if cand.kind == "icon":
            out = folder / f"{stem}_{size}.png"
            if not out.exists():
                try:
                    _render_svg(cand.source, out, int(size))
                except subprocess.CalledProcessError:
                    return None  # an SVG the renderer cannot draw is left out
            return RealSource(out, cand.origin, cand.name, cand.kind)
        out = folder / f"{stem}_{side}.jpg"
        if not out.exists():
            source = cand.source
            if source.suffix == ".svg":
                source = folder / f"{stem}_raw.png"
                _render_svg(cand.source, source, 2 * int(side))
            with Image.open(source) as img:
                img = img.convert("RGB")
                img.thumbnail((int(side), int(side)), Image.Resampling.LANCZOS)
                img.save(out, "JPEG", quality=92)
        return RealSource(out, cand.origin, cand.name, cand.kind)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = list(pool.map(one, zip(candidates, sizes, sides, strict=True)))
    return [s for s in done if s is not None]


def _signature(path: Path) -> np.ndarray | None:
    """The 32x32 grey renders on white and on black of what the image draws (its opaque part, centred
    on a square), each zero-mean; None for a near-empty image."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    drawn = rgba.crop(rgba.getchannel("A").point(lambda a: 255 if a > 12 else 0).getbbox() or (0, 0, *rgba.size))
    side = max(drawn.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(drawn, ((side - drawn.width) // 2, (side - drawn.height) // 2))
    rgba = square.resize((32, 32), Image.Resampling.BOX)
    arr = np.asarray(rgba, dtype=np.float64) / 255.0
    alpha = arr[..., 3]
    grey = arr[..., :3].mean(axis=2)
    on_white, on_black = grey * alpha + (1 - alpha), grey * alpha
    if alpha.mean() < 0.02 or on_white.std() < 0.02:
        return None
    sig = np.stack([on_white, on_black])
    sig = sig - sig.mean(axis=(1, 2), keepdims=True)
    norms = np.linalg.norm(sig, axis=(1, 2), keepdims=True)
    return sig / np.maximum(norms, 1e-9) / np.sqrt(2)  # each render weighs half: the dot product averages them


def _distinct(sources: list[RealSource]) -> list[RealSource]:
    """Sources left after dropping byte copies, near-empty images and near-identical ones (photos first)."""
    sources = sorted(sources, key=lambda s: s.kind != "photo")
    seen: set[str] = set()
    kept_sources: list[RealSource] = []
    sigs: list[np.ndarray] = []
    for s in sources:
        digest = hashlib.sha256(s.path.read_bytes()).hexdigest()
        sig = _signature(s.path)
        if digest in seen or sig is None:
            continue
        seen.add(digest)
        kept_sources.append(s)
        sigs.append(sig)
    flat = np.stack([s.ravel() for s in sigs])  # (n, 2048)
    variants = [np.stack([v.ravel() for v in views]) for views in zip(
        *[(s, s[:, :, ::-1], s[:, ::-1, :], s[:, ::-1, ::-1]) for s in sigs], strict=True)]
    corr = np.max([flat @ v.T for v in variants], axis=0)
    keep: list[int] = []
    for i in range(len(kept_sources)):
        if not keep or corr[i, keep].max() < NEAR_IDENTICAL:
            keep.append(i)
    return [kept_sources[i] for i in keep]


if __name__ == "__main__":
    import argparse
    import tempfile
    from collections import Counter

    parser = argparse.ArgumentParser(description="Build the real-image pool and print what it holds.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "visual-anomaly-real-pool")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    built = real_pool(args.cache, seed=args.seed)
    for (origin, kind), count in sorted(Counter((s.origin, s.kind) for s in built).items()):
        print(f"{origin:14s} {kind:6s} {count}")
    print(f"{'total':21s} {len(built)}")
