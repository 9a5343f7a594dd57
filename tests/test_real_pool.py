"""The real-image benchmark's pool holds distinct drawings: the same one with other margins counts once."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks.real_images import RealSource, _distinct


def drawing(path: Path, canvas: int, margin: int, shape: str) -> RealSource:
    """A transparent icon: `shape` drawn inside `margin` pixels of empty border."""
    img = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    box = (margin, margin, canvas - margin, canvas - margin)
    if shape == "ring":
        draw.ellipse(box, outline=(20, 20, 20, 255), width=max(2, canvas // 20))
    else:
        draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=(200, 30, 30, 255))
    draw.rectangle((box[0], box[1], box[0] + (box[2] - box[0]) // 3, box[1] + (box[3] - box[1]) // 3),
                   fill=(30, 90, 200, 255))
    img.save(path)
    return RealSource(path, "test", path.stem, "icon")


def test_one_drawing_shipped_with_other_margins_is_one_source(tmp_path: Path) -> None:
    wide = drawing(tmp_path / "ring-wide.png", 384, 52, "ring")  # as shipped at 384 px with a wide border
    tight = drawing(tmp_path / "ring-tight.png", 192, 12, "ring")  # the same drawing at 192 px, a thin border
    other = drawing(tmp_path / "triangle.png", 192, 12, "triangle")
    kept = _distinct([wide, tight, other])
    assert [s.name for s in kept] == ["ring-wide", "triangle"]
