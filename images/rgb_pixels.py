"""Turn a loaded Pillow image of any pixel mode into an 8-bit RGB numpy array.

The encoder sees only HxWx3 uint8, so every mode a real catalog produces has
to land there the way a person would see the picture: transparent areas become
white (the usual page background), grayscale is replicated to three channels,
and 16-bit data is rescaled (Pillow's own `convert("L")` clips 16-bit values
at 255, which turns most 16-bit photos into a white sheet).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# Modes Pillow converts to RGB correctly on its own (CMYK uses Adobe's inverted
# convention for JPEG, which the JPEG plugin already undoes when reading).
_DIRECT_TO_RGB_MODES = {"1", "L", "P", "CMYK", "YCbCr", "RGBX", "LAB", "HSV"}


class UnsupportedPixelMode(ValueError):
    """A pixel mode we cannot map to RGB faithfully."""


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Returns the loaded `image` as a C-contiguous HxWx3 uint8 array (possibly read-only)."""
    mode = image.mode
    if mode == "RGB":
        return _as_uint8_array(image)
    if mode in _ALPHA_MODES or _has_transparency_key(image):
        return composite_over_white(_as_uint8_array(image.convert("RGBA")))
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scale_16_bit(np.asarray(image)))
    if mode == "I":
        # 32-bit integer images come from 16-bit sources (older PNG/TIFF readers), so read them as 16-bit.
        return _gray_to_rgb(_scale_16_bit(np.clip(np.asarray(image), 0, 65535)))
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(image)))
    if mode in _DIRECT_TO_RGB_MODES:
        return _as_uint8_array(image.convert("RGB"))
    raise UnsupportedPixelMode(f"pixel mode {mode!r} cannot be converted to RGB")


def composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """Blends an HxWx4 uint8 array over a white background; exact integer arithmetic, rounded."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    color = rgba[..., :3].astype(np.uint16)
    # color*alpha + 255*(255-alpha) <= 255*255, so uint16 cannot overflow even with the +127 rounding term.
    blended = (color * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def _has_transparency_key(image: Image.Image) -> bool:
    """True for palette/gray/RGB images whose transparency is a tRNS key rather than an alpha channel."""
    return image.mode in {"P", "L", "RGB"} and "transparency" in image.info


def _scale_16_bit(values: np.ndarray) -> np.ndarray:
    """Maps 0..65535 onto 0..255 with rounding (v / 257), so 65535 -> 255 and 32768 -> 128."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Floating-point images: [0, 1] data is scaled to 0..255, anything else is taken as 0..255 and clipped."""
    finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    if finite.size and finite.max() <= 1.0:
        finite = finite * 255.0
    return np.clip(np.rint(finite), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., np.newaxis], 3, axis=2))


def _as_uint8_array(image: Image.Image) -> np.ndarray:
    # np.asarray wraps Pillow's exported buffer without a second copy (np.array is ~3x slower on large
    # images), at the price of a read-only array: callers copy before writing.
    return np.asarray(image, dtype=np.uint8)
