"""Judges: what scores a batch of videos for their prompts, as ``{"VQ", "MQ", "TA"}`` per video.

What is stored is what is judged: every judge scores the clip after the same H.264 round trip
(crf 12, 4:2:0) that the preference datasets store, so the oracle's thresholds and the reward model's
training distribution apply to generated clips exactly as to the labelled ones.

* ``oracle``: the moving-shapes oracle annotator (raw scores in [0, 1]); ground truth of the world.
* ``learned``: a VideoReward checkpoint (``default`` = the shipped one), normalised scores as VideoAlign
  reports them ((raw - mean) / std per dimension).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

TIE_MARGINS = {"oracle": 0.01, "learned": 0.05}  # |difference| at or under this is a tie (score units)
STORED_CRF = 12  # the dataset builder's H.264 quality


def as_stored(videos) -> list[np.ndarray]:
    """Each clip after an in-memory H.264 round trip, as a dataset would store it."""
    from rlhf.video import encode_video, read_video

    return [read_video(encode_video(np.asarray(v), crf=STORED_CRF)) for v in videos]


class OracleJudge:
    name = key = "oracle"  # key: which model scores (one oracle)

    def __call__(self, videos, prompts: list[str]) -> list[dict[str, float]]:
        from rlhf.synthetic.oracle import score

        return [score(v, p) for v, p in zip(as_stored(videos), prompts)]


class LearnedJudge:
    name = "learned"

    def __init__(self, checkpoint: str = "default", batch: int = 32):
        from rlhf.reward.inference import VideoReward

        self.model = VideoReward.default() if checkpoint == "default" else VideoReward.from_checkpoint(checkpoint)
        self.batch = batch
        self._key = None

    @property
    def key(self) -> str:
        """Which model scores: a hash of its weights and normalisation (cached scores are keyed by it)."""
        if self._key is None:
            import torch

            h = hashlib.sha256(json.dumps(self.model.info.norm, sort_keys=True).encode())
            for name, t in sorted(self.model.model.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
            self._key = "learned:" + h.hexdigest()[:16]
        return self._key

    def __call__(self, videos, prompts: list[str]) -> list[dict[str, float]]:
        out, stored = [], as_stored(videos)
        for i in range(0, len(prompts), self.batch):
            out += self.model.reward(stored[i : i + self.batch], list(prompts[i : i + self.batch]))
        return out


def make_judge(spec: str):
    """``oracle`` | ``default`` (the shipped VideoReward) | a VideoReward checkpoint directory."""
    return OracleJudge() if spec == "oracle" else LearnedJudge(spec)


def as_matrix(scores: list[dict[str, float]]) -> np.ndarray:
    return np.array([[s["VQ"], s["MQ"], s["TA"]] for s in scores], dtype=np.float64)
