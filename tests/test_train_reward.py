"""Reward training: bad videos are skipped by row, the step learns, and the Ray Train + DeepSpeed job
checkpoints and resumes (the one slow test)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.reward.data import build_batch
from rlhf.reward.model import TrainableParts, apply_trainable_parts, build_model
from rlhf.reward.processor import RewardProcessor
from rlhf.reward.tokens import world_tokenizer
from rlhf.reward.train import caption_targets, pair_loss, score_pairs
from rlhf.synthetic.dataset import build_dataset
from rlhf.synthetic.render import render
from rlhf.video import write_video

ROOT = Path(__file__).resolve().parents[1]
P = "a green square moving right quickly on a gray background"


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


def rec(i, a, b, vq="A"):
    return {
        "id": f"p{i}",
        "prompt": P,
        "video_a": a,
        "video_b": b,
        "VQ": vq,
        "MQ": None,
        "TA": None,
        "Overall": vq,
        "score_a": None,
        "score_b": None,
        "split": "train",
    }


def test_bad_videos_are_reported_by_row_and_skipped(tok, tmp_path):
    write_video(tmp_path / "good.mp4", render(P, seed=0))
    write_video(tmp_path / "noisy.mp4", render(P, {"noise": 1.0}, seed=0))
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 50)
    records = [
        rec(1, "good.mp4", "noisy.mp4"),
        rec(2, "good.mp4", "corrupt.mp4"),
        rec(3, "missing.mp4", "good.mp4"),
        rec(4, "noisy.mp4", "good.mp4", "B"),
    ]
    batch = build_batch(records, tmp_path, RewardProcessor(tok), rows=[11, 12, 13, 14])
    assert [r["id"] for r in batch.records] == ["p1", "p4"]
    assert [(s.row, s.id) for s in batch.skipped] == [(12, "p2"), (13, "p3")]
    assert "corrupt.mp4" in batch.skipped[0].reason and "does not exist" in batch.skipped[1].reason
    assert batch.labels.tolist() == [[1, 9, 9], [-1, 9, 9]]
    assert batch.inputs["video_grid_thw"].shape[0] == 4  # A sides then B sides


def test_training_steps_learn_visual_quality(tok, tmp_path):
    # 12 pairs: a clean clip against a noisy or blurred one, A or B at random; the model must rank them.
    torch.manual_seed(0)
    records = []
    for i in range(12):
        clean, bad = f"c{i}.mp4", f"d{i}.mp4"
        write_video(tmp_path / clean, render(P, seed=i))
        write_video(tmp_path / bad, render(P, {"noise" if i % 2 else "blur": 1.0}, seed=i))
        records.append(rec(i, clean, bad, "A") if i % 3 else rec(i, bad, clean, "B"))
    model = apply_trainable_parts(build_model(tok, seed=0), TrainableParts(lora_rank=8))
    proc = RewardProcessor(tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    batch = build_batch(records, tmp_path, proc)
    first = None
    for _ in range(40):
        loss, _ = pair_loss(model, batch, "btt", 5.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    kept, ra, rb, _ = score_pairs(model, records, tmp_path, proc)
    sign = torch.tensor([1.0 if r["VQ"] == "A" else -1.0 for r in kept])
    assert ((ra[:, 0] - rb[:, 0]) * sign > 0).float().mean() == 1.0


def run_job(*args, timeout=600):
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_DEDUP_LOGS="0")
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs/train_reward.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_two_worker_ray_train_deepspeed_run_checkpoints_and_resumes(tmp_path):
    build_dataset(
        tmp_path / "ds",
        pairs=40,
        seed=5,
        workers=1,
        progress=False,
        sampling=__import__("rlhf.synthetic.dataset", fromlist=["PairSampling"]).PairSampling(heldout_fraction=0.25),
    )
    # the resumed run has another run directory (another node's disk) and finds the first run's checkpoint
    # in the storage its workers wrote; its workers read it there
    storage = tmp_path / "shared"
    common = [
        "--data",
        str(tmp_path / "ds"),
        "--workers",
        "2",
        "batch_size=4",
        "checkpoint_every=2",
        "zero_stage=2",
        f"storage={storage}",
    ]
    first = run_job(*common, "--out", str(tmp_path / "run_a"), "max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((storage / "train_state.json").read_text())["step"] == 2
    out = tmp_path / "run_b"
    resumed = run_job(*common, "--out", str(out), "max_steps=4", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 2" in resumed.stdout + resumed.stderr
    state = json.loads((storage / "train_state.json").read_text())
    assert state["step"] == 4
    assert (storage / "checkpoint-4" / "adapter_model.safetensors").exists()
    assert (storage / "deepspeed" / "step4").is_dir() and not (out / "deepspeed").exists()
    table = json.loads((out / "eval.json").read_text())["table"]  # the evaluation comes back to the run dir
    assert set(table) == {"VQ", "MQ", "TA", "Overall"} and table["VQ"]["pairs"] > 0
    from rlhf.reward.checkpoint import load_checkpoint

    _, _, info, step = load_checkpoint(storage)
    assert step == 4 and info.norm["VQ_std"] > 0


def test_caption_targets_pick_faithful_videos():
    from rlhf.reward.data import _batch

    recs = [  # TA scores decide where present; without scores the TA winner (both on a tie)
        {
            "prompt": "p",
            "VQ": "A",
            "MQ": "A",
            "TA": "B",
            "Overall": "A",
            "score_a": {"VQ": 1.0, "MQ": 1.0, "TA": 0.95, "Overall": 1.0},
            "score_b": {"VQ": 1.0, "MQ": 1.0, "TA": 0.5, "Overall": 1.0},
        },
        {"prompt": "p", "VQ": "A", "MQ": "A", "TA": "B", "Overall": "A", "score_a": None, "score_b": None},
        {"prompt": "p", "VQ": "A", "MQ": "A", "TA": "same", "Overall": "A", "score_a": None, "score_b": None},
    ]
    batch = _batch(recs, {})
    assert caption_targets(batch, 0.9).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]


def test_lr_multiplier_warmup_and_cosine_by_hand():
    from rlhf.reward.train import RewardTrainConfig, lr_multiplier

    cfg = RewardTrainConfig(lr_schedule="cosine", warmup_steps=10, max_steps=110, lr_floor=0.1)
    assert lr_multiplier(cfg, 0) == pytest.approx(0.1)  # 1/10 of the way through warm-up
    assert lr_multiplier(cfg, 9) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 60) == pytest.approx(0.55)  # half-way: 0.1 + 0.9 * 0.5
    assert lr_multiplier(cfg, 110) == pytest.approx(0.1) and lr_multiplier(cfg, 500) == pytest.approx(0.1)
    flat = RewardTrainConfig(warmup_steps=4)
    assert [lr_multiplier(flat, s) for s in (0, 3, 1000)] == pytest.approx([0.25, 1.0, 1.0])
    with pytest.raises(ValueError, match="max_steps"):
        RewardTrainConfig(lr_schedule="cosine").validate()


def test_generated_share_of_the_stream_visits_every_pair_once_per_pass_on_any_rank():
    from actors.reward_data import TrainRewardJob, generated_pairs

    cfg = TrainRewardJob(batch_size=4, generated_fraction=0.5, generated_data="x", seed=3)
    records = [{"id": str(i)} for i in range(6)]
    # 2 generated pairs per batch, 2 ranks: position p = (step * 2 + rank) * 2 + j, so step 0 (ranks 0, 1) and
    # step 1 rank 0 hold positions 0-5, the first pass over the 6 records; step 1 rank 1 and step 2 the second.
    draw = lambda rank, step: [r["id"] for r in generated_pairs(cfg, rank, 2, step, records)]  # noqa: E731
    first = draw(0, 0) + draw(1, 0) + draw(0, 1)
    second = draw(1, 1) + draw(0, 2) + draw(1, 2)
    assert sorted(first) == sorted(second) == [str(i) for i in range(6)]
    assert first != second  # each pass in its own order
    # a resumed run asks for step 1 directly and gets what the uninterrupted run drew there
    assert generated_pairs(cfg, 1, 2, 1, records) == generated_pairs(cfg, 1, 2, 1, list(records))
    assert draw(0, 1) == first[4:6]


def test_a_fine_tune_records_the_sampling_and_parts_it_inherits(tmp_path):
    # artefacts/reward_default was trained with jobs/configs/train_reward.yaml: fps 8, 12544 pixels a frame, at most
    # 64 frames, full fine-tune (no LoRA) with the vision tower; a fine-tune keeps those whatever its file says.
    from actors.reward_trainer import TrainRewardJob, prepare
    from rlhf.reward.model import TrainableParts
    from rlhf.reward.processor import FrameSampling

    build_dataset(tmp_path / "ds", pairs=4, seed=1, workers=1, progress=False)
    cfg = TrainRewardJob(
        data="synthetic",
        eval_data=str(tmp_path / "ds"),
        out=str(tmp_path / "run"),
        max_steps=1,
        init_from=str(ROOT / "artefacts/reward_default"),
        sampling=FrameSampling(fps=2.0, max_pixels=50176),
        parts=TrainableParts(lora_rank=8),
    )
    cfg, cfg_file = prepare(cfg)
    saved = __import__("yaml").safe_load(cfg_file.read_text())
    assert (saved["sampling"]["fps"], saved["sampling"]["max_pixels"], saved["sampling"]["max_frames"]) == (
        8.0,
        12544,
        64,
    )
    assert (saved["parts"]["lora_rank"], saved["parts"]["vision"]) == (0, True)
