"""The shipped default reward model (artefacts/reward_default): intact, loadable, and it ranks videos
the way the moving-shapes renderer defines them (independently of the model's own outputs)."""

import numpy as np

from rlhf.reward.checkpoint import DEFAULT_REWARD, verify_manifest
from rlhf.reward.inference import VideoReward
from rlhf.synthetic.prompts import split_prompts
from rlhf.synthetic.render import render
from rlhf.video import encode_video, read_video


def _clip(prompt, defects, seed):
    return read_video(encode_video(render(prompt, defects, seed=seed), fps=8.0, crf=12))


def test_manifest_matches_the_files_and_records_how_to_reproduce():
    manifest = verify_manifest(DEFAULT_REWARD)
    assert "train_reward.py" in manifest["command"] and manifest["train_config"]["data"] == "synthetic"
    assert sum(f["bytes"] for f in manifest["files"].values()) < 10_000_000  # a few MB


def test_default_model_prefers_clean_videos_on_unseen_prompts():
    rm = VideoReward.default()
    prompts = split_prompts("heldout")[::6][:10]
    clean = [_clip(p, None, 500 + i) for i, p in enumerate(prompts)]
    noisy = [_clip(p, {"noise": 1.0}, 500 + i) for i, p in enumerate(prompts)]  # harms VQ only
    stutter = [_clip(p, {"stutter": 1.0, "flicker": 1.0}, 500 + i) for i, p in enumerate(prompts)]  # harms MQ
    texts = [p.text for p in prompts]
    r_clean = rm.reward(clean, texts)
    r_noisy = rm.reward(noisy, texts)
    r_stutter = rm.reward(stutter, texts)
    assert np.mean([c["VQ"] > n["VQ"] for c, n in zip(r_clean, r_noisy)]) >= 0.9
    assert np.mean([c["MQ"] > s["MQ"] for c, s in zip(r_clean, r_stutter)]) >= 0.8
    assert all(set(r) == {"VQ", "MQ", "TA", "Overall"} for r in r_clean)
