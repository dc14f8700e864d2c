"""The visual vocabulary of generated scenes: every attribute a caption can name."""

from __future__ import annotations

# Well-separated object colors (sRGB).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 165, 60),
    "blue": (35, 70, 215),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 25),
    "purple": (135, 45, 175),
    "pink": (245, 140, 195),
    "brown": (120, 70, 30),
    "cyan": (40, 210, 225),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "ring")
# Object radius as a fraction of the image side; far enough apart for a 64 px model to tell.
SIZES: dict[str, float] = {"small": 0.09, "large": 0.155}
# Drawn area of each shape in units of r^2 (r = the object radius, see render._draw_object):
# what decides which object of a scene is the largest, i.e. its dominant object.
SHAPE_AREA: dict[str, float] = {
    "circle": 3.14,
    "square": 2.89,
    "triangle": 1.8,
    "star": 1.6,
    "cross": 2.15,
    "diamond": 1.6,
    "ring": 1.93,
}
# A 3x3 grid: objects in one scene take distinct cells, so they never overlap much.
REGIONS: dict[str, tuple[float, float]] = {
    "top left": (1 / 6, 1 / 6),
    "top": (3 / 6, 1 / 6),
    "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 3 / 6),
    "center": (3 / 6, 3 / 6),
    "right": (5 / 6, 3 / 6),
    "bottom left": (1 / 6, 5 / 6),
    "bottom": (3 / 6, 5 / 6),
    "bottom right": (5 / 6, 5 / 6),
}
BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "noise")
# Muted background tints, named so some captions can mention them.
BACKGROUND_TINTS: dict[str, tuple[int, int, int]] = {
    "beige": (200, 185, 150),
    "olive": (120, 125, 80),
    "slate": (95, 110, 130),
    "sand": (185, 160, 115),
    "teal": (70, 120, 115),
    "mauve": (150, 115, 135),
}
MAX_OBJECTS = 3
# An object color this close (RGB distance) to the background tint is re-drawn: it would vanish.
MIN_CONTRAST = 90.0
