"""Minimal-pair probe of a reward model: does one text-alignment defect, alone, lower its TA score?

For each TA defect kind that applies to the prompts' kind, every prompt is rendered twice with the same
seed: clean, and with that one defect at full strength; both go through H.264 as stored data does. The
probe reports how often the reward model's TA of the clean clip is the higher (50% = blind to the
defect) and the mean margin. The oracle's own TA on the same clips is the reference: it must be
near 100%, or the defect does not change what the prompt asks for.
"""

from __future__ import annotations

import numpy as np

from rlhf.eval.judges import as_stored
from rlhf.synthetic.oracle import score
from rlhf.synthetic.prompts import split_prompts
from rlhf.synthetic.render import DEFECTS, defects_for, render


def probe_defects(
    reward, grammar: str = "pair", split: str = "heldout", prompts: int = 48, seed: int = 0, strength: float = 1.0
) -> dict[str, dict[str, float]]:
    """``{defect: {"reward": share clean > defect, "margin": mean TA difference, "oracle": share}}``.

    ``reward`` is a ``VideoReward``; ``prompts`` prompts of ``split`` / ``grammar`` are drawn by ``seed``.
    """
    listing = split_prompts(split, grammar)
    rng = np.random.default_rng(seed)
    chosen = [listing[i] for i in rng.choice(len(listing), min(prompts, len(listing)), replace=False)]
    shared = set.intersection(*(set(defects_for(p)) for p in chosen))  # mixed: the single-object kinds
    kinds = [k for k in DEFECTS if DEFECTS[k] == "TA" and k in shared]
    texts = [p.text for p in chosen]

    def clips(defects: dict) -> list[np.ndarray]:
        return as_stored([render(p, defects, seed=seed + i) for i, p in enumerate(chosen)])

    clean = clips({})
    clean_ta = reward.raw(clean, texts)[:, 2]
    clean_oracle = np.array([score(v, p)["TA"] for v, p in zip(clean, chosen)])
    out = {}
    for kind in kinds:
        bad = clips({kind: strength})
        margin = clean_ta - reward.raw(bad, texts)[:, 2]
        oracle = clean_oracle - np.array([score(v, p)["TA"] for v, p in zip(bad, chosen)])
        out[kind] = {
            "reward": float(np.mean(margin > 0)),
            "margin": float(np.mean(margin)),
            "oracle": float(np.mean(oracle > 0)),
            "clips": len(chosen),
        }
    return out


def format_probe(rows: dict[str, dict[str, dict[str, float]]], grammar: str, split: str) -> str:
    """Markdown: one row per model, one column per defect (reward share clean > defect), oracle row last."""
    kinds = list(next(iter(rows.values())))
    n = next(iter(next(iter(rows.values())).values()))["clips"]
    lines = [
        f"Minimal pairs: {n} {split} {grammar} prompts, clean against one TA defect at full strength (same "
        "seed, H.264); share where the TA score of the clean clip is higher (50% = blind)",
        "",
        "| model | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]['reward']:.0%} ({r[k]['margin']:+.2f})" for k in kinds) + " |")
    first = next(iter(rows.values()))
    lines.append("| oracle | " + " | ".join(f"{first[k]['oracle']:.0%}" for k in kinds) + " |")
    return "\n".join(lines)
