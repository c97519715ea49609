"""Flow-RWR: reward-weighted regression on the flow-matching loss (VideoAlign, eq. 8).

``loss = mean_i exp(r_i / beta) e_i`` with ``e_i = mean((v_theta - v)^2)`` of sample ``i``;
with ``normalize=True`` the weights are ``softmax(r / beta)`` over the batch and the loss is
``sum_i w_i e_i`` (bounded weights, the stable form for raw rewards of any scale). Weights are
constants: no gradient flows into the rewards.
"""

from __future__ import annotations

import torch

from .errors import per_sample_error


def flow_rwr_loss(
    pred: torch.Tensor, target: torch.Tensor, rewards: torch.Tensor, beta: float = 1.0, normalize: bool = False
) -> dict[str, torch.Tensor]:
    """Returns ``{"loss", "weights"}``; ``"loss"`` (a scalar) is the first item."""
    if beta <= 0:
        raise ValueError(f"RWR beta must be > 0, got {beta}")
    e = per_sample_error(pred, target)
    r = torch.as_tensor(rewards, dtype=torch.float32, device=e.device).reshape(-1).detach()
    if r.shape[0] != e.shape[0]:
        raise ValueError(f"got {r.shape[0]} rewards for {e.shape[0]} samples")
    w = torch.softmax(r / beta, dim=0) if normalize else torch.exp(r / beta)
    loss = (w * e).sum() if normalize else (w * e).mean()
    return {"loss": loss, "weights": w}
