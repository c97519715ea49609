"""Flow-NRG: reward guidance at sampling time (VideoAlign, Section 4.3), the sampler side.

Derivation and sign convention. The sampler integrates ``dx/dt = v(x_t, t)`` from t = 1 (noise) to
t = 0 (data) with Euler steps ``x_{t'} = x_t + (t' - t) v``, ``t' < t``. A reward ``r(x_t, t)`` that
reads noised latents (the latent reward model) has gradient ``g = grad_x r``. Guidance replaces the
velocity by

    v' = v - w g,        so        x_{t'} = x_t + (t' - t) v + (t - t') w g,

and since ``t - t' > 0`` every guided step moves the latent by ``(t - t') w`` along ``+g``: up the
reward, by an amount proportional to the step's share of the trajectory. ``r`` combines the
dimensions with user weights, ``r = w_VQ r_VQ + w_MQ r_MQ + w_TA r_TA``, and guidance applies only on
the steps whose index lies in ``[start, end)`` (fractions of the step count).

With ``scale == 0`` (or an empty step range) no gradient is computed and the sampler's arithmetic is
exactly the unguided one. Gradients are taken with respect to a detached copy of ``x_t`` only: the
generator's and the reward model's parameters receive none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhf.dims import RewardWeights


@dataclass
class GuidanceConfig:
    scale: float = 0.0  # w; 0 = unguided
    weights: RewardWeights = field(default_factory=lambda: RewardWeights(0.0, 0.0, 1.0))  # VQ:MQ:TA of r
    start: float = 0.0  # guide steps i with start <= i / steps < end
    end: float = 1.0  # end of the guided steps, a fraction of them (see start; 1 = through the last step)

    def validate(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.scale}")
        if self.scale > 0:
            self.weights.validate()
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got start {self.start}, end {self.end}")

    def active(self, step: int, steps: int) -> bool:
        return self.scale > 0 and self.start <= step / steps < self.end


def reward_gradient(reward_fn, x: torch.Tensor, t: torch.Tensor, cfg: GuidanceConfig) -> torch.Tensor:
    """``grad_x`` of ``sum_b (w . r(x_t, t))_b``; ``reward_fn(x, t) -> (B, 3)`` VQ/MQ/TA."""
    with torch.enable_grad():
        xg = x.detach().float().requires_grad_(True)
        r = reward_fn(xg, t)
        if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] != x.shape[0]:
            raise ValueError(f"the latent reward must return (batch, 3) VQ/MQ/TA scores, got {tuple(r.shape)}")
        (grad,) = torch.autograd.grad(cfg.weights.weighted(r.float()).sum(), xg)
    return grad.to(x.dtype)


def guided_velocity(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, reward_fn, cfg: GuidanceConfig) -> torch.Tensor:
    """``v' = v - w grad_x r(x_t, t)`` (see the module docstring for the sign)."""
    return v - cfg.scale * reward_gradient(reward_fn, x, t, cfg)
