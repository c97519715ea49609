"""From scored prompt groups to preference pairs, and the timestep distribution of alignment.

A prompt group is the G samples drawn for one prompt. Each sample's reward is the weighted sum
``w_VQ r_VQ + w_MQ r_MQ + w_TA r_TA`` (weights configurable, e.g. 1:1:1 or TA only). Pairs:

* ``best_worst``: the best against the worst sample of each group (one pair per group);
* ``margin``: every pair of the group whose weighted rewards differ by more than ``margin``.

Groups whose best and worst are within ``margin`` (ties) give no pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlhf.dims import RewardWeights

if TYPE_CHECKING:  # numpy only at import: Ray Data's workers build pairs without loading torch
    import torch

PAIR_MODES = ("best_worst", "margin")


@dataclass
class PairConfig:
    mode: str = "best_worst"  # best_worst | margin
    margin: float = 0.0  # minimum weighted-reward gap of a pair
    weights: RewardWeights = field(default_factory=RewardWeights)  # VQ:MQ:TA weights of the pair reward

    def validate(self) -> None:
        if self.mode not in PAIR_MODES:
            raise ValueError(f"pairs.mode must be one of {PAIR_MODES}, got {self.mode!r}")
        if self.margin < 0:
            raise ValueError(f"pairs.margin must be >= 0, got {self.margin}")
        self.weights.validate()


def group_indices(prompts: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return groups


def build_pairs(prompts: list[str], rewards: list[float], cfg: PairConfig) -> list[tuple[int, int]]:
    """``(winner, loser)`` index pairs within prompt groups, by the already weighted ``rewards``."""
    if len(prompts) != len(rewards):
        raise ValueError(f"{len(prompts)} prompts but {len(rewards)} rewards")
    pairs = []
    for idx in group_indices(prompts).values():
        if len(idx) < 2:
            continue
        if cfg.mode == "best_worst":
            best = max(idx, key=lambda i: rewards[i])
            worst = min(idx, key=lambda i: rewards[i])
            if rewards[best] - rewards[worst] > cfg.margin:
                pairs.append((best, worst))
        else:
            for a in idx:
                for b in idx:
                    if rewards[a] - rewards[b] > cfg.margin:
                        pairs.append((a, b))
    return pairs


def best_of_groups(prompts: list[str], rewards: list[float]) -> list[int]:
    """Index of the best sample of each prompt group (SFT data)."""
    return [max(idx, key=lambda i: rewards[i]) for idx in group_indices(prompts).values()]


def logit_normal_times(
    n: int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``t = sigmoid(mean + std z)``, ``z`` standard normal (SD3's choice for flow-matching training),
    drawn on ``device`` (the generator's device when a generator is given)."""
    import torch

    if device is None and generator is not None:
        device = generator.device
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))
