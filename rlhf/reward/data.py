"""Preference pairs as reward-model training batches.

Records come from the preference parquet (``rlhf.data.schema``). Videos are decoded when a batch is
built; a missing or corrupt video is reported with its row and id and the pair is skipped, so one bad
file never stops training. Labels per dimension: 1 (A), -1 (B), 0 (tie), ``MASK`` (not annotated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from rlhf.data.schema import LABEL_VALUE
from rlhf.dims import DIMS

MASK = 9  # any value other than 1, -1, 0 is "not annotated" for the losses
log = logging.getLogger(__name__)


def label_tensor(records: list[dict], dims=DIMS) -> torch.Tensor:
    return torch.tensor(
        [[LABEL_VALUE.get(r.get(d), MASK) if r.get(d) is not None else MASK for d in dims] for r in records],
        dtype=torch.long,
    )


def score_tensor(records: list[dict], side: str, dims=DIMS) -> torch.Tensor:
    nan = float("nan")
    return torch.tensor(
        [
            [(r.get(f"score_{side}") or {}).get(d, nan) if r.get(f"score_{side}") else nan for d in dims]
            for r in records
        ],
        dtype=torch.float32,
    )


@dataclass
class SkippedPair:
    row: int
    id: str
    reason: str


@dataclass
class PairBatch:
    inputs: dict  # 2B videos: the A side of every pair, then the B side (one forward pass)
    labels: torch.Tensor  # (B, 3)
    overall: torch.Tensor  # (B,)
    score_a: torch.Tensor  # (B, 3)
    score_b: torch.Tensor
    records: list[dict]
    skipped: list[SkippedPair] = field(default_factory=list)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> PairBatch:
        """This batch on ``device`` (the model's), pixel values in ``dtype`` (the model's); labels and
        scores keep their own types (scores are loss targets: fp32)."""
        inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in self.inputs.items()}
        return replace(
            self,
            inputs=inputs,
            labels=self.labels.to(device),
            overall=self.overall.to(device),
            score_a=self.score_a.to(device),
            score_b=self.score_b.to(device),
        )


def build_batch(records: list[dict], root: str | Path, processor, rows: list[int] | None = None) -> PairBatch | None:
    """Decode and process a list of records; bad videos are skipped (reported in ``skipped``).
    Returns None when every pair of the batch was bad."""
    from rlhf.video import VideoError, read_video_fps

    root = Path(root)
    rows = rows if rows is not None else list(range(1, len(records) + 1))
    good, inputs_a, inputs_b, skipped = [], [], [], []
    for row, r in zip(rows, records):
        try:  # decode and patchify once; a bad file fails here, for its own pair only
            a = processor.video_inputs(*read_video_fps(root / r["video_a"]), name=r["video_a"])
            b = processor.video_inputs(*read_video_fps(root / r["video_b"]), name=r["video_b"])
        except VideoError as e:
            skipped.append(SkippedPair(row, str(r.get("id")), str(e)))
            log.warning("skipping pair at row %d (id %s): %s", row, r.get("id"), e)
            continue
        good.append(r)
        inputs_a.append(a)
        inputs_b.append(b)
    if not good:
        return None
    prompts = [r["prompt"] for r in good]
    return _batch(good, processor.encode(inputs_a + inputs_b, prompts + prompts), skipped)


def _batch(records: list[dict], inputs: dict, skipped: list[SkippedPair] | None = None) -> PairBatch:
    return PairBatch(
        inputs=inputs,
        labels=label_tensor(records),
        overall=label_tensor(records, ("Overall",))[:, 0],
        score_a=score_tensor(records, "a"),
        score_b=score_tensor(records, "b"),
        records=records,
        skipped=skipped or [],
    )


def batch_from_frames(
    records: list[dict], frames_a: list, frames_b: list, fps_a: list, fps_b: list, processor
) -> PairBatch:
    """A batch from decoded frames (used for pairs generated in memory)."""
    prompts = [r["prompt"] for r in records]
    return _batch(records, processor(frames_a + frames_b, prompts + prompts, list(fps_a) + list(fps_b)))
