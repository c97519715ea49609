"""Export a trained reward model as a small, self-contained artefact with a manifest.

    python jobs/export_reward.py --run runs/reward_default --out artefacts/reward_default

Copies the latest (or ``step=N``) checkpoint of ``run`` in the VideoAlign layout (backbone weights
left out when the checkpoint holds every parameter) and writes ``MANIFEST.json``: every file's size
and sha256, the training config, the command that reproduces it, the wall time of the training run
and its held-out evaluation. ``rlhf.reward.checkpoint.verify_manifest`` checks an artefact.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf.config import parse_cli


@dataclass
class ExportRewardConfig:
    run: str = "runs/reward_default"  # a train_reward run directory
    out: str = "artefacts/reward_default"  # artefact directory (the checkpoint and MANIFEST.json)
    step: int = -1  # -1: the latest checkpoint
    command: str = (  # the command that reproduces the run (recorded in MANIFEST.json)
        "python jobs/make_dataset.py --pairs 1000 --out runs/eval_heldout sampling.heldout_fraction=1.0 "
        "seed=99 && python jobs/train_reward.py --config jobs/configs/train_reward.yaml"
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from rlhf.reward.checkpoint import CheckpointError, export_checkpoint

    cfg = parse_cli(
        ExportRewardConfig,
        argv,
        __doc__.splitlines()[0],
        {"--run": ("run", str, "training run directory"), "--out": ("out", str, "artefact directory")},
    )
    run = Path(cfg.run)
    meta = {"command": cfg.command}
    for name, key, load in (
        ("config.yaml", "train_config", yaml.safe_load),
        ("run_time.json", "train_time", json.loads),
        ("eval.json", "eval", json.loads),
    ):
        if (run / name).is_file():
            meta[key] = load((run / name).read_text())
    try:
        manifest = export_checkpoint(run, cfg.out, cfg.step, meta)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f["bytes"] for f in manifest["files"].values())
    print(
        f"exported step {manifest['step']} of {run} to {cfg.out}: {len(manifest['files'])} files, {size / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
