"""Judges: what scores a batch of videos for their prompts, as ``{"VQ", "MQ", "TA"}`` per video.

* ``oracle``: the moving-shapes oracle annotator (raw scores in [0, 1]); ground truth of the world.
* ``learned``: a VideoReward checkpoint (``default`` = the shipped one), normalised scores as VideoAlign
  reports them ((raw - mean) / std per dimension).
"""

from __future__ import annotations

import numpy as np

TIE_MARGINS = {"oracle": 0.01, "learned": 0.05}  # |difference| at or under this is a tie (score units)


class OracleJudge:
    name = "oracle"

    def __call__(self, videos, prompts: list[str]) -> list[dict[str, float]]:
        from rlhf.synthetic.oracle import score

        return [score(v, p) for v, p in zip(videos, prompts)]


class LearnedJudge:
    name = "learned"

    def __init__(self, checkpoint: str = "default", batch: int = 32):
        from rlhf.reward.checkpoint import VideoReward

        self.model = VideoReward.default() if checkpoint == "default" else VideoReward.from_checkpoint(checkpoint)
        self.batch = batch

    def __call__(self, videos, prompts: list[str]) -> list[dict[str, float]]:
        out = []
        for i in range(0, len(prompts), self.batch):
            out += self.model.reward(list(videos[i:i + self.batch]), list(prompts[i:i + self.batch]))
        return out


def make_judge(spec: str):
    """``oracle`` | ``default`` (the shipped VideoReward) | a VideoReward checkpoint directory."""
    return OracleJudge() if spec == "oracle" else LearnedJudge(spec)


def as_matrix(scores: list[dict[str, float]]) -> np.ndarray:
    return np.array([[s["VQ"], s["MQ"], s["TA"]] for s in scores], dtype=np.float64)
