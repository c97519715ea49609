"""Win rates, the reward-hacking flag, the oracle against degenerate videos, and the alignment jobs' errors."""

import json

import numpy as np
import pytest

from rlhf.align.offline import PromptFileError, read_prompts
from rlhf.dims import RewardWeights
from rlhf.eval.winrate import reward_hacking, steering, win_rate, win_rates
from rlhf.synthetic import render as render_mod
from rlhf.synthetic.oracle import score

PROMPT = "a red circle moving left slowly on a black background"


def test_win_rate_counts_ties_half():
    # +0.0 (tie), +0.2 (win), -0.2 (loss), +0.005 (tie under a 0.01 margin)
    assert win_rate([0.5, 0.6, 0.7, 0.505], [0.5, 0.4, 0.9, 0.5], tie=0.01) == pytest.approx((0.5 + 1 + 0 + 0.5) / 4)


def test_win_rates_weighted_objective_by_hand():
    policy = np.array([[0.9, 0.9, 0.1], [0.2, 0.2, 0.8]])
    base = np.array([[0.5, 0.5, 0.3], [0.5, 0.5, 0.5]])
    ta_only = win_rates(policy, base, RewardWeights(0, 0, 1), tie=0.01)
    assert ta_only["TA"] == 0.5 and ta_only["weighted"] == 0.5 and ta_only["VQ"] == 0.5
    equal = win_rates(policy, base, RewardWeights(), tie=0.01)
    # weighted sums: 1.9 vs 1.3 (win), 1.2 vs 1.5 (loss)
    assert equal["weighted"] == 0.5
    assert win_rates(policy[:1], base[:1], RewardWeights(), 0.01)["weighted"] == 1.0


def test_reward_hacking_flag():
    learned_wins = {"VQ": 0.7, "MQ": 0.7, "TA": 0.7, "weighted": 0.8}
    # n = 100 pairs: two standard errors of a win rate = 2 sqrt(0.25 / 100) = 0.1
    assert reward_hacking(learned_wins, {"VQ": 0.35, "MQ": 0.6, "TA": 0.6}, 100) == ["VQ"]
    assert reward_hacking(learned_wins, {"VQ": 0.45, "MQ": 0.6, "TA": 0.6}, 100) == []
    assert reward_hacking({**learned_wins, "weighted": 0.5}, {"VQ": 0.1, "MQ": 0.1, "TA": 0.1}, 100) == []


def test_oracle_penalises_drawing_less_of_the_object(monkeypatch):
    full = score(render_mod.render(PROMPT, seed=3), PROMPT)
    # radius 0.12 instead of 0.17: area (0.12 / 0.17)^2 = 0.498 of the world's object, so by the oracle's
    # definition VQ and the object part of TA scale by wholeness = (0.498 / 0.8)^2 = 0.388
    monkeypatch.setattr(render_mod, "OBJECT_RADIUS", 0.12)
    small = score(render_mod.render(PROMPT, seed=3), PROMPT)
    assert small["VQ"] / full["VQ"] == pytest.approx(0.388, abs=0.05)
    assert small["TA"] < full["TA"] - 0.3
    # background only: no object, no visual quality
    empty = np.full((8, 32, 32, 3), 20, np.uint8)
    assert score(empty, PROMPT)["VQ"] == 0.0


def test_empty_prompt_file_and_unknown_split_are_refused(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# only a comment\n\n")
    with pytest.raises(PromptFileError, match="holds no prompt"):
        read_prompts(str(f))
    with pytest.raises(PromptFileError, match="neither a split"):
        read_prompts("trian")
    f.write_text("a red circle moving left slowly on a black background\n")
    assert read_prompts(str(f)) == [PROMPT]
    with pytest.raises(PromptFileError, match="optionally :single|pair|mixed"):
        read_prompts("heldout:triples")
    # A split of another grammar: 17,280 pair prompts, one in five held out; singles stay the default.
    held_pairs = read_prompts("heldout:pair")
    assert 0.19 < len(held_pairs) / 17280 < 0.21 and " above " in " ".join(held_pairs)
    assert read_prompts("heldout") == read_prompts("heldout:single") and len(read_prompts("heldout")) == 58


def test_unknown_algorithm_is_refused(capsys, tmp_path):
    from rlhf.align.offline_job import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path), "--algo", "ppo"])
    assert exit_.value.code == 2
    assert "unknown algorithm 'ppo'" in capsys.readouterr().err


def test_align_offline_and_evaluate_end_to_end(tmp_path):
    """A tiny generator aligned for a few steps with the oracle: the adapter loads, changes the policy, and
    the evaluation reports per-dimension win rates in [0, 1] for the same prompts and seeds."""
    from rlhf.align.offline_job import main as align_main
    from rlhf.eval.policy_job import main as eval_main
    from rlhf.generator.model import FlowGenerator
    from tests.test_generator import TINY

    FlowGenerator.from_config(TINY).save(tmp_path / "gen")
    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPT + "\na blue square moving up quickly on a gray background\n")
    common = [f"generator={tmp_path / 'gen'}", "sampler.steps=2", "threads=1"]
    assert (
        align_main(
            [
                "--out",
                str(tmp_path / "run"),
                "--algo",
                "dpo",
                "--reward",
                "oracle",
                "--prompts",
                str(prompts),
                "train.steps=3",
                "train.batch=2",
                "group=3",
                *common,
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["samples"] == 6 and summary["reward"] == "oracle"
    assert (
        eval_main(
            [
                "--adapter",
                str(tmp_path / "run" / "adapter"),
                "--prompts",
                str(prompts),
                "seeds=2",
                "reward=none",
                f"base_cache={tmp_path / 'base.pt'}",
                *common,
            ]
        )
        == 0
    )
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["n"] == 4 and set(ev["oracle"]["win_rate"]) == {"VQ", "MQ", "TA", "weighted"}
    assert all(0.0 <= v <= 1.0 for v in ev["oracle"]["win_rate"].values())


def test_steering_reads_each_dimension_against_its_own_weight():
    rows = [
        (RewardWeights(0, 0, 1), {"VQ": 40.0, "MQ": 50.0, "TA": 70.0}),
        (RewardWeights(0.1, 0.1, 0.8), {"VQ": 45.0, "MQ": 52.0, "TA": 66.0}),
        (RewardWeights(0.1, 0.1, 0.6), {"VQ": 55.0, "MQ": 48.0, "TA": 60.0}),
        (RewardWeights(0.5, 0.5, 0), {"VQ": 60.0, "MQ": 58.0, "TA": 50.0}),
        (RewardWeights(0, 1, 0), {"VQ": 42.0, "MQ": 65.0, "TA": 51.0}),
    ]
    s = steering(rows)
    # VQ weights 0 (rows 1, 5: mean 41), 0.1 (rows 2, 3: mean 50), 0.5 (60): rising
    assert s["VQ"]["curve"] == [(0.0, 41.0), (0.1, 50.0), (0.5, 60.0)] and s["VQ"]["monotone"]
    # MQ 0 (50), 0.1 (50), 0.5 (58), 1 (65): rising (equal counts as not lower)
    assert [w for w, _ in s["MQ"]["curve"]] == [0.0, 0.1, 0.5, 1.0] and s["MQ"]["monotone"]
    # TA 0 (mean of 50, 51 = 50.5), 0.6 (60), 0.8 (66), 1 (70)
    assert s["TA"]["curve"] == [(0.0, 50.5), (0.6, 60.0), (0.8, 66.0), (1.0, 70.0)] and s["TA"]["monotone"]
    rows[1] = (RewardWeights(0.1, 0.1, 0.8), {"VQ": 45.0, "MQ": 52.0, "TA": 75.0})  # 0.8 now above 1
    assert not steering(rows)["TA"]["monotone"]


def test_cached_scores_of_one_reward_model_are_not_read_back_as_another_s(tmp_path):
    # Two shipped VideoRewards are both judge "learned"; a sample set scored by the first and saved must be scored
    # again, not served from the cache, when the second judges it (scores compared with each model's own call).
    import torch

    from rlhf.align.samples import SampleSet
    from rlhf.eval.judges import LearnedJudge, OracleJudge
    from rlhf.synthetic.render import render

    prompts = [
        "a red circle moving left slowly on a black background",
        "a blue square moving up quickly on a gray background",
    ]
    videos = np.stack([render(p, seed=i) for i, p in enumerate(prompts)])
    s = SampleSet(prompts, [0, 1], torch.zeros(2, 1), videos, {"generator": "rendered"})
    first, second = LearnedJudge("artefacts/reward_default"), LearnedJudge("artefacts/reward_mixed")
    assert first.key != second.key and first.key == LearnedJudge("artefacts/reward_default").key
    a = s.score(first).copy()
    s.save(tmp_path / "set.pt")
    loaded = SampleSet.load(tmp_path / "set.pt")
    np.testing.assert_array_equal(loaded.score(first), a)  # same model: the cache serves
    b = loaded.score(second)
    want = np.array([[r[d] for d in ("VQ", "MQ", "TA")] for r in second(videos, prompts)])
    np.testing.assert_allclose(b, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(a, b)
    assert loaded.score(OracleJudge()).shape == (2, 3)
