# Long on purpose: the VideoAlign release's checkpoint layout, both ways (save, load, export, verify), in one place:
# a format written in two files drifts.
"""VideoReward checkpoints in the VideoAlign release's layout, and the inference API.

Layout (``KwaiVGI/VideoReward``, as VideoAlign's ``train_reward.py`` / ``VideoVLMRewardTrainer`` write it)::

    DIR/
      model_config.json        {"data_config", "training_args", "model_config", "peft_lora_config",
                                "inference_config"} (+ "rlhf": this project's extras, which the release ignores)
      backbone/                Qwen2-VL config + weights + tokenizer, when the base is not a hub id
      checkpoint-{step}/
        adapter_model.safetensors   LoRA weights (peft's save_pretrained), absent without LoRA
        adapter_config.json
        non_lora_state_dict.pth     every trainable parameter that is not LoRA: the reward head, the vision
                                    tower, the whole (resized) embedding matrix holding the reward tokens (or
                                    the full language model without LoRA)

``model_config.model_name_or_path`` names the base Qwen2-VL: a hub id (the release's
``Qwen/Qwen2-VL-2B-Instruct``), a local directory, or ``"backbone"`` (the folder above, for models built
from a config). ``DIR`` itself may be a hub id (``KwaiVGI/VideoReward``). ``inference_config`` holds the
normalisation constants ``{VQ,MQ,TA}_{mean,std}``.

How the release is read (its ``train_reward.create_model_and_processor``, ``utils.load_model_from_checkpoint``,
``inference.VideoVLMRewardInference``), and where it was ambiguous:
- The reward tokens are added to the base tokenizer as ``additional_special_tokens`` (VQ, MQ, TA: ids
  ``len(tokenizer)`` onwards) and the embeddings are resized to ``len(tokenizer)`` (for Qwen2-VL-2B this
  *shrinks* the 151936-row matrix to 151660 rows, as the release's training did).
- Parameter names are those of transformers 4.45 (the release's pin) under peft: ``base_model.model.`` +
  ``model.layers.*`` (language model), ``visual.*``, ``lm_head``, ``rm_head``. They are mapped to transformers
  5's ``model.language_model.*`` / ``model.visual.*``. LoRA's targets are read off the adapter's keys (the
  release wraps every linear layer of the language model), rank and alpha off ``adapter_config.json``.
- The head is ``rm_head = Linear(hidden, output_dim=3, bias=False)`` applied at each reward token, VQ read from
  the first, MQ from the second, TA from the third (the diagonal); other ``output_dim`` / ``reward_token``
  settings are refused.
- The prompt is ``prompt_template_type`` ("detailed_special") in one user message after the video, in the
  base's chat template with the generation prompt. Frames: ``sample_type="uniform"``, ``fps`` (or
  ``num_frames``), at least 4, within [128 * 28 * 28, ``max_frame_pixels``] pixels (the maximum wins), resized
  to uint8 (torchvision resizes the uint8 frames qwen-vl-utils reads), CLIP-normalised.
- Normalisation: ``(raw - mean) / std`` per dimension from ``inference_config``, none without it;
  Overall = VQ + MQ + TA.
- Ambiguous: whether ``non_lora_state_dict.pth`` holds the embedding matrix depends on the trainer's optimiser
  set-up (``special_token_lr`` makes it trainable, hence saved); without it the new rows keep transformers'
  resize initialisation and a warning says so. A ``tokenizer/`` folder the trainer may save is not read: the
  release's own inference rebuilds the tokenizer from the base, and so does this loader.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.artefacts import verify_manifest as _verify
from rlhf.artefacts import write_manifest
from rlhf.device import module_device
from rlhf.dims import DIMS

from .model import TrainableParts, VideoRewardModel, apply_trainable_parts, build_model
from .processor import RELEASE_SAMPLING, FrameSampling

# VideoReward's own normalisation constants (VideoAlign inference config).
VIDEOREWARD_NORM = {
    "VQ_mean": 3.6757,
    "VQ_std": 2.2476,
    "MQ_mean": 1.1646,
    "MQ_std": 1.3811,
    "TA_mean": 2.8105,
    "TA_std": 2.5121,
}
PEFT_PREFIX = "base_model.model."  # what peft puts before the wrapped model's parameter names
LORA_EXCLUDE = ["lm_head", "rm_head", "embed_tokens", "visual"]  # the release's lora_namespan_exclude


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
    norm: dict = field(
        default_factory=lambda: {f"{d}_{s}": (0.0 if s == "mean" else 1.0) for d in DIMS for s in ("mean", "std")}
    )
    template: str = "world"  # world (tokens.render_prompt) | detailed_special (the release's, in the chat template)
    use_rslora: bool = False


def _in_adapter(name: str) -> bool:
    """Parameters the peft adapter holds (LoRA, trainable-token deltas), not non_lora_state_dict."""
    return "lora_" in name or "trainable_tokens_" in name


def canonical_name(key: str) -> str:
    """A parameter name as the release (transformers 4.45, under peft), an earlier version of this project
    or peft writes it -> its name in :class:`VideoRewardModel` without peft (``vlm.model.language_model.*``,
    ``vlm.model.visual.*``, ``vlm.lm_head.*``, ``rm_head.*``)."""
    k = key[4:] if key.startswith("vlm.") else key
    k = k[len(PEFT_PREFIX) :] if k.startswith(PEFT_PREFIX) else k
    k = k.replace(".base_layer.", ".").replace(".token_adapter.", ".")
    if k.startswith("rm_head."):
        return k
    if k.startswith("visual."):
        k = "model." + k
    elif k.startswith("model.") and not k.startswith(("model.language_model.", "model.visual.")):
        k = "model.language_model." + k[len("model.") :]
    return "vlm." + k


def release_name(canonical: str, peft: bool) -> str:
    """The inverse of :func:`canonical_name`: the name the release's trainer saves."""
    k = canonical
    if k.startswith("vlm."):
        k = k[4:]
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model.") :]
        elif k.startswith("model.visual."):
            k = k[len("model.") :]
    return (PEFT_PREFIX if peft else "") + k


def _release_state(model: VideoRewardModel) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA weights, every other trainable parameter) named as the release's trainer saves them. Trainable
    token rows (peft ``trainable_token_indices``) are merged into the full embedding matrix, as the release
    keeps them."""
    from peft import get_peft_model_state_dict

    peft = hasattr(model.vlm, "peft_config")
    lora = {}
    if peft:
        for k, v in get_peft_model_state_dict(model.vlm).items():
            if "lora_" in k:
                lora[release_name("vlm." + k[len(PEFT_PREFIX) :], True)] = v.detach().cpu().contiguous()
    rest, tokens = {}, False
    for k, v in model.named_parameters():
        if not v.requires_grad or "lora_" in k:
            continue
        if "trainable_tokens_" in k:
            tokens = True
            continue
        rest[release_name(canonical_name(k), peft)] = v.detach().cpu()
    if tokens:
        name = "vlm.model.language_model.embed_tokens.weight"
        rows = next(v.shape[0] for k, v in model.named_parameters() if canonical_name(k) == name)
        with torch.no_grad():  # the embedding of every id, with the trained rows in place
            full = model.vlm.get_input_embeddings()(torch.arange(rows, device=module_device(model))).detach().cpu()
        rest[release_name(name, peft)] = full
    return lora, rest


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


def release_config(model: VideoRewardModel, info: RewardCheckpointInfo) -> dict:
    """``model_config.json`` as the release writes it (keys its dataclasses accept), plus ``rlhf``: what this
    project adds (the release's loader ignores unknown top-level keys)."""
    s, parts = info.sampling, info.parts
    peft_cfg = getattr(model.vlm, "peft_config", {}).get("default")
    return {
        "data_config": {
            "meta_data": "",
            "data_dir": "",
            "meta_data_test": None,
            "max_frame_pixels": s.max_pixels,
            "num_frames": s.num_frames or None,
            "fps": s.fps,
            "p_shuffle_frames": 0.0,
            "p_color_jitter": 0.0,
            "eval_dim": list(DIMS),
            "prompt_template_type": info.template,
            "add_noise": False,
            "sample_type": "uniform",
            "use_tied_data": True,
        },
        "training_args": {},
        "model_config": {
            "model_name_or_path": info.model_name_or_path,
            "output_dim": 3,
            "use_special_tokens": True,
            "reward_token": "special",
            "freeze_vision_tower": not parts.vision,
        },
        "peft_lora_config": {
            "lora_enable": peft_cfg is not None,
            "lora_r": int(peft_cfg.r) if peft_cfg else 0,
            "lora_alpha": int(peft_cfg.lora_alpha) if peft_cfg else 0,
            "lora_dropout": float(peft_cfg.lora_dropout) if peft_cfg else 0.0,
            "vision_lora": False,
            "lora_target_modules": None,
            "lora_namespan_exclude": LORA_EXCLUDE,
            "lora_task_type": "CAUSAL_LM",
            "use_rslora": bool(peft_cfg.use_rslora) if peft_cfg else False,
        },
        "inference_config": dict(info.norm),
        "rlhf": {
            "format": 2,
            "separate_tokens": info.separate_tokens,
            "min_frame_pixels": s.min_pixels,
            "max_frames": s.max_frames,
            "min_frames": s.min_frames,
            "vision": parts.vision,
            "special_token_embeddings": parts.special_token_embeddings,
            "lm_head": parts.lm_head,
        },
    }


def save_checkpoint(model: VideoRewardModel, out_dir: str | Path, step: int, info: RewardCheckpointInfo) -> Path:
    """Write ``model`` in the release's layout (names as its trainer saves them); returns ``checkpoint-{step}``.

    The base model must already be in place: ``save_backbone`` (models built from a config) or
    ``info.model_name_or_path`` naming a pretrained directory or hub id."""
    import shutil

    from peft import LoraConfig
    from safetensors.torch import save_file

    out = Path(out_dir)
    if info.model_name_or_path == "backbone" and not (out / "backbone" / "config.json").exists():
        raise CheckpointError(f"{out}/backbone is missing: call save_backbone before adding LoRA")
    tmp_cfg = out / "model_config.json.part"
    tmp_cfg.write_text(json.dumps(release_config(model, info), indent=2))
    tmp_cfg.replace(out / "model_config.json")
    ck = out / f"checkpoint-{step}"
    tmp = out / f"checkpoint-{step}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    lora, rest = _release_state(model)
    if lora:
        peft_cfg = model.vlm.peft_config["default"]
        save_file(lora, str(tmp / "adapter_model.safetensors"))
        targets = sorted({k[len(PEFT_PREFIX) :].split(".lora_")[0] for k in lora})
        LoraConfig(
            r=peft_cfg.r,
            lora_alpha=peft_cfg.lora_alpha,
            lora_dropout=peft_cfg.lora_dropout,
            target_modules=targets,
            use_rslora=peft_cfg.use_rslora,
            task_type="CAUSAL_LM",
            bias="none",
        ).save_pretrained(str(tmp))
    torch.save(rest, tmp / "non_lora_state_dict.pth")
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
    """The settings of a checkpoint directory: the release's ``model_config.json``, this project's (with its
    ``rlhf`` extras) or an earlier version of this project's."""
    path = root / "model_config.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint directory {root} lacks model_config.json")
    try:
        cfg = json.loads(path.read_text())
        mc, lc, dc, ic = (
            cfg["model_config"],
            cfg["peft_lora_config"],
            cfg.get("data_config", {}),
            cfg.get("inference_config") or {},
        )
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a VideoAlign model config ({e}); it needs model_config and peft_lora_config"
        ) from None
    ours = cfg.get("rlhf")
    legacy = "special_tokens" in mc  # this project before it wrote the release's layout
    release = ours is None and not legacy
    x = {**lc, **dc, **(ours or {})}
    if int(mc.get("output_dim", 3)) != 3:
        raise CheckpointError(
            f"{path}: output_dim {mc['output_dim']} is not supported (VideoReward's head has 3 "
            "outputs, one per dimension)"
        )
    if release and (not mc.get("use_special_tokens", False) or mc.get("reward_token", "special") != "special"):
        raise CheckpointError(
            f"{path}: reward_token {mc.get('reward_token')!r} / use_special_tokens "
            f"{mc.get('use_special_tokens')} is not supported: only the released model's "
            "special-token read-out (reward_token='special', use_special_tokens=true)"
        )
    if dc.get("sample_type", "uniform") != "uniform":
        raise CheckpointError(f"{path}: sample_type {dc['sample_type']!r} is not supported (only 'uniform')")
    separate = (len(mc["special_tokens"]) == 3) if legacy else bool(x.get("separate_tokens", True))
    base_sampling = RELEASE_SAMPLING if release else FrameSampling()
    sampling = FrameSampling(
        fps=float(dc.get("fps") or 2.0),
        num_frames=int(dc.get("num_frames") or 0),
        min_pixels=int(x.get("min_frame_pixels", base_sampling.min_pixels)),
        max_pixels=int(dc.get("max_frame_pixels", 240 * 320)),
        max_frames=int(x.get("max_frames", base_sampling.max_frames)),
        min_frames=int(x.get("min_frames", base_sampling.min_frames)),
    )
    lora_on = bool(lc.get("lora_enable", True)) and int(lc.get("lora_r", 0)) > 0
    return RewardCheckpointInfo(
        model_name_or_path=mc.get("model_name_or_path", "backbone"),
        separate_tokens=separate,
        parts=TrainableParts(
            lora_rank=int(lc.get("lora_r", 0)) if lora_on else 0,
            lora_alpha=int(lc.get("lora_alpha", 32)),
            lora_dropout=float(lc.get("lora_dropout", 0.0)),
            vision=bool(x.get("vision", not mc.get("freeze_vision_tower", False))),
            special_token_embeddings=bool(x.get("special_token_embeddings", True)),
            lm_head=bool(x.get("lm_head", False)),
        ),
        sampling=sampling,
        norm={
            k: float(ic[k]) if k in ic else (0.0 if k.endswith("mean") else 1.0)
            for k in (f"{d}_{s}" for d in DIMS for s in ("mean", "std"))
        },
        template=str(dc.get("prompt_template_type") or "world"),
        use_rslora=bool(lc.get("use_rslora", False)),
    )


def _chat_template(base: Path) -> str | None:
    """The base model's chat template when its tokenizer does not carry one (Qwen2-VL keeps it in the
    processor's ``chat_template.json``; newer saves in ``chat_template.jinja``)."""
    if (base / "chat_template.jinja").is_file():
        return (base / "chat_template.jinja").read_text()
    if (base / "chat_template.json").is_file():
        return json.loads((base / "chat_template.json").read_text()).get("chat_template")
    return None


def _load_tokenizer(base: Path, info: RewardCheckpointInfo):
    """The base's tokenizer with the reward tokens (added as the release's trainer adds them when missing);
    returns (tokenizer, whether tokens were added)."""
    from transformers import AutoTokenizer

    from .tokens import VIDEO_PAD, VISION_END, VISION_START, add_reward_tokens

    tok = AutoTokenizer.from_pretrained(str(base))
    added = add_reward_tokens(tok, info.separate_tokens)
    tok.padding_side = "left"
    missing = [
        t for t in (VIDEO_PAD, VISION_START, VISION_END) if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)
    ]
    if missing:
        raise CheckpointError(f"tokenizer of {base} lacks Qwen2-VL's token(s) {', '.join(missing)}")
    if info.template != "world" and not getattr(tok, "chat_template", None):
        tok.chat_template = _chat_template(base)
        if not tok.chat_template:
            raise CheckpointError(
                f"{base} has no chat template (tokenizer_config.json, chat_template.json or "
                f"chat_template.jinja): the {info.template!r} prompt lives inside it"
            )
    return tok, added


def load_checkpoint(path: str | Path, step: int = -1, cache_dir: str | Path | None = None):
    """Load a checkpoint directory or hub id in the release's layout -> (model, tokenizer, info, step).
    ``step=-1``: the latest. ``cache_dir``: the Hugging Face cache for hub ids (default: huggingface_hub's)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    from rlhf.hub import HubError, resolve

    try:
        root = resolve(path, "reward model", cache_dir)
    except HubError as e:
        raise CheckpointError(str(e)) from None
    info = read_info(root)
    step = _latest_step(root) if step == -1 else step
    ck = root / f"checkpoint-{step}"
    local_base = root / info.model_name_or_path
    try:
        base = (
            local_base if local_base.is_dir() else resolve(info.model_name_or_path, f"base model of {root}", cache_dir)
        )
    except HubError as e:
        raise CheckpointError(str(e)) from None
    needed = [base / "config.json", ck / "non_lora_state_dict.pth"]
    if info.parts.lora_rank > 0:
        needed.append(ck / "adapter_model.safetensors")
    missing = [str(p.relative_to(root) if p.is_relative_to(root) else p) for p in needed if not p.exists()]
    if missing:
        raise CheckpointError(f"checkpoint directory {root} is missing: {', '.join(missing)}")
    tokenizer, added = _load_tokenizer(base, info)
    weightless = not _weight_files(base)
    if weightless:  # an exported full fine-tune: the checkpoint holds every parameter
        from transformers import Qwen2VLConfig

        vlm = Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_pretrained(str(base)))
    else:
        vlm = Qwen2VLForConditionalGeneration.from_pretrained(str(base))
    state = {
        canonical_name(k): v
        for k, v in torch.load(ck / "non_lora_state_dict.pth", map_location="cpu", weights_only=True).items()
    }
    embed = state.get("vlm.model.language_model.embed_tokens.weight")
    rows = embed.shape[0] if embed is not None else (len(tokenizer) if added else None)
    if rows is not None and rows != vlm.get_input_embeddings().weight.shape[0]:
        vlm.resize_token_embeddings(rows)  # the release: len(tokenizer) after adding the reward tokens
    if added and embed is None:
        warnings.warn(
            f"{ck}/non_lora_state_dict.pth holds no embedding matrix: the reward tokens' embeddings keep "
            "transformers' resize initialisation",
            stacklevel=2,
        )
    model = build_model(tokenizer, separate_tokens=info.separate_tokens, vlm=vlm)
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise CheckpointError(f"{ck}/non_lora_state_dict.pth has parameters this model lacks: {unknown[:3]}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(f"{ck}/non_lora_state_dict.pth does not match the base model {base}: {wrong[:2]}")
    if "rm_head.weight" not in state:
        raise CheckpointError(f"{ck}/non_lora_state_dict.pth lacks the reward head (rm_head.weight)")
    if weightless:
        uncovered = [k for k, _ in model.named_parameters() if k not in state]
        if uncovered:
            raise CheckpointError(
                f"{base} has no weights and {ck}/non_lora_state_dict.pth lacks {len(uncovered)} "
                f"parameter(s) such as {uncovered[:2]}: restore the backbone weights"
            )
    model.load_state_dict(state, strict=False)
    lora, targets = {}, None
    if info.parts.lora_rank > 0:
        lora = {
            PEFT_PREFIX + canonical_name(k)[len("vlm.") :]: v
            for k, v in load_file(str(ck / "adapter_model.safetensors")).items()
        }
        targets = sorted({k[len(PEFT_PREFIX) :].split(".lora_")[0] for k in lora if ".lora_" in k})
        if not targets:
            raise CheckpointError(f"{ck}/adapter_model.safetensors holds no LoRA weights (lora_A / lora_B)")
        ac = ck / "adapter_config.json"
        if ac.is_file():  # peft's own record of rank and alpha wins over model_config.json
            a = json.loads(ac.read_text())
            from dataclasses import replace

            info.parts = replace(
                info.parts,
                lora_rank=int(a.get("r", info.parts.lora_rank)),
                lora_alpha=int(a.get("lora_alpha", info.parts.lora_alpha)),
            )
            info.use_rslora = bool(a.get("use_rslora", info.use_rslora))
    model = apply_trainable_parts(model, info.parts, targets, info.use_rslora)
    if lora:
        from peft import get_peft_model_state_dict

        # trainable reward-token rows start from the embedding matrix loaded above (the release keeps them there)
        lora.update({k: v for k, v in get_peft_model_state_dict(model.vlm).items() if "trainable_tokens_" in k})
        result = set_peft_model_state_dict(model.vlm, lora)
        if getattr(result, "unexpected_keys", None):
            raise CheckpointError(f"{ck}/adapter_model.safetensors has unexpected keys {result.unexpected_keys[:3]}")
        n_lora = sum(1 for k, _ in model.vlm.named_parameters() if ".lora_" in k)
        if n_lora != sum(1 for k in lora if ".lora_" in k):
            raise CheckpointError(
                f"{ck}/adapter_model.safetensors holds {len(targets) * 2} LoRA tensors for {n_lora} "
                "LoRA parameters of the model"
            )
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
    state = {
        canonical_name(k)
        for k in torch.load(
            root / f"checkpoint-{step}" / "non_lora_state_dict.pth", map_location="cpu", weights_only=True
        )
    }
    full = all(canonical_name(k) in state for k, _ in model.named_parameters() if not _in_adapter(k))
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
    manifest = write_manifest(
        tmp, {"step": step, "source": str(root), "backbone_weights_included": not full, **(meta or {})}
    )
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


def verify_manifest(path: str | Path) -> dict:
    """Check every file listed in ``path/MANIFEST.json`` (size and sha256); raises CheckpointError."""
    return _verify(path, CheckpointError)
