"""Prompt grammar of the moving-shapes world: single-object prompts and compositional pair prompts.

A single-object prompt names five attributes: "a red circle moving left slowly on a black background".
6 colours x 3 shapes x 4 directions x 2 speeds x 2 backgrounds = 288 prompts.

A pair prompt names two objects, each with its own colour and shape, where the first stands relative to
the second, and the motion they share: "a red circle to the left of a blue square moving up slowly on a
black background". The two colours differ (so that the objects can be told apart): 18 x 15 object pairs x
4 relations x 4 directions x 2 speeds x 2 backgrounds = 17,280 prompts. This is where real text-to-video
models fail (attribute binding, spatial relations) and where the paper's text-alignment gains come from.

Each grammar's held-out split is a fixed set of attribute *combinations* whose every single attribute value
(and, for pairs, every coloured shape in either slot) also appears in training, so held-out prompts test
composition, not new words. ``grammar`` selects the prompts a job draws: "single" (the default, as before),
"pair" or "mixed" (both kinds, alternating in listings, drawn half and half by :func:`draw_prompt`).
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

# Where the first-named object stands relative to the second (unit vector in image coordinates).
RELATIONS: dict[str, tuple[float, float]] = {
    "to the left of": (-1.0, 0.0),
    "to the right of": (1.0, 0.0),
    "above": (0.0, -1.0),
    "below": (0.0, 1.0),
}
GRAMMARS = ("single", "pair", "mixed")

_PATTERN = re.compile(
    r"^\s*an? (?P<colour>\w+) (?P<shape>\w+) moving (?P<direction>\w+) (?P<speed>\w+) "
    r"on an? (?P<background>\w+) background\s*$",
    re.IGNORECASE,
)


_PAIR_PATTERN = re.compile(
    r"^\s*an? (?P<colour>\w+) (?P<shape>\w+) (?P<relation>to the left of|to the right of|above|below) "
    r"an? (?P<colour2>\w+) (?P<shape2>\w+) moving (?P<direction>\w+) (?P<speed>\w+) "
    r"on an? (?P<background>\w+) background\s*$",
    re.IGNORECASE,
)


class PromptError(ValueError):
    """Text that is not a prompt of the moving-shapes grammar."""


def _check(obj, fields) -> None:
    for field, table in fields:
        value = getattr(obj, field)
        if value not in table:
            raise PromptError(f"unknown {field} '{value}'; valid: {', '.join(table)}")


class _Grammar:
    """What both prompt kinds share: text, split and parsing by the kind's pattern."""

    _pattern: re.Pattern
    _form: str  # the grammar's form, for errors
    _note = ""

    def __str__(self) -> str:
        return self.text

    @property
    def split(self) -> str:
        return "heldout" if is_heldout(self) else "train"

    @classmethod
    def parse(cls, text: str):
        m = cls._pattern.match(text or "")
        if not m:
            raise PromptError(f"prompt {text!r} does not match '{cls._form}'{cls._note}")
        return cls(**{k: v.lower() for k, v in m.groupdict().items()})


@dataclass(frozen=True, order=True)
class Prompt(_Grammar):
    colour: str
    shape: str
    direction: str
    speed: str
    background: str

    kind = "single"  # class attributes (not fields): the grammar this prompt belongs to, its pattern and form
    _pattern = _PATTERN
    _form = "a <colour> <shape> moving <direction> <speed> on a <background> background"

    def __post_init__(self):
        _check(
            self,
            (
                ("colour", COLOURS),
                ("shape", SHAPES),
                ("direction", DIRECTIONS),
                ("speed", SPEEDS),
                ("background", BACKGROUNDS),
            ),
        )

    @property
    def objects(self) -> tuple[tuple[str, str], ...]:
        """(colour, shape) of each object the prompt names."""
        return ((self.colour, self.shape),)

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed} on a {self.background} background"


@dataclass(frozen=True, order=True)
class PairPrompt(_Grammar):
    """Two objects, each with its own colour and shape; the first stands ``relation`` the second; both
    move in ``direction`` at ``speed``."""

    colour: str
    shape: str
    relation: str
    colour2: str
    shape2: str
    direction: str
    speed: str
    background: str

    kind = "pair"
    _pattern = _PAIR_PATTERN
    _form = "a <colour> <shape> <relation> a <colour> <shape> moving <direction> <speed> on a <background> background"
    _note = f" (relations: {', '.join(RELATIONS)})"

    def __post_init__(self):
        _check(
            self,
            (
                ("colour", COLOURS),
                ("shape", SHAPES),
                ("relation", RELATIONS),
                ("colour2", COLOURS),
                ("shape2", SHAPES),
                ("direction", DIRECTIONS),
                ("speed", SPEEDS),
                ("background", BACKGROUNDS),
            ),
        )
        if self.colour == self.colour2:
            raise PromptError(f"the two objects of a pair prompt need different colours, both are '{self.colour}'")

    @property
    def objects(self) -> tuple[tuple[str, str], ...]:
        return ((self.colour, self.shape), (self.colour2, self.shape2))

    @property
    def text(self) -> str:
        return (
            f"a {self.colour} {self.shape} {self.relation} a {self.colour2} {self.shape2} moving "
            f"{self.direction} {self.speed} on a {self.background} background"
        )


def parse_prompt(text: str) -> Prompt | PairPrompt:
    """A prompt of either grammar; :class:`PromptError` names both forms when ``text`` is neither."""
    if _PAIR_PATTERN.match(text or ""):
        return PairPrompt.parse(text)
    if _PATTERN.match(text or ""):
        return Prompt.parse(text)
    raise PromptError(
        f"prompt {text!r} is not a prompt of the moving-shapes world: use 'a <colour> <shape> moving "
        "<direction> <speed> on a <background> background' or 'a <colour> <shape> <relation> a "
        f"<colour> <shape> moving <direction> <speed> on a <background> background' (relations: "
        f"{', '.join(RELATIONS)})"
    )


def as_prompt(prompt) -> Prompt | PairPrompt:
    """``prompt`` parsed if it is text, as it is otherwise."""
    return parse_prompt(prompt) if isinstance(prompt, str) else prompt


def check_grammar(grammar: str) -> str:
    if grammar not in GRAMMARS:
        raise ValueError(f"grammar must be one of {', '.join(GRAMMARS)}, got {grammar!r}")
    return grammar


def all_prompts(grammar: str = "single") -> list:
    """Every prompt of ``grammar``, in a fixed order (pairs in a fixed shuffled order, so that any prefix
    is varied; "mixed" alternates single and pair prompts while both last)."""
    check_grammar(grammar)
    if grammar == "single":
        return list(_singles())
    if grammar == "pair":
        return list(_pairs())
    return _interleave(list(_singles()), list(_pairs()))


@lru_cache(maxsize=1)
def _singles() -> tuple[Prompt, ...]:
    return tuple(
        Prompt(c, s, d, v, b) for c in COLOURS for s in SHAPES for d in DIRECTIONS for v in SPEEDS for b in BACKGROUNDS
    )


@lru_cache(maxsize=1)
def _pairs() -> tuple[PairPrompt, ...]:
    import numpy as np

    every = [
        PairPrompt(c, s, r, c2, s2, d, v, b)
        for c in COLOURS
        for s in SHAPES
        for r in RELATIONS
        for c2 in COLOURS
        for s2 in SHAPES
        for d in DIRECTIONS
        for v in SPEEDS
        for b in BACKGROUNDS
        if c2 != c
    ]
    order = np.random.default_rng(20261130).permutation(len(every))
    return tuple(every[i] for i in order)


def _interleave(a: list, b: list) -> list:
    out = [x for pair in zip(a, b) for x in pair]
    n = min(len(a), len(b))
    return out + a[n:] + b[n:]


def is_heldout(p: Prompt | PairPrompt) -> bool:
    """One combination in five is held out; a modular rule over attribute indices guarantees that
    every attribute value (and every colour-shape pair, in either slot of a pair prompt) appears in both
    splits."""
    if isinstance(p, PairPrompt):
        idx = (
            list(COLOURS).index(p.colour),
            SHAPES.index(p.shape),
            list(RELATIONS).index(p.relation),
            list(COLOURS).index(p.colour2),
            SHAPES.index(p.shape2),
            list(DIRECTIONS).index(p.direction),
            list(SPEEDS).index(p.speed),
            list(BACKGROUNDS).index(p.background),
        )
        return sum(k * i for k, i in zip((1, 2, 3, 4, 1, 2, 3, 4), idx)) % 5 == 0
    ci = list(COLOURS).index(p.colour)
    si = SHAPES.index(p.shape)
    di = list(DIRECTIONS).index(p.direction)
    vi = list(SPEEDS).index(p.speed)
    bi = list(BACKGROUNDS).index(p.background)
    return (ci + 2 * si + 3 * di + vi + 4 * bi) % 5 == 0


def split_prompts(split: str, grammar: str = "single") -> list:
    """Prompts of ``split`` ("train" or "heldout") of ``grammar``, in a fixed order ("mixed" alternates
    single and pair prompts while both last)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    check_grammar(grammar)
    if grammar == "mixed":
        return _interleave(list(_split(split, "single")), list(_split(split, "pair")))
    return list(_split(split, grammar))


@lru_cache(maxsize=4)
def _split(split: str, grammar: str) -> tuple:
    return tuple(p for p in all_prompts(grammar) if p.split == split)


def draw_prompt(rng, split: str, grammar: str = "single", pair_share: float = 0.5):
    """One prompt of ``split`` drawn with ``rng`` (a numpy Generator): for "mixed", a pair prompt with
    probability ``pair_share``, else a single-object one; uniformly within the kind."""
    kind = grammar
    if grammar == "mixed":
        kind = "pair" if rng.random() < pair_share else "single"
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    check_grammar(grammar)
    pool = _split(split, kind)  # the cached tuple: no list copy per draw (pretraining draws 16 per step)
    return pool[int(rng.integers(len(pool)))]
