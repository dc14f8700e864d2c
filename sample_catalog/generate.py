"""One catalog entry: sample scene i, render it, caption it, encode the image file."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from sample_catalog.captions import caption, short_caption_terms
from sample_catalog.render import render
from sample_catalog.scenes import sample_scene, scene_rng

FORMATS = {"jpeg": ".jpg", "png": ".png"}


@dataclasses.dataclass(frozen=True)
class CatalogSettings:
    seed: int
    image_size: int = 256
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    # Extra partial captions per row ("a red circle", "something red at the top left"), for training
    # encoders on text like people's queries; 0 keeps the manifest row as it always was.
    short_captions: int = 0


def item_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:07d}"


def generate_item(settings: CatalogSettings, index: int) -> tuple[dict[str, Any], bytes]:
    """Returns the manifest row (without uri) and the encoded image bytes of entry `index`."""
    rng = scene_rng(settings.seed, index)
    scene = sample_scene(rng)
    text = caption(scene, rng)
    # Drawn after the caption from the same generator: the image and caption stay what they always were.
    shorts = [short_caption_terms(scene, rng) for _ in range(settings.short_captions)]
    image = render(scene, settings.image_size)
    buffer = io.BytesIO()
    if settings.image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=settings.jpeg_quality)
    else:
        image.save(buffer, format="PNG")
    row = {"id": item_id(settings.seed, index), "caption": text, **scene.attributes()}
    if shorts:
        row["short_captions"] = [text for text, _ in shorts]
        # What each partial caption names, one {attribute: value} dict per object it mentions.
        row["short_caption_objects"] = [terms for _, terms in shorts]
    return row, buffer.getvalue()


def sample_captions(seed: int, count: int) -> list[str]:
    """Captions of entries 0..count-1 for `seed` (no image rendered): typical text queries."""
    captions = []
    for index in range(count):
        rng = scene_rng(seed, index)
        captions.append(caption(sample_scene(rng), rng))
    return captions
