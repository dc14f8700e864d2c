"""Image embeddings of a generated catalog, computed in-process and cached (for index benchmarks).

Renders sample-catalog items at the model's input size, decodes and resizes them exactly as the
embedding job does, and encodes them with the bundled image tower in batches. 123K items take a
few minutes on 2 cores, so results are cached as .npy keyed by size, seed and model_id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoders import model_config
from images.decoding import decode_image, resize_for_model
from sample_catalog.generate import CatalogSettings, generate_item
from transforms.embedding.encoding import load_encoder

DEFAULT_CACHE = Path("/tmp/searcher_bench_cache")


def catalog_image_embeddings(
    num_items: int, seed: int, cache_dir: Path = DEFAULT_CACHE, batch_size: int = 256
) -> np.ndarray:
    """[num_items, D] float32 unit vectors: item i is sample-catalog entry (seed, i)."""
    config = model_config.validate_model_dir(model_config.DEFAULT_MODEL_DIR)
    cached = cache_dir / f"catalog_{seed}_{num_items}_{config.model_id}.npy"
    if cached.exists():
        return np.load(cached)
    encoder = load_encoder(None)
    settings = CatalogSettings(seed=seed, image_size=config.image_size)
    chunks = []
    for start in tqdm(range(0, num_items, batch_size), desc="encoding catalog", unit="batch"):
        pixels = [
            resize_for_model(decode_image(generate_item(settings, i)[1]).rgb, config.image_size, config.resize)
            for i in range(start, min(num_items, start + batch_size))
        ]
        chunks.append(encoder.embed(np.stack(pixels)))
    vectors = np.concatenate(chunks).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cached, vectors)
    return vectors
