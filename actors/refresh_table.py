"""Does human feedback carry the loop? Online Flow-DPO with (a) the oracle as the reward, (b) the learned reward
frozen, (c) the learned reward with online refresh; oracle and learned win rates per dimension, the hacking
flag, and the reward's on-policy accuracy at the start and at the end of the run.

    python jobs/refresh_table.py                              # the three rows of docs/results/refresh_table.md
    python jobs/refresh_table.py rows=frozen,refresh online.iterations=12 refresh.pairs=32

Every row is the same online run (``online``: the embedded default of ``make run``, same seeds, prompts and
evaluation), differing only in what rewards the rollouts. Rows whose run directory already holds a
``summary.json`` written by the same config and the same reward checkpoint (the sha256 of its MANIFEST.json, kept in
``table_reward.txt``) are reused (``reuse=false`` runs them again). Writes ``<out>.md``
and ``<out>.json``; runs live in ``run_dir``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from actors.online import OnlineConfig
from actors.refresh import RefreshConfig, reward_dir
from rlhf.artefacts import repo_relative, table_files
from rlhf.config import parse_cli, to_dict
from rlhf.dims import DIMS

ROWS = {
    "oracle": "(a) oracle as the reward",
    "frozen": "(b) learned reward, frozen",
    "refresh": "(c) learned reward + refresh",
}


@dataclass
class RefreshTableConfig:
    out: str = "docs/results/refresh_table"  # writes out.md and out.json
    run_dir: str = "runs/refresh_table"  # one online run directory per row
    reuse: bool = True  # reuse a row whose run holds a summary.json of the same config and reward (false: run it again)
    rows: str = "oracle,frozen,refresh"  # rows, in order: oracle | frozen | refresh (comma-separated)
    learned: str = "default"  # the learned reward of rows (b) and (c)
    # the online run of every row (out, storage, progress, reward.model and refresh set per row)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    # the reward refresh of the refresh row (the other rows run without)
    refresh: RefreshConfig = field(default_factory=lambda: RefreshConfig(every=2, pairs=48, steps=40))

    def row_list(self) -> list[str]:
        rows = [r.strip() for r in self.rows.split(",") if r.strip()]
        unknown = [r for r in rows if r not in ROWS]
        if unknown or not rows:
            raise ValueError(f"unknown row(s) {unknown}: use some of {', '.join(ROWS)}")
        return rows


def row_config(cfg: RefreshTableConfig, row: str) -> OnlineConfig:
    o = copy.deepcopy(cfg.online)
    o.out = str(Path(cfg.run_dir) / row)
    o.storage = ""
    o.progress = False
    o.reward.model = "oracle" if row == "oracle" else cfg.learned
    o.refresh = copy.deepcopy(cfg.refresh) if row == "refresh" else RefreshConfig()
    o.validate()
    return o


def reward_fingerprint(model: str) -> str:
    """What a row's reward is: the sha256 of a checkpoint's MANIFEST.json (so a retrained ``default`` is not
    mistaken for the old one), else the model name itself (the oracle, a hub id)."""
    manifest = Path(reward_dir(model)) / "MANIFEST.json" if model != "oracle" else None
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest and manifest.is_file() else model


def _same_config(run: Path, o: OnlineConfig) -> bool:
    import yaml

    saved, reward = run / "config.yaml", run / "table_reward.txt"
    return (
        saved.is_file()
        and yaml.safe_load(saved.read_text()) == to_dict(o)
        and reward.is_file()
        and reward.read_text().strip() == reward_fingerprint(o.reward.model)
    )


def pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def markdown(rows: dict[str, dict]) -> str:
    head = (
        "| row | oracle VQ | oracle MQ | oracle TA | oracle weighted | learned weighted | hacking | on-policy acc "
        "start (VQ/MQ/TA) | on-policy acc end (VQ/MQ/TA) | labels | minutes |"
    )
    lines = [head, "|---" * 11 + "|"]
    for row, r in rows.items():
        ev = r["evaluation"] or {}
        o = ev.get("oracle_win_rate", {})
        lw = ev.get("learned_win_rate", {}).get("weighted")
        op = ev.get("reward_onpolicy") or {}
        acc = {w: "/".join(pct(op[w][d]["without_ties"]) for d in DIMS) if w in op else "-" for w in ("start", "end")}
        hacking = ", ".join(ev.get("reward_hacking") or []) or ("no" if "reward_hacking" in ev else "-")
        lines.append(
            f"| {ROWS[row]} | {pct(o.get('VQ'))} | {pct(o.get('MQ'))} | {pct(o.get('TA'))} | "
            f"{pct(o.get('weighted'))} | {pct(lw)} | {hacking} | {acc['start']} | {acc['end']} | "
            f"{r['labels_spent']} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from actors.online import run

    cfg = parse_cli(RefreshTableConfig, argv, __doc__.splitlines()[0])
    try:
        rows = {row: row_config(cfg, row) for row in cfg.row_list()}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {}
    for row, o in rows.items():
        run_dir = Path(o.out)
        if cfg.reuse and (run_dir / "summary.json").is_file() and _same_config(run_dir, o):
            print(f"[table] {row}: reusing {run_dir}", flush=True)
            summary = json.loads((run_dir / "summary.json").read_text())
        else:
            print(f"[table] {row}: running {run_dir}", flush=True)
            t0 = time.time()
            summary = run(o)
            summary.setdefault("total_seconds", round(time.time() - t0, 1))
            (run_dir / "table_reward.txt").write_text(reward_fingerprint(o.reward.model) + "\n")
        recs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        results[row] = {
            "run": str(run_dir),
            "evaluation": summary.get("evaluation"),
            "labels_spent": recs[-1].get("labels_spent", 0) if recs else 0,
            "refreshes": [r["refresh"] for r in recs if r.get("refresh")],
            "minutes": summary.get("total_seconds", 0.0) / 60.0,
        }
    md = markdown(results)
    o = next(iter(rows.values()))
    note = (
        f"Online Flow-DPO, {o.iterations} iterations of {o.prompts_per_iter} prompts x {o.group} clips, "
        f"{o.steps_per_iter} steps each; evaluation on {o.eval_n_prompts} held-out prompts x {o.eval_seeds} seeds "
        f"(same seeds for every row), judged by the oracle; learned reward: {cfg.learned}; refresh: every "
        f"{cfg.refresh.every} iterations, {cfg.refresh.pairs} labelled pairs and {cfg.refresh.steps} steps at lr "
        f"{cfg.refresh.lr:g}, {'replaying every earlier label' if cfg.refresh.replay else 'new labels only'}. On-policy "
        "accuracy: the served reward's accuracy without ties on within-prompt pairs of the pretrained (start) and "
        "final (end) policy's evaluation clips, rater labels. Command: "
        + " ".join(["python jobs/refresh_table.py", *(sys.argv[1:] if argv is None else argv)])
        + "\n\n"
    )
    out_md, out_json = table_files(cfg.out)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(repo_relative(note + md) + "\n")
    out_json.write_text(json.dumps(repo_relative({"config": to_dict(cfg), "rows": results}), indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
