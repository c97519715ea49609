"""Generator actors: sample prompt groups with a given policy version, have them scored, hand back refs.

Each actor holds the base generator plus one LoRA, holding policy version 0 until the first published
version arrives: the run's ``init_adapter`` if it starts from one, else a zero adapter (the base).
``rollout`` returns three objects: small metadata the driver reads (timings, mean scores, the policy
version), an Arrow table with one row per sample (prompt, seed, policy_version, scores, the clean
latent, the stored mp4) that goes straight to Ray Data as an object reference, and the prompt
embeddings of its prompts (one per prompt, :func:`pack_embeddings`), which go to the trainer workers
with the iteration's task: the frozen text encoder lives here only. Bulk data never passes through
the driver.

Device: the actor's generator, noise, text embeddings and codec live on ``device`` (the GPU Ray gave
the actor when ``num_gpus`` > 0: ``cuda``); clips are decoded to the host for encoding and scoring.

Scoring: each clip is encoded as the datasets store it (H.264, crf 12, at the generator's frame rate,
so that the reward's fps-based frame sampling sees the clip's true duration) and sent to the reward
deployment through :class:`serve.client.RewardClient` (batched on the replica, retried on
failure). In the moving-shapes world the actor also scores the same stored clips with the oracle, so
every claim about the policy stays measurable; the oracle does not train anything unless the run
chose it as its reward.

Fault tolerance: the actor class is created with ``max_restarts`` / ``max_task_retries``; a restarted
actor starts from version 0's weights and fetches whatever version the next call names, so it never
samples with stale weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from rlhf.device import DeviceConfig
from rlhf.dims import DIMS
from rlhf.generator.guidance import GuidanceConfig
from rlhf.generator.sampler import SamplerConfig


@dataclass
class GeneratorActorConfig:
    generator: str = ""  # pretrained generator directory ("" = the shipped default)
    video_shape: list[int] = field(default_factory=lambda: [81, 480, 832])  # frames, height, width (Wan only)
    fps: float = 16.0  # frame rate of Wan checkpoints' clips (the world layout records its own: 8)
    text_tokens: int = 512  # prompt tokens of Wan checkpoints (the world layout records its own)
    device: DeviceConfig = field(default_factory=DeviceConfig)  # the generator's device and precision
    init_adapter: str = ""  # the run's initial LoRA (trainer.init_adapter): policy version 0; "" = zero LoRA
    lora_rank: int = 8  # of a zero LoRA (init_adapter brings its own)
    lora_alpha: float = 8.0  # of a zero LoRA: scale alpha / rank
    threads: int = 1  # torch threads per actor
    reward_app: str = "reward"  # Serve app that scores the clips
    reward_timeout_s: float = 120.0  # seconds a scoring call may take before it is retried (reward_retries)
    reward_retries: int = 6  # with backoff 0.5 s doubling to 8 s: rides out a replica restart (~24 s)
    oracle: bool = True  # also score with the moving-shapes oracle (metrics, evaluation)
    # how rollouts are sampled (Euler steps, guidance, shift)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    guidance_model: str = ""  # latent reward model directory for Flow-NRG ("" = none)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # scale 0 = unguided


def pack_embeddings(prompts: list[str], text) -> dict:
    """One embedding per distinct prompt, as float32 numpy trimmed to the prompt's own tokens (WanPipeline
    zeroes every position past them): what the trainer workers receive instead of a text encoder."""
    emb = text.detach().float().cpu().numpy()
    out = {}
    for p, e in zip(prompts, emb):
        if p not in out:
            used = np.flatnonzero(np.abs(e).sum(-1) > 0)
            out[p] = e[: (used[-1] + 1 if len(used) else 0)].copy()
    return {"tokens": int(emb.shape[1]), "dim": int(emb.shape[2]), "embeddings": out}


def unpack_embeddings(packed: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_embeddings`: ``(tokens, dim)`` float32 arrays, zero past each prompt."""
    out = {}
    for p, e in packed["embeddings"].items():
        full = np.zeros((packed["tokens"], packed["dim"]), np.float32)
        full[: len(e)] = e
        out[p] = full
    return out


def _oracle_scores(mp4s: list[bytes], prompts: list[str]) -> np.ndarray:
    from rlhf.synthetic.oracle import score
    from rlhf.video import read_video

    return np.array([[s["VQ"], s["MQ"], s["TA"]] for s in (score(read_video(m), p) for m, p in zip(mp4s, prompts))])


def policy_generator(cfg: GeneratorActorConfig):
    """The generator an actor samples with, holding policy version 0: the base plus ``cfg.init_adapter``
    (loaded as diffusers loads it), or plus a zero LoRA (B = 0: the base policy) that published versions
    fill in."""
    import torch

    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator

    gen = load_generator(
        cfg.generator or DEFAULT_GENERATOR,
        device=cfg.device,
        text_tokens=cfg.text_tokens,
        video_shape=tuple(cfg.video_shape),
        fps=cfg.fps,
    )
    if cfg.init_adapter:
        gen.load_lora(cfg.init_adapter)
    else:
        torch.manual_seed(0)
        gen.add_lora(cfg.lora_rank, cfg.lora_alpha)
    return gen


class GeneratorActor:
    """Wrapped with ``ray.remote`` by :func:`start_generators`."""

    def __init__(self, cfg: dict, index: int, store_name: str):
        import ray
        import torch

        from actors.weights import ObjectStoreSync
        from rlhf.config import load_config

        self.cfg = load_config(GeneratorActorConfig, values=cfg)
        torch.set_num_threads(self.cfg.threads)
        self.index = index
        self.gen = policy_generator(self.cfg)
        self.initial = self.gen.lora_state()  # policy version 0, put back by _use(0)
        self.version = 0
        self.weights_sha = ""  # sha256 of the adapter blob in use ("" = version 0, the initial weights)
        self.sync = ObjectStoreSync(store_name)
        self.guide = None
        if self.cfg.guidance.scale > 0:
            from rlhf.reward.latent import LatentReward

            self.cfg.guidance.validate()
            if not self.cfg.guidance_model:
                raise ValueError("guidance.scale > 0 needs guidance_model (jobs/train_latent_reward.py writes one)")
            self.guide = (LatentReward.load(self.cfg.guidance_model, device=self.cfg.device), self.cfg.guidance)
        self.client = None
        self.replica_pids: list[int] = []  # reward replicas that answered the last scoring call
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.pid = os.getpid()

    def info(self) -> dict:
        return {"index": self.index, "pid": self.pid, "version": self.version, "restarted": self.restarted}

    def forget_weights(self) -> None:
        """The next batch fetches its version even if it has the same number as the one held (after the
        trainer restarted from a checkpoint, a version number can be published again)."""
        self.version = -1

    def _use(self, version: int) -> float:
        """Swap to policy ``version`` (between batches; 0 = the initial weights); returns the seconds it took."""
        t0 = time.time()
        if version != self.version:
            if version == 0:
                self.gen.load_lora_state(self.initial, "policy version 0")
                self.weights_sha = ""
            else:
                state, meta = self.sync.fetch(version)
                self.gen.load_lora_state(state, f"policy version {version}")
                self.weights_sha = meta["sha256"]
            self.version = version
        return time.time() - t0

    def _scores(self, mp4s: list[bytes], prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from serve.client import RewardClient

        if self.client is None:
            self.client = RewardClient(
                self.cfg.reward_app, timeout_s=self.cfg.reward_timeout_s, retries=self.cfg.reward_retries
            )
        out = self.client.score(mp4s, prompts)
        self.replica_pids = sorted({o.get("replica_pid", -1) for o in out})
        self.reward_versions = [int(o.get("reward_version", 0)) for o in out]
        norm = np.array([[o["normalised"][d] for d in DIMS] for o in out])
        raw = np.array([[o["raw"][d] for d in DIMS] for o in out])
        return norm, raw

    def _encode(self, videos: np.ndarray) -> list[bytes]:
        from rlhf.video import encode_video

        return [encode_video(v, fps=self.gen.fps, crf=12) for v in videos]

    def rollout(self, prompts: list[str], seeds: list[int], version: int, iteration: int):
        """Sample one clip per (prompt, seed) with policy ``version``; score; return (meta, arrow table,
        packed prompt embeddings)."""
        import pyarrow as pa
        import torch
        from ray.data.extensions import ArrowTensorArray

        from actors.status import iteration_label, show
        from rlhf.generator.sampler import sample

        show("GeneratorActor.rollout", f"sampling {iteration_label(iteration)}, v{version}")
        sync_s = self._use(version)
        t0 = time.time()
        batch = sample(self.gen, prompts, seeds, self.cfg.sampler, guidance=self.guide)
        with torch.no_grad():
            uniq = list(dict.fromkeys(prompts))
            text = pack_embeddings(uniq, self.gen.encode_prompts(uniq))
        mp4s = self._encode(batch.videos)
        t1 = time.time()
        show("GeneratorActor.rollout", f"scoring {iteration_label(iteration)}, v{version}")
        retried = self.client.retried if self.client is not None else 0
        reward, raw = self._scores(mp4s, prompts)
        retried = self.client.retried - retried
        t2 = time.time()
        oracle = _oracle_scores(mp4s, prompts) if self.cfg.oracle else np.full((len(prompts), 3), np.nan)
        n = len(prompts)
        table = pa.table(
            {
                "prompt": prompts,
                "seed": np.asarray(seeds, np.int64),
                "iteration": np.full(n, iteration, np.int64),
                "policy_version": np.full(n, version, np.int64),
                "actor": np.full(n, self.index, np.int64),
                **{f"r_{d}": reward[:, i] for i, d in enumerate(DIMS)},
                **{f"raw_{d}": raw[:, i] for i, d in enumerate(DIMS)},
                **{f"oracle_{d}": oracle[:, i] for i, d in enumerate(DIMS)},
                "reward_version": np.asarray(self.reward_versions, np.int64),  # the reward model that scored each clip
                "latent": ArrowTensorArray.from_numpy(batch.latents.numpy().astype(np.float32)),
                "mp4": pa.array(mp4s, pa.binary()),
            }
        )
        meta = {
            "actor": self.index,
            "pid": self.pid,
            "restarted": self.restarted,
            "n": n,
            "policy_version": version,
            "iteration": iteration,
            "generate_s": t1 - t0,
            "reward_wait_s": t2 - t1,
            "oracle_s": time.time() - t2,
            "weight_sync_s": sync_s,
            "weights_sha256": self.weights_sha,
            "seeds": [int(x) for x in seeds],
            "reward_retries": retried,
            "reward_replica_pids": self.replica_pids,
            "reward_versions": sorted(set(self.reward_versions)),
            "reward": reward.mean(0).tolist(),
            "oracle": oracle.mean(0).tolist(),
        }
        return meta, table, text

    def evaluate(
        self, prompts: list[str], seeds: list[int], version: int, score_reward: bool = True, keep: list[int] = ()
    ) -> dict:
        """Scores of policy ``version``'s clips (0 = the initial policy) for evaluation: oracle (in the world) and
        reward; the mp4 of the clips at indices ``keep`` (``clips``: index -> bytes), for the report."""
        from rlhf.generator.sampler import sample

        self._use(version)
        batch = sample(self.gen, prompts, seeds, self.cfg.sampler, guidance=self.guide)
        mp4s = self._encode(batch.videos)
        out = {"seeds": list(seeds), "clips": {i: mp4s[i] for i in keep}}
        if self.cfg.oracle:  # world=false: free-text prompts, no oracle
            out["oracle"] = _oracle_scores(mp4s, prompts)
        if score_reward:
            out["reward"] = self._scores(mp4s, prompts)[0]
        return out


def start_generators(
    n: int,
    cfg: GeneratorActorConfig,
    store_name: str,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_restarts: int = 3,
    resources: dict | None = None,
) -> list:
    """``n`` generator actors; each restarts up to ``max_restarts`` times and retries the call it died in."""
    import ray

    cls = ray.remote(GeneratorActor)
    return [
        cls.options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=dict(resources or {}),
            max_restarts=max_restarts,
            max_task_retries=max_restarts,
        ).remote(asdict(cfg), i, store_name)
        for i in range(n)
    ]
