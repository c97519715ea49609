"""Pairwise accuracy with and without ties, against hand-computed cases and a brute-force search."""

import numpy as np
import pytest

from rlhf.reward.metrics import accuracy_with_ties, accuracy_without_ties


def test_without_ties_by_hand():
    # non-tied pairs: (1, .5) right, (-1, -.2) right, (1, -.3) wrong, (-1, 0) wrong (zero margin)
    assert accuracy_without_ties([1, -1, 0, 1, -1], [0.5, -0.2, 9.0, -0.3, 0.0]) == pytest.approx(0.5)


def test_without_ties_fails_on_all_ties():
    with pytest.raises(ValueError, match="every pair is a tie"):
        accuracy_without_ties([0, 0], [0.1, -0.1])


def test_with_ties_by_hand():
    # e=0 -> 2/5, e=.05 -> 3/5, e=.1 -> 4/5, e=.2 -> 3/5, e=.3 -> 3/5, e=.5 -> 2/5
    assert accuracy_with_ties([1, -1, 0, 0, 1], [0.5, -0.2, 0.05, 0.1, -0.3]) == (pytest.approx(0.8), 0.1)


def test_with_ties_picks_smallest_threshold_on_equal_accuracy():
    # e=0: both right (1.0); any e >= 1 turns them into ties (0.0)
    assert accuracy_with_ties([1, -1], [1.0, -2.0]) == (1.0, 0.0)
    # all human ties: e=0 gives 0, e=max|m| gives 1
    assert accuracy_with_ties([0, 0, 0], [0.3, -0.1, 0.2]) == (1.0, 0.3)


def brute_force(h, m):
    best = (-1.0, None)
    for e in sorted({0.0, *np.abs(m)}):
        pred = np.where(np.abs(m) <= e, 0, np.sign(m))
        acc = float(np.mean(pred == h))
        if acc > best[0]:
            best = (acc, e)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_with_ties_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    h = rng.choice([-1, 0, 1], size=n)
    m = np.round(rng.normal(size=n) + 0.8 * h, 1)  # rounding makes equal |m| and exact zeros
    acc, e = accuracy_with_ties(h, m)
    bacc, be = brute_force(h, m)
    assert acc == pytest.approx(bacc) and e == pytest.approx(be)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_with_ties([1, 0], [0.1])
    with pytest.raises(ValueError, match="1 \\(A\\), -1 \\(B\\) or 0"):
        accuracy_with_ties([2], [0.1])
