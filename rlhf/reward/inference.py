"""VideoReward inference: ``VideoReward.reward(videos, prompts)`` and the one normalisation of its scores.

A checkpoint's ``inference_config`` holds ``{D}_mean`` and ``{D}_std`` per dimension (VQ, MQ, TA); a
normalised score is ``(raw - mean) / std`` and ``Overall`` is the sum of the three normalised (or raw)
dimensions (VideoAlign's semantics). ``normalise`` and ``with_overall`` are the only place this is written:
the Serve backends, the reward trainer's evaluation and the judges all call them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rlhf.device import DeviceConfig, as_device_config, module_device, module_dtype
from rlhf.dims import DIMS

from .checkpoint import DEFAULT_REWARD, RewardCheckpointInfo, load_checkpoint, verify_manifest
from .model import VideoRewardModel
from .processor import RewardProcessor, VisionGeometry


def norm_table(norm: dict[str, float]) -> list[list[float]]:
    """``[[VQ_mean, MQ_mean, TA_mean], [VQ_std, MQ_std, TA_std]]`` of a checkpoint's ``norm``."""
    return [[norm[f"{d}_{s}"] for d in DIMS] for s in ("mean", "std")]


def normalise(raw, norm):
    """``(raw - mean) / std`` per dimension; ``raw[..., 3]`` as an array or tensor, ``norm`` a checkpoint's
    dict or a (2, 3) table (``norm_table``) of the same kind as ``raw``."""
    table = norm_table(norm) if isinstance(norm, dict) else norm
    if isinstance(raw, torch.Tensor):
        table = torch.as_tensor(table, dtype=raw.dtype, device=raw.device)
        return (raw - table[0]) / table[1]
    table = np.asarray(table, np.float64)
    return (np.asarray(raw, np.float64) - table[0]) / table[1]


def with_overall(row) -> dict[str, float]:
    """(VQ, MQ, TA) -> ``{"VQ", "MQ", "TA", "Overall"}`` with Overall their sum."""
    r = {d: float(v) for d, v in zip(DIMS, row)}
    r["Overall"] = r["VQ"] + r["MQ"] + r["TA"]
    return r


class VideoReward:
    """Inference: ``reward(videos, prompts)`` -> one ``{"VQ", "MQ", "TA", "Overall"}`` per video.

    Videos are file paths or ``uint8 (T, H, W, 3)`` arrays (with ``fps``). Normalised values are
    ``(raw - mean) / std`` per dimension; Overall is the sum of the three (VideoAlign semantics).
    ``device`` is a DeviceConfig (or a device string, meaning fp32): the model runs there in its
    precision, and the scores come back as fp32 numbers whatever the precision.
    """

    def __init__(
        self, model: VideoRewardModel, tokenizer, info: RewardCheckpointInfo, device: DeviceConfig | str = "cpu"
    ):
        self.device_config = as_device_config(device)
        self.model = model.place(self.device_config).eval()
        self.processor = RewardProcessor(
            tokenizer,
            info.sampling,
            info.separate_tokens,
            geometry=VisionGeometry.of(self.model.base_model()),
            template=info.template,
        )
        self.info = info
        self.device = module_device(self.model)
        self.dtype = module_dtype(self.model)
        # (2, 3) mean and std per dimension, on the model's device in fp32: normalised where the raw
        # scores are computed, one transfer per batch.
        self._norm = torch.tensor(norm_table(info.norm), dtype=torch.float32, device=self.device)

    @classmethod
    def default(cls, device: DeviceConfig | str = "cpu") -> VideoReward:
        """The shipped moving-shapes reward model (``artefacts/reward_default``), checked against its manifest."""
        verify_manifest(DEFAULT_REWARD)
        return cls.from_checkpoint(DEFAULT_REWARD, device=device)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, step: int = -1, device: DeviceConfig | str = "cpu", cache_dir: str | Path | None = None
    ) -> VideoReward:
        """A checkpoint directory or hub id (``KwaiVGI/VideoReward``) in the release's layout."""
        model, tok, info, _ = load_checkpoint(path, step, cache_dir)
        return cls(model, tok, info, device)

    @torch.no_grad()
    def _raw(self, videos: list, prompts: list[str], fps: float | list[float]) -> torch.Tensor:
        """(N, 3) fp32 raw rewards on the model's device."""
        from rlhf.video import read_video_fps

        frames, rates = [], []
        for i, v in enumerate(videos):
            if isinstance(v, (str, Path)):
                arr, r = read_video_fps(v)
            else:
                arr, r = v, (fps[i] if isinstance(fps, (list, tuple)) else fps)
            frames.append(arr)
            rates.append(r)
        return self._forward(self.processor(frames, prompts, rates))

    def _forward(self, inputs: dict) -> torch.Tensor:
        """(N, 3) fp32 raw rewards of a processed batch (``self.processor``'s output)."""
        batch = {
            k: t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device) for k, t in inputs.items()
        }
        return self.model(**batch).float()

    def raw(self, videos: list, prompts: list[str], fps: float | list[float] = 8.0) -> np.ndarray:
        """(N, 3) float32 raw VQ, MQ, TA."""
        return self._raw(videos, prompts, fps).cpu().numpy()

    def reward(
        self, videos: list, prompts: list[str], fps: float | list[float] = 8.0, use_norm: bool = True
    ) -> list[dict]:
        raw = self._raw(videos, prompts, fps)
        return [with_overall(row) for row in (normalise(raw, self._norm) if use_norm else raw).cpu().tolist()]
