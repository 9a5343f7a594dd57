"""Drawings the tests share."""

from __future__ import annotations

from PIL import Image, ImageDraw


def folder_icon(emblem: str) -> Image.Image:
    """An icon-theme folder (RGBA on a transparent canvas) with an emblem: siblings share all but it."""
    img = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((16, 40, 120, 90), 10, fill=(150, 40, 80, 255))  # the tab
    draw.rounded_rectangle((16, 60, 240, 230), 14, fill=(90, 90, 90, 255))  # the body
    draw.rectangle((16, 60, 240, 80), fill=(240, 110, 70, 255))
    if emblem == "note":
        draw.ellipse((96, 170, 136, 205), fill=(240, 240, 240, 255))
        draw.rectangle((128, 110, 138, 190), fill=(240, 240, 240, 255))
        draw.rectangle((128, 110, 170, 122), fill=(240, 240, 240, 255))
    elif emblem == "fox":
        draw.polygon([(88, 110), (168, 110), (128, 200)], fill=(240, 240, 240, 255))
        draw.polygon([(88, 110), (104, 96), (112, 124)], fill=(240, 240, 240, 255))
        draw.polygon([(168, 110), (152, 96), (144, 124)], fill=(240, 240, 240, 255))
    return img
