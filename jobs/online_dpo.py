"""Online Flow-DPO / Flow-RWR of the video generator on Ray (the product's main job).

    python jobs/online_dpo.py                                   # embedded default: local Ray, moving shapes
    python jobs/online_dpo.py --out runs/online --mode one_step_off trainer.algo.algo=rwr
    python jobs/online_dpo.py --out runs/online --resume        # continue from the last checkpoint
    ray job submit --working-dir . -- python jobs/online_dpo.py # against a running cluster

One iteration: the driver takes the next prompt batch (a seeded function of the iteration: resumable);
generator actors sample G clips per prompt with policy version v and have them scored by the Serve
reward deployment; Ray Data groups the samples by prompt and builds pairs (or RWR weights); the
trainer group (Ray Train + DeepSpeed, started once) runs K steps and publishes version v + 1; the
generators swap to it before their next batch. ``mode=one_step_off`` overlaps the sampling of batch
i + 1 (with version i) with training on batch i: staleness 1. At the end both the final and the
pretrained policy sample the held-out prompts with the same seeds and the oracle gives the win rate
(``world=false``: free-text prompts, no oracle; the served reward judges and the report says so).

Writes into ``out``: ``config.yaml``, ``metrics.jsonl`` (one record per iteration), ``checkpoints/`` (or
``storage``: a shared path or URI every node reaches; every ``checkpoint_every`` iterations and at the end:
DeepSpeed state with the optimiser, the adapter, ``state.json`` with the data position and policy version;
``latest.json`` points at the newest; Ray Train's own state under ``ray/``),
``adapter/`` (the final LoRA, in diffusers' format: ``WanPipeline.load_lora_weights`` reads it),
``evaluation.json`` and ``summary.json``. ``trainer.init_adapter`` starts the run from an existing LoRA.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.refresh import RefreshConfig  # noqa: E402
from actors.trainer import TrainerConfig  # noqa: E402
from rlhf.align.pairs import PairConfig  # noqa: E402
from rlhf.config import parse_cli, save_config  # noqa: E402
from rlhf.device import DeviceConfig  # noqa: E402
from rlhf.generator.guidance import GuidanceConfig  # noqa: E402
from rlhf.generator.sampler import SamplerConfig  # noqa: E402
from serve.reward_service import RewardServiceConfig  # noqa: E402

MODES = ("sync", "one_step_off")
DIMS = ("VQ", "MQ", "TA")


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
    cluster_wait_s: float = 600.0
    generator: str = ""  # pretrained generator ("" = artefacts/generator_default)
    # Wan checkpoints only (the world layout records its own): clip shape, frame rate, prompt tokens
    video_shape: list[int] = field(default_factory=lambda: [81, 480, 832])  # frames, height, width
    fps: float = 16.0  # carried into the mp4s, so the reward's fps-based frame sampling sees the true duration
    text_tokens: int = 512
    # device and precision of the generator actors (cuda needs generator_gpus > 0); trainer.device and
    # reward.device set the other roles
    generator_device: DeviceConfig = field(default_factory=DeviceConfig)
    mode: str = "sync"  # sync (strictly on-policy) | one_step_off (staleness 1)
    iterations: int = 8
    # the moving-shapes world: its oracle also scores every rollout (metrics) and judges the final evaluation.
    # world=false: free-text prompts (a prompt file), no oracle anywhere, the served reward judges
    world: bool = True
    prompts: str = "train"  # train | heldout | all (the world's splits) | a prompt file (one per line)
    prompts_per_iter: int = 16
    group: int = 4  # clips per prompt (G)
    steps_per_iter: int = 16  # trainer optimiser steps per iteration (K)
    generators: int = 2  # generator actors
    generator_cpus: float = 1.0
    generator_gpus: float = 0.0
    generator_threads: int = 1
    # custom resources each generator actor asks for (cluster.yaml: {"generator": 1} puts it on a generator node)
    generator_resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3  # generator actor restarts
    trainer_restarts: int = 2  # times a failed trainer group is restarted from the last checkpoint
    checkpoint_every: int = 2  # iterations (a checkpoint is also written at the end)
    resume: bool = False
    seed: int = 0
    # final evaluation, same seeds for both policies: "" = the world's held-out prompts, or `prompts` with world=false
    eval_prompts: str = ""
    eval_n_prompts: int = 58  # 0 = no final evaluation
    eval_seeds: int = 2
    progress: bool = True
    report_clips: int = 4  # report.html: held-out prompts shown pretrained vs aligned (-1 = no report)
    # The embedded default (what `make run` runs, measured in README.md): 10 Euler steps for rollouts and
    # evaluation alike, every pair of a group whose 1:1:1 reward differs by > 0.03, LoRA lr 3e-4, and the shipped
    # VideoReward as the served reward (the learned one: the oracle only judges; reward.model=oracle trains on the
    # oracle itself).
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=10))
    guidance_model: str = ""  # latent reward model (jobs/train_latent_reward.py) for Flow-NRG in rollouts
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # scale 0 = off
    pairs: PairConfig = field(default_factory=lambda: PairConfig(mode="margin", margin=0.03))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(lr=3e-4))
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
        from actors.cluster import Role

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
        from rlhf.align.offline import read_prompts
        from rlhf.synthetic.prompts import PromptError, parse_prompt

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
    import numpy as np

    rng = np.random.default_rng([cfg.seed, iteration])
    k = min(cfg.prompts_per_iter, len(prompts))
    chosen = [prompts[i] for i in sorted(rng.choice(len(prompts), k, replace=False))]
    texts = [p for p in chosen for _ in range(cfg.group)]
    seeds = [cfg.seed * 1_000_000_007 + iteration * 100_000 + j for j in range(len(texts))]
    return texts, seeds


def get(refs, poll_s: float = 1.0):
    """``ray.get`` that keeps the main thread responsive to Ctrl-C / SIGTERM (a plain ``ray.get`` does not
    return to Python until the objects are ready)."""
    import ray

    single = not isinstance(refs, list)
    todo = [refs] if single else list(refs)
    while True:
        ready, _ = ray.wait(todo, num_returns=len(todo), timeout=poll_s)
        if len(ready) == len(todo):
            out = ray.get(todo)
            return out[0] if single else out


def split_even(items: list, n: int) -> list[list]:
    """Contiguous chunks, sizes differing by at most one."""
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (i < r)
        out.append(items[start:end])
        start = end
    return out


def quiet_ray_data() -> None:
    """No progress bars or per-execution INFO lines from Ray Data (one per iteration and worker otherwise)."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------- metrics
class Metrics:
    """The same numbers to the Ray dashboard (``ray.util.metrics``), ``metrics.jsonl`` and the console."""

    def __init__(self, out: Path):
        from ray.util.metrics import Counter, Gauge

        self.path = out / "metrics.jsonl"
        self.g = {
            name: Gauge(f"videoalign_{name}", description=desc, tag_keys=tags)
            for name, desc, tags in [
                ("reward", "mean reward of the iteration's samples (normalised)", ("dimension",)),
                ("oracle", "mean oracle score of the iteration's samples", ("dimension",)),
                ("loss", "training loss (mean over the iteration's steps)", ()),
                ("implicit_accuracy", "Flow-DPO implicit accuracy", ()),
                ("videos_per_second", "clips generated, scored and trained on per second", ()),
                ("phase_seconds", "seconds per phase of the iteration", ("phase",)),
                ("staleness", "policy versions between sampling and training", ()),
                ("queue_depth", "rollout batches in flight when training starts", ()),
                ("policy_version", "latest published policy version", ()),
                ("pairs", "preference pairs (or weighted samples) of the iteration", ()),
                ("reward_version", "version of the served reward model (reward refresh bumps it)", ()),
                ("labels_spent", "pairs labelled by the raters for reward refresh so far", ()),
                (
                    "reward_onpolicy_accuracy",
                    "served reward's accuracy without ties on the policy's labelled pairs, "
                    "before the refresh learns them",
                    ("dimension",),
                ),
            ]
        }
        self.videos = Counter("videoalign_videos_total", description="clips generated and scored")

    def record(self, rec: dict) -> None:
        for d in (*DIMS, "weighted"):
            self.g["reward"].set(rec["reward"][d], tags={"dimension": d})
            if rec["oracle"].get(d) is not None:
                self.g["oracle"].set(rec["oracle"][d], tags={"dimension": d})
        for k in (
            "loss",
            "implicit_accuracy",
            "videos_per_second",
            "staleness",
            "queue_depth",
            "policy_version",
            "pairs",
            "reward_version",
            "labels_spent",
        ):
            if rec.get(k) is not None:
                self.g[k].set(float(rec[k]))
        if rec.get("refresh"):
            for d in DIMS:
                v = rec["refresh"]["onpolicy_before"][d]["without_ties"]
                if v == v:  # NaN (every pair a tie) is not a reading
                    self.g["reward_onpolicy_accuracy"].set(v, tags={"dimension": d})
        for phase, s in rec["phases"].items():
            self.g["phase_seconds"].set(s, tags={"phase": phase})
        self.videos.inc(rec["videos"])
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------------------------------- checkpoint
def run_storage(cfg: OnlineConfig):
    from actors.storage import RunStorage

    return RunStorage(cfg.storage or str(Path(cfg.out).resolve() / "checkpoints"))


def latest_checkpoint(storage) -> dict | None:
    """The newest checkpoint's state (``dir``: its folder under the storage), or None."""
    if not storage.exists("latest.json"):
        return None
    state = json.loads(storage.read_text("latest.json"))
    state["dir"] = Path(state["dir"]).name  # runs written before storage existed recorded a path
    return state


def _seeds_digest(seeds: list[int]) -> str:
    import hashlib

    import numpy as np

    return hashlib.sha256(np.sort(np.asarray(seeds, np.int64)).tobytes()).hexdigest()


def truncate_metrics(out: Path, next_iteration: int) -> int:
    """Drop the records of iterations at or after ``next_iteration`` from ``metrics.jsonl`` (they are run
    again after a restart from a checkpoint: no iteration is counted twice); returns how many went."""
    p = out / "metrics.jsonl"
    if not p.is_file():
        return 0
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln)["iteration"] < next_iteration]
    if len(keep) != len(lines):
        tmp = p.with_suffix(".part")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        tmp.replace(p)
    return len(lines) - len(keep)


def write_state(storage, ck: str, state: dict) -> None:
    """``ck``/state.json, then latest.json pointing at ``ck``: a reader sees the old or the new, whole."""
    storage.write_text(f"{ck}/state.json", json.dumps(state, indent=2))
    storage.write_text("latest.json", json.dumps({**state, "dir": ck}, indent=2))


# --------------------------------------------------------------------------------------------- the job
class OnlineRun:
    def __init__(self, cfg: OnlineConfig):
        self.cfg = cfg
        self.out = Path(cfg.out).resolve()
        self.cluster = None
        self.storage = run_storage(cfg)
        self.gens: list = []
        self.trainer = None
        self.trainer_starts = 0
        self.trainer_failures: list[str] = []
        self.deployed = False
        from actors.refresh import state_of

        self.reward_state = state_of(cfg.reward.model, cfg.reward.version, 0)  # what is served (refresh changes it)

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        from actors.cluster import check_fit, connect, hub_env, local_cpus

        cfg = self.cfg
        roles = cfg.roles()  # Ray is imported by connect: a local cluster must bind 127.0.0.1
        self.cluster = connect(
            cfg.ray_address, num_cpus=cfg.num_cpus or local_cpus(roles), env_vars=hub_env(cfg.hub_cache)
        )
        self.log(
            f"Ray dashboard: {self.cluster.dashboard_url or '(none on this cluster)'}; metrics "
            f"{' '.join(self.cluster.metrics_urls()) or '(none)'}"
        )
        check_fit(
            roles, autoscaling=cfg.autoscaling and not self.cluster.started, wait_s=cfg.cluster_wait_s, log=self.log
        )

        from actors.generator import GeneratorActorConfig, start_generators
        from actors.weights import ObjectStoreSync, weight_store
        from serve.reward_service import deploy

        quiet_ray_data()
        self.store = weight_store(keep=3)
        self.sync = ObjectStoreSync()
        t0 = time.time()
        self.resume_state = latest_checkpoint(self.storage) if cfg.resume else None
        if self.resume_state and self.resume_state.get("reward"):  # the reward the checkpointed run served
            self.reward_state = self.resume_state["reward"]
        deploy(self.served_reward())
        self.deployed = True
        self.log(
            f"reward service '{cfg.reward.app_name}' ({self.reward_state['model']}, version "
            f"{self.reward_state['version']}) up in {time.time() - t0:.1f} s"
        )
        gcfg = GeneratorActorConfig(
            generator=cfg.generator,
            video_shape=list(cfg.video_shape),
            fps=cfg.fps,
            text_tokens=cfg.text_tokens,
            device=cfg.generator_device,
            init_adapter=cfg.trainer.init_adapter,
            lora_rank=cfg.trainer.lora_rank,
            lora_alpha=cfg.trainer.lora_alpha,
            threads=cfg.generator_threads,
            reward_app=cfg.reward.app_name,
            sampler=cfg.sampler,
            oracle=cfg.world,
            guidance_model=cfg.guidance_model,
            guidance=cfg.guidance,
        )
        self.gens = start_generators(
            cfg.generators,
            gcfg,
            self.sync.store_name,
            cfg.generator_cpus,
            cfg.generator_gpus,
            cfg.max_restarts,
            cfg.generator_resources,
        )
        if cfg.resume and self.resume_state is None:
            raise SystemExit(
                f"error: --resume but {self.storage.location('latest.json')} does not exist: "
                "run without --resume first (or give the storage the first run used)"
            )
        if self.resume_state:  # iterations after the checkpoint are run again: their records go
            truncate_metrics(self.out, self.resume_state["next_iteration"])
        self.start_trainer(self.resume_state)
        get([g.info.remote() for g in self.gens])
        self.log(
            f"{cfg.generators} generator actors and {cfg.trainer.num_workers} trainer workers started "
            f"in {time.time() - t0:.1f} s"
        )

    def served_reward(self):
        """The reward service's config for the reward being served (the configured one, or a refreshed one)."""
        from dataclasses import replace

        return replace(self.cfg.reward, model=self.reward_state["model"], version=self.reward_state["version"])

    def use_reward(self, state: dict | None) -> None:
        """Serve the reward of a checkpoint ``state`` (None: the configured one) if another one is served."""
        from actors.refresh import roll_deployment, state_of

        want = (state or {}).get("reward") or state_of(self.cfg.reward.model, self.cfg.reward.version, 0)
        if (want["model"], want["version"]) != (self.reward_state["model"], self.reward_state["version"]):
            self.log(f"serving reward version {want['version']} again ({want['model']})")
            roll_deployment(self.cfg.reward, want["model"], want["version"])
        self.reward_state = want

    def refresh_reward(self, it: int, tables: list, version: int) -> dict:
        """Label pairs of iteration ``it``'s clips, fine-tune the served reward on them and roll the deployment
        to it (actors/refresh.py); returns the refresh's record."""
        import pyarrow as pa
        import ray

        from actors.refresh import earlier_refreshes, fine_tune, label_rollouts, labels_dir, roll_deployment, state_of
        from rlhf.eval.onpolicy import onpolicy_table

        cfg, r = self.cfg, self.cfg.refresh
        t0 = time.time()
        new_version = self.reward_state["version"] + 1
        data_dir = Path(self.storage.location(labels_dir(it)))
        labelled = label_rollouts(pa.concat_tables(ray.get(tables)), r.pairs, cfg.seed, it, version, data_dir)
        before = onpolicy_table(labelled["served"], labelled["oracle"], labelled["pairs"], labelled["labels"])
        t1 = time.time()
        out = Path(self.storage.location(f"reward/v{new_version:03d}"))
        replay = [Path(self.storage.location(d)) for d in earlier_refreshes(r, it, cfg.iterations)] if r.replay else []
        fine_tune(
            r,
            self.reward_state["model"],
            data_dir,
            out,
            seed=cfg.seed * 1000 + new_version,
            hub_cache=cfg.hub_cache,
            device=cfg.trainer.device,
            replay=replay,
        )
        t2 = time.time()
        roll_s = roll_deployment(cfg.reward, str(out), new_version)
        spent = self.reward_state["labels_spent"] + len(labelled["pairs"])
        self.reward_state = state_of(str(out), new_version, spent)
        return {
            "version": new_version,
            "model": str(out),
            "pairs": len(labelled["pairs"]),
            "labels_spent": spent,
            "onpolicy_before": before,
            "label_s": t1 - t0,
            "train_s": t2 - t1,
            "roll_s": roll_s,
        }

    def start_trainer(self, state: dict | None) -> None:
        """The trainer group, from ``state``'s checkpoint if given; the weight store is brought to the
        checkpoint's policy versions (newer ones, whose trainer state is gone, are forgotten)."""
        import ray

        from actors.trainer import COORDINATOR_NAME, TrainerGroup

        self.trainer_starts += 1
        suffix = "" if self.trainer_starts == 1 else f"_{self.trainer_starts}"
        from dataclasses import replace

        tcfg = replace(
            self.cfg.trainer,
            generator=self.cfg.trainer.generator or self.cfg.generator,
            video_shape=list(self.cfg.video_shape),
        )
        self.trainer = TrainerGroup(
            tcfg,
            self.sync.store_name,
            self.storage.uri,
            resume_dir=state["dir"] if state else None,
            coordinator_name=COORDINATOR_NAME + suffix,
            run_name="online_trainer" + suffix,
        )
        version = state["policy_version"] if state else 0
        have = ray.get(self.store.rollback.remote(version))
        if state:  # re-push the weights the checkpoint holds (and the version before, for one-step-off)
            from safetensors.torch import load_file

            from rlhf.generator.lora import is_adapter_dir, read_adapter

            with self.storage.fetched(state["dir"]) as ck:
                for v, f in ((version - 1, ck / "prev_adapter.safetensors"), (version, ck / "adapter")):
                    if v > 0 and v not in have and (f.is_file() or is_adapter_dir(f)):
                        self.sync.publish(v, read_adapter(f).state if f.is_dir() else load_file(f), restore=True)

    def recover_trainer(self, error: BaseException) -> dict | None:
        """A trainer worker died (or the group stopped answering): stop what is left of the group and
        start a new one from the last checkpoint; returns that checkpoint's state (None = from the start)."""
        from actors.trainer import TrainerError

        self.trainer_failures.append(str(error).splitlines()[0][:300])
        if len(self.trainer_failures) > self.cfg.trainer_restarts:
            raise error
        try:
            self.trainer.stop(timeout_s=30)
        except TrainerError:
            pass
        state = latest_checkpoint(self.storage)
        dropped = truncate_metrics(self.out, state["next_iteration"] if state else 0)
        where = f"checkpoint {state['dir']} (iteration {state['next_iteration']})" if state else "the start"
        self.log(
            f"trainer group failed ({self.trainer_failures[-1]}); restart {len(self.trainer_failures)} of "
            f"{self.cfg.trainer_restarts} from {where}; {dropped} iteration record(s) will be redone"
        )
        self.start_trainer(state)
        self.use_reward(state)  # a refresh after the checkpoint is redone with the iterations
        # the generators may hold weights of versions that will now be trained again: make them fetch
        get([g.forget_weights.remote() for g in self.gens])
        return state

    def log(self, msg: str) -> None:
        print(f"[online] {msg}", flush=True)

    # ------------------------------------------------------------------ one iteration
    def launch(self, prompts: list[str], iteration: int, version: int) -> list[dict]:
        """Send the clips of ``iteration`` to the generator actors (whole prompt groups each); returns the
        in-flight rollouts (their arguments kept, so that a lost one can be sent again)."""
        texts, seeds = prompt_batch(self.cfg, prompts, iteration)
        G, n = self.cfg.group, len(self.gens)
        jobs = []
        for a, chunk in enumerate(split_even(list(range(len(texts) // G)), n)):  # whole prompt groups
            ps = [texts[k * G + j] for k in chunk for j in range(G)]
            ss = [seeds[k * G + j] for k in chunk for j in range(G)]
            if ps:
                jobs.append({"actor": a, "args": (ps, ss, version, iteration), "attempts": 0})
                self._send(jobs[-1])
        return jobs

    def _send(self, job: dict) -> None:
        job["meta"], job["table"], job["text"] = (
            self.gens[job["actor"]].rollout.options(num_returns=3).remote(*job["args"])
        )
        job["attempts"] += 1

    def collect(self, jobs: list[dict]) -> tuple[list[dict], list, list]:
        """The rollouts' metadata, table refs and prompt-embedding refs. Ray restarts a dead actor and retries the call it died in;
        a call lost with its node (ActorUnavailableError: "may or may not have been executed") is sent
        again here, to the same (restarted) actor: sampling is a function of the seeds and the version, so
        the clips are the same and none is counted twice."""
        from ray.exceptions import RayActorError

        metas, tables, texts = [], [], []
        for job in jobs:
            while True:
                try:
                    metas.append(get(job["meta"]))
                    tables.append(job["table"])
                    texts.append(job["text"])
                    break
                except RayActorError as e:
                    if job["attempts"] > self.cfg.max_restarts:
                        raise
                    self.log(
                        f"rollout of iteration {job['args'][3]} on generator {job['actor']} lost "
                        f"({type(e).__name__}); sending it again (attempt {job['attempts'] + 1})"
                    )
                    self._send(job)
        return metas, tables, texts

    def iterations(self, prompts: list[str], state: dict | None, metrics: Metrics, bar) -> int:
        """Iterations from ``state``'s checkpoint (None = the first) to the end; returns the final version."""
        from actors.preferences import preference_dataset, stats_of
        from actors.refresh import due
        from actors.refresh import summary_line as refresh_line

        cfg = self.cfg
        start_it = state["next_iteration"] if state else 0
        version = state["policy_version"] if state else 0
        if start_it >= cfg.iterations:
            self.log(f"nothing to do: the checkpoint is at iteration {start_it} of {cfg.iterations}")
        one_off = cfg.mode == "one_step_off"
        # one-step-off: the batch of iteration i is sampled with version i - 1 (the version before training
        # on batch i - 1); sync: with version i.
        pending = (
            self.launch(prompts, start_it, max(version - 1, 0) if (one_off and start_it > 0) else version)
            if start_it < cfg.iterations
            else None
        )
        for it in range(start_it, cfg.iterations):
            t_it = time.time()
            metas, tables, texts = self.collect(pending)
            t_rolled = time.time()
            pending = None
            refresh_due = due(cfg.refresh, it, cfg.iterations)
            sample_next = version  # one-step-off: batch i + 1 is sampled with the version before training on batch i
            # overlap: sample batch i + 1 with the current version (not before a reward refresh: every clip of an
            # iteration is scored by one reward version, so the next batch waits for the roll)
            if one_off and it + 1 < cfg.iterations and not refresh_due:
                pending = self.launch(prompts, it + 1, version)
            t0 = time.time()
            ds = preference_dataset(tables, cfg.pairs, cfg.trainer.algo.algo, cfg.seed, it)
            n_samples = sum(m["n"] for m in metas)
            pstats = stats_of(ds, n_samples, n_samples // cfg.group)
            t_data = time.time() - t0
            ckpt = None
            last = it + 1 == cfg.iterations
            if last or (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0):
                ckpt = f"iter_{it + 1:05d}"  # under the run storage
            sample_version = metas[0]["policy_version"]
            if pstats.rows:
                res = self.trainer.train(ds, it, cfg.steps_per_iter, version + 1, ckpt, text=texts)
                version += 1
            else:
                self.log(f"iteration {it}: every prompt group is a tie under the weights; no update")
                res = {"loss": None, "implicit_accuracy": None, "train_s": 0.0, "publish": {"seconds": 0.0}}
                if ckpt:  # nothing trained: still checkpoint (same weights)
                    res = {**res, **self.trainer.train(ds, it, 0, None, ckpt)}
            refresh = None
            if refresh_due:
                refresh = self.refresh_reward(it, tables, sample_version)
                self.log(refresh_line(refresh))
            if ckpt:
                ck_state = {
                    "next_iteration": it + 1,
                    "policy_version": version,
                    "seed": cfg.seed,
                    "mode": cfg.mode,
                    "reward": self.reward_state,
                    "rng": {"prompts": [cfg.seed, it + 1], "trainer": [cfg.trainer.seed, it + 1, "rank"]},
                }
                if one_off and version > 1:
                    from safetensors.torch import save

                    prev, _ = self.sync.fetch(version - 1)
                    self.storage.write_bytes(f"{ckpt}/prev_adapter.safetensors", save(prev))
                write_state(self.storage, ckpt, ck_state)
            if pending is None and it + 1 < cfg.iterations:
                pending = self.launch(prompts, it + 1, sample_next if one_off else version)
            wall = time.time() - t_it
            rec = self.record(
                it,
                metas,
                pstats,
                res,
                version,
                sample_version,
                wall,
                t_rolled - t_it,
                t_data,
                queue=1 if one_off and not refresh_due and it + 1 < cfg.iterations else 0,
            )
            rec["refresh"] = refresh
            metrics.record(rec)
            bar.update(1)
            bar.set_postfix_str(
                f"v{version} loss {rec['loss'] if rec['loss'] is None else round(rec['loss'], 4)} "
                f"reward {rec['reward']['weighted']:+.3f} oracle {rec['oracle'].get('weighted', 0):.3f} "
                f"{rec['videos_per_second']:.2f} clip/s"
            )
            self.log(self.describe(rec))
        return version

    def run(self) -> dict:
        from tqdm import tqdm

        from actors.trainer import TrainerError

        cfg = self.cfg
        prompts, _ = cfg.read_prompts()
        state = self.resume_state
        metrics = Metrics(self.out)
        bar = tqdm(
            total=cfg.iterations,
            initial=state["next_iteration"] if state else 0,
            desc=f"online {cfg.trainer.algo.algo} ({cfg.mode})",
            unit="iter",
            disable=not cfg.progress,
            file=sys.stdout,
        )
        t_run = time.time()
        while True:
            try:
                version = self.iterations(prompts, state, metrics, bar)
                break
            except TrainerError as e:
                state = self.recover_trainer(e)
                bar.n = state["next_iteration"] if state else 0
                bar.refresh()
        bar.close()
        train_wall = time.time() - t_run
        self.out.mkdir(parents=True, exist_ok=True)
        from rlhf.generator.lora import save_adapter

        state, lora = self.trainer.lora_adapter()  # diffusers' format: WanPipeline.load_lora_weights reads it
        save_adapter(
            self.out / "adapter",
            state,
            lora,
            {"policy_version": version, "init_adapter": cfg.trainer.init_adapter or None},
        )
        evaluation = self.evaluate(version) if cfg.eval_n_prompts else None
        summary = self.summarize(version, train_wall, evaluation)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def record(self, it, metas, pstats, res, version, sample_version, wall, roll_wait, t_data, queue) -> dict:
        import numpy as np

        w = self.cfg.pairs.weights
        wv = np.array([w.VQ, w.MQ, w.TA])
        n = np.array([m["n"] for m in metas], np.float64)
        reward = np.average([m["reward"] for m in metas], axis=0, weights=n)
        oracle = np.average([m["oracle"] for m in metas], axis=0, weights=n)
        videos = int(n.sum())
        phases = {
            "generate": float(max(m["generate_s"] for m in metas)),
            "reward_wait": float(max(m["reward_wait_s"] for m in metas)),
            "rollout_wait": roll_wait,  # driver time blocked on the rollouts
            "data": t_data,
            "train": float(res.get("train_s", 0.0)),
            "weight_sync": float(res.get("publish", {}).get("seconds", 0.0))
            + float(max(m["weight_sync_s"] for m in metas)),
            "checkpoint": float(res.get("checkpoint_s", 0.0)),
            "iteration": wall,
        }
        return {
            "iteration": it,
            "algo": self.cfg.trainer.algo.algo,
            "time": time.time(),
            "policy_version": version,
            "sample_version": sample_version,
            "staleness": version - 1 - sample_version if res.get("loss") is not None else version - sample_version,
            "videos": videos,
            "videos_per_second": videos / max(wall, 1e-9),
            "pairs": pstats.rows,
            "groups": pstats.groups,
            "tie_groups": pstats.tie_groups,
            "batch_digest": pstats.digest,
            "mean_group_gap": pstats.mean_group_gap,
            "loss": res.get("loss"),
            "first_loss": res.get("first_loss"),
            "implicit_accuracy": res.get("implicit_accuracy"),
            "reward": {**dict(zip(DIMS, reward.tolist())), "weighted": float(reward @ wv)},
            "oracle": (
                {**dict(zip(DIMS, oracle.tolist())), "weighted": float(oracle @ wv)}
                if np.isfinite(oracle).all()
                else {}
            ),
            "phases": phases,
            "queue_depth": queue,
            "restarted_actors": [m["actor"] for m in metas if m["restarted"]],
            # accounting: every clip of the batch exactly once, the weights each actor sampled with
            "samples_unique": len({s for m in metas for s in m["seeds"]}),
            "seeds_sha256": _seeds_digest([s for m in metas for s in m["seeds"]]),
            "weights_sha256": sorted({m["weights_sha256"] for m in metas}),
            "published_sha256": res.get("publish", {}).get("sha256"),
            "reward_retries": int(sum(m["reward_retries"] for m in metas)),
            # the reward version(s) that scored the iteration's clips (one unless a roll overlapped them)
            "reward_versions": sorted({v for m in metas for v in m.get("reward_versions", [])}),
            "reward_version": self.reward_state["version"],
            "labels_spent": self.reward_state["labels_spent"],
            "reward_replica_pids": sorted({p for m in metas for p in m["reward_replica_pids"]}),
        }

    def describe(self, rec: dict) -> str:
        ph = rec["phases"]
        loss = "-" if rec["loss"] is None else f"{rec['loss']:.4f}"
        acc = "-" if rec["implicit_accuracy"] is None else f"{rec['implicit_accuracy']:.2f}"
        orc = rec["oracle"]
        return (
            f"iter {rec['iteration']} v{rec['policy_version']} (sampled v{rec['sample_version']}) "
            f"{rec['videos']} clips {rec['pairs']} {'pairs' if rec['algo'].startswith('dpo') else 'weighted'} "
            f"loss {loss} acc {acc} "
            f"reward VQ/MQ/TA {rec['reward']['VQ']:+.2f}/{rec['reward']['MQ']:+.2f}/{rec['reward']['TA']:+.2f} "
            + (f"oracle {orc['VQ']:.3f}/{orc['MQ']:.3f}/{orc['TA']:.3f} " if orc else "")
            + "| "
            + " ".join(f"{k} {v:.1f}s" for k, v in ph.items())
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, version: int) -> dict:
        """The final policy against the pretrained one on the evaluation prompts, same seeds: judged by the
        oracle in the world (and by the served reward too when it is a learned one: the hacking check), by the
        served reward alone with world=false."""
        import numpy as np

        from rlhf.eval.judges import TIE_MARGINS
        from rlhf.eval.winrate import reward_hacking, win_rates

        cfg = self.cfg
        t0 = time.time()
        prompts = cfg.read_prompts()[1][: cfg.eval_n_prompts]
        texts = [p for p in prompts for _ in range(cfg.eval_seeds)]
        seeds = [10_000 + i for i in range(len(texts))]
        learned = cfg.reward.model != "oracle"
        res = {}

        def judged(v: int) -> dict:
            refs = [
                g.evaluate.remote(ps, ss, v, learned)
                for g, ps, ss in zip(self.gens, split_even(texts, len(self.gens)), split_even(seeds, len(self.gens)))
                if ps
            ]
            parts = get(refs)
            return {k: np.concatenate([p[k] for p in parts]) for k in ("oracle", "reward") if k in parts[0]}

        for name, v in (("policy", version), ("pretrained", 0)):
            res[name] = judged(v)
        w = cfg.pairs.weights
        out = {
            "n": len(texts),
            "prompts": cfg.eval_prompt_spec(),
            "policy_version": version,
            "judge": "oracle" if cfg.world else f"served reward ({cfg.reward.model})",
        }
        if cfg.world:
            oracle = win_rates(res["policy"]["oracle"], res["pretrained"]["oracle"], w, TIE_MARGINS["oracle"])
            out["oracle_win_rate"] = oracle
            out["oracle_mean"] = {k: res[k]["oracle"].mean(0).tolist() for k in ("policy", "pretrained")}
        if learned:
            lr = win_rates(res["policy"]["reward"], res["pretrained"]["reward"], w, TIE_MARGINS["learned"])
            out["learned_win_rate"] = lr
            out["reward_mean"] = {k: res[k]["reward"].mean(0).tolist() for k in ("policy", "pretrained")}
            if cfg.world:
                out["reward_hacking"] = reward_hacking(lr, out["oracle_win_rate"], len(texts))
                start = res["pretrained"]
                if self.reward_state["version"] != cfg.reward.version:  # refreshed: the start's reward judges the start
                    from actors.refresh import roll_deployment

                    roll_deployment(cfg.reward, cfg.reward.model, cfg.reward.version)
                    start = judged(0)
                out["reward_onpolicy"] = self.onpolicy(start, res["policy"], len(texts))
        out["seconds"] = round(time.time() - t0, 1)
        (self.out / "evaluation.json").write_text(json.dumps(out, indent=2))
        return out

    def onpolicy(self, start: dict, end: dict, n: int) -> dict | None:
        """The reward's on-policy accuracy on the evaluation's own clips: within-prompt pairs of the pretrained
        policy's samples judged by the reward served at the start of the run (``start``), and of the final
        policy's judged by the reward served at its end (``end``; the same model unless refreshed), labelled by
        the simulated raters (``rlhf.eval.onpolicy``); needs eval_seeds >= 2."""
        from rlhf.eval.onpolicy import onpolicy_table, rater_labels, within_group_pairs

        if self.cfg.eval_seeds < 2:
            return None
        pairs = within_group_pairs([i // self.cfg.eval_seeds for i in range(n)])
        out = {
            "pairs": len(pairs),
            "start_reward_version": self.cfg.reward.version,
            "end_reward_version": self.reward_state["version"],
        }
        for when, res in (("start", start), ("end", end)):
            labels = rater_labels(res["oracle"], pairs, seed=self.cfg.seed)
            out[when] = onpolicy_table(res["reward"], res["oracle"], pairs, labels)
        return out

    def summarize(self, version: int, train_wall: float, evaluation: dict | None) -> dict:
        recs = [json.loads(ln) for ln in (self.out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        phases = {}
        for r in recs:
            for k, v in r["phases"].items():
                phases[k] = phases.get(k, 0.0) + v
        return {
            "iterations": len(recs),
            "policy_version": version,
            "mode": self.cfg.mode,
            "algo": self.cfg.trainer.algo.algo,
            "reward": self.cfg.reward.model,
            "weights": self.cfg.pairs.weights.label,
            "videos": sum(r["videos"] for r in recs),
            "loop_seconds": round(train_wall, 1),
            "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
            "trainer_restarts": self.trainer_failures,
            "restarted_actors": sorted({a for r in recs for a in r.get("restarted_actors", [])}),
            "evaluation": evaluation,
        }

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        import ray

        from serve.reward_service import shutdown

        if self.trainer is not None:
            try:
                self.trainer.stop()
            except Exception as e:  # noqa: BLE001 (report and go on closing)
                self.log(f"trainer group: {e}")
        for g in self.gens:
            ray.kill(g)
        if getattr(self, "store", None) is not None:
            ray.kill(self.store)
        if self.deployed:
            shutdown(self.cfg.reward)
        if self.cluster is not None:
            self.cluster.stop()


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill PID``) stops the job like Ctrl-C: the ``finally`` clean-up runs (actors,
    Serve app, the local Ray cluster); the last checkpoint stays for ``--resume``."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run(cfg: OnlineConfig) -> dict:
    cfg.validate()
    cfg.read_prompts()  # a prompt the run cannot use stops it here, before any cluster starts
    _stop_on_sigterm()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume and (out / "metrics.jsonl").exists():  # a fresh run in an old directory starts afresh
        print(f"[online] {out} holds an earlier run: starting afresh (--resume continues one)", flush=True)
        for stale in (out / "metrics.jsonl", out / "summary.json", out / "evaluation.json"):
            stale.unlink(missing_ok=True)
        run_storage(cfg).delete("latest.json")
    save_config(cfg, out)
    t0 = time.time()
    job = OnlineRun(cfg)
    try:
        job.start()
        summary = job.run()
    finally:
        job.close()
    summary["total_seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ev = summary.get("evaluation")
    if ev and "oracle_win_rate" not in ev:  # world=false: the served reward is the only judge
        o = ev["learned_win_rate"]
        print(
            f"[online] win rate of the final policy (v{summary['policy_version']}) against the pretrained one on "
            f"{ev['n']} clips, judged by the {ev['judge']} (no oracle: world=false): weighted "
            f"{100 * o['weighted']:.1f}% (VQ {100 * o['VQ']:.1f}, MQ {100 * o['MQ']:.1f}, TA {100 * o['TA']:.1f})",
            flush=True,
        )
    elif ev:
        o = ev["oracle_win_rate"]
        print(
            f"[online] oracle win rate of the final policy (v{summary['policy_version']}) against the pretrained "
            f"one on {ev['n']} held-out clips: weighted {100 * o['weighted']:.1f}% (VQ {100 * o['VQ']:.1f}, "
            f"MQ {100 * o['MQ']:.1f}, TA {100 * o['TA']:.1f})"
            + (
                f"; learned reward {100 * ev['learned_win_rate']['weighted']:.1f}%"
                f"{', HACKING FLAGGED on ' + ', '.join(ev['reward_hacking']) if ev['reward_hacking'] else ''}"
                if "learned_win_rate" in ev
                else ""
            ),
            flush=True,
        )
        op = ev.get("reward_onpolicy")
        if op:
            print(
                "[online] on-policy accuracy of the served reward without ties (within-prompt pairs, rater labels; "
                "the oracle's ceiling in brackets): "
                + "; ".join(
                    f"{when} "
                    + ", ".join(
                        f"{d} {100 * op[when][d]['without_ties']:.1f}% "
                        f"({100 * op[when][d]['ceiling_without_ties']:.1f}%)"
                        for d in DIMS
                    )
                    for when in ("start", "end")
                )
                + f" on {op['pairs']} pairs each",
                flush=True,
            )
    if cfg.report_clips >= 0:  # a failed report never fails a finished run
        try:
            from rlhf.eval.report import build_report

            print(f"[online] report: {build_report(out, cfg.report_clips)}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(
                f"[online] report.html not written: {type(e).__name__}: {e} "
                f"(retry with: python -m rlhf.eval.report {out})",
                flush=True,
            )
    print(f"[online] done in {summary['total_seconds']:.0f} s; run directory {out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in argv  # not a config key: the check replaces the run
    argv = [a for a in argv if a != "--check"]
    cfg = parse_cli(
        OnlineConfig,
        argv,
        __doc__.splitlines()[0] + " (--check: validate the config and estimate "
        "each role's GPU memory against cluster.yaml, then exit: 0 fits, 2 does not)",
        {
            "--out": ("out", str, "run directory"),
            "--mode": ("mode", str, "sync | one_step_off"),
            "--iterations": ("iterations", int, "online iterations"),
            "--reward": ("reward.model", str, "default | oracle | VideoReward checkpoint"),
            "--address": ("ray_address", str, "Ray cluster address"),
        },
        bool_flags={"--resume": ("resume", "continue from the latest checkpoint")},
    )
    try:
        cfg.validate()
        cfg.read_prompts()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if check:
        try:
            from rlhf.memory import check_online

            return check_online(cfg, Path(__file__).resolve().parents[1] / "cluster.yaml")
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from actors.cluster import FitError

    try:
        run(cfg)
    except FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["OnlineConfig", "run"]

if __name__ == "__main__":
    sys.exit(main())
