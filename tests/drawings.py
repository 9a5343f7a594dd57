"""Drawings the tests share."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter


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


def badge(face: str) -> Image.Image:
    """A soft dark disc (an icon's shaded body, on a transparent canvas) with a face drawn in thin
    grey strokes: "dice" pips or a "knob" dial. The two share all but the face."""
    body = Image.new("RGBA", (256, 256), (40, 40, 48, 0))
    ImageDraw.Draw(body).ellipse((24, 24, 232, 232), fill=(40, 40, 48, 255))
    img = body.filter(ImageFilter.GaussianBlur(10))
    pen = ImageDraw.Draw(img)
    if face == "dice":
        for cx, cy in ((84, 84), (172, 84), (128, 128), (84, 172), (172, 172)):
            pen.ellipse((cx - 9, cy - 9, cx + 9, cy + 9), fill=(150, 150, 150, 255))
    else:
        pen.ellipse((70, 70, 186, 186), outline=(150, 150, 150, 255), width=5)
        pen.rectangle((124, 60, 132, 96), fill=(150, 150, 150, 255))
    return img
