"""Train VideoReward on Ray Train workers running DeepSpeed; evaluate on the held-out split
(``jobs/train_reward.py`` runs ``main``; the alignment trainer's twin is ``actors/trainer.py``).

    python jobs/train_reward.py --data runs/dataset --out runs/reward
    python jobs/train_reward.py --config jobs/configs/train_reward.yaml loss=bt num_workers=1
    python jobs/train_reward.py --data runs/dataset --out runs/reward --resume

Each worker reads its shard of the training pairs through Ray Data, decodes the videos (a bad video
is reported by row and skipped), and steps a DeepSpeed engine (ZeRO stage configurable, gloo on
CPU / NCCL on GPU). Every ``checkpoint_every`` steps rank 0 writes a VideoAlign-layout checkpoint
and all ranks write the DeepSpeed state (optimiser included) with the data position, so ``--resume``
continues where the run stopped. At the end rank 0 computes the normalisation constants on training
pairs, evaluates the held-out pairs and writes ``eval.json`` and ``eval.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from actors.reward_data import (
    REPORT_EVERY,
    SYNTHETIC,
    TrainRewardJob,
    file_batches,
    generated_dirs,
    parquet_path,
    split_records,
    synthetic_batches,
    video_root,
)
from rlhf.config import parse_cli, save_config
from rlhf.reward.checkpoint import read_info


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train as rt
    import torch

    from actors.trainer import worker_device
    from rlhf.reward.checkpoint import RewardCheckpointInfo, save_backbone, save_checkpoint
    from rlhf.reward.distributed import deepspeed_config, init_deepspeed
    from rlhf.reward.model import apply_trainable_parts, build_model
    from rlhf.reward.processor import RewardProcessor, VisionGeometry
    from rlhf.reward.tokens import world_tokenizer
    from rlhf.reward.train import lr_multiplier, pair_loss

    cfg = _cfg_from(config)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // cfg.num_workers))
    ctx = rt.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    init_deepspeed(cfg.device.is_cuda)
    import deepspeed

    from actors.storage import RunStorage

    # Every rank writes into a local working directory; with storage set, what it wrote goes up there after
    # each checkpoint, and a resume first brings the storage down (so any node can resume).
    storage = RunStorage(cfg.storage) if cfg.storage else None
    out = Path(tempfile.mkdtemp(prefix="train_reward-")) if storage else Path(cfg.out)
    if storage and cfg.resume and storage.exists("train_state.json"):
        storage.download("", out)

    def persist(*rels: str) -> None:
        for rel in rels:
            p = out / rel
            if storage is None or not p.exists():
                continue
            if p.is_dir():
                storage.upload(p, rel)
            else:
                storage.write_bytes(rel, p.read_bytes())

    if cfg.init_from:  # fine-tune: the trained model keeps its backbone, tokens, frame sampling and parts
        from rlhf.hub import resolve
        from rlhf.reward.checkpoint import load_checkpoint

        model, tokenizer, start, _ = load_checkpoint(cfg.init_from, cache_dir=cfg.hub_cache or None)
        model.train()
        if cfg.separate_tokens != start.separate_tokens:
            raise ValueError(f"init_from={cfg.init_from} has separate_tokens={start.separate_tokens}; set the same")
        cfg = dataclasses.replace(cfg, sampling=start.sampling)
        parts = dataclasses.replace(start.parts, lm_head=start.parts.lm_head or cfg.caption_weight > 0)
        if parts.lm_head:
            for p in model.vlm.get_output_embeddings().parameters():
                p.requires_grad_(True)
        info = dataclasses.replace(start, parts=parts)
        base = resolve(cfg.init_from, "reward model", cfg.hub_cache or None) / start.model_name_or_path
        if base.is_dir():  # a base shipped inside the checkpoint travels with it; a hub id stays a hub id
            info.model_name_or_path = "backbone"
            if rank == 0 and not (out / "backbone").exists():
                shutil.copytree(base, out / "backbone")
                persist("backbone")
    else:
        tokenizer = world_tokenizer(cfg.backbone.vocab_size, cfg.backbone.grammar)
        model = build_model(tokenizer, cfg.backbone, cfg.separate_tokens, seed=cfg.seed)
        if rank == 0:
            save_backbone(model.vlm, tokenizer, out)
            persist("backbone")
        parts = dataclasses.replace(cfg.parts, lm_head=cfg.parts.lm_head or cfg.caption_weight > 0)
        model = apply_trainable_parts(model, parts)
        info = RewardCheckpointInfo(separate_tokens=cfg.separate_tokens, parts=parts, sampling=cfg.sampling)
    model.place(worker_device(cfg.device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step))
    engine, optimizer, _, _ = deepspeed.initialize(  # the engine steps the schedule and checkpoints it
        model=model,
        optimizer=optimizer,
        model_parameters=params,
        lr_scheduler=schedule,
        config=deepspeed_config(cfg.batch_size, cfg.zero_stage, cfg.device.precision == "bf16"),
    )
    processor = RewardProcessor(
        tokenizer,
        cfg.sampling,
        cfg.separate_tokens,
        caption_mask=cfg.caption_weight > 0,
        geometry=VisionGeometry.of(model.vlm),
    )

    state = {"step": 0, "epoch": 0, "batch": 0}
    state_file = out / "train_state.json"
    if cfg.resume and state_file.exists():
        state = json.loads(state_file.read_text())
        engine.load_checkpoint(str(out / "deepspeed"), tag=f"step{state['step']}")
        if rank == 0:
            print(f"resumed at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})", flush=True)

    if cfg.data == SYNTHETIC:
        stream = synthetic_batches(cfg, processor, rank, world, state["batch"])
    else:
        stream = file_batches(cfg, rt.get_dataset_shard("train"), processor, state["epoch"], state["batch"])
    t0, seen, skipped = time.time(), 0, 0

    def checkpoint(step: int, position: tuple[int, int]) -> None:
        engine.save_checkpoint(str(out / "deepspeed"), tag=f"step{step}")
        persist(f"deepspeed/step{step}", "deepspeed/latest")  # each rank its own shards
        torch.distributed.barrier()  # every shard is in storage before the state names this step
        if rank == 0:
            save_checkpoint(engine.module, out, step, info)
            tmp = state_file.with_suffix(".part")
            tmp.write_text(json.dumps({"step": step, "epoch": position[0], "batch": position[1]}))
            tmp.replace(state_file)
            persist("model_config.json", f"checkpoint-{step}", "train_state.json")
        torch.distributed.barrier()

    position = (state["epoch"], state["batch"])  # where the data of the next step starts
    finished = True
    for next_position, batch in stream:
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            finished = False
            break
        if batch is not None:
            skipped += len(batch.skipped)
            warm = state["step"] < cfg.caption_warmup_steps
            loss, _ = pair_loss(
                engine,
                batch,
                cfg.loss,
                cfg.tie_k,
                cfg.caption_weight,
                cfg.caption_min_ta,
                reward_weight=0.0 if warm else 1.0,
            )
            engine.backward(loss)
            engine.step()
            state["step"] += 1
            seen += len(batch.records)
        position = next_position
        if batch is None:
            continue
        step = state["step"]
        if rank == 0 and (step % 10 == 0 or step == 1):
            print(
                f"step {step} data {position} loss {loss.item():.4f} lr {engine.get_lr()[0]:.2e} "
                f"pairs/s {seen * world / (time.time() - t0):.1f} skipped {skipped}",
                flush=True,
            )
        if step % REPORT_EVERY == 0:
            rt.report({"step": step, "loss": float(loss.item()), "skipped": skipped})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint(step, position)
        if cfg.eval_every and step % cfg.eval_every == 0 and rank == 0:
            evaluate(cfg, engine.module, processor, info, step, final=False, out=out)
            persist("eval_history.jsonl")
    if finished:
        position = (cfg.epochs, 0)
    checkpoint(state["step"], position)

    if rank == 0:
        evaluate(cfg, engine.module, processor, info, state["step"], final=True, out=out)
        persist("eval_history.jsonl", "eval.json", "eval.md", "model_config.json", f"checkpoint-{state['step']}")
    torch.distributed.barrier()
    if storage is not None:
        shutil.rmtree(out, ignore_errors=True)


def evaluate(cfg, model, processor, info, step: int, final: bool, out: Path | None = None) -> dict:
    """Normalisation constants from training pairs, then the accuracy table on the held-out pairs."""
    import itertools

    import torch

    from rlhf.reward.checkpoint import save_checkpoint
    from rlhf.reward.train import accuracy_table, format_table, norm_constants, pair_rewards, score_pairs

    eval_data = cfg.eval_data or cfg.data
    if eval_data == SYNTHETIC:
        raise ValueError("data=synthetic needs eval_data=DIR (a make_dataset output with held-out pairs)")
    if cfg.data == SYNTHETIC:  # norm_pairs training pairs from far along the stream
        was_training = model.training
        model.eval()
        with torch.no_grad():
            outs = [
                pair_rewards(model, b)
                for _, b in itertools.islice(
                    synthetic_batches(cfg, processor, 0, 1, 10**6), max(1, cfg.norm_pairs // cfg.batch_size)
                )
            ]
        model.train(was_training)
        ta, tb = torch.cat([a for a, _ in outs]).float(), torch.cat([b for _, b in outs]).float()
    else:
        norm_recs = split_records(cfg.data, cfg.train_split)[: cfg.norm_pairs]
        _, ta, tb, _ = score_pairs(model, norm_recs, video_root(cfg, cfg.data), processor)
    if len(ta):
        info.norm = norm_constants(ta, tb)
    eval_recs = split_records(eval_data, cfg.eval_split)
    if cfg.eval_pairs:
        eval_recs = eval_recs[: cfg.eval_pairs]
    kept, ea, eb, bad = score_pairs(model, eval_recs, video_root(cfg, eval_data), processor)
    table = accuracy_table(kept, ea, eb, info.norm) if kept else {}
    result = {"step": step, "split": cfg.eval_split, "table": table, "skipped": [asdict(s) for s in bad]}
    out = Path(out or cfg.out)
    with open(out / "eval_history.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    if final:
        save_checkpoint(model, out, step, info)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        (out / "eval.md").write_text(format_table(table) + "\n")
    print(f"eval at step {step}:\n{format_table(table)}", flush=True)
    return result


def _cfg_from(config: dict) -> TrainRewardJob:
    from rlhf.config import load_config

    path = Path(config["config_file"])
    return load_config(TrainRewardJob, path)


def fit(cfg: TrainRewardJob, cfg_file: Path, started_at: float | None = None, name: str = "train_reward") -> None:
    """The Ray Train run of ``cfg`` (saved at ``cfg_file``) on the cluster this process is connected to;
    writes ``run_time.json`` into ``cfg.out``. The online job's reward refresh calls it too."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from actors.storage import RunStorage

    started_at = started_at or time.time()
    out = Path(cfg.out)
    datasets = {}
    if cfg.data != SYNTHETIC:
        datasets["train"] = ray.data.read_parquet(str(parquet_path(cfg.data))).filter(
            expr=f"split == '{cfg.train_split}'"
        )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config_file": str(cfg_file.resolve())},
        torch_config=TorchConfig(backend="nccl" if cfg.device.is_cuda else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.device.is_cuda, resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=(RunStorage(cfg.storage).location("ray") if cfg.storage else str((out / "ray").resolve())),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    (out / "run_time.json").write_text(
        json.dumps(
            {
                "wall_s": round(time.time() - started_at, 1),
                "num_workers": cfg.num_workers,
                "steps": cfg.max_steps,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        + "\n"
    )


def prepare(cfg: TrainRewardJob) -> tuple[TrainRewardJob, Path]:
    """``cfg`` with every path absolute (workers run in other directories), its data checked before any worker
    starts, saved in its run directory -> (cfg, the saved config file)."""
    from rlhf.data.schema import read_preferences

    # Workers run in other directories: every path they read is made absolute here.
    absolute = {
        k: str(Path(getattr(cfg, k)).resolve())
        for k in ("data", "eval_data", "root", "out")
        if getattr(cfg, k) and getattr(cfg, k) != SYNTHETIC
    }
    if cfg.generated_data:
        absolute["generated_data"] = ",".join(str(Path(d).resolve()) for d in generated_dirs(cfg))
    if cfg.init_from and Path(cfg.init_from).exists():  # else a hub id
        absolute["init_from"] = str(Path(cfg.init_from).resolve())
    if cfg.storage and "://" not in cfg.storage:
        absolute["storage"] = str(Path(cfg.storage).resolve())
    cfg = dataclasses.replace(cfg, **absolute)
    if cfg.init_from and (Path(cfg.init_from) / "model_config.json").is_file():
        # a fine-tune keeps the start's frame sampling and trainable parts (train_loop): record those it uses
        start = read_info(Path(cfg.init_from))
        cfg = dataclasses.replace(cfg, sampling=start.sampling, parts=start.parts)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = save_config(cfg, out)
    for data in {cfg.data, cfg.eval_data or cfg.data, *generated_dirs(cfg)} - {SYNTHETIC}:
        read_preferences(parquet_path(data))  # a clear error before any worker starts
    if cfg.generated_data and cfg.data != SYNTHETIC:
        raise SystemExit(
            "error: generated_data mixes generated pairs into data=synthetic batches; with a dataset "
            "dir, put the generated pairs in it (make_dataset generated.*)"
        )
    if cfg.data == SYNTHETIC and (not cfg.max_steps or not cfg.eval_data):
        raise SystemExit("error: data=synthetic needs max_steps=N and eval_data=DIR")
    return cfg, cfg_file


def run(cfg: TrainRewardJob) -> dict:
    from actors.cluster import Role, check_fit, connect, hub_env, local_cpus
    from actors.storage import RunStorage

    started_at = time.time()  # run_time.json: wall time of the whole job, Ray start-up included
    cfg, cfg_file = prepare(cfg)
    out = Path(cfg.out)
    roles = [
        Role(
            "trainer workers",
            cfg.num_workers,
            {"CPU": 1.0, "GPU": 1.0 if cfg.device.is_cuda else 0.0},
            "num_workers, device",
        ),
        Role("Ray Data tasks", 1 if cfg.data != SYNTHETIC else 0, {"CPU": 1.0}),
    ]
    # the dashboard (127.0.0.1 only) serves Ray Train's state API; without it the placement-group cleaner warns
    cluster = connect(cfg.ray_address, num_cpus=local_cpus(roles, spare=1), env_vars=hub_env(cfg.hub_cache))
    try:
        check_fit(roles, autoscaling=cfg.autoscaling and not cluster.started, wait_s=cfg.cluster_wait_s)
        fit(cfg, cfg_file, started_at)
    finally:
        if cluster.started:
            cluster.stop()
    if cfg.storage:  # the evaluation comes back to the run directory; the checkpoints stay in storage
        st = RunStorage(cfg.storage)
        for name in ("eval.json", "eval.md", "eval_history.jsonl"):
            if st.exists(name):
                (out / name).write_bytes(st.read_bytes(name))
    return json.loads((out / "eval.json").read_text())


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        TrainRewardJob,
        argv,
        __doc__.splitlines()[0],
        {
            "--data": ("data", str, "dataset dir or parquet"),
            "--out": ("out", str, "run directory"),
            "--workers": ("num_workers", int, "Ray Train workers"),
        },
        bool_flags={"--resume": ("resume", "continue from the latest checkpoint")},
    )
    from actors.cluster import FitError

    try:
        run(cfg)
    except FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
