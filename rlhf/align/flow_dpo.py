"""Flow-DPO (VideoAlign, eq. 9; Diffusion-DPO carried to rectified flow).

Convention: ``x_t = (1 - t) x0 + t noise``, ``t = 1`` is noise, target velocity ``v = noise - x0``.
Winner ``w`` and loser ``l`` of a pair are noised with the *same* noise and the same ``t``. With the
per-sample errors ``e = mean((v_theta - v)^2)`` of the policy and ``e_ref`` of the reference (the base
model, adapter disabled)::

    inside = -(beta_t / 2) * ((e_w - e_ref_w) - (e_l - e_ref_l))
    loss   = mean(-log sigmoid(inside))
    beta_t = beta                 ("constant")
    beta_t = beta * (1 - t)^2     ("timestep": the paper's schedule, weaker at high noise)

The policy lowers its error on the winner relative to the reference more than on the loser. When the
policy equals the reference, ``inside = 0`` and the loss is ``ln 2``. ``implicit_accuracy`` is the
share of pairs with ``inside > 0`` (the policy already prefers the winner).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import per_sample_error

BETA_SCHEDULES = ("constant", "timestep")


def beta_t(beta: float, t: torch.Tensor, schedule: str = "constant") -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    if schedule == "constant":
        return torch.full_like(t, float(beta))
    if schedule == "timestep":
        return float(beta) * (1.0 - t) ** 2
    raise ValueError(f"unknown beta_schedule {schedule!r}: use one of {', '.join(BETA_SCHEDULES)}")


def flow_dpo_loss(
    pred_w: torch.Tensor,
    pred_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    target_w: torch.Tensor,
    target_l: torch.Tensor,
    t: torch.Tensor,
    beta: float,
    beta_schedule: str = "constant",
) -> dict[str, torch.Tensor]:
    """Flow-DPO loss of a batch of pairs. Returns ``{"loss", "implicit_accuracy", "inside",
    "policy_margin", "reference_margin"}``; ``"loss"`` (a scalar) is the first item."""
    bt = beta_t(beta, t, beta_schedule).to(pred_w.device)
    e_w, e_l = per_sample_error(pred_w, target_w), per_sample_error(pred_l, target_l)
    with torch.no_grad():
        r_w, r_l = per_sample_error(ref_w, target_w), per_sample_error(ref_l, target_l)
    if bt.shape[0] not in (1, e_w.shape[0]):
        raise ValueError(f"t has {bt.shape[0]} entries for a batch of {e_w.shape[0]} pairs")
    inside = -(bt / 2) * ((e_w - r_w) - (e_l - r_l))
    loss = -F.logsigmoid(inside).mean()
    return {
        "loss": loss,
        "implicit_accuracy": (inside > 0).float().mean().detach(),
        "inside": inside.detach(),
        "policy_margin": (e_l - e_w).mean().detach(),
        "reference_margin": (r_l - r_w).mean(),
    }
