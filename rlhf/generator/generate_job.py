"""Sample videos from a generator (optionally a LoRA policy, optionally with Flow-NRG reward guidance).

    python jobs/generate.py --out runs/gen --prompt "a red circle moving left slowly on a gray background"
    python jobs/generate.py --out runs/gen_heldout prompts=heldout per_prompt=2
    python jobs/generate.py --out runs/gen_nrg prompts=heldout --guidance-model runs/latent_noise/model \\
        --guidance-weights 0.1,0.1,0.8 --guidance-scale 0.5
    python jobs/generate.py --out runs/gen_dpo prompts=heldout --lora runs/online_dpo/adapter

Writes ``videos/NNNN_seedS.mp4`` (H.264), ``samples.jsonl`` (prompt, seed, file, oracle VQ/MQ/TA when the
prompt is a moving-shapes prompt) and ``summary.json`` (settings, means, seconds). Clip i uses seed
``seed + i``; the same prompts and seeds with and without guidance start from the same noise, so two
runs compare clip for clip.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf.config import parse_cli, run_job, save_config
from rlhf.device import DeviceConfig
from rlhf.dims import DIMS, RewardWeights
from rlhf.generator.guidance import GuidanceConfig
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.generator.sampler import SamplerConfig


@dataclass
class GenerateConfig:
    out: str = "runs/generate"  # output directory
    generator: str = str(DEFAULT_GENERATOR)  # directory or hub id (world or Wan2.1 diffusers layout)
    # LoRA: an adapter directory (align_offline / online_dpo write diffusers' format; peft's is read too), a
    # .safetensors file or a hub id; "" = pretrained
    lora: str = ""
    prompt: str = ""  # literal prompts separated by ';' (takes precedence over prompts)
    prompts: str = "heldout"  # train | heldout | all | a text file with one prompt per line
    per_prompt: int = 1  # clips per prompt
    seed: int = 0  # clip i uses seed + i
    crf: int = 12  # H.264 quality of the written mp4s
    oracle: bool = True  # score clips with the moving-shapes oracle when the prompt parses
    threads: int = 2  # torch intra-op threads
    device: DeviceConfig = field(default_factory=DeviceConfig)  # generator and latent reward (cuda/bf16 on a GPU)
    guidance_model: str = ""  # latent reward model directory (jobs/train_latent_reward.py)
    guidance_weights: str = ""  # VQ:MQ:TA weights, e.g. 0.1:0.1:0.8 (sets guidance.weights)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # scale 0 = unguided
    # how the clips are sampled (Euler steps, guidance, shift, batch)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def validate(self) -> None:
        if self.per_prompt < 1 or self.threads < 1:
            raise ValueError("per_prompt and threads must be >= 1")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if self.guidance_weights:
            self.guidance.weights = RewardWeights.parse(self.guidance_weights)
        self.guidance.validate()
        if self.guidance.scale > 0 and not self.guidance_model:
            raise ValueError(
                "--guidance-scale > 0 needs --guidance-model (a directory from jobs/train_latent_reward.py)"
            )
        self.sampler.validate()


def oracle_row(frames, prompt: str) -> dict | None:
    from rlhf.eval.judges import as_stored
    from rlhf.synthetic.oracle import score
    from rlhf.synthetic.prompts import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError:
        return None
    return score(as_stored([frames])[0], prompt)


def run(cfg: GenerateConfig) -> dict:
    import numpy as np
    import torch
    from tqdm import tqdm

    from rlhf.align.offline import read_prompts
    from rlhf.generator.model import load_generator
    from rlhf.generator.sampler import sample
    from rlhf.video import write_video

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    prompts = [p.strip() for p in cfg.prompt.split(";") if p.strip()] if cfg.prompt else read_prompts(cfg.prompts)
    texts = [p for p in prompts for _ in range(cfg.per_prompt)]
    seeds = [cfg.seed + i for i in range(len(texts))]
    gen = load_generator(cfg.generator, device=cfg.device)
    if cfg.lora:
        gen.load_lora(cfg.lora)
    guidance = None
    if cfg.guidance.scale > 0:
        from rlhf.reward.latent import LatentReward

        guidance = (LatentReward.load(cfg.guidance_model, device=cfg.device), cfg.guidance)
    out = Path(cfg.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    rows, t_sample, scores = [], 0.0, []
    step = cfg.sampler.batch_size
    with (
        open(out / "samples.jsonl", "w") as log,
        tqdm(total=len(texts), desc="generate", unit="clip", file=sys.stdout, mininterval=5) as bar,
    ):
        for i in range(0, len(texts), step):
            t0 = time.time()
            batch = sample(gen, texts[i : i + step], seeds[i : i + step], cfg.sampler, guidance=guidance)
            t_sample += time.time() - t0
            for j, (frames, p, s) in enumerate(zip(batch.videos, batch.prompts, batch.seeds)):
                name = f"videos/{i + j:04d}_seed{s}.mp4"
                write_video(out / name, frames, fps=gen.fps, crf=cfg.crf)
                row = {"prompt": p, "seed": s, "file": name}
                if cfg.oracle:
                    sc = oracle_row(frames, p)
                    if sc is not None:
                        row["oracle"] = {d: sc[d] for d in DIMS}
                        scores.append([sc["VQ"], sc["MQ"], sc["TA"]])
                log.write(json.dumps(row) + "\n")
                rows.append(row)
            bar.update(len(batch.seeds))
    summary = {
        "clips": len(rows),
        "sampling_seconds": round(t_sample, 2),
        "seconds_per_clip": round(t_sample / max(1, len(rows)), 4),
        "guidance": asdict(cfg.guidance) if guidance else None,
        "lora": cfg.lora or None,
    }
    if scores:
        summary["oracle_mean"] = dict(zip(DIMS, np.mean(scores, 0).round(4).tolist()))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{len(rows)} clips in {out / 'videos'} ({summary['seconds_per_clip']:.2f} s/clip sampling)"
        + (f"; oracle means {summary['oracle_mean']}" if scores else ""),
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        GenerateConfig,
        argv,
        __doc__.split("\n")[0],
        flags={
            "--out": ("out", str, "output directory"),
            "--prompt": ("prompt", str, "literal prompts separated by ';'"),
            "--lora": ("lora", str, "LoRA adapter directory"),
            "--guidance-model": ("guidance_model", str, "latent reward model directory"),
            "--guidance-weights": ("guidance_weights", str, "VQ,MQ,TA weights, e.g. 0.1,0.1,0.8"),
            "--guidance-scale": ("guidance.scale", float, "guidance scale w (0 = off)"),
        },
    )
    return run_job(run, cfg)


if __name__ == "__main__":
    sys.exit(main())
