"""Turn uploaded bytes into the one record every store and analysis works from.

Each uploaded file is checked, decoded once at the size the work needs, normalised to RGB, and
summarised: content hashes (exact duplicates), perceptual hashes (near duplicates, mirrored copies),
a gallery thumbnail and an image for the embedding model. Everything a user can get wrong about a
file surfaces as one `ImageRejected` with a stable `reason` code and a sentence saying what to do.

Decoding goes straight to the Pillow plugin of the format sniffed from the bytes, never through
`Image.open`: no other plugin ever sees the data, and `max_pixels` is checked from the header
before any pixel is decoded, instead of Pillow's process-wide `MAX_IMAGE_PIXELS`, which below
twice its limit only warns. (Pillow still applies its own limit to GIF frames that grow the
canvas and to TIFF tiles; its error becomes "too_many_pixels" here.) Nothing here changes global
Pillow or warnings state, so calls are safe from several threads.
"""

from __future__ import annotations

import hashlib
import io
import struct
import uuid
import zlib
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from core.image_properties import ImageProperties, image_properties
from core.observability import timed

REJECTION_REASONS = frozenset(
    {"empty", "too_large", "not_an_image", "unsupported_type", "corrupt", "too_many_pixels", "unreadable",
     "being_purged", "not_a_file", "outside_folder", "invalid_name"}
)

_DECODERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "TIFF": TiffImagePlugin.TiffImageFile,
}
ACCEPTED_FORMATS = frozenset(_DECODERS)
MEDIA_TYPES: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                               "BMP": "image/bmp", "TIFF": "image/tiff"}  # by accepted format

# Prefixes of image types we recognise, accepted or not; checked in order.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (b"\xffO\xffQ", "JPEG2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),
    (b"\xff\n", "JXL"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"v/1\x01", "EXR"),
)
_BMP_INFO_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

THUMBNAIL_MAX_SIDE = 256
DIFFERENCE_MAX_SIDE = 512  # the pair inspector's difference image: enough to see an edit, cheap to send
DIFFERENCE_ASPECT_TOLERANCE = 0.02  # shapes further apart than this are not aligned pixel for pixel
MODEL_MIN_SIDE = 224
# Pixels are decoded and hashed at a size whose shorter side is at least this: enough for both
# the thumbnail and the model, and far cheaper than full resolution for camera photos.
_WORK_MIN_SIDE = max(THUMBNAIL_MAX_SIDE, MODEL_MIN_SIDE)
_THUMBNAIL_QUALITY = 85
_HASH_SIZE = 8  # 64-bit hashes, 16 hex characters
_PHASH_INPUT_SIDE = 4 * _HASH_SIZE  # imagehash.phash's highfreq_factor is 4
# A colour miniature for finding crops (core.analysis.crops): 16 x 16 RGB, 768 bytes.
SKETCH_SIDE = 16
_WHITE = (255, 255, 255)
_MB = 1024 * 1024

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow raises on malformed data, from header parsing to the last scanline.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageRejected(ValueError):
    """A file that cannot become an image in the collection.

    `reason` is a short stable code for programs (metrics, API answers); str(exc) is a sentence
    for the user saying what was wrong and what to do.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}; use one of {sorted(REJECTION_REASONS)}")
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PreparedImage:
    """Everything ingestion stores or analyses about one accepted file."""

    sha256: str
    pixel_sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    phash: str
    phash_mirror: str
    dhash: str
    sketch: bytes = field(repr=False)  # SKETCH_SIDE x SKETCH_SIDE RGB pixels, row-major
    thumbnail: bytes = field(repr=False)
    model_image: Image.Image = field(repr=False)
    properties: ImageProperties  # measured from the same decoded pixels (core.image_properties)


def sniff_format(data: bytes) -> str | None:
    """Name the image type from the bytes alone; None when they are not an image we recognise.

    File names and declared content types lie; the magic bytes decide. Recognised types we do
    not accept (HEIC, AVIF, ICO, PSD, SVG, ...) are named too, so the user hears "convert it"
    rather than "this is not an image".
    """
    if data[4:8] == b"ftyp":
        return _sniff_iso_media(data)
    for prefix, name in _SIGNATURES:
        if data.startswith(prefix):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and len(data) >= 18 and _u32le(data, 14) in _BMP_INFO_HEADER_SIZES:
        return "BMP"
    if _looks_like_svg(data):
        return "SVG"
    return None


def image_id(sha256_hex: str) -> str:
    """The id every store uses for an image: a UUID made from the first half of its SHA-256."""
    if len(sha256_hex) != 64:
        raise ValueError(f"expected a 64-character hex SHA-256, got {len(sha256_hex)} characters")
    return str(uuid.UUID(sha256_hex[:32]))


def hex_to_int64(hex16: str) -> int:
    """A 64-bit hash in hex as the signed integer SQL BIGINT columns can hold."""
    if len(hex16) != 16:
        raise ValueError(f"expected 16 hex characters, got {hex16!r}")
    value = int(hex16, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def int64_to_hex(value: int) -> str:
    """Inverse of `hex_to_int64`."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{value} does not fit in a signed 64-bit integer")
    return f"{value & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def prepare_image(data: bytes, *, max_bytes: int, max_pixels: int) -> PreparedImage:
    """Check, decode and summarise one uploaded file, or raise ImageRejected saying why not.

    Checks run cheapest first, and the pixel count is checked from the header, so oversized and
    hostile files are refused before any pixel is decoded.
    """
    if max_bytes <= 0 or max_pixels <= 0:
        raise ValueError(f"max_bytes and max_pixels must be positive, got {max_bytes} and {max_pixels}")
    fmt = _check_type(data, max_bytes)
    image = _open_header(data, fmt)
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    if fmt == "JPEG":
        _check_jpeg_covers(data, width, height)
    if _decode(image, fmt):
        width, height = height, width
    rgb, alpha = _flatten(image)
    work = _work_size(rgb)
    grey = work.convert("L")
    # imagehash.phash starts by resizing to 32x32 with LANCZOS; doing that once here serves both
    # orientations (a same-size resize is a copy, so the hashes are imagehash's own).
    phash_input = grey.resize((_PHASH_INPUT_SIDE, _PHASH_INPUT_SIDE), Image.Resampling.LANCZOS)
    with timed("sketch"):
        crop_sketch = sketch(work)
    with timed("thumbnail"):
        thumbnail = _thumbnail_jpeg(work)
    with timed("properties"):
        properties = image_properties(work, None if alpha is None else _work_size(alpha), width=width,
                                      height=height, size_bytes=len(data))
    return PreparedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_sha256=_pixel_sha256(rgb),
        format=fmt,
        width=width,
        height=height,
        size_bytes=len(data),
        phash=str(imagehash.phash(phash_input, hash_size=_HASH_SIZE)),
        phash_mirror=str(
            imagehash.phash(phash_input.transpose(Image.Transpose.FLIP_LEFT_RIGHT), hash_size=_HASH_SIZE)
        ),
        dhash=str(imagehash.dhash(grey, hash_size=_HASH_SIZE)),
        sketch=crop_sketch,
        thumbnail=thumbnail,
        model_image=work,
        properties=properties,
    )


def sketch(rgb: Image.Image) -> bytes:
    """The image squeezed to SKETCH_SIDE squared RGB pixels (the aspect is dropped, as pHash drops it)."""
    return rgb.resize((SKETCH_SIDE, SKETCH_SIDE), Image.Resampling.LANCZOS).tobytes()


def _check_type(data: bytes, max_bytes: int) -> str:
    """Reject by size and sniffed type; return the accepted format's name."""
    if not data:
        raise ImageRejected("empty", "The file is empty (0 bytes); upload it again, it was not received.")
    if len(data) > max_bytes:
        raise ImageRejected(
            "too_large",
            f"The file is {len(data) / _MB:.1f} MB, over the {max_bytes / _MB:.1f} MB upload limit; "
            "downscale or recompress it, or raise MAX_UPLOAD_MB.",
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            "not_an_image",
            "The file's contents are not an image, whatever its name says; upload a JPEG, PNG, WebP, "
            "GIF, BMP or TIFF file.",
        )
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRejected(
            "unsupported_type",
            f"{fmt} images are not supported; convert it to JPEG or PNG (or WebP, GIF, BMP, TIFF) "
            "and upload it again.",
        )
    return fmt


def _open_header(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Parse the header with the sniffed format's plugin only; no pixels are decoded yet."""
    try:
        return _DECODERS[fmt](io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from exc


def _decode(image: ImageFile.ImageFile, fmt: str) -> bool:
    """Decode the first frame completely and apply its EXIF orientation in place.

    Returns whether the orientation swapped width and height. JPEGs are decoded at 1/2, 1/4 or
    1/8 scale by libjpeg itself while the shorter side stays at least `_WORK_MIN_SIDE`; that is
    what keeps camera photos to a few milliseconds.
    """
    if fmt == "JPEG":
        image.draft("RGB", (_WORK_MIN_SIDE, _WORK_MIN_SIDE))
    try:
        image.load()
        decoded_size = image.size
        ImageOps.exif_transpose(image, in_place=True)
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from exc
    return image.size != decoded_size


# Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive, lossless); the
# arithmetic-coded ones (0xC9-0xCB, 0xCD-0xCF) can code a block in less than a bit.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _check_jpeg_covers(data: bytes, width: int, height: int) -> None:
    """Reject a JPEG too short to hold the picture its header announces.

    libjpeg meets an early end marker with a warning, not an error, and fills the rest with grey, so
    a few hundred bytes claiming 10000x10000 would decode "successfully" to a huge grey image. A
    Huffman code is at least one bit and every 8x8 block's DC coefficient gets one, so the data needs
    at least one bit per block of the full-resolution component: fewer bytes cannot be the image.
    """
    if _jpeg_frame_marker(data) not in _HUFFMAN_FRAMES:
        return
    blocks = -(-width // 8) * -(-height // 8)
    if len(data) * 8 < blocks:
        raise _corrupt("JPEG", ValueError(
            f"{len(data)} bytes cannot hold the {width}x{height} pixels the header announces; the data stops early"))


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The start-of-frame marker (its second byte) found by walking the JPEG's segments, or None."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in _HUFFMAN_FRAMES or marker in _ARITHMETIC_FRAMES:
            return marker
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to 8-bit RGB the way a viewer would show it (see :func:`_flatten`)."""
    return _flatten(image)[0]


def _flatten(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The picture in 8-bit RGB as a viewer shows it, and the source's alpha channel (None if opaque).

    Transparency is composited on white rather than dropped: dropping it turns transparent
    clip-art into a black square, and every such icon would then hash the same. The alpha is
    returned because the white page hides what was transparent (a fully transparent file).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image)
    elif image.mode == "La":
        image = image.convert("LA")  # Pillow cannot go from premultiplied La to RGBA directly.
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", image.size, _WHITE)
        flattened.paste(rgba, mask=rgba)
        return flattened, rgba.getchannel("A")
    return (image if image.mode == "RGB" else image.convert("RGB")), None


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit samples to 8 bits; Pillow's own conversion clips everything above 255 to white."""
    samples = np.asarray(image)
    if image.mode == "I":
        samples = np.clip(samples, 0, 0xFFFF)
    return Image.fromarray((samples >> 8).astype(np.uint8))


def _work_size(rgb: Image.Image) -> Image.Image:
    """Box-reduce large images so the shorter side is just above `_WORK_MIN_SIDE`.

    JPEGs mostly arrive reduced already. Reducing other formats by the same powers of two gives
    a JPEG and a PNG of one picture the same working size, so their hashes and embeddings stay
    close, and keeps hashing cheap.
    """
    factor = min(rgb.size) // _WORK_MIN_SIDE
    return rgb.reduce(1 << (factor.bit_length() - 1)) if factor >= 2 else rgb


def _pixel_sha256(rgb: Image.Image) -> str:
    """SHA-256 over the size and RGB bytes: equal for files that decode to the same picture."""
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}\n".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _thumbnail_jpeg(work: Image.Image) -> bytes:
    """A gallery JPEG whose longest side is at most THUMBNAIL_MAX_SIDE."""
    scale = THUMBNAIL_MAX_SIDE / max(work.size)
    if scale < 1:
        size = (max(1, round(work.width * scale)), max(1, round(work.height * scale)))
        work = work.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    work.save(out, "JPEG", quality=_THUMBNAIL_QUALITY)
    return out.getvalue()


def detail_picture(thumbnail: bytes, side: int) -> np.ndarray:
    """The stored thumbnail as (side, side) uint8 grey, squeezed as the sketch is: what
    `core.analysis.details` compares. A JPEG is decoded at a reduced scale (its DCT does the first
    halvings), so a 256-pixel thumbnail costs about a millisecond."""
    with Image.open(io.BytesIO(thumbnail)) as image:
        image.draft("L", (2 * side, 2 * side))
        grey = image.convert("L")
    return np.asarray(grey.resize((side, side), Image.Resampling.LANCZOS), dtype=np.uint8)


def difference_image(left: bytes, right: bytes, *, max_side: int = DIFFERENCE_MAX_SIDE,
                     aspect_tolerance: float = DIFFERENCE_ASPECT_TOLERANCE) -> bytes | None:
    """A PNG of where two aligned pictures differ (black = equal, bright = different), both scaled
    to the smaller one's size (at most ``max_side``); a mirrored copy is compared flipped back.

    ``None`` when the shapes differ by more than ``aspect_tolerance``: a crop or another framing
    is not aligned pixel for pixel, and its difference would show the misalignment, not the edit.
    """
    images = [_to_rgb(Image.open(io.BytesIO(data))) for data in (left, right)]
    ratios = [im.width / im.height for im in images]
    if abs(ratios[0] - ratios[1]) > aspect_tolerance * max(ratios):
        return None
    width, height = min(images, key=lambda im: im.width * im.height).size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    a, b = (np.asarray(im.resize(size, Image.Resampling.BILINEAR), dtype=np.int16) for im in images)
    difference = min((np.abs(a - b), np.abs(a - b[:, ::-1])), key=lambda d: int(d.sum()))
    out = io.BytesIO()
    Image.fromarray(difference.astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ImageRejected:
    return ImageRejected(
        "too_many_pixels",
        f"The image is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the limit of "
        f"{max_pixels / 1e6:.1f} megapixels; downscale it before uploading, or raise MAX_IMAGE_PIXELS.",
    )


def _bomb(exc: Image.DecompressionBombError) -> ImageRejected:
    return ImageRejected(
        "too_many_pixels",
        f"The image has more pixels than Pillow will decode safely ({exc}); downscale it before uploading.",
    )


def _corrupt(fmt: str, exc: Exception) -> ImageRejected:
    return ImageRejected(
        "corrupt",
        f"The {fmt} file is truncated or corrupt ({exc}); export or download it again and re-upload it.",
    )


def _u32le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _sniff_iso_media(data: bytes) -> str | None:
    """HEIC and AVIF share the ISO media container with MP4 video; the brands tell them apart."""
    box_end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box_end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIC"
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<svg", b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in head
