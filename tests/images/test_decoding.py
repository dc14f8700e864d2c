"""decode_image on real awkward files: what gets embedded looks right, everything else is rejected with a reason."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from images import formats, reject_reasons
from images.decoding import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DecodedImage, decode_image, resize_for_model
from images.reject_reasons import ImageRejected
from tests import ROOT, awkward_files
from tests.awkward_files import Expectation, write_awkward_catalog

DECODING_ERROR_TYPES = {
    reject_reasons.EMPTY,
    reject_reasons.TOO_LARGE,
    reject_reasons.UNSUPPORTED_FORMAT,
    reject_reasons.UNDECODABLE,
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expectation]]:
    directory = tmp_path_factory.mktemp("awkward")
    return directory, write_awkward_catalog(directory)


def decode_file(directory: Path, name: str, **limits: int) -> DecodedImage:
    options = {"max_bytes": DEFAULT_MAX_BYTES, "max_pixels": DEFAULT_MAX_PIXELS, **limits}
    return decode_image((directory / name).read_bytes(), uri=name, **options)


def rejection_of(directory: Path, name: str) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_file(directory, name)
    return caught.value


def outcome(directory: Path, name: str) -> str:
    try:
        decoded = decode_file(directory, name)
    except ImageRejected as rejection:
        return f"rejected {rejection.error_type}"
    return f"embedded {decoded.width}x{decoded.height} {decoded.format} array {decoded.rgb.shape} {decoded.rgb.dtype}"


def expected_outcome(expectation: Expectation) -> str:
    if not expectation.embed:
        return f"rejected {expectation.error_type}"
    shape = (expectation.height, expectation.width, 3)
    return f"embedded {expectation.width}x{expectation.height} {expectation.format} array {shape} uint8"


# The catalog as a whole ----------------------------------------------------------------------------------------


def test_every_awkward_file_is_classified_as_expected(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, expectations = catalog
    assert sorted(path.name for path in directory.iterdir()) == sorted(expectations)
    mismatches = {
        name: (expected_outcome(expectation), outcome(directory, name))
        for name, expectation in expectations.items()
        if outcome(directory, name) != expected_outcome(expectation)
    }
    assert not mismatches, json.dumps(mismatches, indent=1, ensure_ascii=False)


def test_catalog_exercises_every_decoding_error_type_and_every_supported_format(
    catalog: tuple[Path, dict[str, Expectation]],
) -> None:
    _, expectations = catalog
    assert {e.error_type for e in expectations.values() if not e.embed} == DECODING_ERROR_TYPES
    assert {e.format for e in expectations.values() if e.embed} == set(formats.PILLOW_FORMATS)


def test_rejection_messages_say_what_the_file_is(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    assert "zero bytes" in rejection_of(directory, "empty.jpg").message
    assert "HTML document, not an image" in rejection_of(directory, "error_page.jpg").message
    assert "text file" in rejection_of(directory, "notes.jpg").message
    assert "SVG" in rejection_of(directory, "vector.svg").message
    assert "PDF document" in rejection_of(directory, "document.pdf").message
    assert "HEIC" in rejection_of(directory, "phone_photo.heic").message
    assert "truncated" in rejection_of(directory, "truncated.jpg").message
    assert "max_pixels" in rejection_of(directory, "pixel_bomb_just_over_limit.png").message
    # The URI names the file so a log line alone is actionable.
    assert rejection_of(directory, "notes.jpg").message.startswith("notes.jpg: ")


def test_threads_decode_the_catalog_concurrently_with_the_same_results(
    catalog: tuple[Path, dict[str, Expectation]],
) -> None:
    directory, expectations = catalog
    names = [name for name in expectations if "bomb" not in name] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda name: outcome(directory, name), names))
    assert results == [expected_outcome(expectations[name]) for name in names]


# Pixels come out right -----------------------------------------------------------------------------------------


def assert_color(pixel: np.ndarray, expected: tuple[int, int, int], tolerance: int = 6) -> None:
    assert np.all(np.abs(pixel.astype(int) - np.array(expected)) <= tolerance), f"{pixel.tolist()} != {expected}"


def test_exif_orientation_is_applied(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    decoded = decode_file(directory, "jpeg_exif_orientation_6.jpg")
    # Stored 40x24 with a red left half; orientation 6 turns it 90 degrees clockwise: red on top.
    assert decoded.rgb.shape == (40, 24, 3)
    assert (decoded.width, decoded.height) == (24, 40)
    for row in (2, 10, 17):
        for column in (1, 12, 22):
            assert_color(decoded.rgb[row, column], awkward_files.RED, tolerance=20)
    for row in (23, 30, 38):
        for column in (1, 12, 22):
            assert_color(decoded.rgb[row, column], awkward_files.BLUE, tolerance=20)


@pytest.mark.parametrize("name", ["png_rgba.png", "webp_alpha.webp"])
def test_alpha_is_composited_over_white(catalog: tuple[Path, dict[str, Expectation]], name: str) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, name).rgb
    assert_color(rgb[10, 2], (255, 255, 255), tolerance=0)  # alpha 0, color black: white shows through
    assert_color(rgb[10, 15], (127, 127, 127), tolerance=1)  # black at alpha 128 over white
    assert_color(rgb[10, 27], awkward_files.RED, tolerance=0)  # opaque red stays red


def test_palette_transparency_and_gray_alpha_are_composited_over_white(
    catalog: tuple[Path, dict[str, Expectation]],
) -> None:
    directory, _ = catalog
    palette = decode_file(directory, "png_palette_transparency.png").rgb
    assert_color(palette[5, 2], (255, 255, 255), tolerance=0)  # transparent index whose color is green
    assert_color(palette[5, 17], awkward_files.RED, tolerance=0)
    gray_alpha = decode_file(directory, "png_gray_alpha.png").rgb
    assert_color(gray_alpha[5, 2], (255, 255, 255), tolerance=0)
    assert_color(gray_alpha[5, 17], (0, 0, 0), tolerance=0)


@pytest.mark.parametrize("name", ["png_16bit_gray.png", "tiff_16bit_gray.tif"])
def test_16_bit_gray_is_scaled_to_8_bit_not_clipped(catalog: tuple[Path, dict[str, Expectation]], name: str) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, name).rgb
    # Columns hold 65535, 32768, 0; clipping would give 255, 255, 0.
    assert rgb[:, 0].tolist() == [[255, 255, 255]] * 4
    assert np.all(np.abs(rgb[:, 1].astype(int) - 128) <= 1)
    assert rgb[:, 2].tolist() == [[0, 0, 0]] * 4


def test_48_bit_rgb_png_is_scaled_to_8_bit(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, "png_48bit_rgb.png").rgb.reshape(-1, 3).astype(int)
    assert np.all(np.abs(rgb - [255, 128, 0]) <= 1), rgb.tolist()


@pytest.mark.parametrize("name", ["jpeg_cmyk.jpg", "jpeg_ycck.jpg"])
def test_cmyk_and_ycck_jpegs_come_out_in_the_right_colors(
    catalog: tuple[Path, dict[str, Expectation]], name: str
) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, name).rgb
    assert_color(rgb[16, 8], awkward_files.RED, tolerance=40)  # CMYK (0, 255, 255, 0)
    assert_color(rgb[16, 40], awkward_files.BLUE, tolerance=40)  # CMYK (255, 255, 0, 0)


def test_ycck_file_really_is_ycck(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    with Image.open(directory / "jpeg_ycck.jpg") as ycck, Image.open(directory / "jpeg_cmyk.jpg") as cmyk:
        assert (ycck.mode, ycck.info.get("adobe_transform")) == ("CMYK", 2)
        assert (cmyk.mode, cmyk.info.get("adobe_transform")) == ("CMYK", 0)


@pytest.mark.parametrize(
    "name", ["gif_animated.gif", "webp_animated.webp", "tiff_multipage.tif", "jpeg_mpo_two_pictures.jpg"]
)
def test_multi_frame_files_yield_their_first_frame(catalog: tuple[Path, dict[str, Expectation]], name: str) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, name).rgb
    assert np.all(np.abs(rgb.astype(int) - awkward_files.RED) <= 6)


def test_multi_picture_jpeg_is_opened_as_mpo_and_reported_as_jpeg(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    with Image.open(directory / "jpeg_mpo_two_pictures.jpg") as image:
        assert (image.format, image.n_frames) == ("MPO", 2)
    assert decode_file(directory, "jpeg_mpo_two_pictures.jpg", max_pixels=24 * 16).format == "JPEG"


def test_grayscale_jpeg_becomes_three_equal_channels(catalog: tuple[Path, dict[str, Expectation]]) -> None:
    directory, _ = catalog
    rgb = decode_file(directory, "jpeg_grayscale.jpg").rgb
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    assert rgb.std() > 5  # real content, not a flat fill


# Limits and bombs ----------------------------------------------------------------------------------------------


def test_byte_limit_is_checked_before_anything_else() -> None:
    data = awkward_files._save(Image.new("RGB", (8, 8), awkward_files.RED), "JPEG")
    assert decode_image(data, max_bytes=len(data), max_pixels=64).rgb.shape == (8, 8, 3)
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=64)
    assert caught.value.error_type == reject_reasons.TOO_LARGE
    assert "max_bytes" in caught.value.message


def test_pixel_limit_counts_header_dimensions() -> None:
    data = awkward_files._save(Image.new("RGB", (10, 8), awkward_files.RED), "PNG")
    assert decode_image(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=80).width == 10
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=79)
    assert caught.value.error_type == reject_reasons.TOO_LARGE


def test_pillows_bomb_warning_turned_into_an_error_is_classified_too_large() -> None:
    # Between Pillow's MAX_IMAGE_PIXELS and twice that, Pillow only warns; under `-W error` the warning is raised.
    side = int((Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5)
    bomb = awkward_files.uniform_bitmap_png(side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageRejected) as caught:
            decode_image(bomb, max_bytes=DEFAULT_MAX_BYTES, max_pixels=side * side)
    assert caught.value.error_type == reject_reasons.TOO_LARGE
    assert "decompression-bomb" in caught.value.message


PEAK_MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from images.decoding import decode_image
    from images.reject_reasons import ImageRejected

    def peak_kib():
        # VmHWM belongs to this process image; ru_maxrss survives execve and would start
        # at the (much larger) peak of the pytest process that spawned us.
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    data = open(sys.argv[1], "rb").read()
    before = peak_kib()
    try:
        decode_image(data, max_bytes=1 << 30, max_pixels=int(sys.argv[2]))
        outcome = "decoded"
    except ImageRejected as rejection:
        outcome = rejection.error_type
    after = peak_kib()
    print(outcome, (after - before) / 1024)
    """
)


def peak_memory_growth_mb(path: Path, max_pixels: int) -> tuple[str, float]:
    """Decodes in a fresh interpreter and reports how much its peak RSS grew.

    tracemalloc cannot see Pillow's pixel buffers (allocated in C with malloc),
    so a fresh process's peak resident size is the honest measure.
    """
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE, str(path), str(max_pixels)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    outcome, growth = result.stdout.split()
    return outcome, float(growth)


def test_bombs_are_rejected_without_allocating_their_pixels(
    catalog: tuple[Path, dict[str, Expectation]], tmp_path: Path
) -> None:
    directory, _ = catalog
    for name in ("pixel_bomb_30000.png", "pixel_bomb_just_over_limit.png"):
        outcome_name, growth_mb = peak_memory_growth_mb(directory / name, DEFAULT_MAX_PIXELS)
        assert outcome_name == reject_reasons.TOO_LARGE
        assert growth_mb < 50, f"{name}: peak memory grew by {growth_mb:.0f} MB"
    # Control: the same kind of file, allowed through, does show up in the measurement
    # (5000x5000: 25 MB of 1-bit-as-bytes pixels plus a 75 MB RGB array).
    allowed = tmp_path / "allowed.png"
    allowed.write_bytes(awkward_files.uniform_bitmap_png(5000, 5000))
    outcome_name, growth_mb = peak_memory_growth_mb(allowed, 5000 * 5000)
    assert outcome_name == "decoded"
    assert growth_mb > 50, f"control decode grew peak memory by only {growth_mb:.0f} MB"


# Draft decoding and resizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "target"), [(1000, 600, 64), (1000, 600, 150), (640, 64, 64), (97, 300, 13)]
)
def test_draft_decoding_keeps_both_sides_at_least_the_target(width: int, height: int, target: int) -> None:
    data = awkward_files._save(awkward_files._noise(width, height), "JPEG", quality=90)
    full = decode_image(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS)
    drafted = decode_image(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS, target_size=target)
    assert full.rgb.shape == (height, width, 3)
    assert (drafted.width, drafted.height) == (width, height)  # original dimensions are reported
    drafted_height, drafted_width = drafted.rgb.shape[:2]
    assert drafted_width >= target and drafted_height >= target
    scale = min(width // target, height // target)
    if scale >= 2:
        assert drafted_width < width  # reduced DCT scale really was used
    # Same picture: resized to the target, draft and full decodes agree closely.
    difference = np.abs(
        resize_for_model(full.rgb, target).astype(int) - resize_for_model(drafted.rgb, target).astype(int)
    )
    assert difference.mean() < 12


def test_draft_decoding_reports_upright_original_dimensions_of_rotated_jpegs() -> None:
    stored = awkward_files._halves_rgb(800, 400, awkward_files.RED, awkward_files.BLUE)
    data = awkward_files._save(stored, "JPEG", quality=95, exif=awkward_files._orientation_exif(6))
    decoded = decode_image(data, max_bytes=DEFAULT_MAX_BYTES, max_pixels=DEFAULT_MAX_PIXELS, target_size=64)
    assert (decoded.width, decoded.height) == (400, 800)
    assert decoded.rgb.shape == (200, 100, 3)  # 1/4 scale (400 // 64 = 6 -> 4), upright
    assert_color(decoded.rgb[10, 50], awkward_files.RED, tolerance=20)
    assert_color(decoded.rgb[190, 50], awkward_files.BLUE, tolerance=20)


def stripes(width: int, height: int) -> np.ndarray:
    """Vertical thirds: red | green | blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    pixels[:, :third] = (255, 0, 0)
    pixels[:, third : 2 * third] = (0, 255, 0)
    pixels[:, 2 * third :] = (0, 0, 255)
    return pixels


def test_resize_squash_keeps_the_whole_picture() -> None:
    resized = resize_for_model(stripes(300, 100), 30, mode="squash")
    assert resized.shape == (30, 30, 3) and resized.dtype == np.uint8
    assert_color(resized[15, 2], (255, 0, 0), tolerance=2)
    assert_color(resized[15, 15], (0, 255, 0), tolerance=2)
    assert_color(resized[15, 27], (0, 0, 255), tolerance=2)


def test_resize_center_crop_keeps_the_middle_square() -> None:
    resized = resize_for_model(stripes(300, 100), 30, mode="center_crop")
    assert resized.shape == (30, 30, 3)
    assert np.all(np.abs(resized.astype(int) - (0, 255, 0)) <= 2)


def test_resize_upscales_tiny_images() -> None:
    resized = resize_for_model(np.full((1, 1, 3), 200, np.uint8), 16)
    assert resized.shape == (16, 16, 3) and np.all(resized == 200)


@pytest.mark.parametrize(
    ("array", "size", "mode", "complaint"),
    [
        (np.zeros((4, 4), np.uint8), 8, "squash", "HxWx3 uint8"),
        (np.zeros((4, 4, 3), np.float32), 8, "squash", "HxWx3 uint8"),
        (np.zeros((0, 4, 3), np.uint8), 8, "squash", "empty image"),
        (np.zeros((4, 4, 3), np.uint8), 0, "squash", "positive int"),
        (np.zeros((4, 4, 3), np.uint8), 8, "letterbox", "squash"),
    ],
)
def test_resize_rejects_bad_arguments_with_a_clear_message(
    array: np.ndarray, size: int, mode: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        resize_for_model(array, size, mode=mode)


# Contract details ----------------------------------------------------------------------------------------------


def test_image_rejected_survives_pickling_and_refuses_unknown_error_types() -> None:
    original = ImageRejected(reject_reasons.UNDECODABLE, "x.jpg: broken")
    restored = pickle.loads(pickle.dumps(original))
    assert (restored.error_type, restored.message, str(restored)) == ("undecodable", "x.jpg: broken", str(original))
    with pytest.raises(ValueError, match="unknown error_type"):
        ImageRejected("corrupt", "not one of the closed set")


def test_invalid_arguments_are_programming_errors_not_rejections() -> None:
    with pytest.raises(TypeError, match="bytes"):
        decode_image("not bytes", max_bytes=10, max_pixels=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(b"\xff\xd8\xff", max_bytes=10, max_pixels=0)
    with pytest.raises(ValueError, match="target_size"):
        decode_image(b"\xff\xd8\xff", max_bytes=10, max_pixels=10, target_size=-1)


def test_truncated_images_are_never_silently_accepted(
    catalog: tuple[Path, dict[str, Expectation]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = catalog
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_file(directory, "truncated.jpg")


def test_sniffing_looks_at_content_not_names() -> None:
    assert formats.sniff(b"\xef\xbb\xbf  <html><body>oops</body></html>").name == "HTML"
    assert formats.sniff(b'{"error": "quota exceeded"}').name == "JSON"
    assert formats.sniff(b"PK\x03\x04" + bytes(40)).kind is formats.Kind.NOT_IMAGE
    assert formats.sniff(b"\x00\x00\x00\x1cftypavif" + bytes(20)).kind is formats.Kind.SUPPORTED_IMAGE
    png = io.BytesIO()
    Image.new("RGB", (2, 2)).save(png, "PNG")
    assert formats.sniff(png.getvalue()).name == "PNG"
