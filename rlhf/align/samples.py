"""A set of sampled clips with what reproduces them and their scores, saved as one file.

Rows of a table share one set (same prompts, seeds and sample budget for every algorithm), and an
evaluation reuses the pretrained policy's set across policies. A set records the generator, adapter
and sampler it came from, and :meth:`SampleSet.matches` refuses a cache drawn under other settings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class SampleSet:
    prompts: list[str]
    seeds: list[int]
    latents: torch.Tensor
    videos: np.ndarray
    source: dict  # generator, adapter, sampler settings
    scores: dict = field(default_factory=dict)  # judge name -> (n, 3) VQ/MQ/TA
    # judge name -> the judge's key (which model gave the scores): "learned" scores of one reward model are never
    # read back as another's after the shipped or configured reward changed
    score_keys: dict = field(default_factory=dict)

    @classmethod
    def draw(cls, gen, prompts: list[str], seeds: list[int], sampler, source: dict, progress=None) -> SampleSet:
        from rlhf.generator.sampler import sample

        lat, vids = [], []
        step = max(1, sampler.batch_size)
        for i in range(0, len(prompts), step):
            b = sample(gen, prompts[i : i + step], seeds[i : i + step], sampler)
            lat.append(b.latents)
            vids.append(b.videos)
            if progress is not None:
                progress.update(len(b.seeds))
        return cls(
            list(prompts),
            [int(s) for s in seeds],
            torch.cat(lat),
            np.concatenate(vids),
            {**source, "sampler": asdict(sampler)},
        )

    def score(self, judge) -> np.ndarray:
        from rlhf.eval.judges import as_matrix

        if self.score_keys.get(judge.name) != judge.key:
            self.scores[judge.name] = as_matrix(judge(self.videos, self.prompts))
            self.score_keys[judge.name] = judge.key
        return self.scores[judge.name]

    def matches(self, prompts: list[str], seeds: list[int], source: dict) -> bool:
        return self.prompts == list(prompts) and self.seeds == [int(s) for s in seeds] and self.source == source

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "prompts": self.prompts,
                "seeds": self.seeds,
                "latents": self.latents,
                "videos": self.videos,
                "source": self.source,
                "scores": self.scores,
                "score_keys": self.score_keys,
            },
            tmp,
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SampleSet:
        d = torch.load(path, weights_only=False)
        # a set saved before scores were keyed: its oracle scores stand (one oracle), any other judge scores again
        keys = d.get("score_keys", {"oracle": "oracle"} if "oracle" in d["scores"] else {})
        return cls(d["prompts"], d["seeds"], d["latents"], d["videos"], d["source"], d["scores"], keys)


def cached_draw(
    path: str | Path | None, gen, prompts: list[str], seeds: list[int], sampler, source: dict, progress=None
) -> SampleSet:
    """Load the set at ``path`` if it was drawn with the same prompts, seeds and source; else draw and save."""
    want = {**source, "sampler": asdict(sampler)}
    if path is not None and Path(path).is_file():
        s = SampleSet.load(path)
        if s.matches(prompts, seeds, want):
            return s
    s = SampleSet.draw(gen, prompts, seeds, sampler, source, progress)
    if path is not None:
        s.save(path)
    return s
