"""Reward-model training and evaluation, independent of Ray (the job wraps it in Ray Train).

One step: both videos of B pairs go through the model in one forward pass (2B sequences), the loss
compares ``r_a`` and ``r_b`` per dimension (BTT by default, BT or regression for the ablation), and
the optimiser (plain torch or a DeepSpeed engine) steps. Evaluation reports, per dimension and
overall, pairwise accuracy with and without ties (``rlhf.reward.metrics``); Overall compares the sum of
normalised rewards with the Overall label, as VideoAlign does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from rlhf.device import DeviceConfig, module_device, module_dtype
from rlhf.dims import DIMS

from .data import PairBatch, build_batch
from .distributed import check_zero_stage
from .losses import bt_loss, btt_loss, regression_loss
from .metrics import accuracy_with_ties, accuracy_without_ties
from .model import BackboneConfig, TrainableParts
from .processor import FrameSampling


@dataclass
class RewardTrainConfig:
    """Training of VideoReward (see jobs/train_reward.py for the Ray side)."""

    data: str = "runs/dataset"  # dataset directory with prefs.parquet, or a parquet file
    root: str = ""  # video root (default: the parquet file's folder)
    out: str = "runs/reward"  # run directory: checkpoints (VideoAlign layout), metrics, tables
    # btt (Bradley-Terry with ties) | bt (ties left out) | regression (per-video scores)
    loss: Literal["btt", "bt", "regression"] = "btt"
    tie_k: float = 5.0  # Rao-Kupper k of the BTT loss (VideoAlign: 5)
    separate_tokens: bool = True  # False: one shared token at the end (ablation)
    caption_weight: float = 0.0  # > 0 adds the caption auxiliary loss (prompt NLL given the video)
    caption_min_ta: float = 0.9  # videos captioned: per-video TA score >= this (without scores: the TA winner)
    caption_warmup_steps: int = 0  # first steps train the caption loss alone (video-to-text pretraining)
    batch_size: int = 8  # pairs per step per worker
    lr: float = 5e-4  # peak AdamW learning rate
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: to lr_floor x lr at max_steps
    warmup_steps: int = 0  # linear warm-up of the learning rate
    lr_floor: float = 0.1  # lr_schedule=cosine ends at lr_floor x lr
    weight_decay: float = 0.0  # AdamW weight decay
    epochs: int = 3  # passes over the training pairs (data=synthetic streams until max_steps instead)
    max_steps: int = 0  # > 0 caps the run
    eval_every: int = 0  # steps between held-out evaluations (0: only at the end)
    checkpoint_every: int = 100  # steps between checkpoints
    eval_pairs: int = 0  # > 0 evaluates on that many held-out pairs only
    seed: int = 0  # initial weights, data order and the synthetic pair stream
    train_split: str = "train"  # split of data's pairs that trains (also the normalisation pairs' split)
    eval_split: str = "heldout"  # split of eval_data's pairs evaluated
    num_workers: int = 2  # Ray Train workers
    zero_stage: int = 0  # DeepSpeed ZeRO stage 0-3
    # Each worker's device and precision: cuda gives every Ray Train worker one GPU (use_gpu) and NCCL,
    # bf16 turns on DeepSpeed's bf16 (fp32 on CPU: bf16 is slower there), gradient_checkpointing
    # transformers' own activation checkpointing of the Qwen2-VL backbone.
    device: DeviceConfig = field(default_factory=DeviceConfig)
    # size of a Qwen2-VL built from scratch (init_from keeps its own)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # what the optimiser updates (init_from keeps its own)
    parts: TrainableParts = field(default_factory=TrainableParts)
    # frames and frame size the reward model reads (init_from keeps its own)
    sampling: FrameSampling = field(default_factory=FrameSampling)

    def validate(self) -> None:
        if self.tie_k <= 1:
            raise ValueError(f"tie_k must be > 1, got {self.tie_k}")
        if self.batch_size < 1 or self.num_workers < 1:
            raise ValueError("batch_size and num_workers must be >= 1")
        if self.lr_schedule == "cosine" and self.max_steps <= 0:
            raise ValueError("lr_schedule=cosine needs max_steps=N (the schedule ends there)")
        if self.caption_warmup_steps and self.caption_weight <= 0:
            raise ValueError("caption_warmup_steps needs caption_weight > 0")
        check_zero_stage(self.zero_stage, self.device.precision == "bf16")


def lr_multiplier(cfg: RewardTrainConfig, step: int) -> float:
    """Factor on ``cfg.lr`` at optimiser step ``step`` (0-based): linear warm-up over ``warmup_steps``,
    then constant or a cosine from 1 down to ``lr_floor`` at ``max_steps``."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    if cfg.lr_schedule == "constant":
        return warm
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(0, step - cfg.warmup_steps) / span)
    return warm * (cfg.lr_floor + (1.0 - cfg.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def on_model(model: torch.nn.Module, batch: PairBatch) -> PairBatch:
    """``batch`` on the device and in the precision of ``model`` (a DeepSpeed engine or the model)."""
    return batch.to(module_device(model), module_dtype(model))


def pair_rewards(model, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 raw rewards (B, 3) of the A and B videos of every pair, on the model's device."""
    batch = on_model(model, batch)
    inputs = {k: v for k, v in batch.inputs.items() if k != "caption_mask"}
    out = model(**inputs).float()
    n = len(batch.records)
    return out[:n], out[n:]


def caption_targets(batch: PairBatch, min_ta: float) -> torch.Tensor:
    """(2B,) 1.0 for the videos whose prompt is a faithful caption: per-video TA score >= ``min_ta``;
    a pair without scores captions its TA winner (both videos on a tie)."""
    label = batch.labels[:, DIMS.index("TA")]
    win_a, win_b = (label == 1) | (label == 0), (label == -1) | (label == 0)
    out = []
    for scores, winner in ((batch.score_a, win_a), (batch.score_b, win_b)):
        ta = scores[:, DIMS.index("TA")]
        out.append(torch.where(torch.isnan(ta), winner.float(), (ta >= min_ta).float()))
    return torch.cat(out)


def pair_loss(
    model,
    batch: PairBatch,
    loss: str,
    tie_k: float,
    caption_weight: float = 0.0,
    caption_min_ta: float = 0.9,
    reward_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scalar loss, detached margins (B, 3)). ``caption_weight`` > 0 adds that times the mean prompt
    NLL of the videos ``caption_targets`` picks (the batch needs ``caption_mask``); ``reward_weight``
    scales the preference loss (0 during a caption warm-up). The batch goes to the model's device and
    the loss is computed in fp32 whatever the model's precision."""
    n = len(batch.records)
    batch = on_model(model, batch)
    if caption_weight > 0:
        if "caption_mask" not in batch.inputs:
            raise ValueError("caption_weight > 0 needs a RewardProcessor(caption_mask=True)")
        rewards, nll = model(**batch.inputs)
        r_a, r_b = rewards[:n].float(), rewards[n:].float()
    else:
        r_a, r_b = pair_rewards(model, batch)
    if loss == "btt":
        value = btt_loss(r_a, r_b, batch.labels, k=tie_k)
    elif loss == "bt":
        value = bt_loss(r_a, r_b, batch.labels)
    elif loss == "regression":
        value = regression_loss(r_a, r_b, batch.score_a, batch.score_b)
    else:
        raise ValueError(f"unknown loss {loss!r}; use btt, bt or regression")
    value = reward_weight * value
    if caption_weight > 0:
        w = caption_targets(batch, caption_min_ta)
        value = value + caption_weight * (w * nll.float()).sum() / w.sum().clamp(min=1)
    return value, (r_a - r_b).detach()


@torch.no_grad()
def score_pairs(model, records: list[dict], root, processor, batch_size: int = 16):
    """Raw fp32 rewards of both videos of every usable pair, on the model's device ->
    (records, r_a (N, 3), r_b (N, 3), skipped)."""
    was_training = model.training
    model.eval()
    kept, ra, rb, skipped = [], [], [], []
    for s in range(0, len(records), batch_size):
        chunk = records[s : s + batch_size]
        batch = build_batch(chunk, root, processor, rows=list(range(s + 1, s + 1 + len(chunk))))
        if batch is None:
            continue
        a, b = pair_rewards(model, batch)
        kept += batch.records
        ra.append(a)
        rb.append(b)
        skipped += batch.skipped
    model.train(was_training)
    if not kept:
        empty = torch.zeros(0, 3, device=module_device(model))
        return [], empty, empty, skipped
    return kept, torch.cat(ra), torch.cat(rb), skipped


def norm_constants(r_a: torch.Tensor, r_b: torch.Tensor) -> dict[str, float]:
    """Mean and std per dimension of raw rewards over the videos of a set of pairs."""
    r = torch.cat([r_a, r_b]).double()
    out = {}
    for i, d in enumerate(DIMS):
        out[f"{d}_mean"] = float(r[:, i].mean())
        out[f"{d}_std"] = float(r[:, i].std().clamp(min=1e-6))
    return out


def accuracy_table(records: list[dict], r_a: torch.Tensor, r_b: torch.Tensor, norm: dict) -> dict:
    """Per dimension and Overall: accuracy with ties (and its threshold) and without ties."""
    from .data import label_tensor

    r_a, r_b = r_a.float().cpu(), r_b.float().cpu()
    table = {}
    labels = label_tensor(records).numpy()
    margins = (r_a - r_b).numpy()
    for i, d in enumerate(DIMS):
        keep = np.isin(labels[:, i], (-1, 0, 1))
        table[d] = _accuracies(labels[keep, i], margins[keep, i])
    from .inference import normalise

    overall_margin = normalise(r_a.numpy(), norm).sum(1) - normalise(r_b.numpy(), norm).sum(1)
    overall = label_tensor(records, ("Overall",)).numpy()[:, 0]
    keep = np.isin(overall, (-1, 0, 1))
    table["Overall"] = _accuracies(overall[keep], overall_margin[keep])
    return table


def _accuracies(human: np.ndarray, margin: np.ndarray) -> dict:
    if human.size == 0:
        return {"pairs": 0}
    with_t, e = accuracy_with_ties(human, margin)
    without = accuracy_without_ties(human, margin) if np.any(human != 0) else float("nan")
    return {"pairs": int(human.size), "with_ties": with_t, "threshold": e, "without_ties": without}


def format_table(table: dict, ceiling: dict | None = None) -> str:
    rows = [
        "| dim | pairs | acc w/ ties | acc w/o ties |" + (" ceiling w/ | ceiling w/o |" if ceiling else ""),
        "|---|---|---|---|" + ("---|---|" if ceiling else ""),
    ]
    for d in ("Overall", *DIMS):
        t = table.get(d, {})
        if not t.get("pairs"):
            continue
        line = f"| {d} | {t['pairs']} | {t['with_ties']:.1%} | {t['without_ties']:.1%} |"
        if ceiling:
            c = ceiling[d]
            line += f" {c['ceiling_with_ties']:.1%} | {c['ceiling_without_ties']:.1%} |"
        rows.append(line)
    return "\n".join(rows)
