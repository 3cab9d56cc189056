"""The vocabulary of the synthetic world: shapes, colours, textures and the classes built from them.

A class is one *shape x colour x texture* combination (``"red striped circle"``). The 20 fold
classes are fixed by hand in ``_FOLD_TABLE`` so that

* every fold uses two colours, each shared by two or three of its five classes, and every colour
  of a fold also appears in another fold: colour alone never names a class;
* the five classes of a fold have five different shapes and the five core textures, and every
  shape, colour and texture of a fold's novel classes also occurs among that fold's base classes,
  so what a model learns on base classes (shape, texture, colour cues) transfers;
* same-colour, same-shape and same-texture look-alikes exist as distractors (never labelled).

The pretraining classes (``pretrain_classes()``) are 48 further combinations, disjoint from the
fold classes, over all shapes/colours/textures (including distractor-only ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

PROMPT_TEMPLATE = "a photo of a {}"

# name -> base RGB. The first four are the colours of fold classes; the others appear only in
# distractors, clutter and pretraining classes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 38, 40),
    "green": (38, 160, 58),
    "blue": (40, 78, 214),
    "yellow": (232, 200, 36),
    "orange": (240, 128, 28),
    "purple": (132, 56, 180),
    "cyan": (36, 190, 204),
    "pink": (236, 120, 176),
    "white": (232, 232, 226),
    "brown": (128, 80, 42),
}
FOLD_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")

# Shapes of fold classes first; the rest only appear as distractors/pretraining classes.
FOLD_SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "arrow", "hexagon",
)
EXTRA_SHAPES: tuple[str, ...] = ("diamond", "semicircle", "trapezoid", "bowtie", "tee", "flower")
SHAPES: tuple[str, ...] = FOLD_SHAPES + EXTRA_SHAPES

# texture -> adjective used in class names.
TEXTURES: dict[str, str] = {
    "solid": "solid",
    "stripes": "striped",
    "dots": "dotted",
    "checker": "checkered",
    "gradient": "gradient",
    "grid": "gridded",
    "wavy": "wavy",
}
FOLD_TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "gradient")

N_FOLDS = 4
CLASSES_PER_FOLD = 5

# (shape, colour, texture) of class ids 1..20; fold k = ids 5k+1..5k+5 (PASCAL-5i convention).
_FOLD_TABLE: tuple[tuple[str, str, str], ...] = (
    # fold 0: red x2, green x3
    ("circle", "red", "stripes"),
    ("triangle", "red", "dots"),
    ("star", "green", "solid"),
    ("square", "green", "checker"),
    ("cross", "green", "gradient"),
    # fold 1: blue x2, yellow x3
    ("heart", "blue", "solid"),
    ("ring", "blue", "gradient"),
    ("arrow", "yellow", "stripes"),
    ("crescent", "yellow", "dots"),
    ("hexagon", "yellow", "checker"),
    # fold 2: red x3, blue x2
    ("star", "red", "checker"),
    ("ring", "red", "solid"),
    ("arrow", "red", "gradient"),
    ("square", "blue", "dots"),
    ("circle", "blue", "stripes"),
    # fold 3: green x2, yellow x3
    ("hexagon", "green", "dots"),
    ("heart", "green", "stripes"),
    ("triangle", "yellow", "solid"),
    ("cross", "yellow", "gradient"),
    ("crescent", "yellow", "checker"),
)


@dataclass(frozen=True)
class ClassDef:
    """One class of the synthetic world.

    ``id`` is the 1-based class id for fold classes (the value in the masks) and the 0-based
    label index for pretraining classes. ``fold`` is ``None`` for pretraining classes.
    """

    id: int
    shape: str
    colour: str
    texture: str
    fold: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.texture)

    @property
    def name(self) -> str:
        return class_name(self.shape, self.colour, self.texture)

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(self.name)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name, "rgb": list(self.rgb)}


def class_name(shape: str, colour: str, texture: str) -> str:
    """``"red striped circle"``: colour, texture adjective, shape."""
    return f"{colour} {TEXTURES[texture]} {shape}"


@lru_cache(maxsize=None)
def _fold_classes() -> tuple[ClassDef, ...]:
    return tuple(
        ClassDef(id=i + 1, shape=s, colour=c, texture=t, fold=i // CLASSES_PER_FOLD)
        for i, (s, c, t) in enumerate(_FOLD_TABLE)
    )


def fold_classes(fold: int | None = None) -> list[ClassDef]:
    """The 20 fold classes (ids 1..20), or the five novel classes of ``fold``."""
    classes = list(_fold_classes())
    if fold is None:
        return classes
    if not 0 <= fold < N_FOLDS:
        raise ValueError(f"fold must be in 0..{N_FOLDS - 1}, got {fold}")
    return [c for c in classes if c.fold == fold]


def fold_class_ids(fold: int) -> list[int]:
    """Class ids of fold ``fold``: ``5*fold+1 .. 5*fold+5``."""
    return [c.id for c in fold_classes(fold)]


FOLD_KEYS: frozenset[tuple[str, str, str]] = frozenset(c.key for c in _fold_classes())


def is_fold_key(shape: str, colour: str, texture: str) -> bool:
    return (shape, colour, texture) in FOLD_KEYS


@lru_cache(maxsize=None)
def _pretrain_classes() -> tuple[ClassDef, ...]:
    # A fixed, readable rule: shape s gets three combinations; colour and texture walk their
    # lists with different strides so the 48 cover every primitive several times. Fold classes are
    # skipped by moving to the next texture.
    colours = list(COLOURS)
    textures = list(TEXTURES)
    out: list[ClassDef] = []
    seen: set[tuple[str, str, str]] = set()
    for s_idx, shape in enumerate(SHAPES):
        for k in range(3):
            c = colours[(3 * s_idx + 7 * k) % len(colours)]
            t_idx = (2 * s_idx + 3 * k) % len(textures)
            for step in range(len(textures)):
                t = textures[(t_idx + step) % len(textures)]
                key = (shape, c, t)
                if key not in FOLD_KEYS and key not in seen:
                    break
            else:  # pragma: no cover - impossible with these tables
                raise AssertionError(f"no free texture for {shape} {c}")
            seen.add(key)
            out.append(ClassDef(id=len(out), shape=shape, colour=c, texture=t, fold=None))
    return tuple(out)


def pretrain_classes() -> list[ClassDef]:
    """48 pretraining classes, disjoint from the fold classes; ``ClassDef.id`` is the label index."""
    return list(_pretrain_classes())


def pretrain_class_names() -> list[str]:
    """Names of the pretraining classes in label order (for ``a photo of a {name}``)."""
    return [c.name for c in _pretrain_classes()]


PRETRAIN_KEYS: frozenset[tuple[str, str, str]] = frozenset(c.key for c in _pretrain_classes())


def sample_distractor(
    rng: np.random.Generator,
    *,
    like: tuple[str, str, str] | None = None,
    exclude: frozenset[tuple[str, str, str]] = FOLD_KEYS,
) -> tuple[str, str, str]:
    """A (shape, colour, texture) that is not in ``exclude``.

    With ``like``, a *look-alike*: ``like`` with exactly one of shape, colour, texture changed,
    so it shares two attributes (in particular, often the colour) with a real class.
    """
    colours = list(COLOURS)
    textures = list(TEXTURES)
    for _ in range(64):
        if like is not None:
            shape, colour, texture = like
            which = rng.choice(3, p=[0.45, 0.2, 0.35])
            if which == 0:
                shape = SHAPES[rng.integers(len(SHAPES))]
            elif which == 1:
                colour = colours[rng.integers(len(colours))]
            else:
                texture = textures[rng.integers(len(textures))]
        else:
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = colours[rng.integers(len(colours))]
            texture = textures[rng.integers(len(textures))]
        key = (shape, colour, texture)
        if key not in exclude and key != like:
            return key
    return ("flower", "brown", "wavy")  # pragma: no cover - practically unreachable
