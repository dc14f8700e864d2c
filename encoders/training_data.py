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
    # Optional, from make_sample_catalog: each row's objects ({attribute: value} dicts) and, per partial
    # caption, one {attribute: value} dict per object it names; empty lists when the manifest has none.
    objects: list[list[dict[str, str]]] = dataclasses.field(default_factory=list)
    short_caption_objects: list[list[list[dict[str, str]]]] = dataclasses.field(default_factory=list)

    def short_caption_table(self) -> list[list[str]] | None:
        """[N][S] partial captions (S = the fewest any row has), or None when some row has none."""
        count = min((len(shorts) for shorts in self.short_captions), default=0)
        return [shorts[:count] for shorts in self.short_captions] if count else None

    def has_caption_terms(self) -> bool:
        """Every row has objects and says what each of its partial captions names."""
        return bool(self.uris) and all(
            objects and len(terms) == len(shorts)
            for objects, terms, shorts in zip(self.objects, self.short_caption_objects, self.short_captions)
        )


def _attribute_dicts(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()) for d in value
    )


def _read_terms(row: dict, where: str) -> tuple[list[dict[str, str]], list[list[dict[str, str]]]]:
    """The row's optional `objects` and `short_caption_objects`, checked.

    Any manifest column is carried through the pipeline, so an `objects` column of another shape is
    someone else's data and is ignored; `short_caption_objects` only ever comes from make_sample_catalog.
    """
    objects, terms = row.get("objects", []), row.get("short_caption_objects", [])
    objects = objects if _attribute_dicts(objects) else []
    if not isinstance(terms, list) or not all(_attribute_dicts(caption) for caption in terms):
        raise ManifestError(f"{where}: 'short_caption_objects' must be a list of lists of {{attribute: value}} objects")
    if terms and len(terms) != len(row.get("short_captions", [])):
        raise ManifestError(f"{where}: 'short_caption_objects' needs one entry per short caption")
    return objects, terms


def read_captioned_manifest(path: str | Path) -> CaptionedImages:
    """Reads a JSONL manifest whose rows carry `uri` and `caption` (`id` defaults to uri)."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist")
    ids: list[str] = []
    uris: list[str] = []
    captions: list[str] = []
    short_captions: list[list[str]] = []
    objects: list[list[dict[str, str]]] = []
    terms: list[list[list[dict[str, str]]]] = []
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
            row_objects, row_terms = _read_terms(row, f"{manifest} line {number}")
            objects.append(row_objects)
            terms.append(row_terms)
    if not uris:
        raise ManifestError(f"manifest {manifest} has no rows")
    return CaptionedImages(ids, uris, captions, short_captions, objects, terms)


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
