"""Pairwise accuracy of a reward model against human labels, with and without ties.

Human labels: 1 = A preferred, -1 = B preferred, 0 = tie. Model margin m = score_a - score_b.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(human, margin) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(human, dtype=np.float64).ravel()
    m = np.asarray(margin, dtype=np.float64).ravel()
    if h.shape != m.shape:
        raise ValueError(f"human labels and margins differ in length: {h.size} vs {m.size}")
    if h.size == 0:
        raise ValueError("no pairs to score")
    if not np.all(np.isin(h, (-1.0, 0.0, 1.0))):
        raise ValueError("human labels must be 1 (A), -1 (B) or 0 (tie); mask unannotated pairs first")
    if not np.all(np.isfinite(m)):
        raise ValueError("margins must be finite")
    return h, m


def accuracy_without_ties(human, margin) -> float:
    """Fraction of non-tied pairs whose margin has the human's sign; a margin of exactly 0 is wrong."""
    h, m = _as_arrays(human, margin)
    keep = h != 0
    if not keep.any():
        raise ValueError("every pair is a tie: accuracy without ties is undefined")
    return float(np.mean(np.sign(m[keep]) == h[keep]))


def accuracy_with_ties(human, margin) -> tuple[float, float]:
    """Tie-calibrated pairwise accuracy (Deutsch et al. 2023, "Ties Matter").

    For a threshold e the model predicts a tie when |m| <= e, else sign(m). Accuracy is the fraction
    of all pairs predicted exactly. e is chosen among 0 and the observed |m| to maximise accuracy,
    the smallest such e on equal accuracy. Returns (accuracy, e). O(n log n).
    """
    h, m = _as_arrays(human, margin)
    a = np.abs(m)
    order = np.argsort(a, kind="stable")
    a, h_s, sign_s = a[order], h[order], np.sign(m[order])
    n = a.size
    # Candidate e = a[j] for the last index j of each run of equal |m|: pairs 0..j predicted tie.
    ties_upto = np.cumsum(h_s == 0)  # ties among the first j+1
    right_sign = (sign_s == h_s) & (h_s != 0)
    right_after = np.concatenate([np.cumsum(right_sign[::-1])[::-1][1:], [0]])  # correct signs after j
    last_of_run = np.r_[a[1:] != a[:-1], True]
    acc_at = (ties_upto + right_after)[last_of_run] / n
    e_at = a[last_of_run]
    # e = 0 with no zero margins: nothing predicted tie.
    if e_at[0] > 0:
        acc_at = np.r_[right_sign.sum() / n, acc_at]
        e_at = np.r_[0.0, e_at]
    best = int(np.argmax(acc_at))  # first maximum = smallest e
    return float(acc_at[best]), float(e_at[best])
