"""LoRA adapters of the generator on disk: written in diffusers' format, read in diffusers', peft's and
(deprecated) the project's first layout.

Written (every adapter the project saves: an online run's ``adapter/`` and its checkpoints' ``adapter/``,
offline alignment's ``adapter/``), by diffusers' own writer ``WanPipeline.save_lora_weights``:

* ``pytorch_lora_weights.safetensors``: keys ``transformer.<module>.lora_A.weight`` / ``lora_B.weight``
  (peft's names, as ``get_peft_model_state_dict`` gives them) and, in the file's ``lora_adapter_metadata``
  header, the ``LoraConfig`` (rank, alpha, targets), so that diffusers rebuilds the same scale
  ``alpha / rank`` (without it diffusers takes alpha = rank);
* ``adapter_info.json``: the project's notes (rank, alpha, targets, policy version...); no loader needs it.

Diffusers alone loads it::

    pipe = WanPipeline.from_pretrained(base); pipe.load_lora_weights(adapter_dir)
    transformer.load_lora_adapter(adapter_dir, weight_name="pytorch_lora_weights.safetensors")

(``load_lora_adapter`` given a directory looks for a ``.bin`` unless ``weight_name`` or
``use_safetensors=True`` is passed; given a state dict it needs ``metadata=`` for alpha.)

Read (``trainer.init_adapter``, ``train.init_adapter``, ``generate --lora``, ``evaluate --adapter``), from a
directory, a ``.safetensors`` file or a hub id (``rlhf.hub.resolve``):

* diffusers' format: whatever ``WanPipeline.lora_state_dict`` reads (so also the original Wan / ComfyUI and
  musubi key layouts, which it converts); without metadata, rank and alpha follow diffusers' rule
  (``get_peft_kwargs``: the rank of each ``lora_B``, alpha = rank);
* peft's ``save_pretrained`` layout: ``adapter_model.safetensors`` + ``adapter_config.json``;
* deprecated: ``adapter.safetensors`` + ``adapter.json``, the project's layout before issue 17. Read with a
  ``FutureWarning``; ``python -m rlhf.generator.lora DIR`` rewrites such a directory in diffusers' format.

Weights come back in peft's names without a prefix (``blocks.0.attn1.to_q.lora_A.weight``), the names of
``FlowGenerator.lora_state`` and of the weight-sync blob, with their ``LoraConfig`` keyword arguments.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # a fresh adapter's modules: both attentions of every block
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
INFO_FILE = "adapter_info.json"
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
OLD_WEIGHTS, OLD_CONFIG = "adapter.safetensors", "adapter.json"  # deprecated (before issue 17)
LAYOUTS = "pytorch_lora_weights.safetensors (diffusers), adapter_model.safetensors + adapter_config.json (peft)"
# LoraConfig fields that describe where a file came from, not the adapter: never written
_PROVENANCE = {
    "peft_type",
    "peft_version",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "inference_mode",
    "runtime_config",
}


class AdapterError(ValueError):
    """A LoRA adapter that cannot be read or does not fit the generator it is loaded into."""


@dataclass
class Adapter:
    """A LoRA read from disk: ``state`` in peft's names without prefix, ``config`` the ``LoraConfig`` kwargs."""

    state: dict[str, torch.Tensor]
    config: dict
    layout: str  # diffusers | peft | old
    path: Path

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.config["r"]))


def lora_kwargs(config) -> dict:
    """``LoraConfig`` keyword arguments worth storing: rank, alpha and targets, plus every field that differs
    from peft's default (provenance fields dropped, sets as sorted lists), so the header stays readable by
    other peft versions unless the adapter really uses a newer feature."""
    from peft import LoraConfig

    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = {f.name for f in dataclasses.fields(LoraConfig)} - _PROVENANCE
    default = LoraConfig().to_dict()
    out = {}
    for k, v in d.items():
        if k in known and (k in ("r", "lora_alpha", "target_modules") or v != default.get(k)):
            out[k] = sorted(v) if isinstance(v, (set, frozenset)) else v
    return out


def save_adapter(path: str | Path, state: dict[str, torch.Tensor], config, info: dict | None = None) -> Path:
    """Write ``state`` (peft names, as ``FlowGenerator.lora_state`` gives them) with its ``config``
    (a ``LoraConfig`` or its kwargs) as ``WanPipeline.save_lora_weights`` does, plus ``adapter_info.json``."""
    from diffusers.loaders import WanLoraLoaderMixin

    path = Path(path)
    kwargs = lora_kwargs(config)
    path.mkdir(parents=True, exist_ok=True)
    WanLoraLoaderMixin.save_lora_weights(
        str(path),
        transformer_lora_layers={k: v.detach().cpu().contiguous() for k, v in state.items()},
        transformer_lora_adapter_metadata=kwargs,
        weight_name=LORA_WEIGHTS,
    )
    for stale in (OLD_WEIGHTS, OLD_CONFIG):  # a loader given the directory must find one weights file
        (path / stale).unlink(missing_ok=True)
    notes = {
        "format": "diffusers",
        "weights": LORA_WEIGHTS,
        "rank": kwargs["r"],
        "alpha": kwargs["lora_alpha"],
        "targets": sorted(kwargs["target_modules"]) if kwargs.get("target_modules") else None,
        **(info or {}),
    }
    (path / INFO_FILE).write_text(json.dumps(notes, indent=2))
    return path


def is_adapter_dir(path: str | Path) -> bool:
    """Does ``path`` hold an adapter in one of the layouts :func:`read_adapter` reads?"""
    p = Path(path)
    return p.is_dir() and (
        (p / LORA_WEIGHTS).is_file()
        or ((p / PEFT_WEIGHTS).is_file() and (p / PEFT_CONFIG).is_file())
        or ((p / OLD_WEIGHTS).is_file() and (p / OLD_CONFIG).is_file())
    )


def _strip(state: dict, prefixes: tuple[str, ...], source: str) -> dict:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
                break
        out[k] = v
    other = sorted(k for k in out if "lora" not in k)
    if other:
        raise AdapterError(
            f"{source}: {len(other)} tensors are not LoRA weights (e.g. {other[0]}); a LoRA "
            "file holds lora_A / lora_B tensors only"
        )
    return out


def _from_diffusers(folder: Path, weight_name: str) -> tuple[dict, dict]:
    from diffusers.loaders import WanLoraLoaderMixin
    from diffusers.utils import convert_unet_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs

    source = f"{folder / weight_name}"
    state, meta = WanLoraLoaderMixin.lora_state_dict(str(folder), weight_name=weight_name, return_lora_metadata=True)
    second = sorted(k for k in state if k.startswith("transformer_2."))
    if second:
        raise AdapterError(
            f"{source} holds weights for transformer_2 (Wan2.2's second expert, e.g. {second[0]}); "
            "the project's generators have one transformer: give a Wan2.1 LoRA"
        )
    prefixed = any(k.startswith("transformer.") for k in state)
    if prefixed:
        foreign = sorted(k for k in state if not k.startswith("transformer."))
        if foreign:
            raise AdapterError(
                f"{source} holds {len(foreign)} tensors for another component (e.g. {foreign[0]}); "
                "the generator's LoRA sits on the transformer only"
            )
    state = _strip(state, ("transformer.",), source)
    if state and not any("lora_A" in k for k in state):  # diffusers' older lora.down / lora.up names
        state = convert_unet_state_dict_to_peft(state)
    if meta:
        meta = {
            k.removeprefix("transformer."): v for k, v in meta.items() if k.startswith("transformer.") or not prefixed
        }
    if not meta:  # diffusers' own rule for a file without its LoraConfig
        ranks = {f"^{k}": v.shape[1] for k, v in state.items() if "lora_B" in k and v.ndim > 1}
        if not ranks:
            raise AdapterError(
                f"{source} holds no lora_B weight: not a LoRA in a layout this project reads ({LAYOUTS})"
            )
        meta = get_peft_kwargs(ranks, None, state)
    return state, lora_kwargs(meta)


def _from_peft(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    cfg = json.loads((folder / PEFT_CONFIG).read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{folder / PEFT_CONFIG} describes a {cfg['peft_type']} adapter; only LoRA is supported")
    state = _strip(
        load_file(str(folder / PEFT_WEIGHTS)), ("base_model.model.", "transformer."), str(folder / PEFT_WEIGHTS)
    )
    return state, lora_kwargs(cfg)


def _from_old(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    meta = json.loads((folder / OLD_CONFIG).read_text())
    warnings.warn(
        f"{folder} is in the project's old adapter layout ({OLD_WEIGHTS} + {OLD_CONFIG}), read for "
        f"now and to be dropped; rewrite it in diffusers' format with `python -m rlhf.generator.lora "
        f"{folder}`",
        FutureWarning,
        stacklevel=3,
    )
    config = {"r": meta["rank"], "lora_alpha": meta["alpha"], "target_modules": list(meta.get("targets", LORA_TARGETS))}
    return load_file(str(folder / OLD_WEIGHTS)), lora_kwargs(config)


def read_adapter(path: str | Path, cache_dir: str | Path | None = None) -> Adapter:
    """The LoRA at ``path``: a directory in one of the layouts above, a ``.safetensors`` file in diffusers'
    format, or a hub id (``owner/name``, fetched or read from the cache like a generator checkpoint)."""
    from rlhf.hub import resolve

    p = Path(str(path)).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise AdapterError(
                f"LoRA adapter {p} is a file but not a .safetensors file: give a directory in "
                f"one of {LAYOUTS}, or a diffusers .safetensors file"
            )
        state, config = _from_diffusers(p.parent, p.name)
        return Adapter(state, config, "diffusers", p)
    folder = resolve(path, "LoRA adapter", cache_dir=cache_dir, allow_patterns=["*.safetensors", "*.json"])
    if (folder / LORA_WEIGHTS).is_file():
        return Adapter(*_from_diffusers(folder, LORA_WEIGHTS), "diffusers", folder)
    if (folder / PEFT_WEIGHTS).is_file() and (folder / PEFT_CONFIG).is_file():
        return Adapter(*_from_peft(folder), "peft", folder)
    if (folder / OLD_WEIGHTS).is_file() and (folder / OLD_CONFIG).is_file():
        return Adapter(*_from_old(folder), "old", folder)
    files = sorted(f.name for f in folder.glob("*.safetensors"))
    if len(files) == 1:  # a diffusers-format LoRA under its own name, as hub repositories often ship them
        return Adapter(*_from_diffusers(folder, files[0]), "diffusers", folder)
    found = f"it holds {', '.join(files)}: name one file" if files else "it holds no .safetensors file"
    raise AdapterError(
        f"{folder} is not a LoRA adapter directory (needs {LAYOUTS}, as written by save_lora / "
        f"align_offline / online_dpo); {found}"
    )


def adopt_adapter_settings(owner, where: str, cache_dir: str | Path | None = None) -> Adapter:
    """The rank/alpha rule of a run that starts from ``owner.init_adapter``: the adapter's own rank and alpha
    are trained (a LoRA's shape and scale come with its weights), and ``owner.lora_rank`` / ``lora_alpha``
    are set to them, so that every role and record of the run sees the numbers in use; one line says so
    when the configured ones differed. ``where`` is the config prefix (``trainer.``, ``train.``)."""
    try:
        adapter = read_adapter(owner.init_adapter, cache_dir)
    except (AdapterError, FileNotFoundError) as e:
        raise AdapterError(f"{where}init_adapter: {e}") from None
    if (adapter.rank, adapter.alpha) != (owner.lora_rank, float(owner.lora_alpha)):
        extra = " (per-module ranks in its rank_pattern)" if adapter.config.get("rank_pattern") else ""
        print(
            f"[config] {where}init_adapter {owner.init_adapter}: training its rank {adapter.rank}, alpha "
            f"{adapter.alpha:g}{extra} instead of {where}lora_rank={owner.lora_rank}, "
            f"{where}lora_alpha={owner.lora_alpha:g}",
            file=sys.stderr,
            flush=True,
        )
        owner.lora_rank, owner.lora_alpha = adapter.rank, adapter.alpha
    return adapter


def main(argv: list[str] | None = None) -> int:
    """Rewrite adapter directories of the old layout in diffusers' format (in place)."""
    import argparse

    ap = argparse.ArgumentParser(
        description="rewrite old-layout adapters (adapter.safetensors + adapter.json) in diffusers' format, in place"
    )
    ap.add_argument("dirs", nargs="+", help="adapter directories")
    args = ap.parse_args(argv)
    for d in map(Path, args.dirs):
        if not ((d / OLD_WEIGHTS).is_file() and (d / OLD_CONFIG).is_file()):
            print(f"{d}: no {OLD_WEIGHTS} + {OLD_CONFIG}, left as it is", file=sys.stderr)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            old = read_adapter(d)
        info = {
            k: v for k, v in json.loads((d / OLD_CONFIG).read_text()).items() if k not in ("rank", "alpha", "targets")
        }
        save_adapter(d, old.state, old.config, info)
        print(f"{d}: rewritten as {LORA_WEIGHTS} (rank {old.rank}, alpha {old.alpha:g})")
    return 0


__all__ = [
    "Adapter",
    "AdapterError",
    "LORA_TARGETS",
    "LORA_WEIGHTS",
    "adopt_adapter_settings",
    "is_adapter_dir",
    "lora_kwargs",
    "read_adapter",
    "save_adapter",
]

if __name__ == "__main__":
    sys.exit(main())
