"""Build a moving-shapes preference dataset: mp4 videos, prefs.parquet and manifest.json.

    python jobs/make_dataset.py --pairs 2000 --out runs/dataset
    python jobs/make_dataset.py --config jobs/configs/make_dataset.yaml annotator.tie_k=5 workers=1
    python jobs/make_dataset.py --pairs 0 generated.prompts=200 --out runs/generated   # generated pairs only

Rendered pairs (``pairs``: one prompt, injected defects) come first, then generated pairs
(``generated.prompts`` prompt slots: clips of one prompt sampled by a family of generators,
``rlhf.synthetic.generated``). Every record names its ``source``; generated ones name the member that
made each clip (``generator_a`` / ``generator_b``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import parse_cli, save_config
from rlhf.synthetic.annotator import AnnotatorConfig
from rlhf.synthetic.dataset import PairSampling, build_dataset
from rlhf.synthetic.generated import GeneratedSampling
from rlhf.synthetic.render import RenderSpec


@dataclass
class MakeDatasetConfig:
    out: str = "runs/dataset"  # output directory (videos/, prefs.parquet, manifest.json, config.yaml)
    pairs: int = 2000  # number of rendered preference pairs (0: generated pairs only)
    seed: int = 0  # pair i depends only on (seed, i)
    workers: int = 2  # worker processes (1 = in-process)
    crf: int = 12  # H.264 quality, 0..51, lower is better
    render: RenderSpec = field(default_factory=RenderSpec)  # geometry and frame rate of the clips
    # how the rendered pairs are drawn (prompts, defects, split)
    sampling: PairSampling = field(default_factory=PairSampling)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)  # the simulated raters that label every pair
    # pairs of generated clips (on when generated.prompts > 0)
    generated: GeneratedSampling = field(default_factory=GeneratedSampling)

    def validate(self) -> None:
        if self.pairs < 0 or self.pairs + self.generated.prompts < 1:
            raise ValueError(f"pairs must be >= 1 (or generated.prompts >= 1), got {self.pairs}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        MakeDatasetConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--pairs": ("pairs", int, "number of pairs"),
            "--out": ("out", str, "output directory"),
            "--seed": ("seed", int, "random seed"),
            "--workers": ("workers", int, "worker processes"),
        },
    )
    save_config(cfg, cfg.out)
    result = build_dataset(
        cfg.out,
        cfg.pairs,
        cfg.seed,
        cfg.sampling,
        cfg.render,
        cfg.annotator,
        cfg.crf,
        cfg.workers,
        generated=cfg.generated,
    )
    n_train = sum(r["split"] == "train" for r in result.records)
    n_gen = sum(r["source"] == "generated" for r in result.records)
    print(
        f"wrote {len(result.records)} pairs ({n_train} train, {len(result.records) - n_train} held-out; {n_gen} "
        f"generated) to {cfg.out} in {result.seconds:.1f} s ({len(result.records) / result.seconds:.1f} pairs/s)"
    )
    for source, stats in json.loads((Path(cfg.out) / "manifest.json").read_text())["stats_by_source"].items():
        print(
            f"{source}: {'dim':8s} {'ties':>6s} {'ceiling w/ ties':>16s} {'ceiling w/o ties':>17s}  "
            "(expected; realised on these labels)"
        )
        for dim, s in stats.items():
            print(
                f"{' ' * len(source)}  {dim:8s} {s['tie_rate']:6.1%} {s['ceiling_with_ties']:8.1%} "
                f"({s['realised_with_ties']:.1%}) {s['ceiling_without_ties']:8.1%} ({s['realised_without_ties']:.1%})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
