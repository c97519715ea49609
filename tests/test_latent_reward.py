"""The latent reward model of Flow-NRG: a faithful copy of the generator's first blocks, labels, learning,
guidance with a real model, storage, and the generate job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf.dims import DIMS, RewardWeights
from rlhf.generator.guidance import GuidanceConfig, guided_velocity
from rlhf.generator.model import DEFAULT_GENERATOR, load_generator
from rlhf.generator.sampler import SamplerConfig, initial_noise, sample, schedule
from rlhf.reward.latent import (
    LatentPairs,
    LatentReward,
    LatentRewardConfig,
    LatentRewardError,
    LatentTrainConfig,
    evaluate,
    pairs_from_scores,
    prompt_embeddings,
    train_step,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moving left slowly on a gray background"


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return load_generator(DEFAULT_GENERATOR)


def test_backbone_reproduces_the_generators_first_blocks(generator):
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=2))
    assert len(model.backbone.transformer.blocks) == 2
    x = torch.randn(3, *generator.latent_shape)
    t = torch.tensor([0.9, 0.5, 0.1])
    text = generator.encode_prompts([PROMPT] * 3)
    seen = {}
    hooks = [
        generator.transformer.blocks[1].register_forward_hook(lambda m, i, o: seen.__setitem__("gen", o)),
        model.backbone.transformer.blocks[1].register_forward_hook(lambda m, i, o: seen.__setitem__("rm", o)),
    ]
    with torch.no_grad():
        generator.velocity(x, t, text)
        r = model(x, t, text)
    for h in hooks:
        h.remove()
    assert r.shape == (3, 3)
    torch.testing.assert_close(seen["rm"], seen["gen"], rtol=0, atol=0)
    # the generator is untouched: frozen parts are frozen, the copy's blocks are separate tensors
    assert not any(p.requires_grad for p in model.backbone.text.parameters())
    assert (
        model.backbone.transformer.blocks[0].attn1.to_q.weight.data_ptr()
        != generator.transformer.blocks[0].attn1.to_q.weight.data_ptr()
    )


def test_pair_labels_follow_scores_with_a_tie_margin():
    lat = torch.zeros(5, 1, 1, 1, 1)
    prompts = ["p", "p", "p", "q", "q"]
    scores = np.array([[0.50, 0.9, 0.3], [0.505, 0.7, 0.3], [0.2, 0.95, 0.1], [0.4, 0.4, 0.4], [0.6, 0.4, 0.2]])
    pairs = pairs_from_scores(lat, prompts, scores, tie_margin=0.01)
    got = {(int(a), int(b)): pairs.labels[k].tolist() for k, (a, b) in enumerate(zip(pairs.a, pairs.b))}
    # by hand: (0,1) VQ diff -0.005 tie, MQ +0.2 A, TA 0 tie; (0,2) A, B, A; (1,2) A, B, A; (3,4) B, tie, A
    assert got == {(0, 1): [0, 1, 0], (0, 2): [1, -1, 1], (1, 2): [1, -1, 1], (3, 4): [-1, 0, 1]}
    with pytest.raises(LatentRewardError, match="single clip"):
        pairs_from_scores(lat[:2], ["a", "b"], scores[:2])
    with pytest.raises(LatentRewardError, match="one latent"):
        pairs_from_scores(lat, prompts, scores[:3])


def test_btt_training_learns_a_rule_written_in_the_latents():
    """VQ prefers the brighter clean latent, MQ the one that flickers less from frame to frame, TA is
    always a tie; a few "w/ noise" steps must learn VQ and MQ on fresh pairs, at t = 0 and t = 0.5."""
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1, features=16, hidden=32))
    shape = model.backbone.latent_shape
    rng = torch.Generator().manual_seed(0)

    def make(n: int) -> LatentPairs:  # n disjoint pairs (2i, 2i + 1), labels written here by hand
        lat = 0.5 * torch.randn(2 * n, *shape, generator=rng)
        bright = torch.randn(2 * n, generator=rng)
        flicker = torch.rand(2 * n, generator=rng)
        alternate = torch.tensor([(-1.0) ** f for f in range(shape[1])]).view(1, 1, -1, 1, 1)
        lat += bright.view(-1, 1, 1, 1, 1) + 1.5 * flicker.view(-1, 1, 1, 1, 1) * alternate
        a, b = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
        labels = torch.stack(
            [torch.sign(bright[a] - bright[b]), torch.sign(flicker[b] - flicker[a]), torch.zeros(n)], 1
        ).long()
        return LatentPairs(lat, [PROMPT] * (2 * n), a, b, labels)

    train, held = make(128), make(64)
    cfg = LatentTrainConfig(noise=True, steps=40, batch=12, lr=2e-3, t_shift=1.0)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr)
    text = prompt_embeddings(model, train.prompts)
    for step in range(cfg.steps):
        train_step(model, opt, train, text, step, cfg)
    acc = evaluate(model, held, times=(0.0, 0.5))
    for t in ("t=0", "t=0.5"):
        assert acc[t]["VQ"]["acc_without_ties"] > 0.85, acc
        assert acc[t]["MQ"]["acc_without_ties"] > 0.75, acc
    assert acc["t=0"]["TA"]["acc_without_ties"] is None  # all ties: undefined, not 0


def test_guided_steps_raise_the_chosen_latent_reward(generator):
    """Along a real sampling trajectory, each guided Euler step ends higher on the chosen dimension of
    the latent reward than the unguided step from the same point (first order: (t - t') w |g|^2 > 0)."""
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1, seed=3))
    cfg = SamplerConfig(steps=4, guidance=1.0)
    sig = schedule(cfg)
    text = generator.encode_prompts([PROMPT] * 2)
    fn = model.reward_fn([PROMPT] * 2)
    params_before = [p.detach().clone() for p in generator.parameters()]
    for d, name in enumerate(("VQ", "MQ", "TA")):
        g = GuidanceConfig(scale=0.05, weights=RewardWeights(*(float(k == name) for k in DIMS)))
        x = initial_noise([0, 1], generator.latent_shape)
        for i in range(3):
            t, t_next = sig[i], sig[i + 1]
            tb = t.expand(2)
            with torch.no_grad():
                v = generator.velocity(x, tb, text)
            x_u = x + (t_next - t) * v
            x_g = x + (t_next - t) * guided_velocity(v, x, tb, fn, g)
            with torch.no_grad():
                r_u, r_g = fn(x_u, t_next.expand(2)), fn(x_g, t_next.expand(2))
            assert (r_g[:, d] > r_u[:, d]).all(), (name, i, r_g, r_u)
            x = x_g
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params_before, generator.parameters()))


def test_save_load_round_trip_and_clear_errors(tmp_path):
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1, features=8, hidden=16))
    model.save(tmp_path / "m")
    back = LatentReward.load(tmp_path / "m")
    x = torch.randn(2, *model.backbone.latent_shape)
    model.eval()
    torch.testing.assert_close(back.score(x, 0.3, [PROMPT] * 2), model.score(x, 0.3, [PROMPT] * 2), rtol=0, atol=0)
    with pytest.raises(LatentRewardError, match="train_latent_reward"):
        LatentReward.load(tmp_path)
    (tmp_path / "m" / "latent_reward.json").write_text("{not json")
    with pytest.raises(LatentRewardError, match="malformed"):
        LatentReward.load(tmp_path / "m")
    with pytest.raises(LatentRewardError, match="has 3 blocks"):
        LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=5))


def test_sample_with_zero_scale_guidance_is_the_unguided_sample(generator):
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1))
    cfg = SamplerConfig(steps=3)
    plain = sample(generator, [PROMPT], [5], cfg, decode=False)
    zero = sample(generator, [PROMPT], [5], cfg, decode=False, guidance=(model, GuidanceConfig(scale=0.0)))
    guided = sample(generator, [PROMPT], [5], cfg, decode=False, guidance=(model, GuidanceConfig(scale=0.5)))
    assert torch.equal(plain.latents, zero.latents)
    assert not torch.equal(plain.latents, guided.latents)
    assert guided.config["reward_guidance"]["scale"] == 0.5


def test_generate_job_writes_guided_mp4s(tmp_path):
    from rlhf.video import read_video

    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1))
    model.save(tmp_path / "lr")
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "generate.py"),
        "--out",
        str(tmp_path / "gen"),
        "--prompt",
        f"{PROMPT}; a blue square moving up quickly on a black background",
        "per_prompt=2",
        "sampler.steps=3",
        "--guidance-model",
        str(tmp_path / "lr"),
        "--guidance-weights",
        "0.1,0.1,0.8",
        "--guidance-scale",
        "0.5",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln) for ln in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert read_video(tmp_path / "gen" / r["file"]).shape == (8, 32, 32, 3)
        assert set(r["oracle"]) == {"VQ", "MQ", "TA"}
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["guidance"]["weights"]["TA"] == 0.8 and summary["clips"] == 4
    bad = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "generate.py"), "--out", str(tmp_path / "bad"), "--guidance-scale", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--guidance-model" in bad.stderr


def test_nrg_table_rows_share_seeds_and_win_rates_match_the_scores(tmp_path):
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1))
    model.save(tmp_path / "lr")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\na blue square moving up quickly on a black background\n")
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "nrg_table.py"),
        "--out",
        str(tmp_path / "nrg"),
        "--noise-model",
        str(tmp_path / "lr"),
        "--clean-model",
        str(tmp_path / "lr"),
        f"prompts={prompts}",
        "per_prompt=2",
        "rows=0:0:1",
        "scale=2.0",
        "sampler.steps=2",
        "control=true",
        "cost_reps=1",
        "cost_clips=2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((tmp_path / "nrg" / "table.json").read_text())
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "nrg" / "rows" / "table").glob("*.json")}
    assert set(rows) == {"unguided", "noise_0-0-1", "noise_0-1-0", "clean_0-1-0", "untrained_0-1-0"}
    assert table["cost"]["guided_over_unguided"] > 0 and len(table["cost"]["seconds_per_clip"]["guided"]) == 1
    assert all(r["seeds"] == [0, 1, 2, 3] for r in rows.values())
    base = np.array(rows["unguided"]["oracle"])
    for name, key in (("noise_0-0-1", table["table6"]["0:0:1"]), ("clean_0-1-0", table["table7"]["0:1:0 w/o noise"])):
        d = np.array(rows[name]["oracle"]) - base
        by_hand = [100 * np.mean(np.where(np.abs(d[:, i]) <= 0.01, 0.5, d[:, i] > 0)) for i in range(3)]
        assert [key["win"][k] for k in ("VQ", "MQ", "TA")] == pytest.approx(by_hand, abs=0.051)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites rows silently
