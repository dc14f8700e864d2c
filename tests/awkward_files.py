"""A folder of real, awkward image files and what the pipeline must do with each.

`write_awkward_catalog(directory)` writes every kind of file a real catalog
throws at the decoder (CMYK and YCCK JPEGs, EXIF rotation, 16-bit PNGs,
transparency, animations, multi-page TIFFs, but also empty files, truncated
JPEGs, HTML error pages named .jpg and decompression bombs) and returns, per
file name, the expected outcome. The decoding unit tests and the end-to-end
embedding-job test both assert against this one mapping, so the two can never
disagree about what "handled correctly" means.

Expectations hold for decode_image's default limits (DEFAULT_MAX_BYTES,
DEFAULT_MAX_PIXELS); every embeddable file here is tiny, and the smaller bomb
is sized just above DEFAULT_MAX_PIXELS.
"""

from __future__ import annotations

import dataclasses
import io
import math
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from images import reject_reasons
from images.decoding import DEFAULT_MAX_PIXELS

RED = (255, 0, 0)
BLUE = (0, 0, 255)
CMYK_RED = (0, 255, 255, 0)
CMYK_BLUE = (255, 255, 0, 0)
HUGE_BOMB_SIDE = 30_000  # 900 MP: also beyond Pillow's own 2 x MAX_IMAGE_PIXELS error threshold
LIMIT_BOMB_SIDE = math.isqrt(DEFAULT_MAX_PIXELS) + 1  # just over our limit, below Pillow's warning threshold


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What must happen to one file: embedded at width x height (upright), or rejected with error_type."""

    embed: bool
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error_type: str | None = None
    note: str = ""


def embedded(width: int, height: int, image_format: str, note: str) -> Expectation:
    return Expectation(embed=True, width=width, height=height, format=image_format, note=note)


def rejected(error_type: str, note: str) -> Expectation:
    assert error_type in reject_reasons.ERROR_TYPES
    return Expectation(embed=False, error_type=error_type, note=note)


def write_awkward_catalog(directory: Path) -> dict[str, Expectation]:
    """Writes the awkward files into `directory` (created if missing) and returns name -> Expectation."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expectations: dict[str, Expectation] = {}
    for name, (make_bytes, expectation) in _catalog().items():
        (directory / name).write_bytes(make_bytes())
        expectations[name] = expectation
    return expectations


def _catalog() -> dict[str, tuple[Callable[[], bytes], Expectation]]:
    return {
        # JPEG
        "jpeg_baseline.jpg": (lambda: _save(_noise(64, 48), "JPEG", quality=90), embedded(64, 48, "JPEG", "baseline")),
        "jpeg_progressive.jpg": (
            lambda: _save(_noise(64, 48), "JPEG", progressive=True, quality=90),
            embedded(64, 48, "JPEG", "progressive (SOF2)"),
        ),
        "jpeg_grayscale.jpg": (
            lambda: _save(_noise(40, 30).convert("L"), "JPEG"),
            embedded(40, 30, "JPEG", "single channel"),
        ),
        "jpeg_cmyk.jpg": (
            lambda: _save(_halves_cmyk(48, 32, CMYK_RED, CMYK_BLUE), "JPEG", quality=95),
            embedded(48, 32, "JPEG", "Adobe CMYK (inverted): left half red, right half blue"),
        ),
        "jpeg_ycck.jpg": (
            lambda: ycck_jpeg(48, 32, CMYK_RED, CMYK_BLUE),
            embedded(48, 32, "JPEG", "Adobe YCCK (transform=2): left half red, right half blue"),
        ),
        "jpeg_exif_orientation_6.jpg": (
            lambda: _save(_halves_rgb(40, 24, RED, BLUE), "JPEG", quality=95, exif=_orientation_exif(6)),
            embedded(24, 40, "JPEG", "stored 40x24 with red LEFT half; upright (rotated 90 CW) the red half is on TOP"),
        ),
        "jpeg_mpo_two_pictures.jpg": (
            lambda: _animation("MPO"),
            embedded(24, 16, "JPEG", "multi-picture (MPO) JPEG as phones write: red then blue; the first is used"),
        ),
        "café photo ü.jpg": (
            lambda: _save(_noise(32, 32), "JPEG"),
            embedded(32, 32, "JPEG", "unicode and spaces in the file name"),
        ),
        "actually_a_png.jpg": (
            lambda: _save(_noise(20, 10), "PNG"),
            embedded(20, 10, "PNG", "PNG content behind a .jpg name: format comes from the bytes"),
        ),
        # PNG
        "png_rgb.png": (lambda: _save(_noise(50, 40), "PNG"), embedded(50, 40, "PNG", "8-bit RGB")),
        "png_rgba.png": (
            lambda: _save(_alpha_bands(30, 20), "PNG"),
            embedded(30, 20, "PNG", "RGBA: transparent / half-transparent black / opaque red bands"),
        ),
        "png_palette_transparency.png": (
            lambda: _save(_palette_with_transparency(20, 10), "PNG", transparency=0),
            embedded(20, 10, "PNG", "palette, index 0 transparent (left half), red right half"),
        ),
        "png_gray_alpha.png": (
            lambda: _save(_gray_alpha(20, 10), "PNG"),
            embedded(20, 10, "PNG", "LA: transparent left half, opaque black right half"),
        ),
        "png_16bit_gray.png": (
            lambda: _save(Image.fromarray(_sixteen_bit_ramp(), mode="I;16"), "PNG"),
            embedded(3, 4, "PNG", "I;16 columns 65535, 32768, 0"),
        ),
        "png_48bit_rgb.png": (
            lambda: png_bytes(4, 3, 16, 2, [struct.pack(">" + "HHH" * 4, *((65535, 32768, 0) * 4))] * 3),
            embedded(4, 3, "PNG", "16 bits per channel RGB, every pixel (65535, 32768, 0)"),
        ),
        "png_tiny_1x1.png": (lambda: _save(Image.new("RGB", (1, 1), RED), "PNG"), embedded(1, 1, "PNG", "1x1")),
        # WebP
        "webp_lossy.webp": (lambda: _save(_noise(40, 30), "WEBP", quality=80), embedded(40, 30, "WEBP", "lossy")),
        "webp_lossless.webp": (
            lambda: _save(_noise(40, 30), "WEBP", lossless=True),
            embedded(40, 30, "WEBP", "lossless"),
        ),
        "webp_alpha.webp": (
            lambda: _save(_alpha_bands(30, 20), "WEBP", lossless=True),
            embedded(30, 20, "WEBP", "lossless with alpha bands like png_rgba.png"),
        ),
        "webp_animated.webp": (
            lambda: _animation("WEBP", lossless=True),
            embedded(24, 16, "WEBP", "two frames: red then blue; the first (red) is used"),
        ),
        # GIF, BMP, TIFF, AVIF
        "gif_static.gif": (lambda: _save(_noise(30, 20).convert("P"), "GIF"), embedded(30, 20, "GIF", "palette")),
        "gif_animated.gif": (
            lambda: _animation("GIF"),
            embedded(24, 16, "GIF", "two frames: red then blue; the first (red) is used"),
        ),
        "bmp_rgb.bmp": (lambda: _save(_noise(30, 20), "BMP"), embedded(30, 20, "BMP", "24-bit")),
        "tiff_rgb.tif": (
            lambda: _save(_noise(30, 20), "TIFF", compression="tiff_lzw"),
            embedded(30, 20, "TIFF", "LZW"),
        ),
        "tiff_16bit_gray.tif": (
            lambda: _save(Image.fromarray(_sixteen_bit_ramp(), mode="I;16"), "TIFF"),
            embedded(3, 4, "TIFF", "I;16 columns 65535, 32768, 0"),
        ),
        "tiff_multipage.tif": (
            lambda: _save(
                Image.new("RGB", (30, 20), RED), "TIFF", save_all=True, append_images=[Image.new("RGB", (50, 50), BLUE)]
            ),
            embedded(30, 20, "TIFF", "page 1 red 30x20, page 2 blue 50x50; the first page is used"),
        ),
        "avif_rgb.avif": (lambda: _save(_noise(32, 24), "AVIF", quality=80), embedded(32, 24, "AVIF", "AV1 still")),
        # Rejections
        "empty.jpg": (lambda: b"", rejected(reject_reasons.EMPTY, "zero bytes")),
        "truncated.jpg": (
            lambda: _truncated(_save(_noise(128, 96), "JPEG", quality=90), 0.6),
            rejected(reject_reasons.UNDECODABLE, "first 60% of a valid JPEG"),
        ),
        "corrupt_header.png": (
            lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
            rejected(reject_reasons.UNDECODABLE, "PNG signature followed by garbage"),
        ),
        "notes.jpg": (
            lambda: "Photo shoot notes:\n- retake the café shot\n- crop 4:3\n".encode(),
            rejected(reject_reasons.UNSUPPORTED_FORMAT, "plain text named .jpg"),
        ),
        "error_page.jpg": (
            lambda: (
                b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                b"<body><h1>Not Found</h1></body></html>\n"
            ),
            rejected(reject_reasons.UNSUPPORTED_FORMAT, "an HTML error page saved as .jpg"),
        ),
        "vector.svg": (
            lambda: (
                b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                b'<rect width="10" height="10" fill="red"/></svg>\n'
            ),
            rejected(reject_reasons.UNSUPPORTED_FORMAT, "SVG vector image"),
        ),
        "document.pdf": (lambda: _pdf_bytes(), rejected(reject_reasons.UNSUPPORTED_FORMAT, "PDF document")),
        "phone_photo.heic": (
            lambda: struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + bytes(64),
            rejected(reject_reasons.UNSUPPORTED_FORMAT, "HEIC container (not decoded by this pipeline)"),
        ),
        "random_bytes.jpg": (
            lambda: np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
            rejected(reject_reasons.UNSUPPORTED_FORMAT, "random binary data"),
        ),
        "pixel_bomb_30000.png": (
            lambda: uniform_bitmap_png(HUGE_BOMB_SIDE, HUGE_BOMB_SIDE),
            rejected(reject_reasons.TOO_LARGE, "valid 1-bit PNG of 30000x30000 (900 MP) in about 110 KB"),
        ),
        "pixel_bomb_just_over_limit.png": (
            lambda: uniform_bitmap_png(LIMIT_BOMB_SIDE, LIMIT_BOMB_SIDE),
            rejected(reject_reasons.TOO_LARGE, f"valid 1-bit PNG of {LIMIT_BOMB_SIDE}^2 pixels, just over max_pixels"),
        ),
    }


# Crafted files Pillow cannot write directly ------------------------------------------------------------------


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: Iterable[bytes]) -> bytes:
    """A PNG from raw scanlines (filter type 0 is prepended), streamed through zlib so huge images stay cheap."""
    compressor = zlib.compressobj(9)
    idat = bytearray()
    for row in rows:
        idat += compressor.compress(b"\x00" + row)
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b"")


def uniform_bitmap_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit grayscale PNG: dimensions of a bomb, size of a thumbnail."""
    row = bytes((width + 7) // 8)
    return png_bytes(width, height, 1, 0, (row for _ in range(height)))


def ycck_jpeg(width: int, height: int, left_cmyk: tuple[int, ...], right_cmyk: tuple[int, ...]) -> bytes:
    """A real Adobe YCCK JPEG (APP14 transform=2), which Pillow cannot write.

    libjpeg decodes YCCK as: (Y, Cb, Cr) -> RGB, then C = 255-R, M = 255-G,
    Y = 255-B, K unchanged; Pillow then undoes Adobe's inversion of all four.
    So we store the YCbCr of (c, m, y) and 255-k, and save those four planes
    through Pillow's CMYK writer (which itself inverts, hence the 255-x here),
    then flip the Adobe transform byte from 0 (CMYK) to 2 (YCCK).
    """
    cmyk = np.asarray(_halves_cmyk(width, height, left_cmyk, right_cmyk), dtype=np.float64)
    c, m, y, k = (cmyk[..., index] for index in range(4))
    luma = 0.299 * c + 0.587 * m + 0.114 * y
    chroma_b = 128 - 0.168736 * c - 0.331264 * m + 0.5 * y
    chroma_r = 128 + 0.5 * c - 0.418688 * m - 0.081312 * y
    stored = np.stack([luma, chroma_b, chroma_r, 255 - k], axis=-1)
    planes = np.clip(np.rint(255 - stored), 0, 255).astype(np.uint8)
    data = bytearray(_save(Image.fromarray(planes, mode="CMYK"), "JPEG", quality=95))
    marker = data.find(b"\xff\xee")
    while marker != -1 and data[marker + 4 : marker + 9] != b"Adobe":
        marker = data.find(b"\xff\xee", marker + 2)
    if marker == -1:
        raise RuntimeError("Pillow's CMYK JPEG has no Adobe APP14 marker; cannot craft a YCCK file")
    transform_offset = marker + 15  # FF EE, length(2), "Adobe"(5), version(2), flags0(2), flags1(2)
    assert data[transform_offset] == 0, "expected Adobe transform 0 (plain CMYK) from Pillow"
    data[transform_offset] = 2
    return bytes(data)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


# Pixel content -------------------------------------------------------------------------------------------------


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth-ish noise: compresses like a photo, unlike a flat color (so truncation cuts real scan data)."""
    rng = np.random.default_rng(seed + width * 1000 + height)
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    fine = rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image).astype(int) + fine, 0, 255).astype(np.uint8))


def _halves_rgb(width: int, height: int, left: tuple[int, ...], right: tuple[int, ...]) -> Image.Image:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return Image.fromarray(pixels)


def _halves_cmyk(width: int, height: int, left: tuple[int, ...], right: tuple[int, ...]) -> Image.Image:
    pixels = np.empty((height, width, 4), np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return Image.fromarray(pixels, mode="CMYK")


def _alpha_bands(width: int, height: int) -> Image.Image:
    """Three vertical bands: fully transparent black, 50% transparent black (alpha 128), opaque red."""
    pixels = np.zeros((height, width, 4), np.uint8)
    third = width // 3
    pixels[:, third : 2 * third, 3] = 128
    pixels[:, 2 * third :] = (255, 0, 0, 255)
    return Image.fromarray(pixels, mode="RGBA")


def _palette_with_transparency(width: int, height: int) -> Image.Image:
    indices = np.zeros((height, width), np.uint8)
    indices[:, width // 2 :] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 255, 0, *RED] + [0, 0, 0] * 254)  # index 0 is green, but transparent
    return image


def _gray_alpha(width: int, height: int) -> Image.Image:
    pixels = np.zeros((height, width, 2), np.uint8)
    pixels[:, width // 2 :, 1] = 255
    return Image.fromarray(pixels, mode="LA")


def _sixteen_bit_ramp() -> np.ndarray:
    """4 rows x 3 columns of 16-bit gray: 65535 | 32768 | 0."""
    return np.tile(np.array([65535, 32768, 0], np.uint16), (4, 1))


def _orientation_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _animation(image_format: str, **options: object) -> bytes:
    first, second = Image.new("RGB", (24, 16), RED), Image.new("RGB", (24, 16), BLUE)
    return _save(first, image_format, save_all=True, append_images=[second], duration=100, loop=0, **options)


def _truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]
