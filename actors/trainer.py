# Long on purpose: the trainer group's three parts (the driver-side TrainerGroup, the coordinator actor and the
# workers' loop) exchange the same task and result dicts; they read best side by side.
"""The trainer group: Ray Train workers running DeepSpeed with LoRA, started once, fed every iteration.

``TorchTrainer.fit()`` costs ~20 s of start-up on this machine, so the group is started once per job
(:class:`TrainerGroup`, ``fit()`` on a background thread) and lives across iterations: each worker
runs :func:`trainer_loop`, which takes tasks from a small async coordinator actor until it is told to
stop. An iteration's task carries the worker's shard of the preference dataset (a lazy Ray Data view of the
materialised rows that keeps only this rank's: :func:`actors.preferences.worker_shard`), the number of
optimiser steps K and the policy version to publish.

Per step, every worker takes the next micro-batch of its rows (in the pipeline's seeded order) and
draws noise and timesteps from a generator seeded by ``(seed, iteration, rank)``: no RNG state to
carry, so a resumed run is exact; computes the Flow-DPO or
Flow-RWR loss against the reference policy, the policy the run started from (policy version 0: the
base with the adapter disabled, or the frozen copy of ``init_adapter``; :meth:`FlowGenerator.reference`)
in :func:`rlhf.align.step.train_step`, the one step function of every trainer, and DeepSpeed
all-reduces the LoRA gradients (gloo on CPU, NCCL on GPU) and steps AdamW (bf16 with fp32 master
weights when ``device.precision`` is bf16).

The workers hold the transformer, its LoRA and the optimiser state only: the frozen text encoder
(UMT5-XXL for Wan2.1: ~11 GB in bf16) stays with the generator actors, which encode each prompt
once and ship the embeddings with the rollout (``task["text"]``: object refs, one per actor). After K steps rank 0 publishes the adapter
through the weight-sync backend and, when asked, all ranks write a DeepSpeed checkpoint (LoRA and
optimiser) and rank 0 an adapter directory (diffusers' LoRA format: :mod:`rlhf.generator.lora`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from actors.coordinator import COORDINATOR_NAME, TrainerCoordinator, TrainerError  # noqa: F401 (re-exported)
from rlhf.align.step import AlgoConfig
from rlhf.device import DeviceConfig
from rlhf.reward.distributed import check_zero_stage


@dataclass
class TrainerConfig:
    generator: str = ""  # pretrained generator directory ("" = the shipped default)
    video_shape: list[int] = field(default_factory=lambda: [81, 480, 832])  # frames, height, width (Wan only)
    # LoRA the run starts from ("" = a fresh one, B = 0): a directory in diffusers' format (what this project
    # writes) or peft's, a .safetensors file, or a hub id. It is policy version 0: generators sample with it
    # first and it is the DPO reference. Its own rank and alpha are trained: lora_rank / lora_alpha are set
    # to them (a line says so when they differed).
    init_adapter: str = ""
    lora_rank: int = 8  # of a fresh LoRA (init_adapter sets its own)
    lora_alpha: float = 8.0  # scale alpha / rank
    lr: float = 1e-4  # AdamW on the LoRA parameters
    micro_batch: int = 4  # pairs (DPO) or samples (RWR) per worker per step
    zero_stage: int = 0  # DeepSpeed ZeRO stage (0-3)
    num_workers: int = 2  # Ray Train workers (DeepSpeed data-parallel ranks)
    # cpu/fp32 here; cuda/bf16 (+ gradient_checkpointing) on GPU nodes: each worker gets one GPU from Ray Train
    device: DeviceConfig = field(default_factory=DeviceConfig)
    threads: int = 1  # torch threads per worker
    # custom resources per worker besides 1 CPU (cluster.yaml: {"trainer": 1} puts it on a trainer node)
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    seed: int = 0  # a fresh LoRA's A, and each step's noise and timesteps (with the iteration and rank)
    grad_clip: float = 1.0  # DeepSpeed gradient clipping: max gradient norm (0 = none)
    # the objective: Flow-DPO or Flow-RWR, its beta and timestep distribution
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def validate(self) -> None:
        if self.num_workers < 1 or self.micro_batch < 1 or self.lora_rank < 1:
            raise ValueError("trainer.num_workers, trainer.micro_batch and trainer.lora_rank must be >= 1")
        check_zero_stage(self.zero_stage, self.device.precision == "bf16", "trainer.")
        if self.lr <= 0:
            raise ValueError(f"trainer.lr must be > 0, got {self.lr}")
        if self.algo.algo == "sft":
            raise ValueError("the online loop trains dpo, dpo_timestep or rwr (sft needs no reward model online)")
        if len(self.video_shape) != 3:
            raise ValueError(f"trainer.video_shape must be [frames, height, width], got {self.video_shape}")
        self.algo.validate()
        self.device.validate()
        if self.init_adapter:
            from rlhf.generator.lora import adopt_adapter_settings

            adopt_adapter_settings(self, "trainer.")


def _worker_rows(shard, algo: str) -> dict | None:
    """This worker's rows (:func:`actors.preferences.worker_shard`: only they are read) in the seeded order."""
    from actors.preferences import shuffled, to_tensors

    parts = [p for p in shard.iter_batches(batch_size=None, batch_format="numpy") if len(p["prompt"])]
    if not parts:
        return None
    return to_tensors(shuffled({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}), algo)


def trainer_loop(config: dict) -> None:
    """Runs on every Ray Train worker until the coordinator says stop."""
    import ray
    import ray.data
    import ray.train as rt
    import torch

    from actors.weights import ObjectStoreSync
    from rlhf.config import load_config
    from rlhf.reward.distributed import deepspeed_config, init_deepspeed

    cfg = load_config(TrainerConfig, values=config["trainer"])
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    torch.set_num_threads(cfg.threads)
    ctx = rt.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    init_deepspeed(cfg.device.is_cuda)
    import deepspeed

    gen = worker_generator(cfg, worker_device(cfg.device))
    params = gen.lora_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    engine, _, _, _ = deepspeed.initialize(
        model=gen,
        optimizer=opt,
        model_parameters=params,
        config=deepspeed_config(cfg.micro_batch, cfg.zero_stage, cfg.device.precision == "bf16", cfg.grad_clip),
    )
    coord = ray.get_actor(config["coordinator"])
    sync = ObjectStoreSync(config["store"])
    from actors.storage import RunStorage

    storage = RunStorage(config["storage"])
    if config.get("resume_dir"):  # every rank reads the checkpoint from the run storage, wherever it runs
        with storage.fetched(f"{config['resume_dir']}/deepspeed") as local:
            engine.load_checkpoint(str(local), tag="state")
    from actors.status import show

    while True:
        show("RayTrainWorker", f"rank {rank} waiting for a task")
        task = ray.get(coord.next_task.remote(rank))
        if task["kind"] == "train":
            label = "warm-up" if task.get("dry") else f"train iteration {task['iteration']}"
            show("RayTrainWorker", f"rank {rank} {label}")
        if task["kind"] == "stop":
            break
        if task["kind"] == "state":  # LoRA of the current policy and its LoraConfig (the final adapter, tests)
            ray.get(
                coord.report.remote(
                    rank,
                    task["key"],
                    {
                        "state": gen.lora_state() if rank == 0 else None,
                        "config": gen.lora_kwargs() if rank == 0 else None,
                    },
                )
            )
            continue
        result = _train_iteration(engine, gen, cfg, task, rank, world)
        if rank == 0 and task.get("version") is not None:
            result["publish"] = sync.publish(task["version"], gen.lora_state())
        if task.get("checkpoint"):
            t0 = time.time()
            ck = task["checkpoint"]  # a directory of the run storage: each rank uploads the files it wrote
            with storage.staged(f"{ck}/deepspeed") as local:
                engine.save_checkpoint(str(local), tag="state")
            if rank == 0:
                with storage.staged(f"{ck}/adapter") as local:
                    gen.save_lora(local)
            torch.distributed.barrier()
            result["checkpoint_s"] = time.time() - t0
        ray.get(coord.report.remote(rank, task["key"], result))
    torch.distributed.barrier()


def worker_generator(cfg: TrainerConfig, device: DeviceConfig):
    """The module a trainer worker trains: the transformer (with the world's input maps) and a LoRA on
    ``device``, without the frozen text encoder (prompt embeddings come with each task). The LoRA is
    ``cfg.init_adapter`` (with its frozen copy as the reference policy) or a fresh one."""
    import torch

    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator

    gen = load_generator(
        cfg.generator or DEFAULT_GENERATOR, device=device, video_shape=tuple(cfg.video_shape), text_encoder=False
    )
    if cfg.init_adapter:
        gen.load_lora(cfg.init_adapter, reference=cfg.algo.pairwise)  # only Flow-DPO has a reference
    else:
        torch.manual_seed(cfg.seed)  # same LoRA A on every rank (DeepSpeed also broadcasts rank 0's)
        gen.add_lora(cfg.lora_rank, cfg.lora_alpha)
    return gen


def worker_device(cfg: DeviceConfig) -> DeviceConfig:
    """The role's device setting with a CUDA device resolved to the GPU Ray Train gave this worker (a
    worker may see every GPU of its node: ``get_device()`` names its own). Used by both trainers."""
    from dataclasses import replace

    if not cfg.is_cuda:
        return cfg
    import ray.train.torch

    return replace(cfg, device=str(ray.train.torch.get_device()))


def _text_of(task: dict) -> dict:
    """Prompt -> embedding tensor, from the generator actors' shipped embeddings (``task["text"]``)."""
    import ray
    import torch

    from actors.generator import unpack_embeddings

    out = {}
    for part in ray.get(list(task.get("text") or [])):
        out.update({p: torch.from_numpy(e) for p, e in unpack_embeddings(part).items()})
    return out


def _dummy_rows(gen, cfg: TrainerConfig, rng) -> dict:
    import torch

    shape = (cfg.micro_batch, *gen.latent_shape)
    x = lambda: torch.randn(shape, generator=rng, device=rng.device).cpu()  # noqa: E731
    if cfg.algo.pairwise:
        return {"prompt": [""] * cfg.micro_batch, "x_w": x(), "x_l": x()}
    return {"prompt": [""] * cfg.micro_batch, "x0": x(), "reward": torch.ones(cfg.micro_batch)}


def _dummy_text(gen, rng):
    import torch

    dim = gen.transformer.config.text_dim
    return torch.randn((8, dim), generator=rng, device=rng.device).cpu()


def _train_iteration(engine, gen, cfg: TrainerConfig, task: dict, rank: int, world: int) -> dict:
    import ray
    import torch

    from rlhf.align.step import train_step
    from rlhf.device import seeded_generator

    t0 = time.time()
    algo = cfg.algo.algo
    data = _worker_rows(ray.get(task["data"]), algo)
    read_s = time.time() - t0
    seed = [cfg.seed, task["iteration"], rank]
    trng = seeded_generator(int(np.random.default_rng(seed).integers(2**62)), gen.device)
    n = 0 if data is None else len(data["prompt"])
    emb = _text_of(task) if n else {}
    missing = sorted(set(data["prompt"]) - set(emb)) if n else []
    if missing:
        raise TrainerError(
            f"no prompt embedding shipped for {len(missing)} prompt(s) of iteration "
            f"{task['iteration']} (e.g. {missing[0]!r}): the rollouts' text refs must come with the task"
        )
    dry = bool(task.get("dry"))
    if dry and not n:  # the warm-up of a rank whose shard is empty: a batch of the iteration's shapes
        data, emb, n = _dummy_rows(gen, cfg, trng), {"": _dummy_text(gen, trng)}, cfg.micro_batch
    order, pos = np.arange(max(n, 1)), 0  # rows come in the seeded order of the preference pipeline
    sums = torch.zeros(4, dtype=torch.float64)  # loss, implicit accuracy, steps with data, rows seen
    losses = []
    lora = gen.lora_parameters()

    def update(loss):
        if dry:  # warm-up: the whole forward and backward, but no gradient kept and no optimiser state touched
            torch.autograd.grad(loss, lora, allow_unused=True)
            return
        engine.backward(loss)
        engine.step()

    for _ in range(task["steps"]):
        if n:
            rows = cfg.micro_batch if dry else min(cfg.micro_batch, n)  # dry: the step's full batch shape
            idx = np.array([order[(pos + j) % n] for j in range(rows)])
            pos += len(idx)
            batch = {k: v[idx] for k, v in data.items() if k != "prompt"}
            batch["text"] = torch.stack([emb[data["prompt"][i]] for i in idx])
            rec = train_step(gen, batch, cfg.algo, trng, update)
            sums += torch.tensor([rec["loss"], rec.get("implicit_accuracy", 0.0), 1.0, len(idx)], dtype=torch.float64)
            losses.append(rec["loss"])
        else:  # an empty shard still joins every collective of the step
            gen.train()
            update(sum(p.sum() * 0.0 for p in gen.lora_parameters()))
    sums = sums.to(gen.device)  # NCCL reduces device tensors
    torch.distributed.all_reduce(sums)
    sums = sums.cpu()
    steps = max(float(sums[2]), 1.0)
    return {
        "loss": float(sums[0]) / steps,
        "implicit_accuracy": float(sums[1]) / steps if cfg.algo.pairwise else None,
        "rows_seen": int(sums[3]),
        "steps": task["steps"],
        "first_loss": losses[0] if losses else None,
        "train_s": time.time() - t0,
        "read_s": read_s,  # of train_s: reading this rank's shard
        "rows": n,
    }


class TrainerGroup:
    """Starts the Ray Train worker group once (``fit()`` on a thread) and feeds it iterations."""

    def __init__(
        self,
        cfg: TrainerConfig,
        store_name: str,
        storage: str,
        resume_dir: str | None = None,
        coordinator_name: str = COORDINATOR_NAME,
        run_name: str = "online_trainer",
    ):
        """``storage``: the run storage (a path every node mounts, or a URI: actors/storage.py), where Ray Train
        keeps its run state and the workers write (and, from ``resume_dir`` under it, read) checkpoints."""
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from actors.storage import RunStorage

        cfg.validate()
        self.cfg = cfg
        from actors.weights import on_this_node

        self.coord = (
            ray.remote(num_cpus=0)(TrainerCoordinator)
            .options(name=coordinator_name, scheduling_strategy=on_this_node())
            .remote(cfg.num_workers)
        )
        self.trainer = TorchTrainer(
            trainer_loop,
            train_loop_config={
                "trainer": asdict(cfg),
                "coordinator": coordinator_name,
                "store": store_name,
                "resume_dir": resume_dir,
                "storage": storage,
            },
            torch_config=TorchConfig(backend="nccl" if cfg.device.is_cuda else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers,
                use_gpu=cfg.device.is_cuda,
                resources_per_worker={"CPU": 1, **cfg.resources_per_worker},
            ),
            run_config=RunConfig(name=run_name, storage_path=RunStorage(storage).location("ray")),
        )
        self.error: BaseException | None = None
        self.finished = False
        self._key = 0
        self.thread = threading.Thread(target=self._fit, name="trainer-fit", daemon=True)
        self.thread.start()

    def _fit(self) -> None:
        try:
            result = self.trainer.fit()
            if getattr(result, "error", None):
                self.error = result.error
        except BaseException as e:  # noqa: BLE001 (reported to the driver by _wait)
            self.error = e
        self.finished = True

    def _wait(self, key: int, timeout_s: float) -> list[dict]:
        import ray

        deadline = time.time() + timeout_s
        while True:
            if self.error is not None:
                raise TrainerError(f"the trainer group failed: {self.error}") from self.error
            if self.finished:
                raise TrainerError("the trainer group stopped before answering")
            res = ray.get(self.coord.result.remote(key, 2.0))
            if res is not None:
                return [res[r] for r in sorted(res)]
            if time.time() > deadline:
                raise TrainerError(f"no answer from the trainer group in {timeout_s:.0f} s")

    def _submit(self, make_task, timeout_s: float) -> list[dict]:
        import ray

        self._key += 1
        ray.get(self.coord.submit.remote([make_task(r, self._key) for r in range(self.cfg.num_workers)]))
        return self._wait(self._key, timeout_s)

    def train(
        self,
        shards: list,
        iteration: int,
        steps: int,
        version: int | None,
        checkpoint: str | None = None,
        timeout_s: float = 3600.0,
        text: list | None = None,
        dry: bool = False,
    ) -> dict:
        """K optimiser steps on ``shards`` (rank r's rows of the preference dataset at ``shards[r]``:
        :func:`actors.preferences.worker_shard`) whose prompts' embeddings are in ``text`` (object refs of the generator actors' packed embeddings); publishes ``version`` (rank 0);
        returns rank 0's result. ``dry``: the warm-up (one step's Ray Data read, forward, backward at the
        step's batch shape and all-reduce on every rank; no weight, gradient or optimiser state changes)."""
        if len(shards) != self.cfg.num_workers:
            raise TrainerError(f"{len(shards)} data shards for {self.cfg.num_workers} trainer workers")
        import ray

        # by reference: the coordinator passes each task on without deserialising a Dataset (and importing Ray Data)
        refs = [ray.put(s) for s in shards]
        res = self._submit(
            lambda r, key: {
                "kind": "train",
                "dry": dry,
                "key": key,
                "data": refs[r],
                "iteration": iteration,
                "steps": steps,
                "version": version,
                "checkpoint": checkpoint,
                "text": list(text or []),
            },
            timeout_s,
        )
        return res[0]

    def lora_state(self, timeout_s: float = 600.0) -> dict:
        return self.lora_adapter(timeout_s)[0]

    def lora_adapter(self, timeout_s: float = 600.0) -> tuple[dict, dict]:
        """The current policy's LoRA weights (peft names) and ``LoraConfig`` kwargs: what
        :func:`rlhf.generator.lora.save_adapter` writes."""
        res = self._submit(lambda r, key: {"kind": "state", "key": key}, timeout_s)[0]
        return res["state"], res["config"]

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop the workers after their current task; raises TrainerError if the group had failed."""
        import ray

        if not self.finished and self.error is None:
            ray.get(self.coord.submit.remote([{"kind": "stop"}] * self.cfg.num_workers))
            self.thread.join(timeout_s)  # a worker busy with a task finishes it first
        ray.kill(self.coord)
        if self.error is not None:
            raise TrainerError(f"the trainer group failed: {self.error}") from self.error


__all__ = ["TrainerConfig", "TrainerGroup", "TrainerError", "trainer_loop"]
