"""VideoReward checkpoints in the VideoAlign layout, and the inference API.

Layout (as VideoAlign's released ``KwaiVGI/VideoReward`` directory)::

    DIR/
      model_config.json        {"model_config", "peft_lora_config", "data_config", "inference_config"}
      backbone/                Qwen2-VL config + weights + tokenizer, when the base is not a hub id
      checkpoint-{step}/
        adapter_model.safetensors   LoRA weights (peft state dict), absent without LoRA
        adapter_config.json
        non_lora_state_dict.pth     everything trainable that is not LoRA: reward head, vision tower,
                                    special-token embeddings (or the full language model without LoRA)

``model_config.model_name_or_path`` names the base Qwen2-VL: ``"backbone"`` (the folder above, for
models built from a config) or a local directory / hub id of a pretrained Qwen2-VL.
``inference_config`` holds the normalisation constants ``{VQ,MQ,TA}_{mean,std}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlhf.artefacts import verify_manifest as _verify
from rlhf.artefacts import write_manifest
from rlhf.device import DeviceConfig, as_device_config, module_device, module_dtype

from .model import DIMS, TrainableParts, VideoRewardModel, apply_trainable_parts, build_model
from .processor import FrameSampling, RewardProcessor, VisionGeometry

# VideoReward's own normalisation constants (VideoAlign inference config).
VIDEOREWARD_NORM = {"VQ_mean": 3.6757, "VQ_std": 2.2476, "MQ_mean": 1.1646, "MQ_std": 1.3811,
                    "TA_mean": 2.8105, "TA_std": 2.5121}


# The shipped default reward model (jobs/configs/train_reward.yaml; see its MANIFEST.json).
DEFAULT_REWARD = Path(__file__).resolve().parents[2] / "artefacts" / "reward_default"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing parts or does not match; the message names them."""


@dataclass
class RewardCheckpointInfo:
    model_name_or_path: str = "backbone"
    separate_tokens: bool = True
    parts: TrainableParts = field(default_factory=TrainableParts)
    sampling: FrameSampling = field(default_factory=FrameSampling)
    norm: dict = field(default_factory=lambda: {f"{d}_{s}": (0.0 if s == "mean" else 1.0)
                                                for d in DIMS for s in ("mean", "std")})


def _in_adapter(name: str) -> bool:
    """Parameters the peft adapter file holds (LoRA, trainable-token deltas), not non_lora_state_dict."""
    return "lora_" in name or "trainable_tokens_" in name


def _non_lora_state(model: VideoRewardModel) -> dict[str, torch.Tensor]:
    """Trainable parameters that the peft adapter file does not hold."""
    return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad and not _in_adapter(k)}


def _lora_settings(model: VideoRewardModel) -> dict:
    """LoRA settings as the model has them (not as a config claims)."""
    peft_cfg = getattr(model.vlm, "peft_config", {}).get("default")
    if peft_cfg is None:
        return {"lora_enable": False, "lora_r": 0, "lora_alpha": 0, "lora_dropout": 0.0}
    return {"lora_enable": True, "lora_r": int(peft_cfg.r), "lora_alpha": int(peft_cfg.lora_alpha),
            "lora_dropout": float(peft_cfg.lora_dropout)}


def save_backbone(vlm, tokenizer, out_dir: str | Path) -> Path:
    """Write the base Qwen2-VL and tokenizer to ``out_dir/backbone``; call it *before* adding LoRA."""
    if hasattr(vlm, "peft_config"):
        raise CheckpointError("save_backbone needs the plain Qwen2-VL, before LoRA is applied")
    dest = Path(out_dir) / "backbone"
    if not dest.exists():
        tmp = Path(out_dir) / "backbone.part"
        vlm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(dest)
    return dest


def save_checkpoint(model: VideoRewardModel, out_dir: str | Path, step: int, info: RewardCheckpointInfo) -> Path:
    """Write ``model`` in the VideoAlign layout; returns the ``checkpoint-{step}`` folder.

    The base model must already be in place: ``save_backbone`` (models built from a config) or
    ``info.model_name_or_path`` naming a pretrained directory."""
    import shutil

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    if info.model_name_or_path == "backbone" and not (out / "backbone" / "config.json").exists():
        raise CheckpointError(f"{out}/backbone is missing: call save_backbone before adding LoRA")
    cfg = {
        "model_config": {"model_name_or_path": info.model_name_or_path, "output_dim": 3,
                         "use_special_tokens": info.separate_tokens,
                         "special_tokens": ["<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>"]
                         if info.separate_tokens else ["<|reward|>"]},
        "peft_lora_config": {**_lora_settings(model), "vision": info.parts.vision,
                             "special_token_embeddings": info.parts.special_token_embeddings,
                             "lm_head": info.parts.lm_head},
        "data_config": {"fps": info.sampling.fps, "min_frame_pixels": info.sampling.min_pixels,
                        "max_frame_pixels": info.sampling.max_pixels, "max_frames": info.sampling.max_frames},
        "inference_config": dict(info.norm),
    }
    tmp_cfg = out / "model_config.json.part"
    tmp_cfg.write_text(json.dumps(cfg, indent=2))
    tmp_cfg.replace(out / "model_config.json")
    ck = out / f"checkpoint-{step}"
    tmp = out / f"checkpoint-{step}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if hasattr(model.vlm, "peft_config"):
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model.vlm).items()}
        save_file(adapter, str(tmp / "adapter_model.safetensors"))
        model.vlm.peft_config["default"].save_pretrained(str(tmp))
    torch.save(_non_lora_state(model), tmp / "non_lora_state_dict.pth")
    if ck.exists():
        shutil.rmtree(ck)
    tmp.rename(ck)
    return ck


def _latest_step(root: Path) -> int:
    steps = [int(m.group(1)) for p in root.glob("checkpoint-*") if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    if not steps:
        raise CheckpointError(f"checkpoint directory {root} has no checkpoint-<step> folder")
    return max(steps)


def read_info(root: Path) -> RewardCheckpointInfo:
    path = root / "model_config.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint directory {root} lacks model_config.json")
    try:
        cfg = json.loads(path.read_text())
        mc, lc, dc, ic = cfg["model_config"], cfg["peft_lora_config"], cfg.get("data_config", {}), cfg.get(
            "inference_config") or {}
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{path} is not a VideoAlign model config ({e}); it needs model_config and "
                              "peft_lora_config") from None
    return RewardCheckpointInfo(
        model_name_or_path=mc.get("model_name_or_path", "backbone"),
        separate_tokens=bool(mc.get("use_special_tokens", True)),
        parts=TrainableParts(lora_rank=int(lc.get("lora_r", 0)) if lc.get("lora_enable", True) else 0,
                             lora_alpha=int(lc.get("lora_alpha", 32)), lora_dropout=float(lc.get("lora_dropout", 0.0)),
                             vision=bool(lc.get("vision", True)),
                             special_token_embeddings=bool(lc.get("special_token_embeddings", True)),
                             lm_head=bool(lc.get("lm_head", False))),
        sampling=FrameSampling(fps=float(dc.get("fps", 2.0)), min_pixels=int(dc.get("min_frame_pixels", 56 * 56)),
                               max_pixels=int(dc.get("max_frame_pixels", 448 * 448)),
                               max_frames=int(dc.get("max_frames", 64))),
        norm={k: float(ic[k]) if k in ic else (0.0 if k.endswith("mean") else 1.0)
              for k in (f"{d}_{s}" for d in DIMS for s in ("mean", "std"))},
    )


def load_checkpoint(path: str | Path, step: int = -1):
    """Load a VideoAlign-layout directory -> (model, tokenizer, info, step). ``step=-1``: the latest."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    from .tokens import load_tokenizer

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    info = read_info(root)
    step = _latest_step(root) if step == -1 else step
    ck = root / f"checkpoint-{step}"
    base = root / info.model_name_or_path if (root / info.model_name_or_path).exists() else Path(info.model_name_or_path)
    needed = [base / "config.json", ck / "non_lora_state_dict.pth"]
    if info.parts.lora_rank > 0:
        needed.append(ck / "adapter_model.safetensors")
    missing = [str(p.relative_to(root) if p.is_relative_to(root) else p) for p in needed if not p.exists()]
    if missing:
        raise CheckpointError(f"checkpoint directory {root} is missing: {', '.join(missing)}")
    tokenizer = load_tokenizer(base)
    weightless = base.is_dir() and not _weight_files(base)
    if weightless:  # an exported full fine-tune: the checkpoint holds every parameter
        from transformers import Qwen2VLConfig

        vlm = Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_pretrained(str(base)))
    else:
        vlm = Qwen2VLForConditionalGeneration.from_pretrained(str(base))
    model = apply_trainable_parts(build_model(tokenizer, separate_tokens=info.separate_tokens, vlm=vlm), info.parts)
    if info.parts.lora_rank > 0:
        try:
            result = set_peft_model_state_dict(model.vlm, load_file(str(ck / "adapter_model.safetensors")))
        except KeyError as e:
            raise CheckpointError(f"{ck}/adapter_model.safetensors lacks adapter weight {e}") from None
        if getattr(result, "unexpected_keys", None):
            raise CheckpointError(f"{ck}/adapter_model.safetensors has unexpected keys {result.unexpected_keys[:3]}")
    state = torch.load(ck / "non_lora_state_dict.pth", map_location="cpu", weights_only=True)
    own = dict(model.named_parameters())
    unknown = [k for k in state if k not in own]
    if unknown:
        raise CheckpointError(f"{ck}/non_lora_state_dict.pth has parameters this model lacks: {unknown[:3]}")
    if not any(k.startswith("rm_head") for k in state):
        raise CheckpointError(f"{ck}/non_lora_state_dict.pth lacks the reward head (rm_head.weight)")
    if weightless:
        uncovered = [k for k in own if k not in state and not _in_adapter(k)]
        if uncovered:
            raise CheckpointError(f"{base} has no weights and {ck}/non_lora_state_dict.pth lacks {len(uncovered)} "
                                  f"parameter(s) such as {uncovered[:2]}: restore the backbone weights")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    model.eval()
    return model, tokenizer, info, step


def _weight_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]


def export_checkpoint(run_dir: str | Path, dest: str | Path, step: int = -1, meta: dict | None = None) -> dict:
    """Copy one checkpoint of a run into ``dest`` (same layout, loadable by ``load_checkpoint``) with a
    ``MANIFEST.json`` of every file's size and sha256 plus ``meta``. Backbone weights are left out when
    the checkpoint holds every parameter (a full fine-tune), which halves the size."""
    import shutil

    root = Path(run_dir)
    model, _, info, step = load_checkpoint(root, step)
    state = torch.load(root / f"checkpoint-{step}" / "non_lora_state_dict.pth", map_location="cpu", weights_only=True)
    full = all(k in state for k, _ in model.named_parameters() if not _in_adapter(k))
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    shutil.copy2(root / "model_config.json", tmp / "model_config.json")
    shutil.copytree(root / f"checkpoint-{step}", tmp / f"checkpoint-{step}")
    if info.model_name_or_path == "backbone":
        skip = {p.name for p in _weight_files(root / "backbone")} if full else set()
        shutil.copytree(root / "backbone", tmp / "backbone", ignore=lambda _d, names: [n for n in names if n in skip])
    manifest = write_manifest(tmp, {"step": step, "source": str(root), "backbone_weights_included": not full,
                                    **(meta or {})})
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


def verify_manifest(path: str | Path) -> dict:
    """Check every file listed in ``path/MANIFEST.json`` (size and sha256); raises CheckpointError."""
    return _verify(path, CheckpointError)


class VideoReward:
    """Inference: ``reward(videos, prompts)`` -> one ``{"VQ", "MQ", "TA", "Overall"}`` per video.

    Videos are file paths or ``uint8 (T, H, W, 3)`` arrays (with ``fps``). Normalised values are
    ``(raw - mean) / std`` per dimension; Overall is the sum of the three (VideoAlign semantics).
    ``device`` is a DeviceConfig (or a device string, meaning fp32): the model runs there in its
    precision, and the scores come back as fp32 numbers whatever the precision.
    """

    def __init__(self, model: VideoRewardModel, tokenizer, info: RewardCheckpointInfo,
                 device: DeviceConfig | str = "cpu"):
        self.device_config = as_device_config(device)
        self.model = model.place(self.device_config).eval()
        self.processor = RewardProcessor(tokenizer, info.sampling, info.separate_tokens,
                                         geometry=VisionGeometry.of(self.model.base_model()))
        self.info = info
        self.device = module_device(self.model)
        self.dtype = module_dtype(self.model)
        # (2, 3) mean and std per dimension, on the model's device in fp32: normalised where the raw
        # scores are computed, one transfer per batch.
        self._norm = torch.tensor([[info.norm[f"{d}_{s}"] for d in DIMS] for s in ("mean", "std")],
                                  dtype=torch.float32, device=self.device)

    @classmethod
    def default(cls, device: DeviceConfig | str = "cpu") -> "VideoReward":
        """The shipped moving-shapes reward model (``artefacts/reward_default``), checked against its manifest."""
        verify_manifest(DEFAULT_REWARD)
        return cls.from_checkpoint(DEFAULT_REWARD, device=device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, step: int = -1, device: DeviceConfig | str = "cpu") -> "VideoReward":
        model, tok, info, _ = load_checkpoint(path, step)
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
        batch = {k: t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)
                 for k, t in self.processor(frames, prompts, rates).items()}
        return self.model(**batch).float()

    def raw(self, videos: list, prompts: list[str], fps: float | list[float] = 8.0) -> np.ndarray:
        """(N, 3) float32 raw VQ, MQ, TA."""
        return self._raw(videos, prompts, fps).cpu().numpy()

    def reward(self, videos: list, prompts: list[str], fps: float | list[float] = 8.0, use_norm: bool = True) -> list[dict]:
        raw = self._raw(videos, prompts, fps)
        if use_norm:
            raw = (raw - self._norm[0]) / self._norm[1]
        out = []
        for row in raw.cpu().tolist():
            r = dict(zip(DIMS, row))
            r["Overall"] = r["VQ"] + r["MQ"] + r["TA"]
            out.append(r)
        return out
