"""NegCLIP-style hard negatives: captions of objects a scene does NOT hold, one attribute away from one it does.

A contrastive batch rarely holds a scene that differs from another by one attribute
of one object, so the towers learn "red", "circle" and "top left" as a bag of words
and bind them to the wrong object ("a red circle at the top left" finds a red square
there). For every scene we phrase a few mentions that swap one attribute (shape,
color, size or region) of one of its objects - "a small red circle at the top left"
becomes "a small red square at the top left" - and keep only those that match no
object of the scene (manifest `objects`), so a negative is never a right answer for
its own image. Training adds them as extra image->text columns of their own image only.

Mentions are phrased like the catalog's partial captions (and the typed queries):
article, optional size, color, shape, optional place. Every word must be in the
tf.Transform vocabulary: `check_vocabulary` refuses a pool that would need <UNKNOWN>.
"""

from __future__ import annotations

import numpy as np

from encoders import tokens

PHRASED = ("size", "color", "shape", "region")  # the attributes a mention can name, in word order
# Swaps weighted toward shape: the most common binding error is the right color there with another shape.
DEFAULT_SWAP_WEIGHTS: dict[str, float] = {"shape": 0.5, "color": 0.2, "region": 0.2, "size": 0.1}
# Chance an unswapped size or region is named too; region mostly, as typed queries that name it bind worst.
NAME_CHANCE: dict[str, float] = {"size": 0.5, "region": 0.8}
POOL_SIZE = 8  # negatives kept per scene; every epoch draws --hard_negatives of them per pair
_ATTEMPTS = 32


class HardNegativeError(ValueError):
    """Objects that cannot be phrased (missing attributes, or words outside the vocabulary)."""


def attribute_values(objects: list[list[dict[str, str]]]) -> dict[str, tuple[str, ...]]:
    """Every value each phrased attribute takes in the catalog (what a swap may choose from)."""
    values: dict[str, set[str]] = {name: set() for name in PHRASED}
    for row, scene in enumerate(objects):
        if not scene:
            raise HardNegativeError(f"row {row + 1} has no objects")
        for obj in scene:
            missing = [name for name in PHRASED if not obj.get(name)]
            if missing:
                raise HardNegativeError(f"row {row + 1}: an object lacks {', '.join(missing)} (need {PHRASED})")
            for name in PHRASED:
                values[name].add(obj[name])
    return {name: tuple(sorted(found)) for name, found in values.items()}


def matches_any(named: dict[str, str], scene: list[dict[str, str]]) -> bool:
    """Some object of the scene has every attribute the mention names."""
    return any(all(obj.get(name) == value for name, value in named.items()) for obj in scene)


def phrase(named: dict[str, str]) -> str:
    """ "a small red square at the top left", "an orange star in the center", "a blue ring"."""
    words = [named[name] for name in ("size", "color", "shape") if name in named]
    noun = " ".join(words)
    text = f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
    region = named.get("region")
    if region is not None:
        text += " in the center" if region == "center" else f" at the {region}"
    return text


def swapped_mention(
    obj: dict[str, str], values: dict[str, tuple[str, ...]], weights: dict[str, float], rng: np.random.Generator
) -> dict[str, str] | None:
    """The object with one attribute changed, naming color, shape, the swapped one and maybe size/region."""
    swappable = [name for name in PHRASED if len(values[name]) > 1 and weights.get(name, 0.0) > 0]
    if not swappable:
        return None
    chances = np.asarray([weights[name] for name in swappable], np.float64)
    swapped = swappable[int(rng.choice(len(swappable), p=chances / chances.sum()))]
    others = [value for value in values[swapped] if value != obj[swapped]]
    named = {
        name: obj[name]
        for name in PHRASED
        if name in ("color", "shape") or name == swapped or rng.random() < NAME_CHANCE[name]
    }
    named[swapped] = str(others[int(rng.integers(len(others)))])
    return named


def scene_negatives(
    scene: list[dict[str, str]],
    values: dict[str, tuple[str, ...]],
    count: int,
    rng: np.random.Generator,
    weights: dict[str, float] = DEFAULT_SWAP_WEIGHTS,
) -> list[dict[str, str]]:
    """`count` mentions (repeats allowed when few exist) that match no object of the scene.

    A scene always has one: it holds at most a few objects, so some shape is absent from it;
    the fallback names such a shape with the first object's color.
    """
    found: list[dict[str, str]] = []
    for _ in range(_ATTEMPTS * count):
        if len(found) == count:
            return found
        named = swapped_mention(scene[int(rng.integers(len(scene)))], values, weights, rng)
        if named is not None and not matches_any(named, scene) and named not in found:
            found.append(named)
    absent = [shape for shape in values["shape"] if not matches_any({"shape": shape}, scene)]
    if not found and not absent:
        raise HardNegativeError(f"no negative exists for a scene holding every shape: {scene}")
    fillers = found or [{"color": scene[0]["color"], "shape": absent[0]}]
    return [fillers[index % len(fillers)] for index in range(count)]


def negative_pool(
    objects: list[list[dict[str, str]]], seed: int, pool_size: int = POOL_SIZE
) -> tuple[list[list[str]], list[list[dict[str, str]]]]:
    """[N][pool_size] negative captions per scene, and what each names (for checks and tests)."""
    values = attribute_values(objects)
    rng = np.random.default_rng([seed, 7919])
    named = [scene_negatives(scene, values, pool_size, rng) for scene in objects]
    return [[phrase(mention) for mention in row] for row in named], named


def check_vocabulary(captions: list[list[str]], token_ids: np.ndarray) -> None:
    """Refuses negatives the tokenizer mapped to <UNKNOWN> somewhere (they would teach nothing true).

    token_ids [N, pool, L] are the captions through the training tf.Transform graph.
    """
    unknown = np.argwhere(np.any(token_ids == tokens.UNKNOWN_ID, axis=-1))
    if len(unknown):
        examples = "; ".join(repr(captions[row][column]) for row, column in unknown[:3])
        raise HardNegativeError(
            f"{len(unknown)} hard negatives hold words missing from the training vocabulary, e.g. {examples} "
            "(the training captions must use every color, shape, size and region word)"
        )
