"""Win rates of a policy against the pretrained one, and the reward-hacking flag.

Both policies sample the same held-out prompts with the same seeds; each pair of clips is judged per
dimension and on the weighted objective: a win counts 1, a tie (|difference| <= the judge's tie
margin) 1/2, a loss 0.

Reward hacking: the learned reward says the policy wins (weighted win rate > 50%) while the oracle says
it loses some dimension: that dimension's oracle win rate is below 50% by more than two standard
errors of a win rate over n pairs (sqrt(0.25 / n)), so that sampling noise alone does not raise it.
"""

from __future__ import annotations

import math

import numpy as np

from rlhf.dims import DIMS, RewardWeights


def win_rate(policy: np.ndarray, base: np.ndarray, tie: float) -> float:
    d = np.asarray(policy, np.float64) - np.asarray(base, np.float64)
    return float(np.mean(np.where(np.abs(d) <= tie, 0.5, (d > 0).astype(np.float64))))


def win_rates(policy: np.ndarray, base: np.ndarray, weights: RewardWeights, tie: float) -> dict[str, float]:
    """``policy``/``base``: (n, 3) VQ/MQ/TA scores of the same prompts and seeds."""
    p, b = np.asarray(policy), np.asarray(base)
    if p.shape != b.shape or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"score matrices must both be (n, 3), got {p.shape} and {b.shape}")
    out = {d: win_rate(p[:, i], b[:, i], tie) for i, d in enumerate(DIMS)}
    out["weighted"] = win_rate(weights.weighted(p), weights.weighted(b), tie * sum(weights.as_list()))
    return out


def reward_hacking(learned: dict[str, float], oracle: dict[str, float], n: int) -> list[str]:
    """Dimensions the oracle says were traded away while the learned reward says the policy wins."""
    if learned["weighted"] <= 0.5:
        return []
    se = math.sqrt(0.25 / max(n, 1))
    return [d for d in DIMS if oracle[d] < 0.5 - 2 * se]


def steering(rows: list[tuple[RewardWeights, dict[str, float]]]) -> dict[str, dict]:
    """Does each dimension's win rate rise with that dimension's weight? ``rows``: (VQ, MQ, TA weights,
    win rates per dimension) of guided rows against one unguided baseline. Per dimension: the mean win rate
    at each distinct weight, in increasing weight, and ``monotone`` (never lower at a larger weight)."""
    out = {}
    for i, d in enumerate(DIMS):
        levels: dict[float, list[float]] = {}
        for w, win in rows:
            levels.setdefault(float(w.as_list()[i]), []).append(float(win[d]))
        curve = [(w, float(np.mean(v))) for w, v in sorted(levels.items())]
        out[d] = {"curve": curve, "monotone": all(b[1] >= a[1] for a, b in zip(curve, curve[1:]))}
    return out
