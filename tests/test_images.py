"""Behaviour of core.images: what a user uploading odd, broken or hostile files would notice."""

from __future__ import annotations

import hashlib
import io
import struct
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageOps

from core.images import (
    ImageRejected,
    PreparedImage,
    hex_to_int64,
    image_id,
    int64_to_hex,
    prepare_image,
    sniff_format,
)

MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 50_000_000
RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _prepare(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> PreparedImage:
    return prepare_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def _rejection(data: bytes, **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        _prepare(data, **limits)
    return caught.value


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8))


def _pixel(prepared: PreparedImage, x: int, y: int) -> tuple[int, int, int]:
    return prepared.model_image.getpixel((x, y))


def _near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _bits_apart(hex_a: str, hex_b: str) -> int:
    return imagehash.hex_to_hash(hex_a) - imagehash.hex_to_hash(hex_b)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid, tiny PNG of a huge all-black 1-bit image: the classic decompression bomb."""
    row = b"\x00" * (1 + (width + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + _png_chunk(b"IEND", b"")
    )


def _gif_with_frame_beyond_canvas(frame_width: int, frame_height: int) -> bytes:
    """A 10x10 GIF whose first frame claims a far larger extent, which grows Pillow's canvas."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, frame_width, frame_height, 0)
    return screen + frame + b"\x02\x02\x4c\x01\x00;"


def _premultiplied_grey_alpha_tiff(image_la: Image.Image) -> bytes:
    """Pillow cannot write mode La; write LA and mark its alpha as associated (ExtraSamples=1)."""
    data = bytearray(_encode(image_la, "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        offset = ifd + 2 + 12 * entry
        if struct.unpack_from("<H", data, offset)[0] == 338:
            struct.pack_into("<H", data, offset + 8, 1)
    return bytes(data)


def _transparent_disk(mode: str) -> Image.Image:
    """A black disk on a fully transparent background, in the given mode."""
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((16, 16, 48, 48), fill=(0, 0, 0, 255))
    return rgba if mode == "RGBA" else rgba.convert(mode)


def _palette_disk() -> Image.Image:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 0, 0, 0])
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=1)
    return image


def _colour_keyed_disk_png() -> bytes:
    image = Image.new("RGB", (64, 64), (0, 255, 0))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=BLACK)
    return _encode(image, "PNG", transparency=(0, 255, 0))


# --- rejections ---------------------------------------------------------------------------------


def test_zero_bytes_is_rejected_as_empty() -> None:
    assert _rejection(b"").reason == "empty"


def test_file_over_the_upload_limit_is_too_large_and_names_the_setting() -> None:
    data = _encode(_noise(512, 512), "PNG")
    rejected = _rejection(data, max_bytes=len(data) - 1)
    assert rejected.reason == "too_large"
    assert "MAX_UPLOAD_MB" in str(rejected)
    assert _prepare(data, max_bytes=len(data)).size_bytes == len(data)


def test_text_file_named_png_is_not_an_image(tmp_path) -> None:
    fake = tmp_path / "holiday.png"
    fake.write_text("these are my holiday notes, not a picture\n")
    rejected = _rejection(fake.read_bytes())
    assert rejected.reason == "not_an_image"
    assert "JPEG" in str(rejected)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, "AVIF"),
        (_encode(_noise(32, 32), "ICO"), "ICO"),
        (b"8BPS\x00\x01" + b"\x00" * 64, "PSD"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_recognised_image_types_we_do_not_accept_are_unsupported(data: bytes, named: str) -> None:
    rejected = _rejection(data)
    assert rejected.reason == "unsupported_type"
    assert named in str(rejected)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_truncated_file_is_corrupt_not_grey_filled(fmt: str, params: dict, kept: float) -> None:
    data = _encode(_noise(256, 256), fmt, **params)
    rejected = _rejection(data[: int(len(data) * kept)])
    assert rejected.reason == "corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_valid_signature_followed_by_garbage_is_corrupt() -> None:
    assert _rejection(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20).reason == "corrupt"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 30_000])
def test_decompression_bomb_is_refused_from_its_header(side: int) -> None:
    bomb = _blank_bilevel_png(side, side)
    assert len(bomb) < 1_000_000
    rejected = _rejection(bomb)
    assert rejected.reason == "too_many_pixels"
    assert f"{side}x{side}" in str(rejected)


def test_gif_frame_that_grows_the_canvas_past_pillows_limit_is_too_many_pixels() -> None:
    assert _rejection(_gif_with_frame_beyond_canvas(20_000, 20_000)).reason == "too_many_pixels"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_the_callers_not_pillows_global(monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    data = _encode(_noise(100, 100), "PNG")
    assert _prepare(data, max_pixels=10_000).width == 100
    assert _rejection(data, max_pixels=9_999).reason == "too_many_pixels"


def test_unknown_rejection_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown rejection reason"):
        ImageRejected("blurry", "The photo is blurry.")


# --- normalisation ------------------------------------------------------------------------------


def test_cmyk_jpeg_keeps_its_colours() -> None:
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))
    ImageDraw.Draw(cmyk).rectangle((0, 32, 63, 63), fill=(255, 255, 0, 0))
    prepared = _prepare(_encode(cmyk, "JPEG", quality=95))
    assert prepared.model_image.mode == "RGB"
    assert _near(_pixel(prepared, 32, 8), RED, 20)
    assert _near(_pixel(prepared, 32, 56), BLUE, 20)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_not_clipped(fmt: str) -> None:
    ramp = (np.arange(256, dtype=np.uint16) * 257)[None, :].repeat(8, 0)
    source = Image.fromarray(ramp)
    assert source.mode == "I;16"
    pixels = np.asarray(_prepare(_encode(source, fmt)).model_image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels[0, :, 0].tolist() == list(range(256))


def test_exif_orientation_rotates_pixels_and_swaps_reported_size() -> None:
    stored = Image.new("RGB", (1200, 600), BLUE)
    ImageDraw.Draw(stored).rectangle((0, 0, 599, 299), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    prepared = _prepare(_encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert (prepared.width, prepared.height) == (600, 1200)
    shown_width, _ = prepared.model_image.size
    assert _near(_pixel(prepared, shown_width - 10, 10), RED, 30)
    assert _near(_pixel(prepared, 10, 10), BLUE, 30)


@pytest.mark.parametrize(("fmt", "params"), [("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_multi_frame_file_uses_its_first_frame(fmt: str, params: dict) -> None:
    red, green, blue = (Image.new("RGB", (32, 32), colour) for colour in (RED, (0, 255, 0), BLUE))
    data = _encode(red, fmt, save_all=True, append_images=[green, blue], duration=100, **params)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert _near(_pixel(_prepare(data), 16, 16), RED, 2)


@pytest.mark.parametrize(
    "data",
    [
        _encode(_transparent_disk("RGBA"), "PNG"),
        _encode(_transparent_disk("LA"), "PNG"),
        _encode(_palette_disk(), "PNG", transparency=0),
        _encode(_palette_disk(), "GIF", transparency=0),
        _encode(_transparent_disk("RGBA"), "WEBP", lossless=True),
        _colour_keyed_disk_png(),
        _premultiplied_grey_alpha_tiff(_transparent_disk("LA")),
    ],
    ids=["rgba-png", "la-png", "palette-png", "gif", "rgba-webp", "colour-key-png", "premultiplied-tiff"],
)
def test_transparent_background_becomes_white_not_black(data: bytes) -> None:
    prepared = _prepare(data)
    assert _pixel(prepared, 2, 2) == WHITE
    assert _pixel(prepared, 61, 61) == WHITE
    assert _pixel(prepared, 32, 32) == BLACK


def test_half_transparent_colour_is_blended_with_white() -> None:
    prepared = _prepare(_encode(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"))
    assert _near(_pixel(prepared, 4, 4), (255, 127, 127), 1)


def test_different_transparent_icons_get_different_phashes() -> None:
    square = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(square).rectangle((4, 4, 30, 59), fill=(0, 0, 0, 255))
    disk = _prepare(_encode(_transparent_disk("RGBA"), "PNG"))
    bar = _prepare(_encode(square, "PNG"))
    assert _bits_apart(disk.phash, bar.phash) >= 8


# --- sizes, thumbnail and model image ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_image_reports_full_size_but_is_worked_on_reduced(fmt: str) -> None:
    prepared = _prepare(_encode(_gradient(4000, 3000), fmt))
    assert (prepared.width, prepared.height, prepared.format) == (4000, 3000, fmt)
    assert prepared.model_image.mode == "RGB"
    assert 224 <= min(prepared.model_image.size) < 3000
    thumbnail = Image.open(io.BytesIO(prepared.thumbnail))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (256, 192)


def test_jpeg_and_png_of_one_photo_are_worked_on_alike() -> None:
    picture = _gradient(1024, 768)
    ImageDraw.Draw(picture).ellipse((100, 100, 500, 600), fill=BLACK)
    as_jpeg = _prepare(_encode(picture, "JPEG", quality=90))
    as_png = _prepare(_encode(picture, "PNG"))
    assert as_jpeg.model_image.size == as_png.model_image.size == (512, 384)
    assert _bits_apart(as_jpeg.phash, as_png.phash) <= 4
    assert _bits_apart(as_jpeg.dhash, as_png.dhash) <= 6


def test_small_image_thumbnail_is_not_enlarged() -> None:
    prepared = _prepare(_encode(_noise(100, 50), "PNG"))
    assert Image.open(io.BytesIO(prepared.thumbnail)).size == (100, 50)
    assert prepared.model_image.size == (100, 50)


# --- identities and hashes ----------------------------------------------------------------------


def test_sha256_is_of_the_original_bytes_and_image_id_derives_from_it() -> None:
    data = _encode(_noise(64, 48), "PNG")
    prepared = _prepare(data)
    assert prepared.sha256 == hashlib.sha256(data).hexdigest()
    assert prepared.size_bytes == len(data)
    assert image_id(prepared.sha256) == str(uuid.UUID(prepared.sha256[:32]))


def test_image_id_is_stable_across_releases() -> None:
    assert image_id("0123456789abcdef" * 4) == "01234567-89ab-cdef-0123-456789abcdef"


def test_same_pixels_in_lossless_formats_share_pixel_sha256_only() -> None:
    picture = _noise(64, 48)
    files = [
        _encode(picture, "PNG"),
        _encode(picture, "BMP"),
        _encode(picture, "WEBP", lossless=True),
        _encode(picture, "TIFF"),
    ]
    prepared = [_prepare(data) for data in files]
    assert len({p.pixel_sha256 for p in prepared}) == 1
    assert len({p.sha256 for p in prepared}) == len(files)
    picture.putpixel((10, 10), (1, 2, 3))
    assert _prepare(_encode(picture, "PNG")).pixel_sha256 != prepared[0].pixel_sha256


def test_same_pixel_bytes_in_a_different_shape_are_not_the_same_picture() -> None:
    samples = np.random.default_rng(1).integers(0, 256, 4 * 3 * 3, dtype=np.uint8)
    wide = _prepare(_encode(Image.fromarray(samples.reshape(3, 4, 3)), "PNG"))
    tall = _prepare(_encode(Image.fromarray(samples.reshape(4, 3, 3)), "PNG"))
    assert wide.pixel_sha256 != tall.pixel_sha256


def test_jpeg_metadata_does_not_change_pixel_sha256() -> None:
    picture = _gradient(640, 480)
    exif = Image.Exif()
    exif[0x010F] = "Example Camera"
    bare = _prepare(_encode(picture, "JPEG", quality=85))
    tagged = _prepare(_encode(picture, "JPEG", quality=85, exif=exif.tobytes(), comment=b"edited"))
    assert bare.sha256 != tagged.sha256
    assert bare.pixel_sha256 == tagged.pixel_sha256


def test_mirrored_copy_is_caught_by_phash_mirror() -> None:
    picture = _gradient(320, 240)
    ImageDraw.Draw(picture).ellipse((20, 60, 120, 160), fill=BLACK)
    original = _prepare(_encode(picture, "PNG"))
    mirrored = _prepare(_encode(ImageOps.mirror(picture), "PNG"))
    assert _bits_apart(original.phash, mirrored.phash) >= 16
    assert _bits_apart(original.phash_mirror, mirrored.phash) <= 2


def test_hashes_are_imagehash_values_of_the_model_image() -> None:
    prepared = _prepare(_encode(_gradient(1024, 768), "JPEG"))
    assert prepared.phash == str(imagehash.phash(prepared.model_image, hash_size=8))
    assert prepared.dhash == str(imagehash.dhash(prepared.model_image, hash_size=8))
    assert len(prepared.phash) == len(prepared.phash_mirror) == len(prepared.dhash) == 16


@pytest.mark.parametrize(
    "hex16", ["0000000000000000", "7fffffffffffffff", "8000000000000000", "ffffffffffffffff"]
)
def test_hashes_round_trip_through_signed_64_bit_integers(hex16: str) -> None:
    value = hex_to_int64(hex16)
    assert -(2**63) <= value < 2**63
    assert int64_to_hex(value) == hex16


# --- format sniffing ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_accepted_types_are_sniffed_and_reported(fmt: str) -> None:
    data = _encode(_noise(32, 32), fmt)
    assert sniff_format(data) == fmt
    assert _prepare(data).format == fmt


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "AVIF"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00", "ICO"),
        (b"8BPS\x00\x01\x00\x00", "PSD"),
        (b"  <svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
        (b"\xff\x0a\xfa\x7f", "JXL"),
        (b"hello, world", None),
        (b"BMW owners' manual", None),
        (b"%PDF-1.7\n", None),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<!doctype html><html><body><svg></svg></body></html>", None),
    ],
)
def test_sniff_format_reads_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


# --- concurrency --------------------------------------------------------------------------------


def _observable(prepared: PreparedImage) -> tuple:
    return (prepared.sha256, prepared.pixel_sha256, prepared.phash, prepared.dhash, prepared.thumbnail)


def test_concurrent_calls_give_the_same_results_as_sequential_ones() -> None:
    files = [_encode(_noise(700, 500, seed), fmt) for seed, fmt in enumerate(["JPEG", "PNG", "WEBP", "GIF"])]
    expected = [_observable(_prepare(data)) for data in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda data: _observable(_prepare(data)), files * 6))
    assert results == expected * 6
