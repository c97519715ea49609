"""Preference rows of the online loop (the per-block function Ray Data runs), checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from actors.preferences import block_rows, shuffled
from rlhf.align.pairs import PairConfig
from rlhf.dims import RewardWeights


def block(prompts, vq, mq, ta, seeds=None):
    n = len(prompts)
    return {
        "prompt": np.array(prompts, dtype=object),
        "seed": np.array(seeds or list(range(n)), np.int64),
        "policy_version": np.full(n, 3, np.int64),
        "r_VQ": np.array(vq, float),
        "r_MQ": np.array(mq, float),
        "r_TA": np.array(ta, float),
        "latent": np.arange(n, dtype=np.float32).reshape(n, 1, 1) * np.ones((1, 2, 2)),
    }


def test_best_vs_worst_pairs_under_weights_by_hand():
    b = block(
        ["a", "a", "a", "b", "b", "b"],
        vq=[0.1, 0.9, 0.5, 0.2, 0.2, 0.2],
        mq=[0.0, 0.0, 0.0, 0.3, 0.1, 0.2],
        ta=[1.0, 0.0, 0.4, 0.0, 0.0, 0.0],
    )
    # 1:1:1 -> a: [1.1, 0.9, 0.9] best 0, worst 1 (first of the ties); b: [0.5, 0.3, 0.4] best 3, worst 4
    out = block_rows(b, PairConfig(), "dpo", seed=0, iteration=0)
    assert list(out["seed_w"]) == [0, 3] and list(out["seed_l"]) == [1, 4]
    np.testing.assert_allclose(out["reward_w"], [1.1, 0.5])
    np.testing.assert_allclose(out["reward_l"], [0.9, 0.3])
    np.testing.assert_allclose(out["latent_w"][:, 0, 0], [0, 3])  # the winner's latent travels with it
    np.testing.assert_allclose(out["group_mean"], [(1.1 + 0.9 + 0.9) / 3, 0.4])
    np.testing.assert_allclose(out["group_gap"], [0.2, 0.2])
    assert list(out["version_w"]) == [3, 3]
    # VQ only: a: [0.1, 0.9, 0.5] -> (1, 0); b: all 0.2 -> a tie, no pair
    vq_only = block_rows(b, PairConfig(weights=RewardWeights(1, 0, 0)), "dpo", seed=0, iteration=0)
    assert list(vq_only["seed_w"]) == [1] and list(vq_only["seed_l"]) == [0]


def test_margin_pairs_and_rwr_advantages_by_hand():
    b = block(["a"] * 3, vq=[0.0, 0.5, 1.0], mq=[0, 0, 0], ta=[0, 0, 0])
    out = block_rows(b, PairConfig(mode="margin", margin=0.4, weights=RewardWeights(1, 0, 0)), "dpo", 0, 0)
    assert sorted(zip(out["seed_w"], out["seed_l"])) == [(1, 0), (2, 0), (2, 1)]
    rwr = block_rows(b, PairConfig(weights=RewardWeights(1, 0, 0)), "rwr", 0, 0)
    std = np.std([0.0, 0.5, 1.0])
    np.testing.assert_allclose(rwr["advantage"], [-0.5 / std, 0.0, 0.5 / std])


def test_order_does_not_depend_on_block_layout():
    prompts = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    rng = np.random.default_rng(1)
    vq, mq, ta = rng.random(12), rng.random(12), rng.random(12)
    whole = block(prompts, vq, mq, ta, seeds=list(range(100, 112)))
    parts = [
        block(prompts[i : i + 4], vq[i : i + 4], mq[i : i + 4], ta[i : i + 4], seeds=list(range(100 + i, 104 + i)))
        for i in (8, 0, 4)
    ]  # other blocks, other order
    one = shuffled(block_rows(whole, PairConfig(), "dpo", seed=7, iteration=2))
    cat = [block_rows(p, PairConfig(), "dpo", seed=7, iteration=2) for p in parts]
    many = shuffled({k: np.concatenate([c[k] for c in cat]) for k in cat[0]})
    assert list(one["seed_w"]) == list(many["seed_w"]) and list(one["seed_l"]) == list(many["seed_l"])
    other = shuffled(block_rows(whole, PairConfig(), "dpo", seed=7, iteration=3))
    assert sorted(other["seed_w"]) == sorted(one["seed_w"])  # same pairs ...
    assert len(one["seed_w"]) < 3 or list(other["order"]) != list(one["order"])  # ... another iteration's order


@pytest.mark.parametrize("algo", ["dpo", "rwr"])
def test_a_block_of_ties_gives_no_dpo_pair(algo):
    b = block(["a", "a"], vq=[0.5, 0.5], mq=[0.1, 0.1], ta=[0.2, 0.2])
    out = block_rows(b, PairConfig(), algo, 0, 0)
    assert len(out["prompt"]) == (0 if algo == "dpo" else 2)


def test_each_rank_gets_every_world_th_row_of_the_seeded_order_by_hand():
    from actors.preferences import _rows_with_keys, shard_keys

    order = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    # sorted 0.1 0.3 0.5 0.7 0.9 -> rank 0 at positions 0, 2, 4; rank 1 at 1, 3
    r0, r1 = shard_keys(order, 2)
    assert list(r0) == [0.1, 0.5, 0.9] and list(r1) == [0.3, 0.7]
    assert [list(k) for k in shard_keys(order, 3)] == [[0.1, 0.7], [0.3, 0.9], [0.5]]
    assert [len(k) for k in shard_keys(order[:1], 2)] == [1, 0]  # fewer rows than ranks: an empty shard
    # a block filtered for rank 1 keeps exactly its rows, every column with them
    blk = {"order": order, "seed_w": np.arange(5), "latent_w": np.arange(5.0).reshape(5, 1) * np.ones((1, 3))}
    mine = _rows_with_keys(blk, r1)
    assert list(mine["seed_w"]) == [3, 4] and mine["latent_w"].shape == (2, 3)
    assert list(shuffled(mine)["order"]) == [0.3, 0.7]
    with pytest.raises(ValueError, match="share an order key"):
        shard_keys(np.array([0.2, 0.2, 0.4]), 2)
