"""Quality flags judged against the collection: constructed images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from core.analysis.quality import FLAG_NAMES, property_outlier_scores, quality_flags
from core.analysis.reasons import image_reasons
from core.errors import InvalidRequest
from core.image_properties import PROPERTY_NAMES, ImageProperties
from core.images import prepare_image
from core.synthetic import encode


def measure(image: Image.Image) -> ImageProperties:
    return prepare_image(encode(image, "PNG"), max_bytes=1 << 26, max_pixels=1 << 26).properties


def matrix(found: list[ImageProperties]) -> np.ndarray:
    return np.array([[getattr(p, name) for name in PROPERTY_NAMES] for p in found], dtype=np.float64)


def scene(seed: int, *, background: tuple[int, int, int] | None = None, level: float = 1.0,
          size: tuple[int, int] = (256, 256)) -> Image.Image:
    """Coloured shapes with hard edges on a background (a mid tone drawn per seed by default),
    brightness scaled by ``level``."""
    rng = np.random.default_rng(seed)
    background = background or tuple(int(c) for c in rng.integers(90, 200, 3))
    image = Image.new("RGB", size, tuple(int(c * level) for c in background))
    pen = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, size[0] - 30)), int(rng.integers(0, size[1] - 30))
        colour = tuple(int(c * level) for c in rng.integers(40, 256, 3))
        pen.ellipse([x0, y0, x0 + int(rng.integers(15, 90)), y0 + int(rng.integers(15, 90))], fill=colour)
    return image


def transparent_icon(seed: int) -> Image.Image:
    """A drawing with a transparent margin."""
    image = scene(seed).convert("RGBA")
    alpha = Image.new("L", image.size, 0)
    ImageDraw.Draw(alpha).rectangle([8, 8, 247, 247], fill=255)
    image.putalpha(alpha)
    return image


NORMAL = 150
PLANTED = {
    "blank": Image.new("RGB", (256, 256), (30, 160, 90)),
    "dark": scene(101, level=0.08),
    "bright": Image.blend(scene(102), Image.new("RGB", (256, 256), "white"), 0.95),
    "blurry": scene(103).filter(ImageFilter.GaussianBlur(8)),
    "greyscale": scene(104).convert("L").convert("RGB"),
    "tiny": scene(105).resize((8, 8)),
    "odd_size": scene(106, size=(2400, 2400)),
    "odd_aspect": scene(107, size=(1024, 64)),
    "mostly_transparent": Image.new("RGBA", (256, 256), (0, 0, 0, 0)),
}


@pytest.fixture(scope="module")
def collection() -> tuple[np.ndarray, list[str]]:
    """150 ordinary pictures (half of them with a transparent margin) and one planted image per flag."""
    normal = [scene(i) if i % 2 else transparent_icon(i) for i in range(NORMAL)]
    names = [f"normal{i}" for i in range(NORMAL)] + list(PLANTED)
    return matrix([measure(image) for image in [*normal, *PLANTED.values()]]), names


def test_every_planted_image_raises_its_own_flag(collection: tuple[np.ndarray, list[str]]) -> None:
    properties, names = collection
    flags = quality_flags(properties)
    for flag in FLAG_NAMES:
        row = names.index(flag)
        assert flag in {f.name for f in flags.of(row)}, (flag, flags.of(row))
        assert row in flags.rows_with(flag)


def test_ordinary_images_raise_no_flag(collection: tuple[np.ndarray, list[str]]) -> None:
    properties, _ = collection
    assert not quality_flags(properties).flagged[:NORMAL].any()


def test_a_flag_names_its_explanation_and_the_value_that_raised_it(collection: tuple[np.ndarray, list[str]]) -> None:
    properties, names = collection
    flags = quality_flags(properties)
    (transparent,) = [f for f in flags.of(names.index("mostly_transparent")) if f.name == "mostly_transparent"]
    assert transparent.property == "transparent_share" and transparent.value == 1.0
    assert "transparent" in transparent.explanation
    (aspect,) = [f for f in flags.of(names.index("odd_aspect")) if f.name == "odd_aspect"]
    assert aspect.value == pytest.approx(16.0) and aspect.z >= 3.5


def test_the_same_dark_image_is_flagged_in_a_bright_set_but_not_among_night_photos() -> None:
    dark = measure(scene(500, level=0.1))
    day = [measure(scene(i, background=(235, 230, 220))) for i in range(30)]
    night = [measure(scene(i, background=(20, 25, 40), level=float(0.08 + 0.01 * (i % 5)))) for i in range(30)]
    in_day = quality_flags(matrix([*day, dark]))
    in_night = quality_flags(matrix([*night, dark]))
    assert "dark" in {f.name for f in in_day.of(30)}
    assert "dark" not in {f.name for f in in_night.of(30)}


def test_a_stricter_cut_off_flags_fewer_and_a_bad_one_is_refused(collection: tuple[np.ndarray, list[str]]) -> None:
    properties, _ = collection
    assert quality_flags(properties, 20.0).flagged.sum() < quality_flags(properties).flagged.sum()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidRequest, match="z_threshold"):
            quality_flags(properties, bad)


def test_images_without_properties_are_never_flagged_and_score_as_typical(
        collection: tuple[np.ndarray, list[str]]) -> None:
    properties, names = collection
    unmeasured = properties.copy()
    unmeasured[names.index("blank")] = np.nan
    flags = quality_flags(unmeasured)
    assert not flags.flagged[names.index("blank")].any()
    assert flags.flagged[names.index("tiny")].any()
    assert property_outlier_scores(unmeasured)[names.index("blank")] == 0.0


def test_reasons_name_the_flags_and_the_embedding_evidence(collection: tuple[np.ndarray, list[str]]) -> None:
    properties, names = collection
    n = len(names)
    near, far = np.full(n, 50.0), np.full(n, 50.0)
    near[0], far[1] = 99.0, 99.0
    combination = np.full(n, 0.5)  # p-values
    combination[3] = 0.01
    reasons = image_reasons(near, far, quality_flags(properties), np.zeros((n, len(PROPERTY_NAMES))), combination)
    assert reasons[0] == ("far from its neighbours",)
    assert reasons[1] == ("part of a small foreign group",)
    assert "odd aspect" in reasons[names.index("odd_aspect")]
    assert "blank" in reasons[names.index("blank")]
    assert reasons[2] == ()
    assert reasons[3] == ("unusual combination of properties",)  # no property unusual alone
    # rows with the same reasons share one tuple: a million rows hold a few distinct lists, not a million
    again = image_reasons(np.r_[near, near], np.r_[far, far], quality_flags(np.r_[properties, properties]),
                          np.zeros((2 * n, len(PROPERTY_NAMES))), np.r_[combination, combination])
    assert all(again[row] is again[row + n] for row in range(n))


def drawing(seed: int, *, panel: tuple[int, int, int] | None = None) -> Image.Image:
    """Line art on white: a few outlined and filled shapes, on a dark panel inside a white margin
    when ``panel`` is given (an icon of a dark theme)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (256, 256), "white")
    pen = ImageDraw.Draw(image)
    if panel is not None:
        pen.rounded_rectangle([24, 24, 232, 232], radius=24, fill=panel)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(40, 150)), int(rng.integers(40, 150))
        box = [x0, y0, x0 + int(rng.integers(30, 70)), y0 + int(rng.integers(30, 70))]
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        pen.ellipse(box, outline=colour, width=4) if rng.random() < 0.5 else pen.rectangle(box, fill=colour)
    return image


def test_dark_and_washed_out_drawings_are_flagged_among_pale_line_art_with_a_dark_minority() -> None:
    """A darkened drawing and a washed-out one among 120 drawings on white, a tenth of them on dark
    panels (a dark theme) that widen the spread of the collection's mean brightness on its dark side."""
    normal = [drawing(i, panel=(40, 44, 52) if i % 10 == 0 else None) for i in range(120)]
    darkened = ImageEnhance.Brightness(drawing(900)).enhance(0.12)
    washed_out = Image.blend(drawing(901), Image.new("RGB", (256, 256), "white"), 0.97)
    flags = quality_flags(matrix([measure(image) for image in [*normal, darkened, washed_out]]))
    assert "dark" in {f.name for f in flags.of(120)}, flags.of(120)
    assert "bright" in {f.name for f in flags.of(121)}, flags.of(121)
    assert not flags.flagged[:120, [FLAG_NAMES.index("dark"), FLAG_NAMES.index("bright")]].any()
