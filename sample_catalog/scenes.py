"""Deterministic scene sampling: scene i of seed s is the same on every machine and run."""

from __future__ import annotations

import dataclasses

import numpy as np

from sample_catalog import attributes


@dataclasses.dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    size: str
    region: str
    # Small jitter of the center, as a fraction of the image side.
    offset: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str  # solid | gradient | noise
    tint: str
    noise_seed: int

    def dominant_object(self) -> SceneObject:
        """The object with the largest drawn area (the first listed wins a tie): what a label names."""
        return max(self.objects, key=lambda o: attributes.SIZES[o.size] ** 2 * attributes.SHAPE_AREA[o.shape])

    def attributes(self) -> dict:
        dominant = self.dominant_object()
        return {
            "objects": [{"color": o.color, "shape": o.shape, "size": o.size, "region": o.region} for o in self.objects],
            "background": self.background,
            "background_tint": self.tint,
            # Single-label columns for classifiers (beam_jobs.build_classifier --label_column).
            "dominant_shape": dominant.shape,
            "dominant_color": dominant.color,
        }


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _contrasts(color: str, tint: str) -> bool:
    delta = np.subtract(attributes.COLORS[color], attributes.BACKGROUND_TINTS[tint])
    return float(np.linalg.norm(delta)) >= attributes.MIN_CONTRAST


def sample_scene(rng: np.random.Generator) -> Scene:
    tint = str(rng.choice(list(attributes.BACKGROUND_TINTS)))
    background = str(rng.choice(attributes.BACKGROUND_KINDS))
    count = int(rng.integers(1, attributes.MAX_OBJECTS + 1))
    regions = rng.choice(list(attributes.REGIONS), size=count, replace=False)
    visible_colors = [c for c in attributes.COLORS if _contrasts(c, tint)]
    objects = tuple(
        SceneObject(
            color=str(rng.choice(visible_colors)),
            shape=str(rng.choice(attributes.SHAPES)),
            size=str(rng.choice(list(attributes.SIZES))),
            region=str(region),
            offset=(float(rng.uniform(-0.025, 0.025)), float(rng.uniform(-0.025, 0.025))),
        )
        for region in regions
    )
    return Scene(objects=objects, background=background, tint=tint, noise_seed=int(rng.integers(2**31)))
