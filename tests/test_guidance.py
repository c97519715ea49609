"""Flow-NRG guidance in the Euler sampler: exactness at w = 0, direction of the step, no leaking gradients."""

from __future__ import annotations

import pytest
import torch

from rlhf.dims import RewardWeights
from rlhf.generator.guidance import GuidanceConfig, reward_gradient
from rlhf.generator.sampler import SamplerConfig, euler_sample, initial_noise


def toy_velocity(x, t, text):  # a linear flow: pulls x toward text-dependent targets
    return x - text.view(-1, *([1] * (x.ndim - 1)))


def quadratic_reward(target: torch.Tensor):
    """r_d(x) = -|x - target_d|^2 per dimension d (VQ, MQ, TA): maximal at target_d."""

    def fn(x, t):
        return torch.stack([-((x - target[d]) ** 2).flatten(1).sum(1) for d in range(3)], dim=1)

    return fn


def test_zero_scale_reproduces_unguided_sampling_exactly():
    cfg = SamplerConfig(steps=6, guidance=1.0)
    noise = initial_noise([1, 2, 3], (2, 2, 3, 3))
    text = torch.tensor([0.5, -1.0, 2.0])
    plain = euler_sample(toy_velocity, noise, text, None, cfg)
    g = GuidanceConfig(scale=0.0, weights=RewardWeights(1, 1, 1))
    same = euler_sample(toy_velocity, noise, text, None, cfg, (quadratic_reward(torch.tensor([5.0, 6.0, 7.0])), g))
    assert torch.equal(plain, same)


def test_one_guided_step_moves_up_the_chosen_dimension_by_the_derived_amount():
    # One Euler step from t = 1 to 0 (shift 1): x' = x + (0 - 1) v + (1 - 0) w grad r (module docstring).
    cfg = SamplerConfig(steps=1, guidance=1.0, shift=1.0)
    x0 = torch.zeros(1, 1, 1, 2, 2)
    target = torch.tensor([0.0, 0.0, 3.0])  # TA wants every entry at 3
    text = torch.tensor([0.0])
    w = 0.1
    out = euler_sample(
        toy_velocity,
        x0,
        text,
        None,
        cfg,
        (quadratic_reward(target), GuidanceConfig(scale=w, weights=RewardWeights(0, 0, 1))),
    )
    # v = x - 0 = 0 at x = 0; grad of -(x - 3)^2 at 0 is 6 -> x' = 0 + 1 * 0.1 * 6 = 0.6
    torch.testing.assert_close(out, torch.full_like(x0, 0.6))
    r = quadratic_reward(target)
    assert float(r(out, None)[0, 2]) > float(r(x0, None)[0, 2])  # TA reward rose
    vq_only = euler_sample(
        toy_velocity,
        x0,
        text,
        None,
        cfg,
        (quadratic_reward(target), GuidanceConfig(scale=w, weights=RewardWeights(1, 0, 0))),
    )
    torch.testing.assert_close(vq_only, x0)  # VQ's optimum is the start: no push


def test_guidance_applies_only_inside_its_step_range():
    cfg = SamplerConfig(steps=4, guidance=1.0)
    noise = initial_noise([7], (1, 2, 2, 2))
    text = torch.tensor([0.0])
    fn = quadratic_reward(torch.tensor([0.0, 0.0, 4.0]))
    plain = euler_sample(toy_velocity, noise, text, None, cfg)
    late = euler_sample(toy_velocity, noise, text, None, cfg, (fn, GuidanceConfig(scale=0.2, start=0.99, end=1.0)))
    early = euler_sample(toy_velocity, noise, text, None, cfg, (fn, GuidanceConfig(scale=0.2, start=0.0, end=0.5)))
    assert torch.equal(plain, late)  # no step index i with 0.99 <= i / 4
    assert not torch.equal(plain, early)


def test_no_gradient_reaches_model_parameters():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    g = reward_gradient(lambda x, t: lin(x), x, None, GuidanceConfig(scale=1.0, weights=RewardWeights(1, 1, 1)))
    assert lin.weight.grad is None and lin.bias.grad is None and not x.requires_grad
    torch.testing.assert_close(g, lin.weight.sum(0).expand(2, 4))  # d/dx sum_d (W x + b)_d


def test_bad_guidance_configs_are_refused():
    with pytest.raises(ValueError, match="three numbers"):
        RewardWeights.parse("0.1,0.9")
    with pytest.raises(ValueError, match="not all zero"):
        GuidanceConfig(scale=1.0, weights=RewardWeights(0, 0, 0)).validate()
    with pytest.raises(ValueError, match="start"):
        GuidanceConfig(start=0.8, end=0.2).validate()
    assert RewardWeights.parse("0.1,0.1,0.8").TA == 0.8
    assert RewardWeights.parse("0.1:0.1:0.8") == RewardWeights(0.1, 0.1, 0.8)
    assert [w.label for w in RewardWeights.parse_list("1:1:1,0:0:1")] == ["1:1:1", "0:0:1"]
