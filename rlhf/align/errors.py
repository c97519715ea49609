"""Shared per-sample error of a velocity prediction."""

from __future__ import annotations

import torch


def per_sample_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean over every non-batch dim of (pred - target)^2``, shape ``(B,)``."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)
