"""Evaluate VideoReward checkpoints on held-out pairs; build the ablation table (Table 3 in miniature).

    python jobs/evaluate_reward.py --checkpoint runs/reward_default --data runs/eval_heldout
    python jobs/evaluate_reward.py --ablation --out runs/ablation      # trains the four variants first
    python jobs/evaluate_reward.py --checkpoint artefacts/reward_default --probe   # + caption probe
    python jobs/evaluate_reward.py --checkpoint artefacts/reward_default --policy artefacts/generator_default
    python jobs/evaluate_reward.py --checkpoint artefacts/reward_mixed --defects pair   # minimal-pair probe

With ``--policy`` (a generator directory or hub id, ``--adapter`` for its LoRA) the evaluation is *on
policy* (``rlhf.eval.onpolicy``): every within-prompt pair of ``onpolicy.seeds`` samples of the policy on
``onpolicy.prompts`` held-out prompts, labelled by the simulated raters; per dimension the accuracy with
and without ties, the tie share, the oracle's ceiling on the same labels and the oracle order. The clips
are drawn once per policy and kept in ``out/policy_clips.npz`` (reused while the policy and settings are
the same), so several reward models are compared on identical pairs. Written as ``onpolicy.md`` /
``onpolicy.json``.

Rows: each checkpoint (or, with ``--ablation``, regression / BT / BTT with one shared token, and BTT
with separate tokens, all trained with the same data stream, seed and step budget), plus a ceiling
row: the ideal model that knows the oracle scores, against the same labels. Columns: Overall / VQ /
MQ / TA, each with and without ties. Written as ``table.md`` and ``table.json`` under ``out``.

With ``--defects GRAMMAR`` each checkpoint meets minimal pairs instead (``rlhf.eval.defects``): clean
clips against the same clips with one TA defect, per defect kind; written as ``defects.md`` / ``.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.artefacts import repo_relative
from rlhf.config import parse_cli, save_config
from rlhf.dims import DIMS
from rlhf.eval.onpolicy import OnPolicyConfig
from rlhf.generator.sampler import SamplerConfig

DIMS4 = ("Overall", *DIMS)  # the table's column order: Overall first
ABLATION = {  # row name -> overrides of the training config
    "regression": {"loss": "regression", "separate_tokens": False},
    "BT": {"loss": "bt", "separate_tokens": False},
    "BTT": {"loss": "btt", "separate_tokens": False},
    "BTT + separate tokens": {"loss": "btt", "separate_tokens": True},
}


@dataclass
class EvaluateRewardConfig:
    out: str = "runs/reward_eval"  # where table.md / table.json go
    data: str = "runs/eval_heldout"  # dataset dir (make_dataset output) with the evaluation pairs
    split: str = "heldout"  # split of data's pairs evaluated (also the defect probe's prompt split)
    checkpoints: list[str] = field(default_factory=list)  # run directories to evaluate (name = folder)
    ablation: bool = False  # train the four ablation variants into out/<variant> (skipped when done)
    probe: bool = False  # also run the caption probe on every checkpoint trained with the caption loss
    steps: int = 400  # ablation: training steps per variant (same for every row)
    train_overrides: list[str] = field(
        default_factory=lambda: [  # the shipped recipe, shared by every row
            "data=synthetic",
            "batch_size=8",
            "parts.lora_rank=0",
            "sampling.min_pixels=12544",
            "sampling.max_pixels=12544",
            "lr=5e-4",
            "lr_schedule=cosine",
            "warmup_steps=50",
            "caption_weight=1.0",
            "checkpoint_every=200",
        ]
    )
    policy: str = ""  # on-policy evaluation: the generator (dir or hub id) whose samples are compared
    adapter: str = ""  # its LoRA (adapter dir or hub id); "" = the generator as it is
    # which policy samples the on-policy evaluation compares (with policy)
    onpolicy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    defects: str = ""  # minimal-pair probe on prompts of this grammar (single | pair | mixed; "" = off)
    defect_prompts: int = 48  # prompts of the probe (held-out split)
    # how the policy samples: the online job's default (10 Euler steps, guidance 3)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=10))


def evaluate_checkpoint(loaded: tuple, records: list[dict], root: Path) -> dict:
    """Accuracy table of a ``load_checkpoint`` result on ``records``."""
    from rlhf.reward.processor import RewardProcessor, VisionGeometry
    from rlhf.reward.train import accuracy_table, score_pairs

    model, tok, info, step = loaded
    proc = RewardProcessor(tok, info.sampling, info.separate_tokens, geometry=VisionGeometry.of(model.base_model()))
    kept, ra, rb, skipped = score_pairs(model, records, root, proc)
    return {"step": step, "skipped": len(skipped), "table": accuracy_table(kept, ra, rb, info.norm)}


def caption_probe(loaded: tuple, prompts: int = 40, seed: int = 1000) -> dict[str, float]:
    """How well the caption head of a checkpoint names each attribute of clean held-out videos: for
    every attribute, the prompt variant (one value swapped) of lowest NLL given the video must be the
    true prompt. Needs a model trained with the caption loss (``parts.lm_head``)."""
    import dataclasses

    import torch

    from rlhf.reward.processor import RewardProcessor, VisionGeometry
    from rlhf.synthetic.prompts import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SPEEDS, split_prompts
    from rlhf.synthetic.render import render
    from rlhf.video import encode_video, read_video

    model, tok, info, _ = loaded
    if not info.parts.lm_head:
        return {}
    proc = RewardProcessor(
        tok, info.sampling, info.separate_tokens, caption_mask=True, geometry=VisionGeometry.of(model.base_model())
    )
    values = {
        "colour": list(COLOURS),
        "shape": list(SHAPES),
        "direction": list(DIRECTIONS),
        "speed": list(SPEEDS),
        "background": list(BACKGROUNDS),
    }
    held = split_prompts("heldout")
    chosen = [held[i * len(held) // prompts] for i in range(min(prompts, len(held)))]
    hits = dict.fromkeys(values, 0)
    with torch.no_grad():
        for i, p in enumerate(chosen):
            video = read_video(encode_video(render(p, None, seed=seed + i), fps=8.0, crf=12))
            for attr, options in values.items():
                batch = proc([video] * len(options), [dataclasses.replace(p, **{attr: v}).text for v in options])
                _, nll = model(**batch)
                total = nll * batch["caption_mask"][:, 1:].sum(1)  # NLL of the whole prompt
                hits[attr] += options[int(total.argmin())] == getattr(p, attr)
    return {attr: hits[attr] / len(chosen) for attr in values}


def ceiling_row(records: list[dict]) -> dict:
    """The oracle-informed ideal model against the same labels (realised accuracy, like the rows)."""
    from rlhf.synthetic.annotator import AnnotatorConfig
    from rlhf.synthetic.dataset import dataset_stats

    stats = dataset_stats(records, AnnotatorConfig())
    return {
        d: {"pairs": len(records), "with_ties": s["realised_with_ties"], "without_ties": s["realised_without_ties"]}
        for d, s in stats.items()
    }


def train_variant(cfg: EvaluateRewardConfig, name: str, overrides: dict) -> Path:
    from actors.reward_trainer import TrainRewardJob, run
    from rlhf.config import load_config

    out = Path(cfg.out) / name.replace(" ", "_").replace("+", "plus")
    if (out / "eval.json").exists():
        return out
    values = {**overrides, "out": str(out), "max_steps": cfg.steps, "eval_data": cfg.data, "eval_pairs": 100}
    run(load_config(TrainRewardJob, None, cfg.train_overrides, values))
    return out


def markdown(rows: dict[str, dict]) -> str:
    head = "| model | " + " | ".join(f"{d} w/ ties | {d} w/o ties" for d in DIMS4) + " |"
    lines = [head, "|---|" + "---|" * (2 * len(DIMS4))]
    for name, table in rows.items():
        cells = []
        for d in DIMS4:
            t = table.get(d, {})
            cells += [f"{t['with_ties']:.1%}", f"{t['without_ties']:.1%}"] if t.get("pairs") else ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def policy_clips(cfg: EvaluateRewardConfig, progress: bool = True):
    """The policy's clips, drawn once and kept in ``out/policy_clips.npz`` with what made them."""
    from rlhf.eval.onpolicy import PolicyClips, draw_policy_clips
    from rlhf.generator.model import load_generator

    out = Path(cfg.out)
    key = {
        "policy": cfg.policy,
        "adapter": cfg.adapter,
        "onpolicy": dataclasses.asdict(cfg.onpolicy),
        "sampler": dataclasses.asdict(cfg.sampler),
    }
    cache, meta = out / "policy_clips.npz", out / "policy_clips.json"
    if cache.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        return PolicyClips.load(cache)
    gen = load_generator(cfg.policy)
    if cfg.adapter:
        gen.load_lora(cfg.adapter)
    clips = draw_policy_clips(gen, cfg.onpolicy, cfg.sampler, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    clips.save(cache)
    meta.write_text(json.dumps(key, indent=2))
    return clips


def evaluate_on_policy_rows(cfg: EvaluateRewardConfig, progress: bool = True) -> dict:
    """On-policy table of every checkpoint of ``cfg`` on the policy's clips; writes onpolicy.md/json."""
    from rlhf.eval.onpolicy import evaluate_on_policy, format_onpolicy, reward_scores
    from rlhf.reward.inference import VideoReward

    if not cfg.checkpoints:
        raise ValueError("on-policy evaluation needs --checkpoint DIR (a reward model to evaluate)")
    clips = policy_clips(cfg, progress)
    rows = {}
    for path in cfg.checkpoints:
        rows[path] = evaluate_on_policy(reward_scores(VideoReward.from_checkpoint(path), clips), clips, cfg.onpolicy)
    policy = cfg.policy + (f" + {cfg.adapter}" if cfg.adapter else "")
    md = "\n\n".join(
        format_onpolicy(
            r["table"],
            f"**{name}** on {r['clips']} samples of {policy} "
            f"({cfg.onpolicy.prompts} {cfg.onpolicy.split} prompts x {cfg.onpolicy.seeds}, "
            f"{cfg.sampler.steps} Euler steps, guidance {cfg.sampler.guidance})",
        )
        for name, r in rows.items()
    )
    out = Path(cfg.out)
    # recorded with repository-relative paths (the policy, the adapter, the checkpoints naming the rows)
    (out / "onpolicy.md").write_text(repo_relative(md) + "\n")
    (out / "onpolicy.json").write_text(
        json.dumps(repo_relative({"policy": cfg.policy, "adapter": cfg.adapter, "rows": rows}), indent=2)
    )
    print(md)
    return rows


def evaluate_defect_rows(cfg: EvaluateRewardConfig) -> dict:
    """Minimal-pair probe of every checkpoint of ``cfg``; writes defects.md/json."""
    from rlhf.eval.defects import format_probe, probe_defects
    from rlhf.reward.inference import VideoReward

    if not cfg.checkpoints:
        raise ValueError("the defect probe needs --checkpoint DIR (a reward model to probe)")
    rows = {
        path: probe_defects(VideoReward.from_checkpoint(path), cfg.defects, cfg.split, cfg.defect_prompts)
        for path in cfg.checkpoints
    }
    md = format_probe(rows, cfg.defects, cfg.split)
    out = Path(cfg.out)
    (out / "defects.md").write_text(repo_relative(md) + "\n")
    (out / "defects.json").write_text(json.dumps(repo_relative({"grammar": cfg.defects, "rows": rows}), indent=2))
    print(md)
    return rows


def main(argv: list[str] | None = None) -> int:
    from rlhf.data.schema import read_preferences
    from rlhf.reward.checkpoint import load_checkpoint

    cfg = parse_cli(
        EvaluateRewardConfig,
        argv,
        __doc__.splitlines()[0],
        {
            "--data": ("data", str, "evaluation dataset dir"),
            "--out": ("out", str, "output dir"),
            "--checkpoint": ("checkpoints", lambda s: [s], "one run directory"),
            "--policy": ("policy", str, "on-policy evaluation: generator dir or hub id"),
            "--adapter": ("adapter", str, "the policy's LoRA"),
            "--defects": ("defects", str, "minimal-pair probe on prompts of this grammar"),
        },
        bool_flags={
            "--ablation": ("ablation", "train and evaluate the four ablation variants"),
            "--probe": ("probe", "caption probe: attribute accuracy of the caption head"),
        },
    )
    if cfg.defects:
        save_config(cfg, cfg.out)
        evaluate_defect_rows(cfg)
        return 0
    if cfg.policy:
        save_config(cfg, cfg.out)
        evaluate_on_policy_rows(cfg)
        return 0
    data = Path(cfg.data)
    records = [r for r in read_preferences(data / "prefs.parquet").to_pylist() if r["split"] == cfg.split]
    if not records:
        print(f"error: {data} has no pairs in split {cfg.split!r}", file=sys.stderr)
        return 2
    save_config(cfg, cfg.out)
    runs = {Path(c).name: Path(c) for c in cfg.checkpoints}
    if cfg.ablation:
        for name, overrides in ABLATION.items():
            runs[name] = train_variant(cfg, name, overrides)
    rows, details = {}, {}
    for name, path in runs.items():
        loaded = load_checkpoint(path)  # once per row: the table and the probe share it
        res = evaluate_checkpoint(loaded, records, data)
        rows[name] = res["table"]
        details[name] = {"path": str(path), "step": res["step"], "skipped": res["skipped"]}
        if cfg.probe:
            details[name]["caption_probe"] = caption_probe(loaded)
    rows["ceiling (oracle scores)"] = ceiling_row(records)
    md = markdown(rows)
    probes = {n: d["caption_probe"] for n, d in details.items() if d.get("caption_probe")}
    if probes:
        attrs = list(next(iter(probes.values())))
        md += (
            "\n\nCaption probe (clean held-out videos; chance: colour 17%, shape 33%, direction 25%, speed 50%, "
            "background 50%)\n\n| model | "
            + " | ".join(attrs)
            + " |\n|---|"
            + "---|" * len(attrs)
            + "\n"
            + "\n".join(f"| {n} | " + " | ".join(f"{p[a]:.0%}" for a in attrs) + " |" for n, p in probes.items())
        )
    out = Path(cfg.out)
    (out / "table.md").write_text(repo_relative(f"{len(records)} {cfg.split} pairs of {data}\n\n{md}\n"))
    (out / "table.json").write_text(
        json.dumps(repo_relative({"rows": rows, "runs": details, "pairs": len(records)}), indent=2)
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
