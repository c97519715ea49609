"""Prompt grammar of the moving-shapes world.

A prompt names five attributes: "a red circle moving left slowly on a black background".
6 colours x 3 shapes x 4 directions x 2 speeds x 2 backgrounds = 288 prompts. The held-out split is
a fixed set of attribute *combinations* whose every single attribute value also appears in training,
so held-out prompts test composition, not new words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Saturated colours, far from each other and from the neutral backgrounds (RGB in [0, 1]).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.12, 0.80, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.90, 0.15, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit motion vectors in image coordinates (x right, y down).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
# Path length over the whole clip as a fraction of the frame size.
SPEEDS: dict[str, float] = {"slowly": 0.25, "quickly": 0.5}
# Neutral grey level of the background.
BACKGROUNDS: dict[str, float] = {"black": 0.08, "gray": 0.5}

_PATTERN = re.compile(
    r"^\s*an? (?P<colour>\w+) (?P<shape>\w+) moving (?P<direction>\w+) (?P<speed>\w+) "
    r"on an? (?P<background>\w+) background\s*$",
    re.IGNORECASE,
)


class PromptError(ValueError):
    """Text that is not a prompt of the moving-shapes grammar."""


@dataclass(frozen=True, order=True)
class Prompt:
    colour: str
    shape: str
    direction: str
    speed: str
    background: str

    def __post_init__(self):
        for field, table in (
            ("colour", COLOURS),
            ("shape", SHAPES),
            ("direction", DIRECTIONS),
            ("speed", SPEEDS),
            ("background", BACKGROUNDS),
        ):
            value = getattr(self, field)
            if value not in table:
                raise PromptError(f"unknown {field} '{value}'; valid: {', '.join(table)}")

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed} on a {self.background} background"

    def __str__(self) -> str:
        return self.text

    @property
    def split(self) -> str:
        return "heldout" if is_heldout(self) else "train"

    @classmethod
    def parse(cls, text: str) -> "Prompt":
        m = _PATTERN.match(text or "")
        if not m:
            raise PromptError(
                f"prompt {text!r} does not match 'a <colour> <shape> moving <direction> <speed> on a <background> background'"
            )
        return cls(**{k: v.lower() for k, v in m.groupdict().items()})


def all_prompts() -> list[Prompt]:
    """Every prompt of the grammar, in a fixed order."""
    return [
        Prompt(c, s, d, v, b)
        for c in COLOURS
        for s in SHAPES
        for d in DIRECTIONS
        for v in SPEEDS
        for b in BACKGROUNDS
    ]


def is_heldout(p: Prompt) -> bool:
    """One combination in five is held out; a modular rule over attribute indices guarantees that
    every attribute value (and every colour-shape pair) appears in both splits."""
    ci = list(COLOURS).index(p.colour)
    si = SHAPES.index(p.shape)
    di = list(DIRECTIONS).index(p.direction)
    vi = list(SPEEDS).index(p.speed)
    bi = list(BACKGROUNDS).index(p.background)
    return (ci + 2 * si + 3 * di + vi + 4 * bi) % 5 == 0


def split_prompts(split: str) -> list[Prompt]:
    """Prompts of ``split`` ("train" or "heldout"), in a fixed order."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return list(_split(split))


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[Prompt, ...]:
    return tuple(p for p in all_prompts() if p.split == split)
