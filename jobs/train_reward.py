"""Train VideoReward on Ray Train workers running DeepSpeed; evaluate on the held-out split.

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

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import parse_cli, save_config  # noqa: E402
from rlhf.reward.train import RewardTrainConfig  # noqa: E402


@dataclass
class TrainRewardJob(RewardTrainConfig):
    resume: bool = False  # continue from the latest checkpoint in out
    ray_address: str = ""  # "" starts a local Ray instance; "auto" joins a running cluster


def parquet_path(cfg) -> Path:
    p = Path(cfg.data)
    return p / "prefs.parquet" if p.is_dir() else p


def video_root(cfg) -> Path:
    return Path(cfg.root) if cfg.root else parquet_path(cfg).parent


def _records(cfg, split: str) -> list[dict]:
    from rlhf.data.schema import read_preferences

    return [r for r in read_preferences(parquet_path(cfg)).to_pylist() if r["split"] == split]


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train as rt
    import torch

    from rlhf.reward.checkpoint import RewardCheckpointInfo, save_backbone, save_checkpoint
    from rlhf.reward.data import build_batch
    from rlhf.reward.distributed import deepspeed_config, init_deepspeed
    from rlhf.reward.model import apply_trainable_parts, build_model
    from rlhf.reward.processor import RewardProcessor
    from rlhf.reward.tokens import world_tokenizer
    from rlhf.reward.train import accuracy_table, format_table, norm_constants, pair_loss, score_pairs

    cfg = _cfg_from(config)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // cfg.num_workers))
    ctx = rt.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    init_deepspeed(cfg.use_gpu)
    import deepspeed

    out = Path(cfg.out)
    tokenizer = world_tokenizer(cfg.backbone.vocab_size)
    model = build_model(tokenizer, cfg.backbone, cfg.separate_tokens, seed=cfg.seed)
    if rank == 0:
        save_backbone(model.vlm, tokenizer, out)
    model = apply_trainable_parts(model, cfg.parts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, model_parameters=params,
        config=deepspeed_config(cfg.batch_size, cfg.zero_stage, cfg.bf16))
    processor = RewardProcessor(tokenizer, cfg.sampling, cfg.separate_tokens)
    info = RewardCheckpointInfo(separate_tokens=cfg.separate_tokens, parts=cfg.parts, sampling=cfg.sampling)

    state = {"step": 0, "epoch": 0, "batch": 0}
    state_file = out / "train_state.json"
    if cfg.resume and state_file.exists():
        state = json.loads(state_file.read_text())
        engine.load_checkpoint(str(out / "deepspeed"), tag=f"step{state['step']}")
        if rank == 0:
            print(f"resumed at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})", flush=True)

    shard = rt.get_dataset_shard("train")
    root = video_root(cfg)
    t0, seen, skipped = time.time(), 0, 0

    def checkpoint(step: int, epoch: int, next_batch: int) -> None:
        engine.save_checkpoint(str(out / "deepspeed"), tag=f"step{step}")
        if rank == 0:
            save_checkpoint(engine.module, out, step, info)
            tmp = state_file.with_suffix(".part")
            tmp.write_text(json.dumps({"step": step, "epoch": epoch, "batch": next_batch}))
            tmp.replace(state_file)
        torch.distributed.barrier()

    done = False
    position = (state["epoch"], state["batch"])  # where the next step's data starts
    for epoch in range(state["epoch"], cfg.epochs):
        it = shard.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow",
                                local_shuffle_buffer_size=4 * cfg.batch_size, local_shuffle_seed=cfg.seed + epoch)
        for bi, table in enumerate(it):
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                done = True
                break
            if epoch == state["epoch"] and bi < state["batch"]:
                continue  # data position of a resumed run
            batch = build_batch(table.to_pylist(), root, processor)
            skipped += 0 if batch is None else len(batch.skipped)
            if batch is None:
                continue
            loss, margins = pair_loss(engine, batch, cfg.loss, cfg.tie_k)
            engine.backward(loss)
            engine.step()
            state["step"] += 1
            seen += len(batch.records)
            step = state["step"]
            if rank == 0 and (step % 10 == 0 or step == 1):
                el = time.time() - t0
                print(f"step {step} epoch {epoch} loss {loss.item():.4f} pairs/s {seen * world / el:.1f} "
                      f"skipped {skipped}", flush=True)
            rt.report({"step": step, "epoch": epoch, "loss": float(loss.item()), "skipped": skipped})
            position = (epoch, bi + 1)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(step, *position)
        if done:
            break
        position = (epoch + 1, 0)
    checkpoint(state["step"], *position)

    if rank == 0:
        model = engine.module
        train_recs = _records(cfg, cfg.train_split)[:256]
        _, ta, tb, _ = score_pairs(model, train_recs, root, processor)
        info.norm = norm_constants(ta, tb)
        save_checkpoint(model, out, state["step"], info)
        eval_recs = _records(cfg, cfg.eval_split)
        if cfg.eval_pairs:
            eval_recs = eval_recs[:cfg.eval_pairs]
        kept, ea, eb, bad = score_pairs(model, eval_recs, root, processor)
        table = accuracy_table(kept, ea, eb, info.norm) if kept else {}
        (out / "eval.json").write_text(json.dumps({"step": state["step"], "split": cfg.eval_split, "table": table,
                                                   "skipped": [asdict(s) for s in bad]}, indent=2))
        md = format_table(table)
        (out / "eval.md").write_text(md + "\n")
        print(md, flush=True)
    torch.distributed.barrier()


def _cfg_from(config: dict) -> TrainRewardJob:
    from rlhf.config import load_config

    path = Path(config["config_file"])
    return load_config(TrainRewardJob, path)


def run(cfg: TrainRewardJob) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from rlhf.data.schema import read_preferences

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = save_config(cfg, out)
    parquet = parquet_path(cfg)
    read_preferences(parquet)  # clear error before any worker starts
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    started = False
    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address)
        else:
            ray.init(address="local", num_cpus=max(2, cfg.num_workers + 1), include_dashboard=False,
                     log_to_driver=True)
        started = True
    try:
        ds = ray.data.read_parquet(str(parquet)).filter(expr=f"split == '{cfg.train_split}'")
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"config_file": str(cfg_file.resolve())},
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name="train_reward", storage_path=str((out / "ray").resolve())),
            datasets={"train": ds},
        )
        result = trainer.fit()
        if result.error:
            raise result.error
    finally:
        if started:
            ray.shutdown()
    return json.loads((out / "eval.json").read_text())


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(TrainRewardJob, argv, __doc__.splitlines()[0],
                    {"--data": ("data", str, "dataset dir or parquet"), "--out": ("out", str, "run directory"),
                     "--workers": ("num_workers", int, "Ray Train workers")},
                    bool_flags={"--resume": ("resume", "continue from the latest checkpoint")})
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
