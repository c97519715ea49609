# Long on purpose: self-contained model code (diffusers' habit): the Wan transformer, the text encoder, the codecs
# and the LoRA life cycle (policy, reference, save/load) of one FlowGenerator read together.
"""The video flow generator: a diffusers ``WanTransformer3DModel``, a UMT5 text encoder and a codec.

Convention (everywhere in ``rlhf``): ``x_t = (1 - t) x0 + t noise``, ``t`` in [0, 1], ``t = 1`` is
pure noise, and the network predicts the velocity ``v = noise - x0``. Wan takes ``1000 t`` as its
timestep.

Position channels: Wan's 3-D RoPE is relative, so a small model cannot tell where in the frame it
is, and the moving-shapes world starts each object at an edge given by the prompt. The world's
generator therefore concatenates ``position_channels`` learned absolute-position maps to its input
(measured: without them direction accuracy stayed near chance). Real Wan checkpoints have none.

Layout channels: measured again, a 0.8 M-parameter Wan with position channels learned colour within
1,000 steps but after 2,000 steps still drew the same static blob for every direction from pure noise
(its x0 prediction at t = 1 did not depend on the direction word; from t <= 0.8 it followed the
noised clip correctly). Binding a word to a place through cross-attention alone is slow to learn. So
the world's generator also concatenates ``layout_channels`` maps computed from the prompt (a linear
map of the masked mean of its text embedding), the way Wan2.1 I2V concatenates conditioning channels
to its input. The empty prompt gives the map's bias: an unconditional layout for guidance.

Layouts on disk (a directory, or a hub id ``owner/name`` resolved through the Hugging Face cache by
:func:`rlhf.hub.resolve`):
* our own: ``generator.json`` (this module's config), ``transformer/`` and ``text_encoder/``
  (``save_pretrained``), ``tokenizer/``, ``inputs.safetensors`` (position maps, layout map);
* Wan2.1 diffusers layout (``model_index.json``, ``transformer/``, ``text_encoder/``, ``tokenizer/``,
  ``vae/``): loaded with the real ``AutoencoderKLWan`` as codec.

LoRA: peft adapters on the transformer, attached and loaded through diffusers' own calls
(``add_adapter``, ``load_lora_adapter``) and saved in diffusers' format (:mod:`rlhf.generator.lora`), so
that an adapter trained here loads into ``WanPipeline`` with ``load_lora_weights`` and back. The trained
adapter is peft's ``"default"``; a run that starts from an existing adapter also holds a frozen copy,
``"reference"``, as its reference policy (:meth:`FlowGenerator.reference`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from rlhf.device import DeviceConfig, module_device, module_dtype, place

from .codec import SpaceToDepthCodec, WanVAECodec
from .lora import LORA_TARGETS, AdapterError, lora_kwargs, read_adapter, save_adapter
from .text import TextEncoder, world_text_encoder

POLICY_ADAPTER = "default"  # peft's name of the adapter that trains
REFERENCE_ADAPTER = "reference"  # frozen copy of the adapter a run started from (absent for a fresh LoRA)
# The shipped pretrained generator of the moving-shapes world (jobs/pretrain.py; see its MANIFEST.json).
DEFAULT_GENERATOR = Path(__file__).resolve().parents[2] / "artefacts" / "generator_default"


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_t = (1 - t) x0 + t noise`` and the velocity target ``v = noise - x0`` (the library's convention)."""
    tb = t.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - tb) * x0 + tb * noise, noise - x0


class GeneratorError(ValueError):
    """A generator checkpoint or adapter that cannot be loaded as asked."""


@dataclass
class GeneratorConfig:
    """A Wan-class generator for the moving-shapes world (defaults: ~1 M parameters, 32x32x8 videos)."""

    layers: int = 3  # transformer blocks
    heads: int = 4  # attention heads
    head_dim: int = 32  # width per head (model width = heads x head_dim)
    ffn_dim: int = 256  # feed-forward width
    freq_dim: int = 64  # sinusoidal timestep embedding width
    position_channels: int = 16  # learned absolute-position input maps (0 = none, as real Wan)
    layout_channels: int = 8  # prompt-conditioned input maps (0 = none, as real Wan T2V)
    text_dim: int = 64  # UMT5 width
    text_layers: int = 2  # UMT5 blocks
    text_heads: int = 2  # UMT5 attention heads
    text_ffn: int = 128  # UMT5 feed-forward width
    max_text_tokens: int = 16  # prompt length after padding / truncation (pair prompts take 17: use 20)
    grammar: str = "single"  # prompts its tokenizer is built for: single | pair | mixed (rlhf.synthetic.prompts)
    codec_factor: int = 4  # space-to-depth block size: 32x32 RGB -> 8x8x48 latents
    frames: int = 8  # frames per clip
    height: int = 32  # clip height in pixels (divisible by codec_factor)
    width: int = 32  # clip width in pixels (divisible by codec_factor)
    fps: float = 8.0  # frame rate of the clips (written into the mp4s the reward reads)
    seed: int = 0  # initial weights

    def validate(self) -> None:
        for f in (
            "layers",
            "heads",
            "head_dim",
            "ffn_dim",
            "freq_dim",
            "text_dim",
            "text_layers",
            "text_heads",
            "text_ffn",
            "max_text_tokens",
            "codec_factor",
            "frames",
            "height",
            "width",
        ):
            if getattr(self, f) < 1:
                raise ValueError(f"generator.{f} must be >= 1, got {getattr(self, f)}")
        from rlhf.synthetic.prompts import check_grammar

        check_grammar(self.grammar)
        if self.position_channels < 0 or self.layout_channels < 0:
            raise ValueError("generator.position_channels and layout_channels must be >= 0")
        if self.height % self.codec_factor or self.width % self.codec_factor:
            raise ValueError(
                f"generator.height/width ({self.height}x{self.width}) must be divisible by "
                f"codec_factor {self.codec_factor}"
            )


class FlowGenerator(torch.nn.Module):
    """Velocity model ``v(x_t, t, text)`` plus what turns prompts and latents into it and back.

    ``text`` (the frozen prompt encoder) is optional: trainer workers hold the transformer, its LoRA
    and the optimiser state only, and get prompt embeddings with their batch (see ``actors/``).
    ``fps`` is the clips' frame rate (8 in the world, 16 for Wan2.1)."""

    def __init__(
        self,
        transformer,
        text: TextEncoder | None,
        codec,
        video_shape: tuple[int, int, int],
        position: torch.Tensor | None = None,
        config: GeneratorConfig | None = None,
        layout: torch.nn.Linear | None = None,
        fps: float | None = None,
    ):
        super().__init__()
        self.transformer = transformer
        self.text = text
        self.codec = codec
        self.video_shape = tuple(video_shape)  # (frames, height, width)
        self.position = torch.nn.Parameter(position) if position is not None else None
        self.layout = layout
        self.config = config
        self.fps = float(fps if fps is not None else (config.fps if config is not None else 16.0))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> FlowGenerator:
        from diffusers import WanTransformer3DModel

        cfg.validate()
        codec = SpaceToDepthCodec(cfg.codec_factor)
        C, F, h, w = codec.latent_shape(cfg.frames, cfg.height, cfg.width)
        text = world_text_encoder(
            cfg.text_dim, cfg.text_layers, cfg.text_heads, cfg.text_ffn, cfg.max_text_tokens, cfg.seed, cfg.grammar
        )
        torch.manual_seed(cfg.seed)
        transformer = WanTransformer3DModel(
            patch_size=(1, 1, 1),
            num_attention_heads=cfg.heads,
            attention_head_dim=cfg.head_dim,
            in_channels=C + cfg.position_channels + cfg.layout_channels,
            out_channels=C,
            text_dim=cfg.text_dim,
            freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim,
            num_layers=cfg.layers,
            rope_max_seq_len=64,
        )
        position = torch.randn(cfg.position_channels, F, h, w) * 0.5 if cfg.position_channels else None
        layout = torch.nn.Linear(cfg.text_dim, cfg.layout_channels * F * h * w) if cfg.layout_channels else None
        return cls(transformer, text, codec, (cfg.frames, cfg.height, cfg.width), position, cfg, layout)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.codec.latent_shape(*self.video_shape)

    # ---------------------------------------------------------------- device and precision
    @property
    def device(self) -> torch.device:
        """Where the transformer runs: every tensor made for it is made here."""
        return module_device(self.transformer)

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute precision (its frozen base weights)."""
        return module_dtype(self.transformer)

    def place(self, cfg: DeviceConfig) -> FlowGenerator:
        """Move the generator to ``cfg``'s device and precision; the codec follows (a VAE stays in fp32,
        as ``WanPipeline`` runs it); LoRA parameters, if attached, are kept in fp32 for the optimiser.
        ``cfg.gradient_checkpointing`` switches on diffusers' per-block activation checkpointing."""
        place(self, cfg)
        if hasattr(self.codec, "to"):
            self.codec.to(cfg.torch_device())
        if self.has_lora:
            self._lora_fp32()
        if cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        return self

    def _lora_fp32(self) -> None:
        for n, p in self.transformer.named_parameters():
            if "lora_" in n:
                p.data = p.data.float()

    # ---------------------------------------------------------------- the model
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """``(B, tokens, dim)`` prompt embeddings on the generator's device, in its precision."""
        if self.text is None:
            raise GeneratorError(
                "this generator was loaded without its text encoder (text_encoder=False, as "
                "trainer workers load it): pass prompt embeddings computed where the clips "
                "were sampled"
            )
        return self.text(list(prompts)).to(self.device, self.dtype)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Predicted ``v = noise - x0`` at ``x_t``; ``t`` in [0, 1], shape ``(B,)``."""
        return self.transformer_output(x_t, t, text)

    def transformer_output(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The transformer's output on ``x_t`` with this generator's input channels: the velocity for a
        generator, per-token features for a truncated copy (``rlhf.reward.latent``)."""
        if x_t.shape[1:] != torch.Size(self.latent_shape):
            raise GeneratorError(
                f"latents must be (B, {', '.join(map(str, self.latent_shape))}), got {tuple(x_t.shape)}"
            )
        x_t, text = x_t.to(self.dtype), text.to(self.dtype)
        parts = [x_t]
        if self.position is not None:
            parts.append(self.position.to(x_t.dtype).expand(x_t.shape[0], -1, -1, -1, -1))
        if self.layout is not None:
            # masked mean over the prompt's tokens (embeddings are zero past its length)
            count = (text.abs().sum(-1) > 0).sum(1, keepdim=True).clamp(min=1).to(text.dtype)
            pooled = text.sum(1) / count
            parts.append(self.layout(pooled).view(x_t.shape[0], -1, *x_t.shape[2:]).to(x_t.dtype))
        inp = torch.cat(parts, dim=1) if len(parts) > 1 else x_t
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return self.transformer(inp, timestep=t * 1000.0, encoder_hidden_states=text, return_dict=False)[0]

    # ---------------------------------------------------------------- LoRA
    @property
    def has_lora(self) -> bool:
        return POLICY_ADAPTER in (getattr(self.transformer, "peft_config", None) or {})

    def add_lora(self, rank: int = 8, alpha: float | None = None, targets=LORA_TARGETS) -> None:
        """Attach a LoRA adapter (B = 0: the policy starts equal to the base) and freeze everything else."""
        from peft import LoraConfig

        if rank < 1:
            raise GeneratorError(f"LoRA rank must be >= 1, got {rank}")
        self.requires_grad_(False)
        self.transformer.add_adapter(
            LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), init_lora_weights=True)
        )
        self._lora_fp32()  # a bf16 base trains an fp32 adapter (peft casts the input to the adapter's dtype)

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        """The trained adapter's parameters (not the frozen reference copy)."""
        return [p for n, p in self.transformer.named_parameters() if "lora_" in n and f".{POLICY_ADAPTER}." in n]

    @property
    def has_reference_adapter(self) -> bool:
        return self.has_lora and REFERENCE_ADAPTER in self.transformer.peft_config

    @contextlib.contextmanager
    def reference(self):
        """The reference policy, i.e. the policy training started from, on the same module: the base (the
        adapter disabled) for a fresh LoRA, whose B = 0 makes the two equal; the frozen copy of the initial
        adapter for a run started from one (:meth:`load_lora` with ``reference=True``)."""
        if not self.has_lora:
            yield self
            return
        if not self.has_reference_adapter:
            self.transformer.disable_adapters()
            try:
                yield self
            finally:
                self.transformer.enable_adapters()
            return
        self.transformer.set_adapter(REFERENCE_ADAPTER)  # peft marks the active adapter trainable: undone below
        try:
            yield self
        finally:
            self.transformer.set_adapter(POLICY_ADAPTER)
            self._freeze_reference()

    def _freeze_reference(self) -> None:
        for n, p in self.transformer.named_parameters():
            if f".{REFERENCE_ADAPTER}." in n:
                p.requires_grad_(False)

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The trained adapter's weights in peft's names (``blocks.0.attn1.to_q.lora_A.weight``)."""
        from peft import get_peft_model_state_dict

        return {
            k: v.detach().clone()
            for k, v in get_peft_model_state_dict(self.transformer, adapter_name=POLICY_ADAPTER).items()
        }

    def lora_config(self) -> dict:
        cfg = self.transformer.peft_config[POLICY_ADAPTER]
        out = {"rank": cfg.r, "alpha": cfg.lora_alpha, "targets": sorted(cfg.target_modules)}
        out.update({k: dict(getattr(cfg, k)) for k in ("rank_pattern", "alpha_pattern") if getattr(cfg, k)})
        return out

    def lora_kwargs(self) -> dict:
        """The trained adapter's ``LoraConfig`` as stored with it (:func:`rlhf.generator.lora.lora_kwargs`)."""
        return lora_kwargs(self.transformer.peft_config[POLICY_ADAPTER])

    def load_lora_state(self, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
        """Load adapter weights; refuses (naming what differs) an adapter of another shape or model."""
        from peft import set_peft_model_state_dict

        self._check_state(state, source)
        set_peft_model_state_dict(self.transformer, state, adapter_name=POLICY_ADAPTER)

    def _check_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        mine = {k: v.shape for k, v in self.lora_state().items()}
        theirs = {k: tuple(v.shape) for k, v in state.items()}
        missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
        wrong = sorted(k for k in set(mine) & set(theirs) if tuple(mine[k]) != theirs[k])
        if missing or extra or wrong:
            detail = []
            if missing:
                detail.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
            if extra:
                detail.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
            if wrong:
                k = wrong[0]
                detail.append(f"{len(wrong)} shape mismatches (e.g. {k}: {theirs[k]} vs {tuple(mine[k])})")
            raise GeneratorError(
                f"{source} does not match this generator's LoRA ({self.lora_config()}): "
                + "; ".join(detail)
                + ". Load it into the generator and rank it was trained with."
            )

    def save_lora(self, path: str | Path, info: dict | None = None) -> Path:
        """Write the trained adapter in diffusers' format (``WanPipeline.load_lora_weights`` reads it);
        ``info`` goes into ``adapter_info.json``."""
        return save_adapter(path, self.lora_state(), self.lora_kwargs(), info)

    def load_lora(self, path: str | Path, reference: bool = False, cache_dir: str | Path | None = None) -> None:
        """Load the adapter at ``path`` (diffusers' format; also peft's and the old project layout: see
        :mod:`rlhf.generator.lora`; a hub id works too). With no LoRA attached, attaches it as diffusers'
        ``load_lora_adapter`` does (its rank, alpha and target modules); else loads the weights into the
        attached LoRA, which must have the same shape and scale. ``reference=True`` (a run starting from
        this adapter) also keeps a frozen copy as the reference policy."""
        try:
            adapter = read_adapter(path, cache_dir)
        except AdapterError as e:
            raise GeneratorError(str(e)) from None
        if self.has_lora:
            if reference:
                raise GeneratorError(
                    f"{path}: a reference adapter is set when the LoRA is first attached; this "
                    "generator already has one (load into a freshly loaded generator)"
                )
            self._check_state(adapter.state, str(adapter.path))
            mine = self.lora_kwargs()
            differ = [
                k
                for k in ("lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora")
                if (mine.get(k) or None) != (adapter.config.get(k) or None)
            ]
            if differ:
                raise GeneratorError(
                    f"{adapter.path} has {', '.join(f'{k}={adapter.config.get(k)}' for k in differ)} "
                    f"but the attached LoRA has {', '.join(f'{k}={mine.get(k)}' for k in differ)}: "
                    "same shapes, another scale. Load it into a generator without a LoRA."
                )
            self.load_lora_state(adapter.state, str(adapter.path))
            return
        from peft import set_peft_model_state_dict

        self.requires_grad_(False)
        names = (POLICY_ADAPTER, REFERENCE_ADAPTER) if reference else (POLICY_ADAPTER,)
        for name in names:
            self._attach(adapter, name)
        self.transformer.set_adapter(POLICY_ADAPTER)
        self._freeze_reference()
        self._lora_fp32()
        for name in names:  # peft made the adapter in the base's precision: put the file's fp32 values back
            set_peft_model_state_dict(self.transformer, adapter.state, adapter_name=name)

    def _attach(self, adapter, name: str) -> None:
        """``adapter`` as peft adapter ``name``, through diffusers' ``load_lora_adapter`` (so it gets the
        LoraConfig diffusers would build); refuses, naming them, weights this transformer has no place for
        and layers its config targets without weights."""
        from peft import get_peft_model_state_dict

        self._check_fits(adapter)
        try:
            with warnings.catch_warnings():  # a second adapter is meant: the reference copy
                warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
                self.transformer.load_lora_adapter(
                    dict(adapter.state), prefix=None, adapter_name=name, metadata=dict(adapter.config)
                )
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            raise GeneratorError(
                f"{adapter.path} does not load into this generator's transformer "
                f"({type(e).__name__}: {str(e).splitlines()[0][:300]}): is it a LoRA of this "
                "model?"
            ) from None
        missing = sorted(set(get_peft_model_state_dict(self.transformer, adapter_name=name)) - set(adapter.state))
        if missing:  # its LoraConfig targets layers it holds no weights for
            self.transformer.delete_adapters(name)
            raise GeneratorError(
                f"{adapter.path}: its LoraConfig targets {len(missing) // 2} layers it holds no "
                f"weights for (e.g. {missing[0]}); target_modules in its header (or "
                "adapter_config.json) must name the layers its tensors belong to"
            )

    def _check_fits(self, adapter) -> None:
        """Every LoRA tensor names a linear layer of this transformer with the matching width (lora_A is
        (rank, in_features), lora_B (out_features, rank)); else a GeneratorError naming the first misfits."""
        modules = dict(self.transformer.named_modules())
        absent, wrong = [], []
        for k, v in adapter.state.items():
            name, _, part = k.partition(".lora_")
            mod = modules.get(name)
            if mod is None or not hasattr(mod, "in_features"):
                absent.append(k)
            elif part.startswith("A.") and v.ndim == 2 and v.shape[1] != mod.in_features:
                wrong.append(f"{k}: {tuple(v.shape)} for in_features {mod.in_features}")
            elif part.startswith("B.") and v.ndim == 2 and v.shape[0] != mod.out_features:
                wrong.append(f"{k}: {tuple(v.shape)} for out_features {mod.out_features}")
        if absent or wrong:
            detail = ([f"{len(absent)} tensors for layers it lacks (e.g. {sorted(absent)[0]})"] if absent else []) + (
                [f"{len(wrong)} of another width (e.g. {sorted(wrong)[0]})"] if wrong else []
            )
            raise GeneratorError(
                f"{adapter.path} does not fit this generator's transformer: "
                + "; ".join(detail)
                + ". Load it into the generator it was trained on."
            )

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        if self.config is None:
            raise GeneratorError("only generators built from a GeneratorConfig can be saved in the world layout")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer", safe_serialization=True)
        if self.text is None:
            raise GeneratorError("a generator loaded without its text encoder cannot be saved whole")
        self.text.encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.text.tokenizer.save_pretrained(path / "tokenizer")
        inputs = {}
        if self.position is not None:
            inputs["position"] = self.position.detach().contiguous()
        if self.layout is not None:
            inputs.update({f"layout.{k}": v.detach().contiguous() for k, v in self.layout.state_dict().items()})
        if inputs:
            save_file(inputs, path / "inputs.safetensors")
        (path / "generator.json").write_text(json.dumps(asdict(self.config), indent=2))
        return path


# what a generator checkpoint is read from: a hub download fetches these only (not a repository's examples)
CHECKPOINT_FILES = [
    "model_index.json",
    "generator.json",
    "inputs.safetensors",
    "MANIFEST.json",
    "transformer/*",
    "text_encoder/*",
    "tokenizer/*",
    "vae/*",
    "scheduler/*",
]


def load_generator(
    path: str | Path,
    device: DeviceConfig | None = None,
    text_tokens: int = 512,
    video_shape: tuple[int, int, int] = (81, 480, 832),
    fps: float = 16.0,
    text_encoder: bool = True,
    cache_dir: str | Path | None = None,
) -> FlowGenerator:
    """Load our world layout (``generator.json``) or a Wan2.1 diffusers checkpoint (``model_index.json``)
    onto ``device`` (a :class:`DeviceConfig`; default CPU fp32). Weights are read in the role's precision.

    ``path`` is a directory or a hub id (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``), resolved by
    :func:`rlhf.hub.resolve` in the Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE``; offline with
    ``HF_HUB_OFFLINE=1``; an id that cannot be had raises :class:`rlhf.hub.HubError` naming it).
    ``text_tokens``, ``video_shape`` (frames, height, width) and ``fps`` apply to Wan checkpoints only
    (their defaults are Wan2.1's: 512 tokens, 81 frames at 480x832, 16 fps); the world layout records
    its own. ``text_encoder=False`` leaves the frozen prompt encoder out (trainer workers).
    """
    device = device or DeviceConfig()
    device.validate()
    dtype = device.dtype
    from diffusers import WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    from rlhf.hub import resolve

    if Path(path) == DEFAULT_GENERATOR and not DEFAULT_GENERATOR.is_dir():
        raise GeneratorError(
            f"generator checkpoint {path} is not a directory (the shipped generator: reproduce "
            "it with the command in artefacts/README.md)"
        )
    path = resolve(path, "generator", cache_dir=cache_dir, allow_patterns=CHECKPOINT_FILES)
    if (path / "MANIFEST.json").is_file():
        from rlhf.artefacts import verify_manifest

        verify_manifest(path, GeneratorError)
    for part in ("transformer", "text_encoder", "tokenizer") if text_encoder else ("transformer",):
        if not (path / part).is_dir():
            raise GeneratorError(
                f"generator checkpoint {path} lacks {part}/ (expected the world layout with "
                "generator.json or a Wan2.1 diffusers layout with model_index.json)"
            )
    transformer = WanTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
    text = None
    if text_encoder:
        encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", torch_dtype=dtype)
        text = TextEncoder(encoder, AutoTokenizer.from_pretrained(path / "tokenizer"), text_tokens)
    if (path / "generator.json").is_file():
        from safetensors.torch import load_file

        known = {f.name for f in fields(GeneratorConfig)}
        cfg = GeneratorConfig(
            **{k: v for k, v in json.loads((path / "generator.json").read_text()).items() if k in known}
        )
        inputs = load_file(path / "inputs.safetensors") if cfg.position_channels or cfg.layout_channels else {}
        layout = None
        if cfg.layout_channels:
            w = inputs["layout.weight"]
            layout = torch.nn.Linear(w.shape[1], w.shape[0])
            layout.load_state_dict({"weight": w, "bias": inputs["layout.bias"]})
        if text is not None:
            text.max_tokens = cfg.max_text_tokens
        gen = FlowGenerator(
            transformer,
            text,
            SpaceToDepthCodec(cfg.codec_factor),
            (cfg.frames, cfg.height, cfg.width),
            inputs.get("position"),
            cfg,
            layout,
        )
        return gen.place(device)
    if (path / "model_index.json").is_file():
        from diffusers import AutoencoderKLWan

        if not (path / "vae").is_dir():
            raise GeneratorError(f"Wan checkpoint {path} lacks vae/")
        codec = WanVAECodec(AutoencoderKLWan.from_pretrained(path / "vae", torch_dtype=torch.float32))
        codec.latent_shape(*video_shape)
        return FlowGenerator(transformer, text, codec, video_shape, fps=fps).place(device)
    raise GeneratorError(f"{path} has neither generator.json nor model_index.json")
