"""Per-image properties measured at ingest: constructed images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from core.image_properties import PROPERTY_NAMES, image_properties
from core.images import PreparedImage, prepare_image
from core.synthetic import encode, photo


def prepared(image: Image.Image, fmt: str = "PNG") -> PreparedImage:
    return prepare_image(encode(image, fmt), max_bytes=1 << 26, max_pixels=1 << 26)


def shapes(seed: int, size: tuple[int, int] = (256, 256)) -> Image.Image:
    """Coloured shapes with hard edges on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    for _ in range(10):
        x0, y0 = int(rng.integers(0, size[0] - 20)), int(rng.integers(0, size[1] - 20))
        pen.rectangle([x0, y0, x0 + int(rng.integers(10, 80)), y0 + int(rng.integers(10, 80))],
                      fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def test_a_solid_image_has_one_colour_no_contrast_and_no_information() -> None:
    p = prepared(Image.new("RGB", (300, 200), (20, 120, 200))).properties
    assert p.distinct_colours == 1 and p.dominant_share == 1.0
    assert p.contrast == pytest.approx(0.0, abs=1e-6) and p.entropy == pytest.approx(0.0, abs=1e-9)
    assert p.sharpness == pytest.approx(0.0, abs=1e-9)
    assert (p.width, p.height, p.pixels) == (300, 200, 60000) and p.aspect == pytest.approx(1.5)


def test_a_blurred_copy_is_less_sharp_than_its_source() -> None:
    source = shapes(1)
    blurred = source.filter(ImageFilter.GaussianBlur(6))
    assert prepared(blurred).properties.sharpness < 0.2 * prepared(source).properties.sharpness


def test_transparency_is_read_before_compositing_on_white() -> None:
    empty = prepared(Image.new("RGBA", (128, 128), (255, 0, 0, 0))).properties
    assert empty.transparent_share == 1.0
    assert empty.brightness == pytest.approx(1.0)  # shown as a white page: only the alpha tells
    half = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    half.paste((0, 0, 0, 255), (0, 0, 128, 64))
    assert prepared(half).properties.transparent_share == pytest.approx(0.5, abs=0.02)
    assert prepared(photo(3), "JPEG").properties.transparent_share == 0.0


def test_brightness_and_colour_follow_the_picture() -> None:
    dark = prepared(Image.new("RGB", (64, 64), (10, 10, 10))).properties
    bright = prepared(Image.new("RGB", (64, 64), (245, 245, 245))).properties
    assert dark.brightness < 0.1 < 0.9 < bright.brightness
    grey = prepared(shapes(2).convert("L").convert("RGB")).properties
    colour = prepared(shapes(2)).properties
    assert grey.colourfulness < 1e-3 and colour.colourfulness > 0.05


def test_a_strip_has_its_aspect_and_a_tiny_image_its_size() -> None:
    assert prepared(Image.new("RGB", (2000, 40), "gray")).properties.aspect == pytest.approx(50.0)
    assert prepared(Image.new("RGB", (40, 2000), "gray")).properties.aspect == pytest.approx(1 / 50)
    tiny = prepared(Image.new("RGB", (1, 1), "red")).properties
    assert (tiny.pixels, tiny.distinct_colours) == (1, 1)


def test_measurements_do_not_depend_on_the_resolution() -> None:
    small, large = shapes(4, (200, 200)), shapes(4, (200, 200)).resize((800, 800), Image.Resampling.NEAREST)
    a, b = prepared(small).properties, prepared(large).properties
    for name in ("brightness", "contrast", "colourfulness", "dominant_share", "entropy"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=0.05, abs=0.02), name
    assert b.pixels == 16 * a.pixels


def test_every_property_is_a_finite_number_and_bad_sizes_are_refused() -> None:
    p = prepared(photo(5), "JPEG").properties
    assert set(p.to_dict()) == set(PROPERTY_NAMES)
    assert all(np.isfinite(v) for v in p.to_dict().values())
    with pytest.raises(ValueError, match="at least one pixel"):
        image_properties(photo(5), None, width=0, height=10, size_bytes=10)
