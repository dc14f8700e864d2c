"""Decode untrusted image bytes into RGB arrays, or reject them with a classified reason.

The embedding job reads whatever a real catalog holds: phone photos with EXIF
rotation, CMYK print JPEGs, 16-bit PNGs, transparent logos, animated GIFs, but
also error pages saved as `.jpg`, empty uploads and decompression bombs. These
functions are plain Python (no Beam) so a DoFn, the encoder training and tests
share exactly the same pixels. Everything that cannot become an image raises
`ImageRejected` with an `error_type` from `images.reject_reasons`; any
other exception means a bug here or an invalid argument, not a bad file.

Thread safety: Pillow releases the GIL while decoding and nothing here touches
global state (no `warnings.catch_warnings`, no `Image.MAX_IMAGE_PIXELS`
changes), so many threads may decode at once.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Register the plugins of PILLOW_FORMATS at import time, once, instead of Pillow's lazy
# all-plugins init() on the first AVIF/WebP/TIFF file (possibly from several threads at once).
from PIL import AvifImagePlugin, BmpImagePlugin, GifImagePlugin, JpegImagePlugin  # noqa: F401  isort: skip
from PIL import PngImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401  isort: skip

from images import formats, reject_reasons
from images.formats import Kind
from images.reject_reasons import ImageRejected
from images.rgb_pixels import UnsupportedPixelMode, to_rgb_array

# Defaults for callers without their own limits. 80 MP covers 48/50/64 MP phone
# photos and stays below Pillow's own bomb threshold (Image.MAX_IMAGE_PIXELS,
# about 89.5 MP). Peak memory while decoding is about 10 bytes per pixel (Pillow
# holds RGB at 4 bytes/pixel, then the 3 bytes/pixel array is exported): ~800 MB
# for an 80 MP image, much less with target_size for JPEGs.
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_PIXELS = 80_000_000

RESIZE_MODES = ("squash", "center_crop")
# Bicubic with antialiasing (Pillow widens the kernel when downscaling) gives
# sharp, alias-free thumbnails; reducing_gap=3 lets Pillow first shrink by an
# integer box factor while keeping 3x the target size, which makes large
# downscales several times faster with a result Pillow documents as
# indistinguishable from full resampling.
RESIZE_FILTER = Image.Resampling.BICUBIC
RESIZE_REDUCING_GAP = 3.0

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """A decoded, upright image.

    `rgb` is HxWx3 uint8 (treat as read-only). With `target_size`, JPEGs are
    decoded at a reduced DCT scale, so `rgb` may be smaller than width x height;
    `width` and `height` are always the ORIGINAL dimensions after EXIF
    orientation, which is what the embeddings table records.
    """

    rgb: np.ndarray
    width: int
    height: int
    format: str  # JPEG, PNG, GIF, BMP, TIFF, WEBP or AVIF


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    uri: str = "",
    target_size: int | None = None,
) -> DecodedImage:
    """Decodes `data` into an upright RGB image, or raises ImageRejected.

    Checks run cheapest first and before any pixel memory is allocated: byte
    length, magic bytes, then the dimensions Pillow reads from the header
    (`Image.open` is lazy) against `max_pixels`; only then are pixels decoded.
    Multi-frame files (animated GIF/WebP, multi-page TIFF) yield their first
    frame. `target_size` (the model's input side) lets JPEGs decode at 1/2, 1/4
    or 1/8 scale while keeping both sides >= target_size: for a 12 MP photo and
    a 224 px model that is most of the decode time and memory saved.
    """
    _check_arguments(data, max_bytes, max_pixels, target_size)
    where = f"{uri}: " if uri else ""
    if not data:
        raise ImageRejected(
            reject_reasons.EMPTY, f"{where}zero bytes: the file is empty (an interrupted upload or copy?)"
        )
    if len(data) > max_bytes:
        raise ImageRejected(
            reject_reasons.TOO_LARGE, f"{where}{len(data)} bytes exceeds the limit of max_bytes={max_bytes}"
        )
    sniffed = formats.sniff(data)
    if sniffed.kind in (Kind.NOT_IMAGE, Kind.UNSUPPORTED_IMAGE):
        raise ImageRejected(reject_reasons.UNSUPPORTED_FORMAT, f"{where}{sniffed.description}")

    image = _open_lazily(data, sniffed, where)
    with image:
        image_format = "JPEG" if image.format == "MPO" else str(image.format)
        width, height = image.size
        _check_dimensions(width, height, max_pixels, image_format, where)
        if target_size is not None and image_format == "JPEG":
            image.draft("RGB", (target_size, target_size))
        _load_pixels(image, image_format, where)
        upright, turned = _apply_exif_orientation(image)
        try:
            rgb = to_rgb_array(upright)
        except UnsupportedPixelMode as error:
            raise ImageRejected(reject_reasons.UNSUPPORTED_FORMAT, f"{where}{image_format} image: {error}") from None
    if turned:
        width, height = height, width
    return DecodedImage(rgb=rgb, width=width, height=height, format=image_format)


def resize_for_model(rgb: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """Resizes an HxWx3 uint8 image to size x size x 3 uint8 for the encoder.

    "squash" stretches the whole picture to a square (nothing is lost, aspect
    changes); "center_crop" keeps the aspect ratio and cuts the longer side.
    Done here rather than in the model so the pipeline carries small arrays.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        described = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"resize_for_model expects an HxWx3 uint8 array (decode_image(...).rgb), got {described}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"resize_for_model got an empty image of shape {rgb.shape}")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "center_crop":
        # Crop first (rather than resize with a box) so no pixel outside the square bleeds in at the edges.
        height, width = rgb.shape[:2]
        side = min(width, height)
        top, left = (height - side) // 2, (width - side) // 2
        rgb = rgb[top : top + side, left : left + side]
    if rgb.shape[:2] == (size, size):
        return rgb
    resized = Image.fromarray(rgb).resize((size, size), RESIZE_FILTER, reducing_gap=RESIZE_REDUCING_GAP)
    return np.asarray(resized)


def _check_arguments(data: bytes, max_bytes: int, max_pixels: int, target_size: int | None) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects the file's bytes, got {type(data).__name__}")
    for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if target_size is not None and (not isinstance(target_size, int) or target_size <= 0):
        raise ValueError(f"target_size must be a positive int or None, got {target_size!r}")


def _open_lazily(data: bytes, sniffed: formats.Sniffed, where: str) -> Image.Image:
    """Reads only the header; Pillow's own bomb check also runs here and is mapped to too_large."""
    try:
        return Image.open(io.BytesIO(data), formats=formats.PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # The warning only arrives as an exception when warnings are turned into errors (e.g. pytest -W error).
        raise ImageRejected(reject_reasons.TOO_LARGE, f"{where}{_bomb_message(error)}") from None
    except Image.UnidentifiedImageError:
        if sniffed.kind is Kind.SUPPORTED_IMAGE:
            raise ImageRejected(
                reject_reasons.UNDECODABLE, f"{where}starts like a {sniffed.description} but its header is corrupt"
            ) from None
        raise ImageRejected(reject_reasons.UNSUPPORTED_FORMAT, f"{where}{sniffed.description}") from None
    except MemoryError:
        raise
    except Exception as error:  # Pillow plugins raise many types (OSError, SyntaxError, struct.error, ...)
        raise ImageRejected(
            reject_reasons.UNDECODABLE, f"{where}{sniffed.description} header cannot be read: {_describe(error)}"
        ) from None


def _check_dimensions(width: int, height: int, max_pixels: int, image_format: str, where: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(
            reject_reasons.UNDECODABLE, f"{where}{image_format} header declares {width}x{height} pixels"
        )
    if width * height > max_pixels:
        raise ImageRejected(
            reject_reasons.TOO_LARGE,
            f"{where}{image_format} of {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
            "(refused before decoding: a possible decompression bomb)",
        )


def _load_pixels(image: Image.Image, image_format: str, where: str) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Truncated files must fail loudly: a half-grey picture would be embedded as if it were real.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some imported code); decode_image needs it False "
            "so truncated files are rejected instead of embedded half grey"
        )
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(reject_reasons.TOO_LARGE, f"{where}{_bomb_message(error)}") from None
    except MemoryError:
        raise
    except Exception as error:
        raise ImageRejected(
            reject_reasons.UNDECODABLE, f"{where}{image_format} data is corrupt or truncated: {_describe(error)}"
        ) from None


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, bool]:
    """Returns the upright image and whether width and height swapped.

    A broken EXIF block is not a reason to lose a good picture: if the
    orientation cannot be read or applied, the pixels are used as stored.
    """
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
        if orientation not in range(2, 9):
            return image, False
        return ImageOps.exif_transpose(image), orientation in _SWAPS_AXES
    except MemoryError:
        raise
    except Exception:
        return image, False


def _bomb_message(error: Exception) -> str:
    return (
        f"image dimensions exceed Pillow's decompression-bomb limit "
        f"(PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}): {error}"
    )


def _describe(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
