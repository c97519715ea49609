"""Policy against pretrained: win rates per judge and dimension, mean scores, the hacking flag."""

from __future__ import annotations

from rlhf.dims import DIMS, RewardWeights

from .judges import TIE_MARGINS
from .winrate import reward_hacking, win_rates


def compare(base, policy, judges, weights: RewardWeights) -> dict:
    """``base`` and ``policy`` are :class:`SampleSet` s of the same prompts and seeds."""
    if base.prompts != policy.prompts or base.seeds != policy.seeds:
        raise ValueError("policy and pretrained samples must share prompts and seeds (same order)")
    out = {"n": len(base.prompts), "weights": weights.label}
    for judge in judges:
        b, p = base.score(judge), policy.score(judge)
        out[judge.name] = {
            "win_rate": win_rates(p, b, weights, TIE_MARGINS[judge.name]),
            "mean_policy": dict(zip(DIMS, p.mean(0).round(4).tolist())),
            "mean_pretrained": dict(zip(DIMS, b.mean(0).round(4).tolist())),
        }
    if "oracle" in out and "learned" in out:
        out["reward_hacking"] = reward_hacking(out["learned"]["win_rate"], out["oracle"]["win_rate"], out["n"])
    return out
