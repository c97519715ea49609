"""Win rate of an aligned policy against the pretrained one on held-out prompts, same seeds.

    python jobs/evaluate.py --adapter runs/align_dpo/adapter --out runs/align_dpo/eval.json
    python jobs/evaluate.py --adapter runs/ta/adapter weights.VQ=0 weights.MQ=0 seeds=8

Judged by the oracle and by the learned reward model; ties (|difference| at most the judge's margin)
count half. A policy that the learned reward says wins while the oracle says it loses a dimension is
flagged as reward hacking. The pretrained policy's samples are cached (``base_cache``) and reused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import parse_cli
from rlhf.dims import RewardWeights
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.generator.sampler import SamplerConfig


@dataclass
class EvaluateConfig:
    adapter: str = ""  # LoRA of the policy (required): adapter directory (diffusers' or peft's format) or hub id
    generator: str = str(DEFAULT_GENERATOR)  # the pretrained generator (also the base of the adapter), dir or hub id
    out: str = ""  # JSON result (default: next to the adapter, eval.json)
    prompts: str = "heldout"  # split name (optionally :grammar, e.g. heldout:pair) or prompt file
    n_prompts: int = 0  # the first N of those prompts (0 = all; the pair listing is in a fixed shuffled order)
    seeds: int = 4  # samples per prompt
    seed: int = 100_000  # sample i uses seed + i (disjoint from training seeds)
    reward: str = "default"  # learned judge: default | checkpoint dir | none
    base_cache: str = "runs/eval_base.pt"  # pretrained samples, reused across policies
    threads: int = 2  # torch intra-op threads
    weights: RewardWeights = field(default_factory=RewardWeights)  # VQ:MQ:TA weights of the weighted win rate
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # how the pretrained and the policy samples are drawn

    def validate(self) -> None:
        if not self.adapter:
            raise ValueError("adapter is required: --adapter DIR (a LoRA written by align_offline)")
        if self.seeds < 1 or self.n_prompts < 0:
            raise ValueError(f"seeds must be >= 1 and n_prompts >= 0, got {self.seeds} and {self.n_prompts}")
        self.weights.validate()
        self.sampler.validate()


def evaluate(cfg: EvaluateConfig, judges=None, progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm

    from rlhf.align.offline import read_prompts
    from rlhf.align.samples import SampleSet, cached_draw
    from rlhf.eval.compare import compare
    from rlhf.eval.judges import OracleJudge, make_judge
    from rlhf.generator.model import load_generator

    torch.set_num_threads(cfg.threads)
    prompts = read_prompts(cfg.prompts)
    texts = [p for p in prompts[: cfg.n_prompts or len(prompts)] for _ in range(cfg.seeds)]
    seeds = [cfg.seed + i for i in range(len(texts))]
    gen = load_generator(cfg.generator)
    with tqdm(total=2 * len(texts), desc="evaluate", unit="clip", disable=not progress, file=sys.stdout) as bar:
        base = cached_draw(
            cfg.base_cache or None, gen, texts, seeds, cfg.sampler, {"generator": cfg.generator, "adapter": None}, bar
        )
        bar.n = len(texts)
        gen.load_lora(cfg.adapter)
        policy = SampleSet.draw(
            gen, texts, seeds, cfg.sampler, {"generator": cfg.generator, "adapter": cfg.adapter}, bar
        )
    if judges is None:
        judges = [OracleJudge()] + ([make_judge(cfg.reward)] if cfg.reward != "none" else [])
    result = compare(base, policy, judges, cfg.weights)
    if cfg.base_cache:
        base.save(cfg.base_cache)  # now with its scores
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        EvaluateConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--adapter": ("adapter", str, "policy LoRA directory"),
            "--out": ("out", str, "result JSON"),
            "--generator": ("generator", str, "pretrained generator"),
            "--prompts": ("prompts", str, "split name or prompt file"),
        },
    )
    result = evaluate(cfg)
    out = Path(cfg.out or Path(cfg.adapter).parent / "eval.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if result.get("reward_hacking"):
        print(
            f"REWARD HACKING: the learned reward prefers the policy but the oracle says it loses "
            f"{', '.join(result['reward_hacking'])}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
