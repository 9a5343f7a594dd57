"""Reproducible images for offline trials, tests, benchmarks and the model's start-up probe (no downloads
needed): photo-like pictures, clip art on transparent canvases, and near-duplicate copies of either."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

COPY_KINDS = ("resize", "jpeg", "crop", "brightness", "rotation", "watermark", "flip")  # near-duplicate edits
_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


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


def _font(size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(_FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def clipart(rng: np.random.Generator) -> Image.Image:
    """A random icon: a few filled shapes and strokes on a transparent canvas."""
    size = int(rng.choice([192, 256, 320]))
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        colour = (*(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(200, 256)))
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 6, size // 2, 2)
        box = [int(x0), int(y0), int(min(size - 1, x0 + w)), int(min(size - 1, y0 + h))]
        shape = rng.integers(0, 5)
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        elif shape == 2:
            pts = [(int(x), int(y)) for x, y in rng.integers(0, size, (int(rng.integers(3, 7)), 2))]
            draw.polygon(pts, fill=colour)
        elif shape == 3:
            draw.line([tuple(int(v) for v in p) for p in rng.integers(0, size, (3, 2))], fill=colour,
                      width=int(rng.integers(4, 14)))
        else:
            glyph = chr(int(rng.choice([ord("A"), ord("K"), ord("Q"), ord("#"), ord("@"), ord("&")])) +
                        int(rng.integers(0, 6)))
            draw.text((box[0], box[1]), glyph, fill=colour, font=_font(int(rng.integers(size // 5, size // 2))))
    return img


def transform(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate copy of `img` made by one transform kind (JPEG is applied when saving)."""
    w, h = img.size
    if kind == "resize":
        s = float(rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.3, 1.6)]))
        return img.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.LANCZOS)
    if kind == "crop":
        fw, fh = rng.uniform(0.75, 0.9, 2)
        cw, ch = int(w * fw), int(h * fh)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if kind == "brightness":
        factor = float(rng.choice([rng.uniform(0.7, 0.8), rng.uniform(1.2, 1.35)]))
        rgb = ImageEnhance.Brightness(img.convert("RGB")).enhance(factor)
        if img.mode == "RGBA":
            rgb.putalpha(img.getchannel("A"))
        return rgb
    if kind == "rotation":
        angle = float(rng.choice([-1, 1]) * rng.uniform(3, 8))
        fill = (0, 0, 0, 0) if img.mode == "RGBA" else (255, 255, 255)
        return img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)
    if kind == "watermark":
        out = img.convert("RGBA")
        layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        draw.text((int(w * 0.05), int(h * rng.uniform(0.6, 0.85))), "© stock 2026",
                  fill=(255, 255, 255, 170) if rng.random() < 0.5 else (40, 40, 40, 170), font=_font(max(10, h // 9)))
        out = Image.alpha_composite(out, layer)
        return out if img.mode == "RGBA" else out.convert("RGB")
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "jpeg":
        return img
    raise ValueError(f"unknown transform kind {kind!r}")


def save_as(img: Image.Image, fmt: str, quality: int = 90, compress_level: int = 6) -> bytes:
    """The file bytes of `img` as JPEG (transparency flattened onto white, as a converter would) or PNG."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        if img.mode == "RGBA":
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img)
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()
