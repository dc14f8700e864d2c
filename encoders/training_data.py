"""Captioned training pairs: manifest parsing and image loading for encoder training.

Training runs on one machine, so images are decoded into one uint8 array with
the same decode-and-resize the embedding job uses (images.decoding):
the encoder must see at training time exactly the pixels it sees in production.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from images import decoding


class ManifestError(ValueError):
    """A training manifest that cannot be used; names the file and line."""


@dataclasses.dataclass(frozen=True)
class CaptionedImages:
    ids: list[str]
    uris: list[str]
    captions: list[str]
    # Optional per-row partial captions ("a red circle"); empty lists when the manifest has none.
    short_captions: list[list[str]] = dataclasses.field(default_factory=list)

    def short_caption_table(self) -> list[list[str]] | None:
        """[N][S] partial captions (S = the fewest any row has), or None when some row has none."""
        count = min((len(shorts) for shorts in self.short_captions), default=0)
        return [shorts[:count] for shorts in self.short_captions] if count else None


def read_captioned_manifest(path: str | Path) -> CaptionedImages:
    """Reads a JSONL manifest whose rows carry `uri` and `caption` (`id` defaults to uri)."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist")
    ids: list[str] = []
    uris: list[str] = []
    captions: list[str] = []
    short_captions: list[list[str]] = []
    with manifest.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{manifest} line {number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ManifestError(f"{manifest} line {number}: expected a JSON object, got {type(row).__name__}")
            for key in ("uri", "caption"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise ManifestError(f"{manifest} line {number}: missing or empty '{key}'")
            uri = row["uri"]
            if not uri.startswith(("gs://", "s3://", "/")):
                uri = str((manifest.parent / uri).resolve())
            uris.append(uri)
            ids.append(str(row.get("id") or uri))
            captions.append(row["caption"])
            shorts = row.get("short_captions", [])
            if not isinstance(shorts, list) or not all(isinstance(s, str) and s.strip() for s in shorts):
                raise ManifestError(f"{manifest} line {number}: 'short_captions' must be a list of non-empty strings")
            short_captions.append(shorts)
    if not uris:
        raise ManifestError(f"manifest {manifest} has no rows")
    return CaptionedImages(ids=ids, uris=uris, captions=captions, short_captions=short_captions)


def load_image_array(uris: list[str], image_size: int, resize: str = "squash", threads: int = 4) -> np.ndarray:
    """Decodes and resizes every image into one [N, S, S, 3] uint8 array, with a progress bar."""
    pixels = np.zeros((len(uris), image_size, image_size, 3), np.uint8)

    def load(index: int) -> None:
        with open(uris[index], "rb") as handle:
            data = handle.read()
        decoded = decoding.decode_image(
            data, max_bytes=64 << 20, max_pixels=100_000_000, uri=uris[index], target_size=image_size
        )
        pixels[index] = decoding.resize_for_model(decoded.rgb, image_size, mode=resize)

    with ThreadPoolExecutor(threads) as pool:
        list(tqdm(pool.map(load, range(len(uris))), total=len(uris), desc="decoding images", unit="img"))
    return pixels


def channel_statistics(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image channel mean and mean of squares, the inputs of tf.Transform's image statistics."""
    flat = pixels.reshape(len(pixels), -1, 3).astype(np.float32)
    return flat.mean(axis=1), np.square(flat).mean(axis=1)
