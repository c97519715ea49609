"""Simulated human labels from oracle scores, and the accuracy ceiling they imply.

Per dimension, a rater compares two videos whose oracle scores differ by ``d = s_a - s_b`` and says
A, B or "same" with the Rao-Kupper (Bradley-Terry-with-ties) probabilities

    D = d / temperature,   P(A) = sigmoid(D - ln k),   P(B) = sigmoid(-D - ln k),   P(same) = 1 - P(A) - P(B)

with tie parameter k > 1 (larger k: more ties) and temperature (larger: noisier raters).

The **ceiling** is what an ideal model that knows the oracle scores can expect to reach against
such labels. With ties, the best prediction for each pair is the most probable label, so the
expected tie-calibrated accuracy is mean(max(P(A), P(B), P(same))) (a threshold rule on |D|,
which is exactly the family the metric searches). Without ties, the ideal model answers sign(d),
and its expected accuracy over the non-tied pairs is sum P(label = sign d) / sum P(not tie).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf.dims import LABEL_DIMS


@dataclass(frozen=True)
class AnnotatorConfig:
    """Simulated raters. Defaults give a 20-35% tie rate on make_dataset's pairs (world_report prints it)."""

    tie_k: float = 4.5  # Rao-Kupper tie parameter k > 1
    temperature: float = 0.03  # score difference that moves the log-odds by 1

    def validate(self) -> None:
        if not self.tie_k > 1.0:
            raise ValueError(f"tie_k must be > 1 (Rao-Kupper), got {self.tie_k}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def label_probabilities(diff, cfg: AnnotatorConfig = AnnotatorConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(A), P(B), P(same)) for score differences ``diff = s_a - s_b``; they sum to 1."""
    d = np.asarray(diff, dtype=np.float64) / cfg.temperature
    ln_k = np.log(cfg.tie_k)
    p_a = 1.0 / (1.0 + np.exp(-(d - ln_k)))
    p_b = 1.0 / (1.0 + np.exp(d + ln_k))
    return p_a, p_b, 1.0 - p_a - p_b


def sample_label(diff: float, rng: np.random.Generator, cfg: AnnotatorConfig = AnnotatorConfig()) -> str:
    p_a, p_b, _ = label_probabilities(diff, cfg)
    u = rng.random()
    return "A" if u < p_a else ("B" if u < p_a + p_b else "same")


def annotate(
    scores_a: dict, scores_b: dict, rng: np.random.Generator, cfg: AnnotatorConfig = AnnotatorConfig()
) -> dict:
    """One simulated rater's labels on every dimension of :data:`LABEL_DIMS`."""
    return {dim: sample_label(scores_a[dim] - scores_b[dim], rng, cfg) for dim in LABEL_DIMS}


def expected_ceiling(diffs, cfg: AnnotatorConfig = AnnotatorConfig()) -> dict[str, float]:
    """Expected accuracy of the oracle-informed ideal model and the expected tie rate, for pairs with
    score differences ``diffs`` (one dimension)."""
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("no pairs")
    p_a, p_b, p_t = label_probabilities(d, cfg)
    right = np.where(d > 0, p_a, np.where(d < 0, p_b, 0.0))
    return {
        "with_ties": float(np.mean(np.maximum(np.maximum(p_a, p_b), p_t))),
        "without_ties": float(right.sum() / (p_a + p_b).sum()),
        "tie_rate": float(p_t.mean()),
    }
