"""Cheap per-image measurements that say what an embedding cannot: blank, dark, blurred, tiny, a strip.

Computed at ingest from the picture already decoded in memory (no second decode), on a fixed
`PROPERTY_SIDE` squared downscale so that the cost (well under 2 ms an image) and the values do
not depend on the image's resolution; only the size fields and the file size come from the
original. The share of transparent pixels is read from the source's alpha before compositing on
white: afterwards a fully transparent image is a white page and looks like any line drawing.

The values are raw measurements; whether one is unusual is decided against the collection's own
distribution (:mod:`core.analysis.quality`), never against a fixed constant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

PROPERTY_SIDE = 128  # the fixed size every pixel measurement is taken at
_COLOUR_BITS = 4  # per channel, for the dominant colour and distinct colours (4096 bins)
_TRANSPARENT_ALPHA = 128  # alpha below this counts as a transparent pixel
# luma weights (ITU-R BT.601, as Pillow's "L" conversion)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ImageProperties:
    """What one image measures; pixel values on a 0-1 scale, measured at `PROPERTY_SIDE` squared."""

    width: int
    height: int
    aspect: float  # width / height
    pixels: int  # width x height
    bytes_per_pixel: float  # file size / pixels: how much the encoder needed
    brightness: float  # mean luma
    dark_level: float  # 5th percentile of luma
    bright_level: float  # 95th percentile of luma
    contrast: float  # standard deviation of luma
    colourfulness: float  # Hasler and Suesstrunk's metric on 0-1 channels; 0 for grey pictures
    entropy: float  # bits, of the 256-level luma histogram
    sharpness: float  # variance of the Laplacian of luma; low = blurred (or flat)
    dominant_share: float  # share of pixels in the most common colour (16 levels per channel)
    transparent_share: float  # share of pixels transparent in the source (alpha < 128), before compositing
    distinct_colours: int  # colours present (16 levels per channel, up to 4096)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


PROPERTY_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ImageProperties))
INTEGER_PROPERTIES = frozenset({"width", "height", "pixels", "distinct_colours"})


def image_properties(rgb: Image.Image, alpha: Image.Image | None, *, width: int, height: int,
                     size_bytes: int) -> ImageProperties:
    """Measure one decoded image: ``rgb`` as shown (transparency composited on white), ``alpha`` the
    source's alpha channel at the same size (``None`` for an opaque source), ``width``/``height`` the
    original's size and ``size_bytes`` its file size."""
    if width < 1 or height < 1:
        raise ValueError(f"an image has at least one pixel, got {width}x{height}")
    side = (PROPERTY_SIDE, PROPERTY_SIDE)
    small = rgb.convert("RGB").resize(side, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    luma = pixels @ _LUMA
    dark, bright = np.percentile(luma, (5, 95))
    levels = np.asarray(small, dtype=np.uint8) >> (8 - _COLOUR_BITS)
    colour = (levels[..., 0].astype(np.int32) << (2 * _COLOUR_BITS)) | (levels[..., 1].astype(np.int32)
                                                                          << _COLOUR_BITS) | levels[..., 2]
    counts = np.bincount(colour.ravel(), minlength=1 << (3 * _COLOUR_BITS))
    transparent = 0.0
    if alpha is not None:
        a = np.asarray(alpha.resize(side, Image.Resampling.BOX, reducing_gap=2.0), dtype=np.uint8)
        transparent = float(np.mean(a < _TRANSPARENT_ALPHA))
    return ImageProperties(
        width=width,
        height=height,
        aspect=width / height,
        pixels=width * height,
        bytes_per_pixel=size_bytes / (width * height),
        brightness=float(luma.mean()),
        dark_level=float(dark),
        bright_level=float(bright),
        contrast=float(luma.std()),
        colourfulness=_colourfulness(pixels),
        entropy=_entropy(luma),
        sharpness=_laplacian_variance(luma),
        dominant_share=float(counts.max() / colour.size),
        transparent_share=transparent,
        distinct_colours=int(np.count_nonzero(counts)),
    )


def _colourfulness(pixels: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): spread and mean of the opponent channels red-green and yellow-blue."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def _entropy(luma: np.ndarray) -> float:
    counts = np.bincount(np.clip(luma * 255.0 + 0.5, 0, 255).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / luma.size
    return float(-(p * np.log2(p)).sum())


def _laplacian_variance(luma: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels."""
    lap = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * luma[1:-1, 1:-1])
    return float(lap.var())
