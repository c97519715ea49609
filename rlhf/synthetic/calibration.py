"""How each defect moves each oracle score: the defect x dimension table.

For every defect and strength, the mean oracle VQ / MQ / TA over a fixed sample of prompts and
seeds. The defect's own dimension must fall monotonically with strength; the others should barely
move (``crosstalk`` is the largest drop of another dimension from strength 0 to any strength).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf.dims import DIMS

from .oracle import score
from .prompts import all_prompts
from .render import DEFECTS, RenderSpec, defects_for, render

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class DefectRow:
    defect: str
    harms: str
    means: np.ndarray  # (levels, 3) mean VQ, MQ, TA

    @property
    def monotone(self) -> bool:
        col = self.means[:, DIMS.index(self.harms)]
        return bool(np.all(np.diff(col) < 0))

    @property
    def drop(self) -> float:
        col = self.means[:, DIMS.index(self.harms)]
        return float(col[0] - col.min())

    @property
    def crosstalk(self) -> float:
        others = [i for i, d in enumerate(DIMS) if d != self.harms]
        return float(max(self.means[0, i] - self.means[:, i].min() for i in others))


def defect_table(
    n_prompts: int = 24,
    levels=LEVELS,
    seed: int = 0,
    spec: RenderSpec = RenderSpec(),
    defects=None,
    grammar: str = "single",
) -> list[DefectRow]:
    """Mean oracle scores per defect and strength over ``n_prompts`` prompts of ``grammar`` ("single" or
    "pair"; one seed each); ``defects`` (default: every kind that applies to the grammar's prompts)."""
    rng = np.random.default_rng(seed)
    prompts = all_prompts(grammar)
    defects = tuple(defects) if defects is not None else defects_for(prompts[0])
    chosen = [prompts[i] for i in rng.choice(len(prompts), size=n_prompts, replace=False)]
    seeds = rng.integers(0, 2**31 - 1, size=n_prompts)
    rows = []
    for defect in defects:
        means = np.array(
            [
                np.mean(
                    [
                        [score(render(p, {defect: s}, int(sd), spec), p)[d] for d in DIMS]
                        for p, sd in zip(chosen, seeds)
                    ],
                    axis=0,
                )
                for s in levels
            ]
        )
        rows.append(DefectRow(defect, DEFECTS[defect], means))
    return rows


def reference_scores(n: int = 24, seed: int = 0, spec: RenderSpec = RenderSpec()) -> dict[str, np.ndarray]:
    """Mean oracle scores of clean renders, uniform-noise videos and blank backgrounds."""
    rng = np.random.default_rng(seed)
    prompts = all_prompts()
    chosen = [prompts[i] for i in rng.choice(len(prompts), size=n, replace=False)]
    shape = (spec.frames, spec.height, spec.width, 3)

    def mean(videos):
        return np.mean([[score(v, p)[d] for d in DIMS] for v, p in zip(videos, chosen)], axis=0)

    return {
        "clean render": mean([render(p, None, i, spec) for i, p in enumerate(chosen)]),
        "pure noise": mean([rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in chosen]),
        "blank frame": mean([np.full(shape, 128, dtype=np.uint8) for _ in chosen]),
    }
