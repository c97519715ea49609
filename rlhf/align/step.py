"""One optimisation step of each alignment algorithm on a :class:`FlowGenerator` with LoRA.

The policy is the generator with its adapter enabled; the reference is the same module with the
adapter disabled (:meth:`FlowGenerator.reference`), so no second copy of the weights exists.

:func:`train_step` is the one step every trainer runs (offline alignment, the online trainer group,
the benchmarks' single-process baseline): it takes a batch of clean latents with their prompt
embeddings, dispatches on the algorithm, and hands the loss to the caller's ``update`` (plain AdamW
with clipping, :func:`plain_update`, or a DeepSpeed engine). Device and precision live here too:
the batch is moved to the generator's device, noise and timesteps are drawn there (``rng`` must be a
generator on that device: :func:`rlhf.device.seeded_generator`), the network runs in the generator's
precision and the noised latents, targets and losses stay in fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlhf.generator.model import noised

from .flow_dpo import BETA_SCHEDULES, flow_dpo_loss
from .flow_rwr import flow_rwr_loss
from .pairs import logit_normal_times
from .sft import sft_loss

ALGORITHMS = ("dpo", "dpo_timestep", "rwr", "sft")


@dataclass
class AlgoConfig:
    algo: str = "dpo"  # dpo (constant beta) | dpo_timestep (beta (1-t)^2) | rwr | sft
    beta: float = 2000.0  # Flow-DPO beta
    rwr_beta: float = 1.0  # Flow-RWR temperature on the weighted reward, z-scored over the sample set
    rwr_normalize: bool = True  # softmax weights over the batch (bounded) instead of exp(r / beta)
    t_mean: float = 0.0  # logit-normal timestep distribution: sigmoid(t_mean + t_std z)
    t_std: float = 1.0  # spread of the logit-normal timesteps (> 0; see t_mean)

    def validate(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algo!r}: use one of {', '.join(ALGORITHMS)}")
        if self.beta <= 0 or self.rwr_beta <= 0:
            raise ValueError("beta and rwr_beta must be > 0")
        if self.t_std <= 0:
            raise ValueError(f"t_std must be > 0, got {self.t_std}")

    @property
    def beta_schedule(self) -> str:
        return BETA_SCHEDULES[1] if self.algo == "dpo_timestep" else BETA_SCHEDULES[0]

    @property
    def pairwise(self) -> bool:
        """Flow-DPO trains on (winner, loser) pairs; RWR and SFT on single samples."""
        return self.algo.startswith("dpo")


def _draw(n: int, shape, cfg: AlgoConfig, rng: torch.Generator | None, device: torch.device):
    """Timesteps then noise, both drawn on ``device`` (this order keeps CPU runs bit-identical to before)."""
    t = logit_normal_times(n, cfg.t_mean, cfg.t_std, rng, device=device)
    return t, torch.randn(shape, generator=rng, device=device, dtype=torch.float32)


def dpo_loss(
    gen, x_w: torch.Tensor, x_l: torch.Tensor, text: torch.Tensor, cfg: AlgoConfig, rng: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Flow-DPO on pairs of clean latents ``x_w`` (winners) and ``x_l`` (losers) sharing ``text``."""
    device, dtype = gen.device, gen.dtype
    x_w, x_l = x_w.to(device, torch.float32), x_l.to(device, torch.float32)
    t, noise = _draw(x_w.shape[0], x_w.shape, cfg, rng, device)
    xt_w, v_w = noised(x_w, noise, t)
    xt_l, v_l = noised(x_l, noise, t)
    text = text.to(device, dtype)
    xt, tt, txt = torch.cat([xt_w, xt_l]).to(dtype), torch.cat([t, t]), torch.cat([text, text])
    pred_w, pred_l = gen.velocity(xt, tt, txt).float().chunk(2)
    with torch.no_grad(), gen.reference():
        ref_w, ref_l = gen.velocity(xt, tt, txt).float().chunk(2)
    return flow_dpo_loss(pred_w, pred_l, ref_w, ref_l, v_w, v_l, t, cfg.beta, cfg.beta_schedule)


def weighted_fm_loss(
    gen,
    x0: torch.Tensor,
    text: torch.Tensor,
    rewards: torch.Tensor | None,
    cfg: AlgoConfig,
    rng: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Flow-RWR (``rewards`` given) or SFT (``rewards=None``) on clean latents ``x0``."""
    device = gen.device
    x0 = x0.to(device, torch.float32)
    t, noise = _draw(x0.shape[0], x0.shape, cfg, rng, device)
    xt, v = noised(x0, noise, t)
    pred = gen.velocity(xt.to(gen.dtype), t, text.to(device, gen.dtype)).float()
    if rewards is None:
        return sft_loss(pred, v)
    return flow_rwr_loss(pred, v, rewards.to(device), cfg.rwr_beta, cfg.rwr_normalize)


def batch_loss(gen, batch: dict, cfg: AlgoConfig, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The algorithm's loss on one batch: ``{"x_w", "x_l", "text"}`` (Flow-DPO) or ``{"x0", "text"}``
    with ``"reward"`` (Flow-RWR; absent or None for SFT). ``text`` holds each row's prompt embedding."""
    if cfg.pairwise:
        return dpo_loss(gen, batch["x_w"], batch["x_l"], batch["text"], cfg, rng)
    rewards = batch.get("reward") if cfg.algo == "rwr" else None
    if cfg.algo == "rwr" and rewards is None:
        raise ValueError("Flow-RWR needs a 'reward' per sample in the batch")
    return weighted_fm_loss(gen, batch["x0"], batch["text"], rewards, cfg, rng)


def plain_update(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], grad_clip: float = 1.0):
    """``update`` for :func:`train_step` without DeepSpeed: backward, clip the global norm, AdamW step."""

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()

    return update


def train_step(
    gen, batch: dict, cfg: AlgoConfig, rng: torch.Generator | None, update: Callable[[torch.Tensor], None]
) -> dict:
    """One optimiser step: the loss of ``batch`` (:func:`batch_loss`), then ``update(loss)`` (backward and
    the optimiser step: :func:`plain_update` or a DeepSpeed engine's). Returns the step's record."""
    t0 = time.time()
    gen.train()
    out = batch_loss(gen, batch, cfg, rng)
    update(out["loss"])
    rec = {"loss": float(out["loss"].detach()), "seconds": time.time() - t0}
    if "implicit_accuracy" in out:
        rec["implicit_accuracy"] = float(out["implicit_accuracy"])
    return rec
