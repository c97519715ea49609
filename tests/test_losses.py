"""Reward losses against values computed by hand from their definitions."""

import math

import pytest
import torch

from rlhf.reward.losses import bt_loss, btt_loss, btt_probabilities, regression_loss


def sig(x):
    return 1 / (1 + math.exp(-x))


def t(*v, dtype=torch.float64):
    return torch.tensor(v, dtype=dtype)


def test_bt_by_hand_with_ties_and_masked():
    r_a, r_b = t(2.0, 0.0, 1.0, 3.0), t(1.0, 1.0, 1.0, 0.0)
    labels = t(1, -1, 0, 7)  # A, B, tie (contributes 0), not annotated
    per = bt_loss(r_a, r_b, labels, reduction="none")
    assert per.tolist() == pytest.approx([-math.log(sig(1.0)), -math.log(sig(1.0)), 0.0, 0.0])
    assert bt_loss(r_a, r_b, labels).item() == pytest.approx(-math.log(sig(1.0)))  # mean over the 2 decided


def test_btt_by_hand():
    k = 5.0
    r_a, r_b = t(1.0, 0.0, 0.5, 2.0), t(0.0, 1.0, 0.5, 0.0)
    labels = t(1, -1, 0, -5)
    per = btt_loss(r_a, r_b, labels, k=k, reduction="none")
    p_a = sig(1.0 - math.log(k))
    p_b = sig(1.0 - math.log(k))  # D = -1
    p_t = 1 - 2 * sig(-math.log(k))  # D = 0: (k - 1) / (k + 1) = 2/3
    assert p_t == pytest.approx(2 / 3)
    assert per.tolist() == pytest.approx([-math.log(p_a), -math.log(p_b), -math.log(p_t), 0.0])
    assert btt_loss(r_a, r_b, labels, k=k).item() == pytest.approx((-math.log(p_a) - math.log(p_b) - math.log(p_t)) / 3)


def test_btt_probabilities_sum_to_one_for_every_margin():
    d = torch.linspace(-80, 80, 321, dtype=torch.float64)
    for k in (1.5, 5.0, 50.0):
        p_a, p_b, p_t = btt_probabilities(d, k)
        assert torch.allclose(p_a + p_b + p_t, torch.ones_like(d), atol=1e-12)
        assert (p_t >= 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_margins_are_finite_with_finite_gradients(dtype):
    r_a = torch.tensor([500.0, -500.0, 500.0, -500.0, 1e4], dtype=dtype, requires_grad=True)
    r_b = torch.zeros(5, dtype=dtype)
    labels = torch.tensor([1, 1, 0, -1, 0], dtype=dtype)
    for loss_fn in (bt_loss, btt_loss):
        loss = loss_fn(r_a, r_b, labels)
        (g,) = torch.autograd.grad(loss, r_a)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    per = btt_loss(r_a, r_b, labels, reduction="none").detach()
    # A right by 500: ~0; A wrong by 500: ~500 + ln 5; tie at |D| = 500: ~500 - ln(k^2 - 1) + 2 ln k ... ~ 500
    assert per[0].item() == pytest.approx(0.0, abs=1e-6)
    assert per[1].item() == pytest.approx(500 + math.log(5), rel=1e-4)
    assert per[2].item() == pytest.approx(500 - math.log(24) + math.log(5), rel=1e-4)


def test_gradient_direction():
    r_a = torch.tensor([0.3, 0.3, 3.0, -3.0], dtype=torch.float64, requires_grad=True)
    r_b = torch.zeros(4, dtype=torch.float64)
    labels = torch.tensor([1, -1, 0, 0], dtype=torch.float64)
    (g,) = torch.autograd.grad(btt_loss(r_a, r_b, labels, reduction="none").sum(), r_a)
    assert g[0] < 0  # A preferred: descending raises r_a
    assert g[1] > 0  # B preferred: descending lowers r_a
    assert g[2] > 0 and g[3] < 0  # tie: descending pulls the margin toward 0
    (g,) = torch.autograd.grad(bt_loss(r_a, r_b, labels, reduction="none").sum(), r_a)
    assert g[0] < 0 and g[1] > 0 and g[2] == 0 and g[3] == 0


def test_two_dimensional_and_all_masked():
    r_a = torch.zeros(2, 3)
    r_b = torch.zeros(2, 3)
    labels = torch.tensor([[1, 0, 9], [9, 9, -1]])
    per = btt_loss(r_a, r_b, labels, reduction="none")
    assert per.shape == (2, 3) and per[0, 2] == 0 and per[1, 0] == 0
    assert btt_loss(r_a, r_b, torch.full((2, 3), 9)).item() == 0.0
    assert bt_loss(r_a, r_b, torch.zeros(2, 3)).item() == 0.0  # all ties: nothing for BT to learn


def test_regression_by_hand_with_missing_scores():
    pa, pb = t(1.0, 2.0), t(0.0, 4.0)
    sa, sb = t(0.5, float("nan")), t(1.0, 1.0)
    # errors: (0.5)^2, masked, (1)^2, (3)^2 -> mean over 3 = (0.25 + 1 + 9) / 3
    assert regression_loss(pa, pb, sa, sb).item() == pytest.approx(10.25 / 3)
    assert regression_loss(pa, pb, sa, sb, reduction="none").tolist() == pytest.approx([1.25, 9.0])


def test_shape_and_argument_errors():
    with pytest.raises(ValueError, match="share a shape"):
        bt_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="k must be > 1"):
        btt_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), k=1.0)
    with pytest.raises(ValueError, match="reduction"):
        bt_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), reduction="sum")
