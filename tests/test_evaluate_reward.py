"""evaluate_reward: rows from checkpoints plus the oracle ceiling, as Markdown and JSON."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rlhf.reward.checkpoint import RewardCheckpointInfo, save_backbone, save_checkpoint
from rlhf.reward.model import TrainableParts, apply_trainable_parts, build_model
from rlhf.reward.tokens import world_tokenizer
from rlhf.synthetic.dataset import PairSampling, build_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_table_has_checkpoint_rows_and_a_ceiling_computed_from_oracle_scores(tmp_path):
    build_dataset(
        tmp_path / "ds", pairs=24, seed=11, workers=1, progress=False, sampling=PairSampling(heldout_fraction=1.0)
    )
    tok = world_tokenizer()
    model = build_model(tok, seed=1)
    save_backbone(model.vlm, tok, tmp_path / "rm")
    model = apply_trainable_parts(model, TrainableParts(lora_rank=4))
    save_checkpoint(model, tmp_path / "rm", 7, RewardCheckpointInfo())
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jobs/evaluate_reward.py"),
            "--data",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "eval"),
            "--checkpoint",
            str(tmp_path / "rm"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert set(out["rows"]) == {"rm", "ceiling (oracle scores)"} and out["runs"]["rm"]["step"] == 7
    # The ceiling row, recomputed by hand: sign agreement of oracle score differences with labels.
    import pyarrow.parquet as pq

    recs = pq.read_table(tmp_path / "ds" / "prefs.parquet").to_pylist()
    h = np.array([{"A": 1, "B": -1, "same": 0}[r["TA"]] for r in recs])
    m = np.array([r["score_a"]["TA"] - r["score_b"]["TA"] for r in recs])
    keep = h != 0
    expected = np.mean(np.sign(m[keep]) == h[keep])
    assert out["rows"]["ceiling (oracle scores)"]["TA"]["without_ties"] == expected
    md = (tmp_path / "eval" / "table.md").read_text()
    assert "| rm |" in md and "| ceiling (oracle scores) |" in md
