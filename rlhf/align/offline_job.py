"""Offline alignment of the generator: sample prompt groups, score them, train a LoRA.

    python jobs/align_offline.py --out runs/align_dpo --algo dpo                 # learned reward (shipped)
    python jobs/align_offline.py --out runs/align_rwr --algo rwr --reward oracle # oracle-reward run
    python jobs/align_offline.py --out runs/ta --algo dpo train.pairs.weights.VQ=0 train.pairs.weights.MQ=0
    python jobs/align_offline.py --out runs/more --algo dpo train.init_adapter=runs/align_dpo/adapter

Writes ``adapter/`` (the LoRA in diffusers' format: ``pytorch_lora_weights.safetensors``, which
``WanPipeline.load_lora_weights`` reads, + ``adapter_info.json``), ``train_log.jsonl``, ``summary.json``
and the scored sample set (``samples.pt`` unless ``samples=`` names a shared one). With
``train.init_adapter`` the samples come from that policy and training continues it (it is the reference).
Algorithms: dpo (Flow-DPO, constant beta), dpo_timestep (beta (1-t)^2), rwr (Flow-RWR), sft.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.align.offline import TrainConfig
from rlhf.config import parse_cli, save_config
from rlhf.device import DeviceConfig
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.generator.sampler import SamplerConfig


@dataclass
class AlignOfflineConfig:
    out: str = "runs/align"  # run directory
    generator: str = str(DEFAULT_GENERATOR)  # pretrained generator: world or Wan2.1 diffusers layout, dir or hub id
    reward: str = "default"  # judge that trains: default (shipped VideoReward) | oracle | checkpoint dir
    prompts: str = "train"  # train | heldout | all | a text file with one prompt per line
    n_prompts: int = 0  # a seeded random subset of n prompts (0 = all, in order)
    group: int = 4  # samples per prompt (G)
    seed: int = 0  # sample i of the set uses seed + i
    samples: str = ""  # sample-set cache (default: out/samples.pt); rows of a table share one
    threads: int = 2  # torch intra-op threads
    device: DeviceConfig = field(
        default_factory=DeviceConfig
    )  # cpu/fp32; cuda/bf16 (+ gradient_checkpointing) on a GPU
    # how the training sample set is drawn from the initial policy
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # the LoRA training: algorithm, pairs, steps, lr

    def validate(self) -> None:
        if self.group < 2:
            raise ValueError(f"group must be >= 2 (pairs come from within a prompt group), got {self.group}")
        if self.n_prompts < 0:
            raise ValueError(f"n_prompts must be >= 0, got {self.n_prompts}")
        self.sampler.validate()
        self.train.validate()


def training_samples(cfg: AlignOfflineConfig, gen, progress: bool = True):
    """The scored sample set the policy trains on (drawn from ``gen``, the initial policy, or loaded)."""
    import numpy as np
    from tqdm import tqdm

    from rlhf.align.offline import read_prompts
    from rlhf.align.samples import cached_draw

    prompts = read_prompts(cfg.prompts)
    if cfg.n_prompts and cfg.n_prompts < len(prompts):
        order = np.random.default_rng(cfg.seed).permutation(len(prompts))[: cfg.n_prompts]
        prompts = [prompts[i] for i in sorted(order)]
    texts = [p for p in prompts for _ in range(cfg.group)]
    seeds = [cfg.seed + i for i in range(len(texts))]
    path = cfg.samples or str(Path(cfg.out) / "samples.pt")
    with tqdm(total=len(texts), desc="sample groups", unit="clip", disable=not progress, file=sys.stdout) as bar:
        return cached_draw(
            path,
            gen,
            texts,
            seeds,
            cfg.sampler,
            {"generator": cfg.generator, "adapter": cfg.train.init_adapter or None},
            bar,
        )


def run(cfg: AlignOfflineConfig, judge=None, samples=None) -> dict:
    import torch
    from tqdm import tqdm

    from rlhf.align.offline import align, start_lora, summarize
    from rlhf.eval.judges import OracleJudge, make_judge
    from rlhf.generator.model import load_generator

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gen = load_generator(cfg.generator, device=cfg.device)
    if cfg.train.init_adapter:  # sample from, and measure against, the policy training starts from
        start_lora(gen, cfg.train)
    samples = samples or training_samples(cfg, gen)
    judge = judge or make_judge(cfg.reward)
    scores = samples.score(judge)
    samples.score(OracleJudge())
    samples.save(cfg.samples or out / "samples.pt")  # with its scores, for the next run that shares it
    t_data = time.time() - t0
    with (
        open(out / "train_log.jsonl", "w") as f,
        tqdm(total=cfg.train.steps, desc=f"train {cfg.train.algo.algo}", unit="step", file=sys.stdout) as bar,
    ):
        records = align(
            gen, samples.latents, samples.prompts, scores, cfg.train, bar, lambda r: f.write(json.dumps(r) + "\n")
        )
    gen.save_lora(
        out / "adapter",
        {
            "base": cfg.generator,
            "init_adapter": cfg.train.init_adapter or None,
            "algo": cfg.train.algo.algo,
            "steps": cfg.train.steps,
        },
    )
    summary = {
        "algo": cfg.train.algo.algo,
        "reward": judge.name,
        "weights": cfg.train.pairs.weights.label,
        "samples": len(samples.prompts),
        "sample_and_score_seconds": round(t_data, 1),
        **summarize(records),
        "total_seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        AlignOfflineConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--out": ("out", str, "run directory"),
            "--algo": ("train.algo.algo", str, "dpo|dpo_timestep|rwr|sft"),
            "--reward": ("reward", str, "default | oracle | VideoReward checkpoint"),
            "--generator": ("generator", str, "pretrained generator directory"),
            "--prompts": ("prompts", str, "split name or prompt file"),
        },
    )
    save_config(cfg, cfg.out)
    print(json.dumps(run(cfg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
