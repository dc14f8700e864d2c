"""Renders a scene to an RGB image with Pillow."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from sample_catalog import attributes
from sample_catalog.scenes import Scene, SceneObject


def _background(scene: Scene, size: int) -> Image.Image:
    tint = np.asarray(attributes.BACKGROUND_TINTS[scene.tint], np.float32)
    if scene.background == "solid":
        pixels = np.broadcast_to(tint, (size, size, 3))
    elif scene.background == "gradient":
        ramp = np.linspace(0.75, 1.2, size, dtype=np.float32)
        direction = scene.noise_seed % 2
        factor = ramp[None, :, None] if direction == 0 else ramp[:, None, None]
        pixels = np.broadcast_to(tint * factor, (size, size, 3))
    else:
        rng = np.random.default_rng(scene.noise_seed)
        noise = rng.normal(0.0, 18.0, (size // 4 + 1, size // 4 + 1, 1)).astype(np.float32)
        coarse = np.kron(noise, np.ones((4, 4, 1), np.float32))[:size, :size]
        pixels = tint + coarse + rng.normal(0.0, 6.0, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        angle = math.pi / 2 + k * math.pi / 5
        radius = r if k % 2 == 0 else r * 0.45
        points.append((cx + radius * math.cos(angle), cy - radius * math.sin(angle)))
    return points


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, size: int) -> None:
    fx, fy = attributes.REGIONS[obj.region]
    cx, cy = (fx + obj.offset[0]) * size, (fy + obj.offset[1]) * size
    r = attributes.SIZES[obj.size] * size
    fill = attributes.COLORS[obj.color]
    box = [cx - r, cy - r, cx + r, cy + r]
    if obj.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif obj.shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx - r * 0.8, cy), (cx, cy + r), (cx + r * 0.8, cy)], fill=fill)
    elif obj.shape == "cross":
        w = r * 0.32
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif obj.shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1), fill=fill)
    elif obj.shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r * 0.38)))
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene, size: int) -> Image.Image:
    image = _background(scene, size)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, size)
    return image
