"""Flow-DPO, Flow-RWR, SFT and pair building against values computed by hand from their definitions."""

import math

import pytest
import torch

from rlhf.align import flow_dpo_loss, flow_rwr_loss, sft_loss
from rlhf.align.pairs import PairConfig, best_of_groups, build_pairs
from rlhf.dims import RewardWeights


def _const(values):
    """(B, 2) predictions whose per-sample error against zero targets is the given value: two entries of
    magnitude sqrt(value) give mean((pred - 0)^2) = value."""
    return torch.tensor([[math.sqrt(v), math.sqrt(v)] for v in values])


def _nll_sigmoid(x):
    return math.log(1 + math.exp(-x))


def test_flow_dpo_constant_beta_by_hand():
    zeros = torch.zeros(2, 2)
    # errors: policy winner 0.2 / 0.5, policy loser 0.6 / 0.4, reference winner 0.3 / 0.5, loser 0.3 / 0.2
    out = flow_dpo_loss(
        _const([0.2, 0.5]),
        _const([0.6, 0.4]),
        _const([0.3, 0.5]),
        _const([0.3, 0.2]),
        zeros,
        zeros,
        torch.tensor([0.3, 0.9]),
        beta=10.0,
    )
    # inside = -(10 / 2) ((e_w - r_w) - (e_l - r_l))
    inside = [-5 * ((0.2 - 0.3) - (0.6 - 0.3)), -5 * ((0.5 - 0.5) - (0.4 - 0.2))]  # [2.0, 1.0]
    assert inside == pytest.approx([2.0, 1.0])
    expected = (_nll_sigmoid(2.0) + _nll_sigmoid(1.0)) / 2
    assert list(out)[0] == "loss"
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["implicit_accuracy"].item() == 1.0


def test_flow_dpo_timestep_beta_by_hand():
    zeros = torch.zeros(2, 2)
    out = flow_dpo_loss(
        _const([0.2, 0.5]),
        _const([0.6, 0.4]),
        _const([0.3, 0.5]),
        _const([0.3, 0.2]),
        zeros,
        zeros,
        torch.tensor([0.3, 0.9]),
        beta=10.0,
        beta_schedule="timestep",
    )
    b = [10 * 0.7**2, 10 * 0.1**2]  # beta (1 - t)^2 = 4.9, 0.1
    inside = [-(b[0] / 2) * (-0.4), -(b[1] / 2) * (-0.2)]  # 0.98, 0.01
    expected = (_nll_sigmoid(inside[0]) + _nll_sigmoid(inside[1])) / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_flow_dpo_prefers_loser_gives_low_implicit_accuracy_and_high_loss():
    zeros = torch.zeros(1, 2)
    out = flow_dpo_loss(
        _const([0.5]), _const([0.1]), _const([0.3]), _const([0.3]), zeros, zeros, torch.tensor([0.5]), beta=4.0
    )
    inside = -2 * ((0.5 - 0.3) - (0.1 - 0.3))  # -0.8
    assert out["loss"].item() == pytest.approx(_nll_sigmoid(inside), rel=1e-5)
    assert out["implicit_accuracy"].item() == 0.0


def test_flow_dpo_gradient_only_through_policy():
    pw = _const([0.2]).requires_grad_()
    rw = _const([0.2]).requires_grad_()
    zeros = torch.zeros(1, 2)
    flow_dpo_loss(pw, _const([0.2]), rw, _const([0.2]), zeros, zeros, torch.tensor([0.5]), 1.0)["loss"].backward()
    assert pw.grad is not None and rw.grad is None
    # lowering the winner's error raises inside: the gradient points toward a larger error, i.e. descent lowers it
    assert (pw.grad * pw).sum() > 0


def test_unknown_beta_schedule_is_refused():
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="beta_schedule"):
        flow_dpo_loss(z, z, z, z, z, z, torch.tensor([0.5]), 1.0, beta_schedule="cosine")


def test_flow_rwr_unnormalised_by_hand():
    out = flow_rwr_loss(_const([0.2, 0.4]), torch.zeros(2, 2), torch.tensor([1.0, 0.0]), beta=0.5)
    expected = (math.exp(2.0) * 0.2 + math.exp(0.0) * 0.4) / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_flow_rwr_normalised_by_hand():
    out = flow_rwr_loss(
        _const([0.2, 0.4, 0.1]), torch.zeros(3, 2), torch.tensor([1.0, 0.0, 0.5]), beta=0.5, normalize=True
    )
    w = [math.exp(2.0), math.exp(0.0), math.exp(1.0)]
    expected = (w[0] * 0.2 + w[1] * 0.4 + w[2] * 0.1) / sum(w)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["weights"].sum().item() == pytest.approx(1.0)


def test_sft_is_the_mean_error():
    assert sft_loss(_const([0.2, 0.4]), torch.zeros(2, 2))["loss"].item() == pytest.approx(0.3, rel=1e-5)


def test_pairs_best_worst_and_margin_by_hand():
    prompts = ["a", "a", "a", "b", "b", "c"]
    rewards = [0.5, 0.9, 0.1, 0.4, 0.4, 0.7]
    # "b" is a tie, "c" has one sample: only group "a" gives a pair
    assert build_pairs(prompts, rewards, PairConfig()) == [(1, 2)]
    got = sorted(build_pairs(prompts, rewards, PairConfig(mode="margin", margin=0.3)))
    assert got == sorted([(1, 2), (0, 2), (1, 0)])
    assert best_of_groups(prompts, rewards) == [1, 3, 5]


def test_reward_weights_combine():
    w = RewardWeights(VQ=0.0, MQ=0.0, TA=1.0)
    assert w.combine({"VQ": 0.9, "MQ": 0.8, "TA": 0.3}) == pytest.approx(0.3)
    assert RewardWeights().combine({"VQ": 0.1, "MQ": 0.2, "TA": 0.3}) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        RewardWeights(0, 0, 0).validate()
