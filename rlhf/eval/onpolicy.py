"""On-policy accuracy of a reward model: does it rank a policy's own samples as the raters would?

A loop needs its reward to be right on the videos it optimises: several samples of one prompt by
the current policy, which differ far less than the rendered pairs with injected defects a reward
model is usually evaluated on. The evaluation:

* **clips**: ``seeds`` samples of the policy for each of ``prompts`` held-out prompts, judged after the
  H.264 round trip datasets store (``judges.as_stored``), so that the oracle and the reward read
  exactly the same pixels;
* **pairs**: every within-prompt pair of clips (``seeds * (seeds - 1) / 2`` per prompt);
* **labels**: the simulated raters (``rlhf.synthetic.annotator``, the labellers of every dataset), one
  draw per pair and dimension from a generator seeded by ``(seed, pair index)``;
* **accuracy** with ties (tie-calibrated, VideoAlign's metric) and without ties (pairs the raters did
  not call a tie) per dimension, the raters' tie share, and the **ceiling**: the same two accuracies of
  the oracle's own scores against the same labels (what a perfect reward could reach on these pairs);
* **oracle order**: the share of pairs whose oracle scores differ by more than ``tie`` (0.01) that the
  reward orders as the oracle does: a noise-free view of the same question.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rlhf.dims import DIMS
from rlhf.reward.metrics import accuracy_with_ties, accuracy_without_ties
from rlhf.synthetic.annotator import AnnotatorConfig, label_probabilities

ORACLE_TIE = 0.01  # |oracle difference| at or under this is a tie in the oracle order (judges.TIE_MARGINS)


@dataclass(frozen=True)
class OnPolicyConfig:
    """Which samples of the policy are compared."""

    prompts: int = 58  # held-out prompts (the first N of the split; 58 = all of the world's)
    seeds: int = 4  # samples per prompt: seeds * (seeds - 1) / 2 pairs per prompt
    seed0: int = 30_000  # clip k gets noise seed seed0 + k
    label_seed: int = 7  # seeds the raters' draws
    split: str = "heldout"  # prompt split the samples' prompts come from
    grammar: str = "single"  # single | pair | mixed (the first N of the mixed listing alternate the kinds)

    def validate(self) -> None:
        from rlhf.synthetic.prompts import check_grammar

        check_grammar(self.grammar)
        if self.prompts < 1:
            raise ValueError(f"onpolicy.prompts must be >= 1, got {self.prompts}")
        if self.seeds < 2:
            raise ValueError(f"onpolicy.seeds must be >= 2 (pairs of one prompt), got {self.seeds}")


def within_group_pairs(groups) -> np.ndarray:
    """(P, 2) indices ``i < j`` of every pair of items with the same group, ordered by ``i`` then ``j``."""
    groups = list(groups)
    out = [(i, j) for i in range(len(groups)) for j in range(i + 1, len(groups)) if groups[i] == groups[j]]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def rater_labels(
    oracle: np.ndarray, pairs: np.ndarray, seed: int, annotator: AnnotatorConfig = AnnotatorConfig()
) -> np.ndarray:
    """(P, 3) labels 1 (A = first of the pair), -1 (B), 0 (same) per dimension, drawn by the simulated
    raters from the oracle's score differences; pair ``k`` uses the generator ``(seed, k)`` alone, so
    labels do not depend on how many pairs are drawn."""
    oracle = np.asarray(oracle, dtype=np.float64)
    labels = np.zeros((len(pairs), len(DIMS)), dtype=np.int64)
    for k, (i, j) in enumerate(pairs):
        p_a, p_b, _ = label_probabilities(oracle[i] - oracle[j], annotator)
        u = np.random.default_rng([seed, k]).random(len(DIMS))
        labels[k] = np.where(u < p_a, 1, np.where(u < p_a + p_b, -1, 0))
    return labels


def _two_accuracies(labels: np.ndarray, margin: np.ndarray) -> tuple[float, float]:
    with_ties = accuracy_with_ties(labels, margin)[0]
    without = accuracy_without_ties(labels, margin) if np.any(labels != 0) else float("nan")
    return with_ties, without


def onpolicy_table(
    reward: np.ndarray, oracle: np.ndarray, pairs: np.ndarray, labels: np.ndarray, tie: float = ORACLE_TIE
) -> dict[str, dict]:
    """Per dimension: ``pairs``, ``tie_share`` (raters), ``with_ties`` / ``without_ties`` of ``reward``
    (N, 3) against ``labels`` (P, 3), the oracle's ``ceiling_with_ties`` / ``ceiling_without_ties`` on
    the same labels, and ``oracle_order`` (with ``oracle_order_pairs``): agreement with the sign of the
    oracle's difference where it exceeds ``tie``."""
    reward, oracle = np.asarray(reward, np.float64), np.asarray(oracle, np.float64)
    if reward.shape != oracle.shape or reward.ndim != 2 or reward.shape[1] != len(DIMS):
        raise ValueError(f"reward and oracle scores must both be (clips, 3), got {reward.shape} and {oracle.shape}")
    if len(pairs) == 0:
        raise ValueError("no within-prompt pairs: sample at least two clips of a prompt")
    i, j = pairs[:, 0], pairs[:, 1]
    out = {}
    for d, dim in enumerate(DIMS):
        margin, truth, h = reward[i, d] - reward[j, d], oracle[i, d] - oracle[j, d], labels[:, d]
        wt, wo = _two_accuracies(h, margin)
        cwt, cwo = _two_accuracies(h, truth)
        decided = np.abs(truth) > tie
        order = float(np.mean(np.sign(margin[decided]) == np.sign(truth[decided]))) if decided.any() else float("nan")
        out[dim] = {
            "pairs": int(len(pairs)),
            "tie_share": float(np.mean(h == 0)),
            "with_ties": wt,
            "without_ties": wo,
            "ceiling_with_ties": cwt,
            "ceiling_without_ties": cwo,
            "oracle_order": order,
            "oracle_order_pairs": int(decided.sum()),
        }
    return out


def format_onpolicy(table: dict[str, dict], title: str = "") -> str:
    """Markdown table of :func:`onpolicy_table`."""
    lines = ([title, ""] if title else []) + [
        "| dim | pairs | tie share | acc w/ ties | acc w/o ties | ceiling w/ ties | ceiling w/o ties | oracle order |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dim in DIMS:
        t = table[dim]
        lines.append(
            f"| {dim} | {t['pairs']} | {t['tie_share']:.1%} | {t['with_ties']:.1%} | {t['without_ties']:.1%} | "
            f"{t['ceiling_with_ties']:.1%} | {t['ceiling_without_ties']:.1%} | "
            f"{t['oracle_order']:.1%} ({t['oracle_order_pairs']}) |"
        )
    return "\n".join(lines)


@dataclass
class PolicyClips:
    """Stored clips of a policy with their prompts, group (prompt index) and oracle scores."""

    videos: list  # uint8 (T, H, W, 3) each, after the H.264 round trip
    prompts: list[str]
    groups: list[int]
    oracle: np.ndarray  # (N, 3)

    def save(self, path) -> None:
        np.savez_compressed(
            path,
            videos=np.stack(self.videos),
            prompts=np.array(self.prompts),
            groups=np.array(self.groups),
            oracle=self.oracle,
        )

    @classmethod
    def load(cls, path) -> PolicyClips:
        z = np.load(path)
        return cls(list(z["videos"]), [str(p) for p in z["prompts"]], [int(g) for g in z["groups"]], z["oracle"])


def draw_policy_clips(
    generator, cfg: OnPolicyConfig = OnPolicyConfig(), sampler=None, progress: bool = True
) -> PolicyClips:
    """``cfg.seeds`` samples of ``generator`` (a loaded FlowGenerator, its LoRA applied) for each of the
    first ``cfg.prompts`` prompts of ``cfg.split``, stored and judged by the oracle."""
    from tqdm import tqdm

    from rlhf.generator.sampler import SamplerConfig, sample
    from rlhf.synthetic.oracle import score
    from rlhf.synthetic.prompts import split_prompts

    from .judges import as_stored

    cfg.validate()
    sampler = sampler or SamplerConfig()
    chosen = split_prompts(cfg.split, cfg.grammar)[: cfg.prompts]
    texts = [p.text for p in chosen for _ in range(cfg.seeds)]
    groups = [g for g in range(len(chosen)) for _ in range(cfg.seeds)]
    videos = []
    step = max(1, sampler.batch_size)
    for s in tqdm(range(0, len(texts), step), desc="on-policy clips", unit="batch", disable=not progress):
        batch = sample(
            generator, texts[s : s + step], [cfg.seed0 + k for k in range(s, min(s + step, len(texts)))], sampler
        )
        videos += as_stored(batch.videos)
    oracle = np.array([[sc[d] for d in DIMS] for sc in (score(v, t) for v, t in zip(videos, texts))])
    return PolicyClips(videos, texts, groups, oracle)


def evaluate_on_policy(
    reward_scores: np.ndarray,
    clips: PolicyClips,
    cfg: OnPolicyConfig = OnPolicyConfig(),
    annotator: AnnotatorConfig = AnnotatorConfig(),
) -> dict:
    """The table of a reward's (N, 3) scores of ``clips``, with the evaluation's settings."""
    pairs = within_group_pairs(clips.groups)
    labels = rater_labels(clips.oracle, pairs, cfg.label_seed, annotator)
    return {
        "config": asdict(cfg),
        "clips": len(clips.prompts),
        "table": onpolicy_table(reward_scores, clips.oracle, pairs, labels),
    }


def reward_scores(model, clips: PolicyClips, batch: int = 32) -> np.ndarray:
    """(N, 3) raw scores of a :class:`rlhf.reward.checkpoint.VideoReward` (or any ``.reward`` of the
    same contract) for the clips (normalisation does not change an order)."""
    out = []
    for s in range(0, len(clips.prompts), batch):
        out += model.reward(clips.videos[s : s + batch], clips.prompts[s : s + batch])
    return np.array([[r[d] for d in DIMS] for r in out], dtype=np.float64)
