"""Pairwise reward-model losses: Bradley-Terry, Bradley-Terry-with-ties, regression.

Labels: 1 = A preferred, -1 = B preferred, 0 = tie, any other value = not annotated (masked).
Inputs ``r_a, r_b, labels`` share a shape, (B,) or (B, D). ``reduction="none"`` returns per-element
losses with masked entries 0; ``reduction="mean"`` averages over annotated entries only (0 when none).

BT:  -log sigmoid(D) for A, -log sigmoid(-D) for B, ties contribute 0 (and count as not annotated
     in the mean), with D = r_a - r_b.
BTT (Rao-Kupper with tie parameter k > 1, VideoAlign eq. 2):
     P(A) = sigmoid(D - ln k),  P(B) = sigmoid(-D - ln k),  P(tie) = 1 - P(A) - P(B)
          = (k^2 - 1) e^D / ((e^D + k)(k e^D + 1)),
     loss = -log P(label). Every term is computed with softplus in log space, so the loss stays
     finite and its gradient exact for any |D|.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if r_a.shape != r_b.shape or r_a.shape != labels.shape:
        raise ValueError(
            f"r_a, r_b and labels must share a shape, got {tuple(r_a.shape)}, {tuple(r_b.shape)}, {tuple(labels.shape)}"
        )
    if r_a.dim() not in (1, 2):
        raise ValueError(f"rewards must be (B,) or (B, D), got {tuple(r_a.shape)}")
    return labels.to(r_a.device)


def _reduce(per: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    per = torch.where(mask, per, torch.zeros_like(per))
    if reduction == "none":
        return per
    if reduction == "mean":
        return per.sum() / mask.sum().clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(+-(r_a - r_b)); ties and unannotated entries are masked."""
    labels = _check(r_a, r_b, labels)
    d = r_a - r_b
    a, b = labels == 1, labels == -1
    per = torch.where(a, F.softplus(-d), F.softplus(d))  # -log sigmoid(d) = softplus(-d)
    return _reduce(per, a | b, reduction)


def _log_p_tie(d: torch.Tensor, ln_k: float) -> torch.Tensor:
    """log P(tie) = log(k^2 - 1) + D - log(e^D + k) - log(k e^D + 1), stable for any D."""
    log_k2m1 = math.log(math.expm1(2 * ln_k))
    # log(e^D + k) = ln k + softplus(D - ln k);  log(k e^D + 1) = softplus(D + ln k)
    return log_k2m1 + d - (ln_k + F.softplus(d - ln_k)) - F.softplus(d + ln_k)


def btt_probabilities(d: torch.Tensor, k: float = 5.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P(A), P(B), P(tie)) for margins ``d`` under Rao-Kupper with parameter ``k``."""
    ln_k = math.log(k)
    return torch.sigmoid(d - ln_k), torch.sigmoid(-d - ln_k), torch.exp(_log_p_tie(d, ln_k))


def btt_loss(
    r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor, k: float = 5.0, reduction: str = "mean"
) -> torch.Tensor:
    """Bradley-Terry-with-ties (Rao-Kupper, k > 1): negative log-likelihood of A, B or tie."""
    if not k > 1.0:
        raise ValueError(f"k must be > 1, got {k}")
    labels = _check(r_a, r_b, labels)
    ln_k = math.log(k)
    d = r_a - r_b
    nll_a = F.softplus(-(d - ln_k))  # -log sigmoid(d - ln k)
    nll_b = F.softplus(d + ln_k)  # -log sigmoid(-d - ln k)
    nll_t = -_log_p_tie(d, ln_k)
    per = torch.where(labels == 1, nll_a, torch.where(labels == -1, nll_b, nll_t))
    return _reduce(per, (labels == 1) | (labels == -1) | (labels == 0), reduction)


def regression_loss(
    pred_a: torch.Tensor, pred_b: torch.Tensor, score_a: torch.Tensor, score_b: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Squared error of both videos' predictions to their per-video scores (MOS); NaN scores are masked.

    ``reduction="none"`` returns the per-pair sum of the two squared errors."""
    if not (pred_a.shape == pred_b.shape == score_a.shape == score_b.shape):
        raise ValueError("pred_a, pred_b, score_a and score_b must share a shape")
    score_a, score_b = score_a.to(pred_a), score_b.to(pred_b)
    ma, mb = ~torch.isnan(score_a), ~torch.isnan(score_b)
    ea = torch.where(ma, (pred_a - torch.nan_to_num(score_a)) ** 2, torch.zeros_like(pred_a))
    eb = torch.where(mb, (pred_b - torch.nan_to_num(score_b)) ** 2, torch.zeros_like(pred_b))
    if reduction == "none":
        return ea + eb
    if reduction == "mean":
        return (ea.sum() + eb.sum()) / (ma.sum() + mb.sum()).clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
