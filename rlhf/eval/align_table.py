"""Tables 4 and 5 in miniature: SFT / Flow-RWR / Flow-DPO (beta_t) / Flow-DPO (constant beta) against
the pretrained generator, win rates per dimension judged by the oracle and the learned reward.

    python jobs/align_table.py                     # both weightings (1:1:1 and TA only), every algorithm
    python jobs/align_table.py weightings=1:1:1 algos=dpo

Every row trains on the same scored sample set (same prompts, seeds and budget) and is evaluated on
the same held-out prompts and seeds. Writes ``<out>.md`` and ``<out>.json``; runs live in ``run_dir``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.align.offline_job import AlignOfflineConfig, run, training_samples
from rlhf.artefacts import repo_relative, table_files
from rlhf.config import parse_cli, to_dict
from rlhf.dims import DIMS, RewardWeights
from rlhf.eval.policy_job import EvaluateConfig, evaluate

ROW_NAMES = {"sft": "SFT", "rwr": "Flow-RWR", "dpo_timestep": "Flow-DPO (beta_t)", "dpo": "Flow-DPO (constant beta)"}


@dataclass
class AlignTableConfig:
    out: str = "docs/results/align_table"  # writes out.md and out.json
    run_dir: str = "runs/align_table"  # adapters, logs, sample sets
    reuse: bool = True  # keep rows already trained and evaluated in run_dir (resume an interrupted table)
    reevaluate: bool = False  # rows trained by the same row config keep their adapter and are evaluated again
    algos: str = "sft,rwr,dpo_timestep,dpo"  # rows, in order
    weightings: str = "1:1:1,0:0:1"  # VQ:MQ:TA reward weights; one table per weighting
    # the offline alignment of every row (train.algo.algo and train.pairs.weights set per row)
    align: AlignOfflineConfig = field(default_factory=AlignOfflineConfig)
    # the evaluation of every row (adapter, generator and weights set per row)
    eval: EvaluateConfig = field(default_factory=lambda: EvaluateConfig(adapter="-"))

    def weight_list(self) -> list[RewardWeights]:
        return RewardWeights.parse_list(self.weightings)

    def algo_list(self) -> list[str]:
        algos = [a.strip() for a in self.algos.split(",") if a.strip()]
        unknown = [a for a in algos if a not in ROW_NAMES]
        if unknown or not algos:
            raise ValueError(f"unknown algorithm(s) {unknown}: use some of {', '.join(ROW_NAMES)}")
        return algos


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(result: dict) -> str:
    lines = [
        "# Alignment table (moving-shapes world, held-out prompts)",
        "",
        f"Generator `{result['generator']}`, trained on {result['train_samples']} samples "
        f"({result['group']} per prompt) scored by `{result['reward']}`; evaluated on {result['eval_n']} "
        "held-out clips (same prompts and seeds for every row). Win rate (%) against the pretrained "
        "policy, ties count half.",
        "",
    ]
    for table in result["tables"]:
        lines += [
            f"## Reward weights VQ:MQ:TA = {table['weights']}",
            "",
            "| method | oracle VQ | oracle MQ | oracle TA | oracle weighted | learned VQ | learned MQ "
            "| learned TA | learned weighted | hacking | train s | total s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            "| Pretrained | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | | | |",
        ]
        for row in sorted(table["rows"], key=lambda r: list(ROW_NAMES).index(r["algo"])):
            o, lr = row["eval"]["oracle"]["win_rate"], row["eval"].get("learned", {}).get("win_rate", {})
            cells = [pct(o[d]) for d in (*DIMS, "weighted")]
            cells += [pct(lr[d]) if d in lr else "-" for d in (*DIMS, "weighted")]
            flag = ", ".join(row["eval"].get("reward_hacking", [])) or "no"
            lines.append(
                f"| {ROW_NAMES[row['algo']]} | "
                + " | ".join(cells)
                + f" | {flag} | {row['train']['seconds']:.0f} | {row['row_seconds']:.0f} |"
            )
        lines.append("")
    lines += [
        f"Shared sampling and scoring of the training set: {result['sample_seconds']:.0f} s. "
        f"Command: `{result['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rlhf.eval.judges import OracleJudge, make_judge
    from rlhf.generator.model import load_generator

    cfg = parse_cli(AlignTableConfig, argv, __doc__.splitlines()[0], {"--out": ("out", str, "table path stem")})
    try:
        weightings, algos = cfg.weight_list(), cfg.algo_list()
        cfg.align.validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(cfg.run_dir)
    t0 = time.time()
    oracle = OracleJudge()
    learned = make_judge(cfg.eval.reward) if cfg.eval.reward != "none" else None
    if cfg.align.reward == "oracle":
        judge = oracle
    else:
        judge = learned if learned and cfg.align.reward == cfg.eval.reward else make_judge(cfg.align.reward)
    base_cfg = copy.deepcopy(cfg.align)
    base_cfg.samples = str(run_dir / "train_samples.pt")
    samples = training_samples(base_cfg, load_generator(base_cfg.generator))
    samples.score(judge)
    samples.score(oracle)
    samples.save(base_cfg.samples)
    sample_seconds = time.time() - t0
    tables = []
    for w in weightings:
        rows = []
        for algo in algos:
            r0 = time.time()
            a = copy.deepcopy(base_cfg)
            a.train.algo.algo = algo
            a.train.pairs.weights = w
            a.out = str(run_dir / f"{judge.name}_{w.label.replace(':', '-')}_{algo}")
            done = [Path(a.out) / f for f in ("summary.json", "eval.json", "row.json")]
            # a row is reused only when it was made by this very row config (another recipe in the same run_dir
            # trains again rather than being reported under this one's name)
            row_cfg = json.loads(json.dumps({"align": to_dict(a), "eval": to_dict(cfg.eval)}, default=str))
            cfg_file = Path(a.out) / "row_config.json"
            same = cfg_file.is_file() and json.loads(cfg_file.read_text()) == row_cfg
            if cfg.reuse and same and all(f.is_file() for f in done) and not cfg.reevaluate:
                rows.append(json.loads(done[2].read_text()))
                print(f"[{w.label}] {ROW_NAMES[algo]}: reused from {a.out}", flush=True)
                continue
            reevaluated = cfg.reevaluate and same and done[0].is_file()
            if reevaluated:
                train = json.loads(done[0].read_text())
                print(f"[{w.label}] {ROW_NAMES[algo]}: evaluating the adapter in {a.out} again", flush=True)
            else:
                train = run(a, judge, samples)
                cfg_file.write_text(json.dumps(row_cfg, indent=2))
            e = copy.deepcopy(cfg.eval)
            e.adapter, e.generator, e.weights = str(Path(a.out) / "adapter"), a.generator, w
            e.base_cache = str(run_dir / "eval_base.pt")
            ev = evaluate(e, [oracle] + ([learned] if learned else []))
            (Path(a.out) / "eval.json").write_text(json.dumps(ev, indent=2))
            # a re-evaluated row's total counts its training (done before) and this evaluation
            rows.append(
                {
                    "algo": algo,
                    "train": train,
                    "eval": ev,
                    "row_seconds": time.time() - r0 + (train["seconds"] if reevaluated else 0.0),
                }
            )
            (Path(a.out) / "row.json").write_text(json.dumps(rows[-1], indent=2))
            print(f"[{w.label}] {ROW_NAMES[algo]}: oracle {ev['oracle']['win_rate']}", flush=True)
        tables.append({"weights": w.label, "rows": rows})
    # recorded with repository-relative paths (the generator, a command line naming absolute paths)
    result = repo_relative(
        {
            "generator": cfg.align.generator,
            "reward": judge.name,
            "group": cfg.align.group,
            "train_samples": len(samples.prompts),
            "eval_n": tables[0]["rows"][0]["eval"]["n"],
            "sample_seconds": sample_seconds,
            "total_seconds": time.time() - t0,
            "command": "python jobs/align_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "tables": tables,
        }
    )
    out_md, out_json = table_files(cfg.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2))
    out_md.write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
