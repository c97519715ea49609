"""Offline alignment: sample prompt groups from the initial policy, score them, train a LoRA.

The initial policy is the pretrained generator, or the generator with ``train.init_adapter`` (an existing
LoRA, which training then continues and which serves as the DPO reference).

Pure library code (no Ray): ``jobs/align_offline.py`` and the table job drive it, and the online loop
reuses :func:`train_lora_steps` on its own batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhf.device import seeded_generator

from .pairs import PairConfig, best_of_groups, build_pairs
from .step import AlgoConfig, plain_update, train_step

PROMPT_SPLITS = ("train", "heldout", "all")


class PromptFileError(ValueError):
    """A prompt source that gives no usable prompt."""


def read_prompts(spec: str) -> list[str]:
    """Prompts of a moving-shapes split (``train``/``heldout``/``all``, optionally ``:<grammar>``, e.g.
    ``heldout:mixed``; single-object prompts by default) or of a text file (one per line, blank lines and
    ``#`` comments skipped)."""
    from rlhf.synthetic.prompts import GRAMMARS, all_prompts, split_prompts

    split, _, grammar = spec.partition(":")
    if split in PROMPT_SPLITS and (not grammar or grammar in GRAMMARS):
        grammar = grammar or "single"
        return [p.text for p in (all_prompts(grammar) if split == "all" else split_prompts(split, grammar))]
    path = Path(spec)
    if not path.is_file():
        raise PromptFileError(
            f"prompts {spec!r} is neither a split ({', '.join(PROMPT_SPLITS)}, optionally "
            f":{'|'.join(GRAMMARS)}) nor a file"
        )
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise PromptFileError(f"prompt file {path} holds no prompt: write one prompt per line")
    return prompts


@dataclass
class TrainConfig:
    # LoRA training starts from ("" = a fresh one, B = 0): diffusers' or peft's format, a .safetensors file or a
    # hub id. Samples are drawn from it and it is the DPO reference; its own rank and alpha are trained
    # (lora_rank / lora_alpha are set to them, with a line saying so when they differed).
    init_adapter: str = ""
    lora_rank: int = 8  # of a fresh LoRA
    lora_alpha: float = 8.0  # of a fresh LoRA: scale alpha / rank
    lr: float = 2e-4  # AdamW on the LoRA parameters
    steps: int = 150  # optimiser steps
    batch: int = 8  # pairs per step (DPO) or 2 x batch samples per step (RWR, SFT): equal policy compute
    seed: int = 0  # a fresh LoRA's A, the batch draws and each step's noise and timesteps
    # the objective: Flow-DPO, Flow-RWR or SFT, its beta and timestep distribution
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    # scored samples -> training rows: DPO pairs (mode, margin), VQ:MQ:TA reward weights
    pairs: PairConfig = field(default_factory=PairConfig)

    def validate(self) -> None:
        if self.lora_rank < 1 or self.steps < 1 or self.batch < 1:
            raise ValueError("lora_rank, steps and batch must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.algo.validate()
        self.pairs.validate()
        if self.init_adapter:
            from rlhf.generator.lora import adopt_adapter_settings

            adopt_adapter_settings(self, "train.")


def start_lora(gen, cfg: TrainConfig) -> None:
    """Attach the LoRA training starts from: ``cfg.init_adapter``, with a frozen copy as the reference
    policy (the policy the samples came from), or a fresh one (seeded A, B = 0: the reference is the base)."""
    if cfg.init_adapter:
        gen.load_lora(cfg.init_adapter, reference=cfg.algo.pairwise)  # only Flow-DPO has a reference
    else:
        torch.manual_seed(cfg.seed)
        gen.add_lora(cfg.lora_rank, cfg.lora_alpha)


def weighted_rewards(scores: np.ndarray, cfg: PairConfig) -> np.ndarray:
    """``(n, 3)`` VQ/MQ/TA scores -> the weighted reward of each sample."""
    return cfg.weights.weighted(scores)


def training_set(prompts: list[str], rewards: np.ndarray, cfg: TrainConfig) -> dict:
    """What the chosen algorithm trains on: pairs (DPO), all samples with z-scored rewards (RWR), or
    the best sample of each group (SFT)."""
    if cfg.algo.pairwise:
        pairs = build_pairs(prompts, list(rewards), cfg.pairs)
        if not pairs:
            raise ValueError(
                "no preference pair: every prompt group is a tie under the chosen weights; "
                "raise the group size or lower pairs.margin"
            )
        return {"pairs": np.array(pairs)}
    if cfg.algo.algo == "rwr":
        z = (rewards - rewards.mean()) / max(float(rewards.std()), 1e-8)
        return {"samples": np.arange(len(prompts)), "rewards": z}
    return {"samples": np.array(best_of_groups(prompts, list(rewards)))}


def train_lora_steps(
    gen,
    latents: torch.Tensor,
    text: torch.Tensor,
    data: dict,
    cfg: TrainConfig,
    opt,
    steps: int,
    rng: np.random.Generator,
    trng: torch.Generator,
    log=None,
    progress=None,
) -> list[dict]:
    """``steps`` optimiser steps of ``cfg.algo`` on ``data`` (from :func:`training_set`); ``text`` holds the
    prompt embedding of every sample. Returns one record per step."""
    update = plain_update(opt, gen.lora_parameters(), 1.0)
    records = []
    for _ in range(steps):
        if "pairs" in data:
            idx = data["pairs"][rng.integers(len(data["pairs"]), size=cfg.batch)]
            batch = {"x_w": latents[idx[:, 0]], "x_l": latents[idx[:, 1]], "text": text[idx[:, 0]]}
        else:
            idx = data["samples"][rng.integers(len(data["samples"]), size=2 * cfg.batch)]
            batch = {
                "x0": latents[idx],
                "text": text[idx],
                "reward": torch.as_tensor(data["rewards"][idx]) if "rewards" in data else None,
            }
        rec = train_step(gen, batch, cfg.algo, trng, update)
        records.append(rec)
        if log is not None:
            log(rec)
        if progress is not None:
            progress.update(1)
    return records


def align(
    gen, latents: torch.Tensor, prompts: list[str], scores: np.ndarray, cfg: TrainConfig, progress=None, log=None
) -> list[dict]:
    """Train a LoRA of ``gen`` on scored samples (``latents`` of ``prompts``): the one :func:`start_lora`
    attached (the caller does so before drawing samples from an initial adapter), else a new one."""
    cfg.validate()
    if not (len(latents) == len(prompts) == len(scores)):
        raise ValueError(f"{len(latents)} latents, {len(prompts)} prompts and {len(scores)} score rows differ")
    rewards = weighted_rewards(scores, cfg.pairs)
    data = training_set(prompts, rewards, cfg)
    if not gen.has_lora:
        start_lora(gen, cfg)
    with torch.no_grad():
        uniq = sorted(set(prompts))
        emb = dict(zip(uniq, gen.encode_prompts(uniq)))
        text = torch.stack([emb[p] for p in prompts])
    opt = torch.optim.AdamW(gen.lora_parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    trng = seeded_generator(cfg.seed, gen.device)
    return train_lora_steps(gen, latents, text, data, cfg, opt, cfg.steps, rng, trng, log, progress)


def summarize(records: list[dict]) -> dict:
    tail = records[-max(1, len(records) // 5) :]
    out = {
        "steps": len(records),
        "final_loss": float(np.mean([r["loss"] for r in tail])),
        "seconds": float(sum(r["seconds"] for r in records)),
    }
    if "implicit_accuracy" in records[0]:
        out["final_implicit_accuracy"] = float(np.mean([r["implicit_accuracy"] for r in tail]))
    return out
