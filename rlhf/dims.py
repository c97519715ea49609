"""The reward's three dimensions and how they are weighted: one vocabulary for the whole project.

VideoReward scores visual quality (VQ), motion quality (MQ) and text alignment (TA). Pairs, offline and
online alignment, evaluation, Flow-NRG guidance and the tables all combine them as the weighted sum
``w_VQ r_VQ + w_MQ r_MQ + w_TA r_TA`` of :class:`RewardWeights`; a weighting is written ``VQ:MQ:TA``
(``1:1:1``, ``0:0:1``) on command lines and in tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIMS = ("VQ", "MQ", "TA")
LABEL_DIMS = (*DIMS, "Overall")  # what raters label and VideoReward reports: the three and their sum


@dataclass
class RewardWeights:
    VQ: float = 1.0  # weight of visual quality
    MQ: float = 1.0  # weight of motion quality
    TA: float = 1.0  # weight of text alignment

    @classmethod
    def parse(cls, text: str) -> RewardWeights:
        """``"1:1:1"`` or ``"0.1,0.1,0.8"`` (VQ, MQ, TA) -> weights, validated."""
        parts = text.replace(",", ":").split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            w = cls(*(float(x) for x in parts))
        except ValueError:
            raise ValueError(
                f"reward weights must be three numbers VQ:MQ:TA like 1:1:1 or 0:0:1, got {text!r}"
            ) from None
        w.validate()
        return w

    @classmethod
    def parse_list(cls, text: str) -> list[RewardWeights]:
        """``"1:1:1,0:0:1"`` -> one weighting per comma-separated item."""
        items = [w for w in text.split(",") if w.strip()]
        if not items:
            raise ValueError(f"need at least one VQ:MQ:TA weighting like 1:1:1,0:0:1, got {text!r}")
        return [cls.parse(w.strip()) for w in items]

    def validate(self) -> None:
        ws = self.as_list()
        if any(not w >= 0 for w in ws) or sum(ws) == 0:
            raise ValueError(f"reward weights must be >= 0 and not all zero, got VQ:MQ:TA = {self.label}")

    def as_list(self) -> list[float]:
        return [self.VQ, self.MQ, self.TA]

    def weighted(self, scores):
        """``scores[..., 3]`` (VQ, MQ, TA last; a numpy array or a torch tensor) -> ``scores @ w``."""
        if hasattr(scores, "new_tensor"):  # a torch tensor: stays on its device, in its dtype, with its graph
            return scores @ scores.new_tensor(self.as_list())
        return np.asarray(scores, np.float64) @ np.asarray(self.as_list())

    def combine(self, scores: dict[str, float]) -> float:
        """The weighted sum of per-dimension ``scores`` given by name."""
        missing = [d for d in DIMS if d not in scores]
        if missing:
            raise KeyError(f"scores lack {missing}: expected keys {DIMS}, got {sorted(scores)}")
        return float(self.weighted(np.array([scores[d] for d in DIMS])))

    @property
    def label(self) -> str:
        return ":".join(f"{w:g}" for w in self.as_list())
