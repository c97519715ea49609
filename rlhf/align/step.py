"""One optimisation step of each alignment algorithm on a :class:`FlowGenerator` with LoRA.

The policy is the generator with its adapter enabled; the reference is the same module with the
adapter disabled (:meth:`FlowGenerator.reference`), so no second copy of the weights exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .flow_dpo import BETA_SCHEDULES, flow_dpo_loss
from .flow_rwr import flow_rwr_loss
from .pairs import logit_normal_times
from .sft import sft_loss

ALGORITHMS = ("dpo", "dpo_timestep", "rwr", "sft")


@dataclass
class AlgoConfig:
    algo: str = "dpo"  # dpo (constant beta) | dpo_timestep (beta (1-t)^2) | rwr | sft
    beta: float = 2000.0  # Flow-DPO beta
    rwr_beta: float = 1.0  # Flow-RWR temperature on the weighted reward, z-scored over the sample set
    rwr_normalize: bool = True  # softmax weights over the batch (bounded) instead of exp(r / beta)
    t_mean: float = 0.0  # logit-normal timestep distribution: sigmoid(t_mean + t_std z)
    t_std: float = 1.0

    def validate(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algo!r}: use one of {', '.join(ALGORITHMS)}")
        if self.beta <= 0 or self.rwr_beta <= 0:
            raise ValueError("beta and rwr_beta must be > 0")
        if self.t_std <= 0:
            raise ValueError(f"t_std must be > 0, got {self.t_std}")

    @property
    def beta_schedule(self) -> str:
        return BETA_SCHEDULES[1] if self.algo == "dpo_timestep" else BETA_SCHEDULES[0]


def _noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    tb = t.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - tb) * x0 + tb * noise, noise - x0


def dpo_loss(gen, x_w: torch.Tensor, x_l: torch.Tensor, text: torch.Tensor, cfg: AlgoConfig,
             rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Flow-DPO on pairs of clean latents ``x_w`` (winners) and ``x_l`` (losers) sharing ``text``."""
    n = x_w.shape[0]
    t = logit_normal_times(n, cfg.t_mean, cfg.t_std, rng)
    noise = torch.randn(x_w.shape, generator=rng)
    xt_w, v_w = _noised(x_w, noise, t)
    xt_l, v_l = _noised(x_l, noise, t)
    xt, tt, txt = torch.cat([xt_w, xt_l]), torch.cat([t, t]), torch.cat([text, text])
    pred_w, pred_l = gen.velocity(xt, tt, txt).chunk(2)
    with torch.no_grad(), gen.reference():
        ref_w, ref_l = gen.velocity(xt, tt, txt).chunk(2)
    return flow_dpo_loss(pred_w, pred_l, ref_w, ref_l, v_w, v_l, t, cfg.beta, cfg.beta_schedule)


def weighted_fm_loss(gen, x0: torch.Tensor, text: torch.Tensor, rewards: torch.Tensor | None, cfg: AlgoConfig,
                     rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Flow-RWR (``rewards`` given) or SFT (``rewards=None``) on clean latents ``x0``."""
    t = logit_normal_times(x0.shape[0], cfg.t_mean, cfg.t_std, rng)
    xt, v = _noised(x0, torch.randn(x0.shape, generator=rng), t)
    pred = gen.velocity(xt, t, text)
    if rewards is None:
        return sft_loss(pred, v)
    return flow_rwr_loss(pred, v, rewards, cfg.rwr_beta, cfg.rwr_normalize)
