"""Captions that name every object (size, color, shape, position) in varied phrasings."""

from __future__ import annotations

import numpy as np

from sample_catalog.scenes import Scene, SceneObject

_SIZE_WORDS = {"small": ("small", "small", "little", "tiny"), "large": ("large", "large", "big", "huge")}


def _place(region: str, rng: np.random.Generator) -> str:
    if region == "center":
        return str(rng.choice(["in the center", "in the middle", "at the center"]))
    if " " in region:  # a corner
        return str(rng.choice([f"at the {region}", f"in the {region} corner", f"at the {region}"]))
    return str(rng.choice([f"at the {region}", f"on the {region}"]))


def _noun(obj: SceneObject, rng: np.random.Generator) -> str:
    return f"{rng.choice(_SIZE_WORDS[obj.size])} {obj.color} {obj.shape}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    separator = str(rng.choice([", ", " and ", ", "]))
    return separator.join(parts[:-1]) + (" and " if separator == ", " else separator) + parts[-1]


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _background(scene: Scene, rng: np.random.Generator) -> str:
    kind = {"solid": "plain", "gradient": "gradient", "noise": "noisy"}[scene.background]
    return str(rng.choice([f" on a {scene.tint} background", f" over a {kind} {scene.tint} background"]))


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption for the scene; the phrasing and object order are drawn from `rng`."""
    objects = list(scene.objects)
    order = rng.permutation(len(objects))
    objects = [objects[i] for i in order]
    style = int(rng.integers(5))
    if style == 0:
        text = _join([f"{_article(_noun(o, rng))} {_place(o.region, rng)}" for o in objects], rng)
    elif style == 1:
        text = "; ".join(f"{o.region}: {_article(_noun(o, rng))}" for o in objects)
    elif style == 2:
        first, *rest = objects
        text = f"there is {_article(_noun(first, rng))} {_place(first.region, rng)}"
        if rest:
            text += ", with " + _join([f"{_article(_noun(o, rng))} {_place(o.region, rng)}" for o in rest], rng)
    elif style == 3:
        text = _join([f"{_place(o.region, rng)} {_article(_noun(o, rng))}" for o in objects], rng)
    else:
        count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(objects)]
        text = f"{count}: " + _join([f"{_article(_noun(o, rng))} {_place(o.region, rng)}" for o in objects], rng)
    if rng.random() < 0.3:
        text += _background(scene, rng)
    return text


def _short_mention(obj: SceneObject, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """One object named by a random subset of its attributes, as people type it; also returns the
    attributes the text names (canonical values: "small" for "tiny"), which a matching object must have."""
    keep_shape = rng.random() < 0.7
    keep_color = not keep_shape or rng.random() < 0.7  # a mention without shape always names a color
    # Size and position are named often: binding them to the right object is what a 64 px tower learns last.
    keep_size = rng.random() < 0.45
    keep_region = rng.random() < 0.55
    words = [str(rng.choice(_SIZE_WORDS[obj.size]))] if keep_size else []
    named = {"size": obj.size} if keep_size else {}
    if keep_color:
        words.append(obj.color)
        named["color"] = obj.color
    if keep_shape:
        words.append(obj.shape)
        named["shape"] = obj.shape
        text = _article(" ".join(words))
    elif rng.random() < 0.5 and not keep_size:
        text = f"something {obj.color}"
    else:
        text = _article(" ".join([*words, str(rng.choice(["shape", "shape", "object"]))]))
    if keep_region:
        named["region"] = obj.region
        return f"{text} {_place(obj.region, rng)}", named
    return text, named


def short_caption_terms(scene: Scene, rng: np.random.Generator) -> tuple[str, list[dict[str, str]]]:
    """A caption that mentions a random subset of the objects (usually one) and of their attributes:
    "a red circle", "a circle", "something red at the top left", "a large blue star and a ring".

    Also returns one {attribute: value} dict per mention: any scene with an object matching each
    mention is a correct answer to the caption, which lets training count such scenes as positives.
    """
    count = 1 if len(scene.objects) == 1 or rng.random() < 0.75 else 2
    chosen = rng.choice(len(scene.objects), size=count, replace=False)
    mentions = [_short_mention(scene.objects[int(i)], rng) for i in chosen]
    return _join([text for text, _ in mentions], rng), [named for _, named in mentions]


def short_caption(scene: Scene, rng: np.random.Generator) -> str:
    """The text of `short_caption_terms`."""
    return short_caption_terms(scene, rng)[0]
