"""Pretrain the moving-shapes world's base generator (Wan transformer + UMT5) by flow matching.

    python jobs/pretrain.py --out runs/pretrain                      # the shipped recipe
    python jobs/pretrain.py --out runs/pretrain --resume             # continue from runs/pretrain/state.pt
    python jobs/pretrain.py --out runs/quick steps=50 batch=4        # a smoke run

Writes ``state.pt`` (model, EMA, optimiser, RNG, step) every ``checkpoint_every`` steps, ``log.jsonl``,
and at the end ``generator/`` (EMA weights, world layout) with ``evaluation.json``: oracle scores and
attribute accuracies on held-out prompts next to clean renders and pure noise.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import parse_cli, save_config
from rlhf.generator.model import GeneratorConfig
from rlhf.generator.pretrain import PretrainData
from rlhf.generator.sampler import SamplerConfig
from rlhf.synthetic.render import RenderSpec


@dataclass
class PretrainConfig:
    out: str = "runs/pretrain"  # run directory
    steps: int = 5000  # optimiser steps (~55 min on 2 cores at batch 16)
    batch: int = 16  # clips per step
    lr: float = 1e-3  # peak AdamW learning rate
    warmup: int = 200  # linear warm-up steps
    lr_floor: float = 0.1  # cosine decay to lr x lr_floor at the last step
    weight_decay: float = 0.01  # AdamW weight decay
    ema: float = 0.998  # EMA decay of the exported weights
    t_shift: float = 3.0  # training-time shift toward high noise (matches sampler.shift)
    bf16: bool = False  # bf16 autocast: measured 10x *slower* on this CPU (torch 2.13), for GPUs
    checkpoint_every: int = 250  # steps between state.pt saves
    seed: int = 0  # training clips, noise and timesteps (generator.seed: the initial weights)
    threads: int = 2  # torch intra-op threads
    resume: bool = False  # continue from out/state.pt
    eval_prompts: int = 58  # held-out prompts evaluated at the end (0 = skip)
    eval_seeds: int = 2  # samples per evaluated prompt
    export: str = ""  # also copy the EMA generator here with a MANIFEST.json (e.g. artefacts/generator_default)
    # architecture of the generator trained from scratch
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # what the training clips show: defects, prompt dropout, grammar
    data: PretrainData = field(default_factory=PretrainData)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # how the final evaluation samples

    def validate(self) -> None:
        for k in ("steps", "batch", "checkpoint_every", "threads"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be in (0, 1), got {self.ema}")
        self.generator.validate()
        self.data.validate()
        self.sampler.validate()


def lr_at(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(cfg: PretrainConfig) -> Path:
    import numpy as np
    import torch
    from tqdm import tqdm

    from rlhf.generator.model import FlowGenerator
    from rlhf.generator.pretrain import EMA, draw_batch, flow_matching_loss, shifted_times

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pt"
    spec = RenderSpec(cfg.generator.frames, cfg.generator.height, cfg.generator.width)
    gen = FlowGenerator.from_config(cfg.generator)
    gen.train()
    ema = EMA(gen, cfg.ema)
    opt = torch.optim.AdamW(
        [p for p in gen.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
    )
    rng = np.random.default_rng(cfg.seed)
    tgen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if cfg.resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: {state_path} does not exist; run without --resume to start")
        st = torch.load(state_path, weights_only=False)
        gen.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = st["numpy_rng"]
        tgen.set_state(st["torch_rng"])
        step = st["step"]
        print(f"resumed from {state_path} at step {step}", flush=True)
    elif state_path.exists():
        raise FileExistsError(
            f"{out} already holds a run (state.pt); pass --resume to continue it or use a fresh --out"
        )

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": gen.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": tgen.get_state(),
                "step": step,
            },
            tmp,
        )
        os.replace(tmp, state_path)

    log = open(out / "log.jsonl", "a")
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", unit="step", mininterval=5, file=sys.stdout)
    t0, seen = time.time(), 0
    while step < cfg.steps:
        videos, texts, _ = draw_batch(rng, cfg.batch, cfg.data, spec)
        x0 = gen.codec.encode(videos)
        noise = torch.randn(x0.shape, generator=tgen)
        t = shifted_times(cfg.batch, cfg.t_shift, tgen)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            text = gen.encode_prompts(texts)
            loss = flow_matching_loss(gen, x0, text, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        ema.update(gen)
        step += 1
        seen += cfg.batch
        bar.update(1)
        if step % 50 == 0 or step == cfg.steps:
            rec = {
                "step": step,
                "loss": float(loss.detach()),
                "lr": lr_at(cfg, step - 1),
                "clips_per_s": seen / (time.time() - t0),
                "time": time.time(),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_state()
    bar.close()
    log.close()
    final = ema.shadow.save(out / "generator")
    print(f"exported EMA generator to {final}", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        PretrainConfig,
        argv,
        __doc__.splitlines()[0],
        {"--out": ("out", str, "run directory"), "--steps": ("steps", int, "optimiser steps")},
        {"--resume": ("resume", "continue from out/state.pt")},
    )
    cfg.validate()
    save_config(cfg, cfg.out)
    t0 = time.time()
    path = train(cfg)
    report = None
    if cfg.eval_prompts:
        from rlhf.eval.generator import evaluate_generator

        report = evaluate_generator(path, cfg.eval_prompts, cfg.eval_seeds, cfg.sampler, grammar=cfg.data.grammar)
        (Path(cfg.out) / "evaluation.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report["summary"], indent=2))
    seconds = time.time() - t0
    (Path(cfg.out) / "run_time.json").write_text(json.dumps({"seconds": seconds}))
    if cfg.export:
        from rlhf.artefacts import export_directory
        from rlhf.config import to_dict

        meta = {
            "command": "python jobs/pretrain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "wall_seconds_including_evaluation": round(seconds, 1),
            "config": to_dict(cfg),
            "evaluation": report["summary"] if report else None,
        }
        export_directory(path, cfg.export, meta)
        print(f"exported to {cfg.export} (MANIFEST.json)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
