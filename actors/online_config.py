"""The online job's config: one typed dataclass for every role (generators, reward service, trainer group,
pairs, refresh, evaluation), its validation, the resources each role asks Ray for, and the prompt schedule.

``prompt_batch`` is a seeded function of the iteration alone, so a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.cluster import Role
from actors.refresh import RefreshConfig
from actors.trainer import TrainerConfig
from rlhf.align.offline import read_prompts
from rlhf.align.pairs import PairConfig
from rlhf.device import DeviceConfig
from rlhf.generator.guidance import GuidanceConfig
from rlhf.generator.sampler import SamplerConfig
from rlhf.synthetic.prompts import PromptError, parse_prompt
from serve.config import RewardServiceConfig

MODES = ("sync", "one_step_off")


@dataclass
class OnlineConfig:
    out: str = "runs/online_dpo"  # run directory (metrics, config, adapter, evaluation, report)
    # where checkpoints and run state go: a path every node mounts or a URI Ray Train accepts (s3://...); the
    # trainer workers write there and a resume on any node reads there. "" = <out>/checkpoints (one machine)
    storage: str = ""
    # Hugging Face cache for hub ids (generator, reward, base models), e.g. a shared mount; every worker of the
    # job gets it (HF_HUB_CACHE), and HF_HUB_OFFLINE=1 in the driver's environment reaches them too
    hub_cache: str = ""
    ray_address: str = ""  # "" = RAY_ADDRESS if set (ray job submit), else start a local cluster on 127.0.0.1
    num_cpus: int = 0  # logical CPUs of a local cluster (0 = enough for every role, at least the machine's cores)
    # a joined cluster with an autoscaler (cluster.yaml): wait up to cluster_wait_s for the nodes the roles need;
    # without one a job that does not fit stops at once, naming each role's demand
    autoscaling: bool = False
    cluster_wait_s: float = 600.0  # seconds to wait for the autoscaler's nodes (autoscaling=true)
    generator: str = ""  # pretrained generator ("" = artefacts/generator_default)
    # Wan checkpoints only (the world layout records its own): clip shape, frame rate, prompt tokens
    video_shape: list[int] = field(default_factory=lambda: [81, 480, 832])  # frames, height, width
    fps: float = 16.0  # carried into the mp4s, so the reward's fps-based frame sampling sees the true duration
    text_tokens: int = 512  # prompt tokens of Wan checkpoints (the world layout records its own)
    # device and precision of the generator actors (cuda needs generator_gpus > 0); trainer.device and
    # reward.device set the other roles
    generator_device: DeviceConfig = field(default_factory=DeviceConfig)
    mode: str = "sync"  # sync (strictly on-policy) | one_step_off (staleness 1)
    iterations: int = 8  # loop iterations: sample, score, train steps_per_iter steps
    # the moving-shapes world: its oracle also scores every rollout (metrics) and judges the final evaluation.
    # world=false: free-text prompts (a prompt file), no oracle anywhere, the served reward judges
    world: bool = True
    prompts: str = "train"  # train | heldout | all (the world's splits) | a prompt file (one per line)
    prompts_per_iter: int = 16  # prompts drawn per iteration (seeded by seed and the iteration), group clips each
    group: int = 4  # clips per prompt (G)
    steps_per_iter: int = 16  # trainer optimiser steps per iteration (K)
    generators: int = 2  # generator actors
    generator_cpus: float = 1.0  # CPUs Ray reserves per generator actor
    generator_gpus: float = 0.0  # GPUs Ray reserves per generator actor (a fraction shares one; 0 = CPU actors)
    generator_threads: int = 1  # torch threads per generator actor
    # custom resources each generator actor asks for (cluster.yaml: {"generator": 1} puts it on a generator node)
    generator_resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3  # generator actor restarts
    trainer_restarts: int = 2  # times a failed trainer group is restarted from the last checkpoint
    checkpoint_every: int = 2  # iterations (a checkpoint is also written at the end)
    resume: bool = False  # continue from the latest checkpoint in storage
    seed: int = 0  # each iteration's prompts, rollout noise and pairs, and the raters (trainer.seed: the workers')
    # final evaluation, same seeds for both policies: "" = the world's held-out prompts, or `prompts` with world=false
    eval_prompts: str = ""
    eval_n_prompts: int = 58  # 0 = no final evaluation
    eval_seeds: int = 2  # clips per evaluation prompt (>= 2 for the reward's on-policy accuracy)
    progress: bool = True  # a progress bar on the console
    wandb_project: str = ""  # also log to this wandb project (or set WANDB_PROJECT); TensorBoard always
    report_clips: int = 4  # report.html: held-out prompts shown pretrained vs aligned (-1 = no report)
    # The embedded default (what `make run` runs, measured in README.md): 10 Euler steps for rollouts and
    # evaluation alike, every pair of a group whose 1:1:1 reward differs by > 0.03, LoRA lr 3e-4, and the shipped
    # VideoReward as the served reward (the learned one: the oracle only judges; reward.model=oracle trains on the
    # oracle itself). A generator actor samples 8 clips per forward pass: as fast as 32 on CPU, and 40% less
    # memory per actor (peak RSS 551 against 878 MiB, measured on 32 clips).
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=10, batch_size=8))
    guidance_model: str = ""  # latent reward model (jobs/train_latent_reward.py) for Flow-NRG in rollouts
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # scale 0 = off
    # a group's scored clips -> training rows: DPO pairs (mode, margin), VQ:MQ:TA reward weights
    pairs: PairConfig = field(default_factory=lambda: PairConfig(mode="margin", margin=0.03))
    # the trainer group: Ray Train workers training the LoRA with DeepSpeed
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=3e-4))
    # the served reward (Ray Serve deployment) that scores the rollouts
    reward: RewardServiceConfig = field(default_factory=lambda: RewardServiceConfig(model="default"))
    # online reward refresh (actors/refresh.py): every refresh.every iterations, refresh.pairs pairs of the policy's
    # clips are labelled by the raters, the reward is fine-tuned on them and the deployment rolls to it
    refresh: RefreshConfig = field(default_factory=RefreshConfig)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for k in ("iterations", "prompts_per_iter", "steps_per_iter", "generators"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.group < 2:
            raise ValueError(f"group must be >= 2 (pairs come from within a prompt group), got {self.group}")
        if self.trainer_restarts < 0 or self.max_restarts < 0:
            raise ValueError("trainer_restarts and max_restarts must be >= 0")
        if self.cluster_wait_s < 0 or self.num_cpus < 0:
            raise ValueError("cluster_wait_s and num_cpus must be >= 0")
        if self.checkpoint_every < 0 or self.eval_n_prompts < 0 or self.eval_seeds < 1:
            raise ValueError("checkpoint_every and eval_n_prompts must be >= 0, eval_seeds >= 1")
        if len(self.video_shape) != 3 or min(self.video_shape) < 1 or self.fps <= 0:
            raise ValueError(
                f"video_shape must be [frames, height, width] and fps > 0, got {self.video_shape}, {self.fps}"
            )
        self.generator_device.check_gpus(self.generator_gpus, "generator_device", "generator_gpus")
        self.sampler.validate()
        self.guidance.validate()
        if self.guidance.scale > 0 and not self.guidance_model:
            raise ValueError("guidance.scale > 0 needs guidance_model (a directory from jobs/train_latent_reward.py)")
        self.pairs.validate()
        self.trainer.validate()
        self.reward.validate()
        self.refresh.validate()
        if self.refresh.every:
            if self.reward.model == "oracle" or not self.world:
                raise ValueError(
                    "refresh.every > 0 fine-tunes a learned reward on labels of the world's raters: it "
                    "needs reward.model set to a VideoReward checkpoint (or default) and world=true"
                )
            if "://" in self.storage:
                raise ValueError(
                    f"refresh.every > 0 serves refreshed rewards from the run storage, which every reward "
                    f"replica must read as a path: storage={self.storage!r} is a URI; use a shared mount"
                )
        if not self.world and self.reward.model == "oracle":
            raise ValueError(
                "world=false has no oracle to serve: set reward.model to a VideoReward checkpoint "
                "(a directory or hub id such as KwaiVGI/VideoReward, or default)"
            )

    def roles(self) -> list:
        """What each role reserves on the cluster (actors.cluster.check_fit compares it with what is there)."""

        t, r = self.trainer, self.reward
        gib = 2**30
        return [
            Role(
                "generator actors",
                self.generators,
                {"CPU": self.generator_cpus, "GPU": self.generator_gpus, **self.generator_resources},
                "generators, generator_cpus, generator_gpus, generator_resources",
            ),
            Role(
                "trainer workers",
                t.num_workers,
                {"CPU": 1.0, "GPU": 1.0 if t.device.is_cuda else 0.0, **t.resources_per_worker},
                "trainer.num_workers, trainer.device, trainer.resources_per_worker",
            ),
            Role(
                "reward replicas",
                max(r.min_replicas, 1),
                {"CPU": r.num_cpus, "GPU": r.num_gpus, "memory": r.memory_gib * gib, **r.resources},
                "reward.min_replicas, reward.num_cpus, reward.num_gpus, reward.memory_gib, reward.resources",
            ),
            Role("Ray Data tasks", 1, {"CPU": 1.0}, "none: preference batches need one CPU besides the actors"),
        ] + (
            [
                Role(
                    "reward refresh workers",
                    self.refresh.workers,
                    {"CPU": 1.0, "GPU": 1.0 if t.device.is_cuda else 0.0},
                    "refresh.workers, trainer.device",
                )
            ]
            if self.refresh.every
            else []
        )

    def eval_prompt_spec(self) -> str:
        return self.eval_prompts or ("heldout" if self.world else self.prompts)

    def read_prompts(self) -> tuple[list[str], list[str]]:
        """(training prompts, evaluation prompts); in the world, every prompt must parse in its grammar (the
        oracle reads it), and a clear error says how to run free text instead."""

        train, ev = read_prompts(self.prompts), read_prompts(self.eval_prompt_spec())
        if self.world:
            for spec, ps in ((self.prompts, train), (self.eval_prompt_spec(), ev if self.eval_n_prompts else [])):
                for p in ps:
                    try:
                        parse_prompt(p)
                    except PromptError as e:
                        raise ValueError(
                            f"prompt {p!r} of {spec} is outside the moving-shapes grammar ({e}): the "
                            "world's oracle cannot score it; set world=false (and reward.model to a "
                            "VideoReward checkpoint) to run free-text prompts"
                        ) from None
        return train, ev


# ---------------------------------------------------------------------------------------------- data
def prompt_batch(cfg: OnlineConfig, prompts: list[str], iteration: int) -> tuple[list[str], list[int]]:
    """The clips of one iteration: ``prompts_per_iter`` prompts (seeded by the iteration) x ``group``."""
    rng = np.random.default_rng([cfg.seed, iteration])
    k = min(cfg.prompts_per_iter, len(prompts))
    chosen = [prompts[i] for i in sorted(rng.choice(len(prompts), k, replace=False))]
    texts = [p for p in chosen for _ in range(cfg.group)]
    seeds = [cfg.seed * 1_000_000_007 + iteration * 100_000 + j for j in range(len(texts))]
    return texts, seeds
