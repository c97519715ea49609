"""Pretraining the world's base generator on rendered moving-shapes clips (plain flow matching).

Loss: ``|| v_theta(x_t, t, text) - (noise - x0) ||^2`` with ``x_t = (1 - t) x0 + t noise``. Training
times are shifted toward high noise, ``t = s u / (1 + (s - 1) u)`` with ``u`` uniform, as the sampler's
schedule is: measured, a logit-normal ``t`` left ``t > 0.9`` (1.4% of draws) nearly untrained and the
layout of sampled clips (where the object starts, hence its direction) came out wrong.

A share of the clips carries one visual- or motion-quality defect, so the pretrained policy sometimes
produces them and alignment has something to fix; text-alignment defects are left out of pretraining
(they would teach the base model to ignore the prompt). The prompt is dropped (empty) with probability
``text_dropout`` for classifier-free guidance. EMA weights are what gets exported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from rlhf.generator.model import noised
from rlhf.synthetic.prompts import check_grammar, draw_prompt
from rlhf.synthetic.render import RenderSpec, render

PRETRAIN_DEFECTS = ("noise", "blur", "colour_drift", "flicker", "jitter", "stutter")


@dataclass
class PretrainData:
    defect_share: float = 0.35  # fraction of clips with one VQ/MQ defect
    defect_min: float = 0.2  # defect strength drawn uniformly in [defect_min, 1]
    text_dropout: float = 0.1  # probability of the empty prompt (classifier-free guidance)
    grammar: str = "single"  # training prompts: single | pair | mixed (also the evaluation's)
    pair_share: float = 0.5  # with grammar "mixed": share of clips drawn for pair prompts

    def validate(self) -> None:
        check_grammar(self.grammar)
        if not 0.0 <= self.pair_share <= 1.0:
            raise ValueError(f"data.pair_share must be in [0, 1], got {self.pair_share}")
        if not 0.0 <= self.defect_share <= 1.0:
            raise ValueError(f"data.defect_share must be in [0, 1], got {self.defect_share}")
        if not 0.0 <= self.defect_min <= 1.0:
            raise ValueError(f"data.defect_min must be in [0, 1], got {self.defect_min}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ValueError(f"data.text_dropout must be in [0, 1), got {self.text_dropout}")


def draw_batch(rng: np.random.Generator, batch: int, data: PretrainData, spec: RenderSpec):
    """``batch`` rendered training clips, their prompt texts (some emptied) and the defects drawn."""
    videos, texts, defects = [], [], []
    for _ in range(batch):
        p = draw_prompt(rng, "train", data.grammar, data.pair_share)
        d = {}
        if rng.random() < data.defect_share:
            d[PRETRAIN_DEFECTS[rng.integers(len(PRETRAIN_DEFECTS))]] = float(rng.uniform(data.defect_min, 1.0))
        videos.append(render(p, d, seed=int(rng.integers(2**31)), spec=spec))
        texts.append("" if rng.random() < data.text_dropout else p.text)
        defects.append(d)
    return np.stack(videos), texts, defects


def shifted_times(
    n: int, shift: float, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Training times ``s u / (1 + (s - 1) u)``, ``u`` uniform, drawn on ``device`` (the generator's by default)."""
    if device is None and generator is not None:
        device = generator.device
    u = torch.rand(n, generator=generator, device=device)
    return shift * u / (1.0 + (shift - 1.0) * u)


def flow_matching_loss(
    gen, x0: torch.Tensor, text: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, reduce: bool = True
) -> torch.Tensor:
    """Per-sample (or mean) ``|v_theta(x_t) - (noise - x0)|^2`` averaged over every non-batch dim."""
    x_t, v = noised(x0, noise, t)
    err = (gen.velocity(x_t, t, text).float() - v).pow(2).flatten(1).mean(1)
    return err.mean() if reduce else err


class EMA:
    """Exponential moving average of every trainable parameter, with the usual warm-up of the decay."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).requires_grad_(False).eval()
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p.detach(), 1 - d)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = state["updates"]
