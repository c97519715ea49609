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

from dataclasses import dataclass

import torch


@dataclass
class GuidanceConfig:
    scale: float = 0.0  # w; 0 = unguided
    VQ: float = 0.0  # dimension weights of r
    MQ: float = 0.0
    TA: float = 1.0
    start: float = 0.0  # guide steps i with start <= i / steps < end
    end: float = 1.0

    def validate(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.scale}")
        if min(self.VQ, self.MQ, self.TA) < 0 or (self.scale > 0 and self.VQ + self.MQ + self.TA == 0):
            raise ValueError(f"guidance weights must be >= 0 and not all zero, got {self.VQ}:{self.MQ}:{self.TA}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"need 0 <= start <= end <= 1, got start {self.start}, end {self.end}")

    @classmethod
    def parse_weights(cls, text: str, **kw) -> GuidanceConfig:
        """``"0.1,0.1,0.8"`` (VQ, MQ, TA) -> a config with those weights."""
        try:
            vq, mq, ta = (float(x) for x in text.split(","))
        except ValueError:
            raise ValueError(
                f"guidance weights must be three numbers VQ,MQ,TA like 0.1,0.1,0.8, got {text!r}"
            ) from None
        return cls(VQ=vq, MQ=mq, TA=ta, **kw)

    def active(self, step: int, steps: int) -> bool:
        return self.scale > 0 and self.start <= step / steps < self.end


def reward_gradient(reward_fn, x: torch.Tensor, t: torch.Tensor, cfg: GuidanceConfig) -> torch.Tensor:
    """``grad_x`` of ``sum_b (w . r(x_t, t))_b``; ``reward_fn(x, t) -> (B, 3)`` VQ/MQ/TA."""
    w = torch.tensor([cfg.VQ, cfg.MQ, cfg.TA], dtype=torch.float32, device=x.device)
    with torch.enable_grad():
        xg = x.detach().float().requires_grad_(True)
        r = reward_fn(xg, t)
        if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] != x.shape[0]:
            raise ValueError(f"the latent reward must return (batch, 3) VQ/MQ/TA scores, got {tuple(r.shape)}")
        (grad,) = torch.autograd.grad((r.float() @ w).sum(), xg)
    return grad.to(x.dtype)


def guided_velocity(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor, reward_fn, cfg: GuidanceConfig) -> torch.Tensor:
    """``v' = v - w grad_x r(x_t, t)`` (see the module docstring for the sign)."""
    return v - cfg.scale * reward_gradient(reward_fn, x, t, cfg)
