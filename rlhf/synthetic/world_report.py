"""Print the moving-shapes world's calibration: defect x dimension table, tie rate and ceiling.

python jobs/world_report.py                       # fresh sample of pairs
python jobs/world_report.py --dataset runs/dataset  # stats of a built dataset
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlhf.config import parse_cli
from rlhf.dims import DIMS
from rlhf.synthetic.annotator import AnnotatorConfig, annotate
from rlhf.synthetic.calibration import LEVELS, defect_table, reference_scores
from rlhf.synthetic.dataset import PairSampling, dataset_stats, pair_spec, score_pair


@dataclass
class WorldReportConfig:
    prompts: int = 24  # prompts (one seed each) per cell of the defect table
    pairs: int = 1000  # fresh pairs for tie rate and ceiling (ignored with dataset)
    dataset: str = ""  # a make_dataset output directory to report on instead of fresh pairs
    seed: int = 0  # seeds the defect table, the reference scores and the fresh pairs and their labels
    out: str = ""  # optional JSON file for the numbers
    sampling: PairSampling = field(default_factory=PairSampling)  # how the fresh pairs are drawn (ignored with dataset)
    # the simulated raters (tie rate and ceiling of the labels)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)


def fresh_records(cfg: WorldReportConfig) -> list[dict]:
    """Scored and labelled pairs, without writing videos."""
    from tqdm import tqdm

    recs = []
    for i in tqdm(range(cfg.pairs), desc="pairs", unit="pair"):
        spec = pair_spec(cfg.seed, i, cfg.sampling)
        _, _, sa, sb = score_pair(spec)
        labels = annotate(sa, sb, np.random.default_rng([cfg.seed, i, 1]), cfg.annotator)
        recs.append({**labels, "score_a": sa, "score_b": sb})
    return recs


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        WorldReportConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--dataset": ("dataset", str, "dataset directory"),
            "--pairs": ("pairs", int, "fresh pairs"),
            "--out": ("out", str, "JSON output"),
        },
    )
    print(
        f"Defect x dimension: mean oracle score over {cfg.prompts} prompts at strengths {', '.join(map(str, LEVELS))}"
    )
    print(f"{'defect':16s} {'harms':5s} " + " | ".join(f"{d:^29s}" for d in DIMS) + "  mono  drop  cross")
    rows = defect_table(cfg.prompts, seed=cfg.seed)
    for r in rows:
        cells = " | ".join(" ".join(f"{r.means[j, k]:.2f}" for j in range(len(LEVELS))) for k in range(3))
        print(
            f"{r.defect:16s} {r.harms:5s} {cells}  {'yes' if r.monotone else 'NO ':4s} {r.drop:5.2f} {r.crosstalk:5.2f}"
        )
    print("\nReference videos (mean VQ / MQ / TA):")
    refs = reference_scores(cfg.prompts, cfg.seed)
    for name, m in refs.items():
        print(f"  {name:14s} " + "  ".join(f"{d} {v:.2f}" for d, v in zip(DIMS, m)))

    if cfg.dataset:
        from rlhf.data.schema import read_preferences

        recs = read_preferences(Path(cfg.dataset) / "prefs.parquet").to_pylist()
        source = f"dataset {cfg.dataset}"
    else:
        recs = fresh_records(cfg)
        source = f"{cfg.pairs} fresh pairs (seed {cfg.seed})"
    stats = dataset_stats(recs, cfg.annotator)
    print(
        f"\nSimulated labels on {source}: Rao-Kupper k={cfg.annotator.tie_k}, temperature={cfg.annotator.temperature}"
    )
    print(
        f"{'dim':8s} {'tie rate':>9s} {'ceiling w/ ties':>16s} {'ceiling w/o ties':>17s}   (expected; realised on these labels)"
    )
    for dim, s in stats.items():
        print(
            f"{dim:8s} {s['tie_rate']:9.1%} {s['ceiling_with_ties']:8.1%} ({s['realised_with_ties']:.1%}) "
            f"{s['ceiling_without_ties']:8.1%} ({s['realised_without_ties']:.1%})"
        )
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(
            json.dumps(
                {
                    "defects": {
                        r.defect: {
                            "harms": r.harms,
                            "levels": list(LEVELS),
                            "means": r.means.round(4).tolist(),
                            "monotone": r.monotone,
                            "drop": r.drop,
                            "crosstalk": r.crosstalk,
                        }
                        for r in rows
                    },
                    "references": {k: v.round(4).tolist() for k, v in refs.items()},
                    "labels": stats,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
