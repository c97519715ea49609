"""SFT: the plain flow-matching loss on the best sample of each prompt group."""

from __future__ import annotations

import torch

from .errors import per_sample_error


def sft_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"loss": mean_i e_i}`` with ``e_i = mean((v_theta - v)^2)`` per sample."""
    return {"loss": per_sample_error(pred, target).mean()}
