"""Reproducible photo-like images for offline trials, tests and benchmarks (no downloads needed)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A distinct, smooth RGB image (soft blobs of colour over a tint), the same for the same seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas = np.zeros((h, w, 3), dtype=np.float32) + rng.uniform(0, 255, 3)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, max(w, h) / 2)
        mask = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        canvas = canvas * (1 - mask) + mask * rng.uniform(0, 255, 3)
    noise = rng.normal(0, 6, size=(h, w, 1))  # sensor-like grain, so JPEGs are not trivially small
    return Image.fromarray((canvas + noise).clip(0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
