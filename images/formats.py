"""Recognize what a file is from its first bytes, for decisions and error messages.

Real catalogs contain error pages saved as `.jpg`, PDFs, SVGs and phone HEIC
photos. Looking at magic bytes (never at the file name) lets the decoder say
"HTML document, not an image" instead of Pillow's generic "cannot identify
image file", and lets it refuse formats we do not decode before handing the
bytes to Pillow's many plugins.
"""

from __future__ import annotations

import dataclasses
import enum


class Kind(enum.Enum):
    SUPPORTED_IMAGE = "supported_image"  # a format decode_image decodes
    UNSUPPORTED_IMAGE = "unsupported_image"  # an image, but in a format we do not decode
    NOT_IMAGE = "not_image"  # recognizably something else (text, HTML, PDF, archive...)
    UNKNOWN = "unknown"  # no signature matched


@dataclasses.dataclass(frozen=True)
class Sniffed:
    kind: Kind
    name: str  # short format name, e.g. "JPEG", "HTML"
    description: str  # phrase for error messages


# Pillow plugin names decode_image lets Image.open try; no others, so files never
# reach Pillow's rarely used plugins (EPS even runs Ghostscript). Multi-picture
# JPEGs from phones come back from the JPEG plugin with format "MPO".
PILLOW_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "AVIF")

_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _image(name: str) -> Sniffed:
    return Sniffed(Kind.SUPPORTED_IMAGE, name, f"{name} image")


def _unsupported(name: str, advice: str) -> Sniffed:
    return Sniffed(Kind.UNSUPPORTED_IMAGE, name, f"{name} image, a format this pipeline does not decode ({advice})")


def _not_image(name: str, description: str) -> Sniffed:
    return Sniffed(Kind.NOT_IMAGE, name, description)


def sniff(data: bytes) -> Sniffed:
    """Classifies `data` by its leading bytes; cheap (looks at most at the first 4 KiB)."""
    head = data[:4096]
    binary = _sniff_binary(head)
    if binary is not None:
        return binary
    textual = _sniff_text(head)
    if textual is not None:
        return textual
    preview = head[:8].hex(" ")
    return Sniffed(Kind.UNKNOWN, "unknown", f"unrecognized data (first bytes: {preview})")


def _sniff_binary(head: bytes) -> Sniffed | None:
    if head.startswith(b"\xff\xd8\xff"):
        return _image("JPEG")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _image("PNG")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _image("GIF")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _image("TIFF")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _image("WEBP")
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return _image("BMP")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return _image("AVIF")
        if brand in _HEIF_BRANDS:
            return _unsupported("HEIF/HEIC", "convert it to JPEG")
        return _not_image(
            "ISO-BMFF", f"ISO media file (brand {brand.decode('latin-1')!r}: video or audio), not an image"
        )
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return _unsupported("JPEG 2000", "convert it to JPEG")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return _unsupported("JPEG XL", "convert it to JPEG")
    if head.startswith(b"8BPS"):
        return _unsupported("PSD", "export it as JPEG or PNG")
    if head.startswith(b"\x00\x00\x01\x00"):
        return _unsupported("ICO", "icons are not catalog images")
    if head.startswith(b"%PDF"):
        return _not_image("PDF", "PDF document, not an image")
    if head.startswith(b"%!PS"):
        return _not_image("PostScript", "PostScript document, not an image")
    if head.startswith(b"PK\x03\x04"):
        return _not_image("ZIP", "ZIP archive (or an Office document), not an image")
    if head.startswith(b"\x1f\x8b"):
        return _not_image("GZIP", "gzip-compressed data, not an image (decompress it first)")
    return None


def _sniff_text(head: bytes) -> Sniffed | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the 4 KiB boundary is still text.
        if error.start < len(head) - 4:
            return None
        text = head[: error.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered[:2048] and lowered.startswith(("<svg", "<?xml", "<!doctype svg", "<!--")):
        return _not_image("SVG", "SVG vector image, not a raster image (rasterize it to PNG first)")
    if lowered.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in lowered[:512]:
        return _not_image(
            "HTML", "HTML document, not an image (often a web server's error page saved under an image name)"
        )
    if lowered.startswith("<?xml"):
        return _not_image("XML", "XML document, not an image")
    if lowered.startswith(("{", "[")):
        return _not_image("JSON", "JSON or other text document, not an image")
    printable = sum(character.isprintable() or character in "\t\r\n" for character in text)
    if text and printable / len(text) > 0.95:
        return _not_image("text", "text file, not an image")
    return None
