"""Train the latent reward model Flow-NRG guides with (``rlhf.reward.latent``).

    python jobs/train_latent_reward.py --out runs/latent_noise                    # "w/ noise" (default)
    python jobs/train_latent_reward.py --out runs/latent_clean train.noise=false \\
        samples=runs/latent_noise/samples_train.pt eval_samples=runs/latent_noise/samples_eval.pt
    python jobs/train_latent_reward.py --out runs/latent_noise --resume           # continue from state.pt

Draws prompt groups from the pretrained generator (train prompts for training, held-out prompts for
evaluation), scores every clip with the oracle annotator (as stored: H.264), builds every within-group
pair with per-dimension labels (a tie when scores differ by ``tie_margin`` or less), and trains the
backbone copy + head with Bradley-Terry-with-ties. Writes ``samples_train.pt`` / ``samples_eval.pt``
(scored sample sets, reusable by a second variant), ``state.pt`` every ``checkpoint_every`` steps
(model, optimiser, step: ``--resume`` continues exactly), ``log.jsonl``, and at the end ``model/``
(load with ``LatentReward.load``) and ``summary.json`` with held-out pairwise accuracy per dimension
at several noise levels t.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import parse_cli, run_job, save_config
from rlhf.device import DeviceConfig
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.generator.sampler import SamplerConfig
from rlhf.reward.latent import LatentRewardConfig, LatentTrainConfig


@dataclass
class LatentRewardJobConfig:
    out: str = "runs/latent_reward"  # run directory
    generator: str = str(DEFAULT_GENERATOR)  # the generator whose samples and blocks the model uses
    prompts: str = "train"  # training prompts: train | heldout | all (optionally :single|pair|mixed) | a text file
    n_prompts: int = 0  # the first N training prompts (0 = all; pair listings are in a fixed shuffled order)
    group: int = 4  # clips per training prompt (pairs come from within a group)
    eval_prompts: str = "heldout"  # evaluation prompts ("" = no evaluation)
    eval_group: int = 4  # clips per evaluation prompt
    eval_n_prompts: int = 0  # the first N evaluation prompts (0 = all)
    seed: int = 0  # clip i of the training set uses seed + i; evaluation clips seed + 1000000 + i
    samples: str = ""  # training sample-set cache (default out/samples_train.pt)
    eval_samples: str = ""  # evaluation sample-set cache (default out/samples_eval.pt)
    tie_margin: float = 0.01  # |oracle score difference| at or under this is a tie
    dataset: str = ""  # also train on a preference dataset's train split (jobs/make_dataset.py output)
    eval_times: str = "0,0.25,0.5,0.75"  # noise levels t of the held-out accuracy table
    checkpoint_every: int = 250  # steps between state.pt saves (also at the end)
    log_every: int = 25  # steps between log.jsonl lines (mean loss)
    threads: int = 2  # torch intra-op threads
    resume: bool = False  # continue from out/state.pt
    # Where the generator draws the clips and the latent reward model trains (cpu | cuda; precision fp32:
    # see validate; gradient_checkpointing for the copied blocks). The training latents stay on the CPU,
    # each batch is moved and its noise drawn on the device.
    device: DeviceConfig = field(default_factory=DeviceConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # how the training and evaluation clips are drawn
    # the latent reward model: copied generator blocks and a head
    model: LatentRewardConfig = field(default_factory=LatentRewardConfig)
    train: LatentTrainConfig = field(default_factory=LatentTrainConfig)  # its training: steps, batch, lr, noise

    def validate(self) -> None:
        if self.group < 2 or (self.eval_prompts and self.eval_group < 2):
            raise ValueError("group and eval_group must be >= 2 (pairs come from within a prompt group)")
        if self.n_prompts < 0 or self.eval_n_prompts < 0:
            raise ValueError(f"n_prompts and eval_n_prompts must be >= 0, got {self.n_prompts}, {self.eval_n_prompts}")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.threads < 1:
            raise ValueError("checkpoint_every, log_every and threads must be >= 1")
        try:
            times = [float(x) for x in self.eval_times.split(",")]
        except ValueError:
            raise ValueError(f"eval_times must be comma-separated numbers in [0, 1], got {self.eval_times!r}") from None
        if not all(0.0 <= t <= 1.0 for t in times):
            raise ValueError(f"eval_times must lie in [0, 1], got {self.eval_times!r}")
        self.device.validate()
        if self.device.precision != "fp32":
            raise ValueError(
                f"device.precision={self.device.precision} cannot train the latent reward: its copied "
                "blocks would train in that precision, where AdamW's steps below 2^-8 of a weight round "
                "away; train in fp32 and load the model in bf16 for guidance "
                "(LatentReward.load(path, device=DeviceConfig(device='cuda', precision='bf16')))"
            )
        self.sampler.validate()
        self.model.validate()
        self.train.validate()


def scored_samples(
    cfg: LatentRewardJobConfig, gen, prompts_spec: str, n_prompts: int, group: int, seed: int, path: str, desc: str
):
    """The sample set of ``group`` clips per prompt, drawn once and cached with its oracle scores."""
    from tqdm import tqdm

    from rlhf.align.offline import read_prompts
    from rlhf.align.samples import cached_draw
    from rlhf.eval.judges import OracleJudge

    prompts = read_prompts(prompts_spec)[: n_prompts or None]
    texts = [p for p in prompts for _ in range(group)]
    seeds = [seed + i for i in range(len(texts))]
    with tqdm(total=len(texts), desc=desc, unit="clip", file=sys.stdout, mininterval=5) as bar:
        s = cached_draw(path, gen, texts, seeds, cfg.sampler, {"generator": cfg.generator, "adapter": None}, bar)
    if "oracle" not in s.scores:
        s.score(OracleJudge())
        s.save(path)
    return s


def run(cfg: LatentRewardJobConfig) -> dict:
    import torch
    from tqdm import tqdm

    from rlhf.generator.model import load_generator
    from rlhf.reward.latent import LatentReward, evaluate, pairs_from_scores, prompt_embeddings, train_step

    cfg.validate()
    cfg.device.torch_device()  # a device this machine lacks fails now, not after the clips are drawn
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    state_path = out / "state.pt"
    if state_path.exists() and not cfg.resume:
        raise FileExistsError(
            f"{out} already holds a run (state.pt); pass --resume to continue it or use a fresh --out"
        )
    if cfg.resume and not state_path.is_file():
        raise FileNotFoundError(f"--resume: {state_path} does not exist; run without --resume to start")
    save_config(cfg, out)
    t_start = time.time()
    gen = load_generator(cfg.generator, device=cfg.device)
    train_set = scored_samples(
        cfg,
        gen,
        cfg.prompts,
        cfg.n_prompts,
        cfg.group,
        cfg.seed,
        cfg.samples or str(out / "samples_train.pt"),
        "train clips",
    )
    eval_set = None
    if cfg.eval_prompts:
        eval_set = scored_samples(
            cfg,
            gen,
            cfg.eval_prompts,
            cfg.eval_n_prompts,
            cfg.eval_group,
            cfg.seed + 1_000_000,
            cfg.eval_samples or str(out / "samples_eval.pt"),
            "eval clips",
        )
    gen_codec_factor = gen.codec.factor
    del gen
    t_data = time.time() - t_start
    pairs = pairs_from_scores(train_set.latents, train_set.prompts, train_set.scores["oracle"], cfg.tie_margin)
    eval_pairs = (
        pairs_from_scores(eval_set.latents, eval_set.prompts, eval_set.scores["oracle"], cfg.tie_margin)
        if eval_set is not None
        else None
    )
    if cfg.dataset:
        from rlhf.generator.codec import SpaceToDepthCodec
        from rlhf.reward.latent import merge_pairs, pairs_from_dataset

        gen_pairs = len(pairs)
        pairs = merge_pairs(pairs, pairs_from_dataset(cfg.dataset, SpaceToDepthCodec(gen_codec_factor)))
        print(f"{len(pairs) - gen_pairs} dataset pairs from {cfg.dataset} (train split)", flush=True)
    labels = pairs.labels
    print(
        f"{len(pairs)} training pairs; ties per dimension "
        + ", ".join(f"{d} {float((labels[:, i] == 0).float().mean()):.0%}" for i, d in enumerate("VQ MQ TA".split())),
        flush=True,
    )

    model = LatentReward.from_generator(cfg.generator, cfg.model).place(cfg.device)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    step = 0
    if cfg.resume:
        st = torch.load(state_path, map_location=cfg.device.torch_device(), weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step = st["step"]
        print(f"resumed from {state_path} at step {step}", flush=True)

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
        os.replace(tmp, state_path)

    text = prompt_embeddings(model, pairs.prompts)
    t0, losses = time.time(), []
    with (
        open(out / "log.jsonl", "a") as log,
        tqdm(
            total=cfg.train.steps, initial=step, desc="latent reward", unit="step", file=sys.stdout, mininterval=5
        ) as bar,
    ):
        while step < cfg.train.steps:
            losses.append(train_step(model, opt, pairs, text, step, cfg.train))
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.train.steps:
                rec = {"step": step, "loss": sum(losses) / len(losses), "time": time.time()}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                losses = []
            if step % cfg.checkpoint_every == 0 or step == cfg.train.steps:
                save_state()
    t_train = time.time() - t0
    model.meta.update(
        {"train": {"noise": cfg.train.noise, "steps": step, "pairs": len(pairs), "tie_margin": cfg.tie_margin}}
    )
    model.save(out / "model")
    summary = {
        "pairs": len(pairs),
        "clips": len(train_set.prompts),
        "dataset": cfg.dataset or None,
        "noise": cfg.train.noise,
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
    }
    if eval_pairs is not None:
        times = [float(x) for x in cfg.eval_times.split(",")]
        summary["eval_pairs"] = len(eval_pairs)
        summary["heldout"] = evaluate(model, eval_pairs, times, seed=cfg.seed)
        for t_key, row in summary["heldout"].items():
            print(
                f"held-out {t_key}: "
                + ", ".join(
                    f"{d} {v['acc_without_ties']:.3f}/{v['acc_with_ties']:.3f}"
                    if v["acc_without_ties"] is not None
                    else f"{d} -"
                    for d, v in row.items()
                )
                + "  (accuracy without / with ties)",
                flush=True,
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"model written to {out / 'model'}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        LatentRewardJobConfig,
        argv,
        __doc__.split("\n")[0],
        flags={"--out": ("out", str, "run directory")},
        bool_flags={"--resume": ("resume", "continue from out/state.pt")},
    )
    return run_job(run, cfg)


if __name__ == "__main__":
    sys.exit(main())
