# Long on purpose: the memory model of every role (Wan transformer, UMT5, VAE, the Qwen2-VL reward, DeepSpeed's
# ZeRO states, activations) and the check against cluster.yaml share one byte accounting; split, its parts would drift.
"""GPU memory of the online loop's roles, estimated from the models' dimensions (no weights, no Ray).

``python jobs/online_dpo.py --config FILE --check`` uses this module to say, before anything is
launched, whether each role fits the GPU of the node type ``cluster.yaml`` gives it, and what to
change when it does not. Parameter counts come from the checkpoints' ``config.json`` files when they
are on disk, else from the built-in dimensions of Wan2.1-T2V-1.3B (diffusers layout) and Qwen2-VL-2B.

The memory model (bytes; ``a`` = 2 in bf16, 4 in fp32; ``D`` = model width, ``F`` = FFN width,
``r`` = LoRA rank, ``L`` = latent tokens of one clip, ``n`` = clips in one forward):

* **Trainer** (one Ray Train worker: a Flow-DPO step runs the policy on winner and loser, ``n = 2 x
  micro_batch`` clips, with gradients, then the reference (adapter off) without; Flow-RWR runs
  ``micro_batch`` clips and no reference). Frozen base weights ``P a``; LoRA under DeepSpeed AdamW:
  :data:`LORA_STATE_BYTES` per parameter, the ZeRO stage sharding part of it over the workers
  (ZeRO-3 also shards the base weights, two blocks gathered at a time). Activations: with per-block
  checkpointing every block keeps only its input (``layers x n L D a``) and the backward recomputes
  one block at a time, which then holds its saved tensors (:data:`WAN_BLOCK_SAVED`) plus the gradients
  in flight (:data:`WAN_BLOCK_WORKING`); without checkpointing every block keeps its saved tensors.
  Attention goes through SDPA / flash attention: per head only O(tokens) is kept, never tokens^2.
  The reference forward runs under ``no_grad`` and needs only one block's working set, less than the
  backward's, so it never sets the peak.
* **Generator** (one actor; inference): transformer ``P a``, UMT5 ``P a``, VAE fp32 (the codec keeps
  it in fp32, as ``WanPipeline`` does), LoRA fp32; then the largest of three phases: prompt encoding,
  sampling (``sampler.batch_size`` clips, doubled by classifier-free guidance, one block's working set
  live at a time, plus the latents of every clip of the call) and decoding, ``sampler.decode_batch_size``
  clips at a time (0: every clip of a ``sample`` call, i.e. an actor's whole share of the iteration;
  :data:`WAN_VAE_DECODE_BYTES_PER_PIXEL` per output pixel per clip).
* **Reward** (one Serve replica; inference): Qwen2-VL ``P a`` and one forward of ``max_batch_size``
  clips sampled the VideoAlign way (the checkpoint's ``data_config``): vision tower working set per
  patch or language-model working set per token, whichever is larger.
* **Every GPU process**: :data:`CUDA_CONTEXT_BYTES`, plus :data:`ALLOCATOR_OVERHEAD` of everything that
  is not a weight (the caching allocator's rounding and fragmentation), plus :data:`NCCL_BYTES` for a
  trainer with more than one worker. A role on CPU gets host RAM: the same parts plus
  :data:`CPU_PROCESS_BYTES` for the process itself, and no GPU check.

Checked against (see ``tests/test_memory_check.py``): the H100 run of ``jobs/bench_gpu.py`` (a
Wan2.1-1.3B-shaped Flow-DPO step, one pair at 81x480x832, per-block checkpointing, bf16, LoRA r64 on
q/k/v/o: ``torch.cuda.max_memory_allocated`` 16.78 GiB, ``docs/results/bench_gpu_h100.json``), and
parameter counts of the real diffusers / transformers classes built on the ``meta`` device.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

GIB = 2**30
BYTES = {"fp32": 4, "bf16": 2}

# --------------------------------------------------------------------------------------------- constants
# Saved for backward by one diffusers 0.42.1 WanTransformerBlock with a LoRA on to_q/to_k/to_v/to_out.0 and
# frozen base weights, per latent token: counted with torch.autograd.graph.saved_tensors_hooks on CPU (bf16,
# real widths D 1536, F 8960, r 64; 74,364 bytes/token against 73,984 from this formula). A frozen Linear
# keeps no input (its weight gradient is not needed), so what stays is: five D-wide fp32 tensors (inputs of
# the fp32 LayerNorms and RMSNorms, fp32 whatever the precision), eight D-wide ones in the activation dtype (the
# inputs of the adapted projections, which the LoRA A matrices need, and the queries, keys, values and outputs
# that scaled-dot-product attention keeps), the FFN hidden before GELU (F), and six rank-r LoRA intermediates.
WAN_BLOCK_SAVED = {"fp32_D": 5, "act_D": 8, "act_F": 1, "act_r": 6}
# ... and per text token (cross-attention keys and values are computed from the prompt in every block).
WAN_BLOCK_SAVED_TEXT = {"fp32_D": 1, "act_D": 3, "act_r": 2}
# One block's working set in flight, per latent token: the FFN hidden before and after GELU (2 F) and two
# fp32 D-wide tensors (the fp32 residual stream and the gated FFN output). The same count bounds the
# gradients in flight in a block's backward. Checked by simulating full-size diffusers steps with fake tensors
# (every live storage tracked; the same simulation of jobs/bench_gpu.py's step gives 16.71 GiB against the 16.78
# measured on the H100): inference 48,690 bytes/token against 48,128 here; activations of Flow-DPO steps at
# 41 and 81 frames, one and two pairs, within 2.5% with checkpointing and 5% without.
WAN_BLOCK_WORKING = {"fp32_D": 2, "act_F": 2}
# Inputs, velocity targets and predictions of a training step (four fp32 copies), bytes per latent value.
STEP_TENSORS_PER_LATENT_VALUE = 16
# A LoRA parameter under DeepSpeed AdamW, bytes by part and the ZeRO stage from which the part is sharded over
# the workers. bf16 on: bf16 weight and gradient, fp32 gradient, fp32 master weight, fp32 first and second
# moments (20 B); fp32 (no bf16 section): weight, gradient, moments (16 B).
LORA_STATE_BYTES = {"bf16": ((2, 3), (2, 3), (4, 2), (4, 1), (8, 1)), "fp32": ((4, 3), (4, 2), (8, 1))}
# Wan2.1 VAE (diffusers AutoencoderKLWan, base_dim 96, z_dim 16): parameters counted on the meta device.
WAN_VAE_PARAMS = 126_892_531
# Live bytes of AutoencoderKLWan.decode per output pixel of one clip in fp32 (it decodes one latent frame at
# a time with a 2-frame cache, so the frame count hardly matters): 7.24 GiB at 480x832 and 17.2 GiB at 720x1280,
# simulated with fake tensors (diffusers 0.42.1). ComfyUI's estimate for the same VAE reserves 7,000 values per
# pixel (a budget, not a measurement); this is 4,870 fp32 values.
WAN_VAE_DECODE_BYTES_PER_PIXEL = 19_477
# Qwen2-VL inference working set, per vision patch and per language-model token, in activation-dtype values:
# 2 x MLP + 10 x embed (vision), 3 x intermediate + 6 x hidden (text). Real-width CPU runs of transformers 5.24's
# Qwen2VLModel (2 layers, bf16, live storages tracked) gave 47.4 kB per patch; this gives 46.1 kB.
QWEN_VISION_WORKING = {"mlp": 2, "embed": 10}
QWEN_TEXT_WORKING = {"intermediate": 3, "hidden": 6}
REWARD_PROMPT_TOKENS = 128  # VideoAlign's template around the video (~30 tokens) and the prompt
# Per GPU process. CUDA context: what a torch process holds before its first tensor (0.3-0.6 GiB with lazy
# module loading on recent drivers; 0.5 assumed). Allocator: reserved beyond allocated, a fraction of the
# non-weight peak (weights are allocated once; 10% assumed: reserved/allocated of 1.05-1.2 is usual for
# training steps and decoders). NCCL: communicator buffers of a multi-GPU trainer (assumed 0.5 GiB).
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
ALLOCATOR_OVERHEAD = 0.10
NCCL_BYTES = int(0.5 * GIB)
# A role on CPU: the process itself (Python, torch, Ray worker, DeepSpeed for a trainer) before the model:
# docs/results/bench.md measured 1.0-1.1 GiB peak RSS per generator actor / trainer worker of a 0.8 M model.
CPU_PROCESS_BYTES = int(1.0 * GIB)


# ------------------------------------------------------------------------------------ instance types
@dataclass(frozen=True)
class Instance:
    gpu: str
    gpu_mib: int  # memory of one GPU as nvidia-smi reports its total (a CUDA process can use about this much)
    gpus: int
    host_gib: int


# AWS instance types of cluster.yaml and the bigger GPU types a fix may name. GPU memory: NVIDIA's capacities
# (A10G 24 GB, L40S 48 GB, A100 40/80 GB, H100 80 GB) as nvidia-smi's total on these instances reports them
# (A10G 23,028 MiB; L40S 46,068; A100 40,960 / 81,920; H100 SXM 81,559), not measured in this project.
# vCPU / host memory: AWS's instance type pages.
INSTANCES = {
    "m5.2xlarge": Instance("", 0, 0, 32),
    "g5.xlarge": Instance("A10G", 23_028, 1, 16),
    "g5.2xlarge": Instance("A10G", 23_028, 1, 32),
    "g5.12xlarge": Instance("A10G", 23_028, 4, 192),
    "g6e.xlarge": Instance("L40S", 46_068, 1, 32),
    "g6e.2xlarge": Instance("L40S", 46_068, 1, 64),
    "g6e.12xlarge": Instance("L40S", 46_068, 4, 384),
    "p4d.24xlarge": Instance("A100 40GB", 40_960, 8, 1152),
    "p4de.24xlarge": Instance("A100 80GB", 81_920, 8, 1152),
    "p5.48xlarge": Instance("H100 80GB", 81_559, 8, 2048),
}


def node_for(cluster: dict, role: str, resources: dict, by_name: bool = False) -> tuple[str, str] | None:
    """(node type, instance type) of ``cluster`` (a parsed cluster.yaml) that serves ``role``: the type
    holding one of ``resources``' custom resources, else (``by_name``: a role whose config cannot name
    resources) the type named after the role, cluster.yaml's convention; else None."""
    types = cluster.get("available_node_types") or {}
    custom = [k for k in resources if k not in ("CPU", "GPU", "memory")]
    for name, t in types.items():
        if any(k in (t.get("resources") or {}) for k in custom):
            return name, (t.get("node_config") or {}).get("InstanceType", "")
    if by_name and role in types:
        return role, (types[role].get("node_config") or {}).get("InstanceType", "")
    return None


# ------------------------------------------------------------------------------------- architectures
@dataclass(frozen=True)
class WanDims:
    """A diffusers ``WanTransformer3DModel`` (text-to-video). Defaults: Wan2.1-T2V-1.3B's transformer/config.json."""

    layers: int = 30
    heads: int = 12
    head_dim: int = 128
    ffn_dim: int = 8960
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch: tuple[int, int, int] = (1, 2, 2)
    cross_attn_norm: bool = True

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @classmethod
    def from_config(cls, c: dict) -> WanDims:
        if c.get("image_dim") or c.get("added_kv_proj_dim"):
            raise ValueError("image-to-video Wan transformers (image_dim / added_kv_proj_dim) are not modelled")
        return cls(
            layers=c["num_layers"],
            heads=c["num_attention_heads"],
            head_dim=c["attention_head_dim"],
            ffn_dim=c["ffn_dim"],
            in_channels=c["in_channels"],
            out_channels=c.get("out_channels") or c["in_channels"],
            text_dim=c["text_dim"],
            freq_dim=c["freq_dim"],
            patch=tuple(c["patch_size"]),
            cross_attn_norm=bool(c.get("cross_attn_norm", False)),
        )

    def diffusers_config(self, **override) -> dict:
        """The ``WanTransformer3DModel`` config of these dimensions (with Wan2.1's fixed settings: q/k RMS norm
        across heads, eps 1e-6, RoPE up to 1024 positions, no image branch)."""
        return {
            "patch_size": self.patch,
            "num_attention_heads": self.heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
            "rope_max_seq_len": 1024,
            "image_dim": None,
            "added_kv_proj_dim": None,
            **override,
        }

    def block_params(self) -> int:
        D, F = self.dim, self.ffn_dim
        attention = 4 * (D * D + D) + 2 * D  # q, k, v, out (+ bias) and the RMSNorms of q and k across heads
        return 2 * attention + (2 * D if self.cross_attn_norm else 0) + (D * F + F) + (F * D + D) + 6 * D

    def params(self) -> int:
        D, p = self.dim, math.prod(self.patch)
        patch_embed = self.in_channels * p * D + D
        time = (self.freq_dim * D + D) + (D * D + D) + (D * 6 * D + 6 * D)  # time embedder + 6-way projection
        text = (self.text_dim * D + D) + (D * D + D)
        head = 2 * D + D * self.out_channels * p + self.out_channels * p
        return self.layers * self.block_params() + patch_embed + time + text + head

    def lora_params(self, rank: int) -> int:
        """LoRA on to_q, to_k, to_v, to_out.0 of both attentions (all D -> D: cross-attention reads the
        prompt after it is projected to D)."""
        return self.layers * 2 * 4 * rank * 2 * self.dim


@dataclass(frozen=True)
class UMT5Dims:
    """A transformers ``UMT5EncoderModel``. Defaults: UMT5-XXL's encoder (Wan2.1's text_encoder/config.json)."""

    d_model: int = 4096
    d_kv: int = 64
    heads: int = 64
    layers: int = 24
    d_ff: int = 10240
    vocab: int = 256_384
    buckets: int = 32
    gated: bool = True

    @classmethod
    def from_config(cls, c: dict) -> UMT5Dims:
        return cls(
            d_model=c["d_model"],
            d_kv=c["d_kv"],
            heads=c["num_heads"],
            layers=c["num_layers"],
            d_ff=c["d_ff"],
            vocab=c["vocab_size"],
            buckets=c.get("relative_attention_num_buckets", 32),
            gated=str(c.get("feed_forward_proj", "gated-gelu")).startswith("gated"),
        )

    def params(self) -> int:
        inner = self.heads * self.d_kv
        ffn = (3 if self.gated else 2) * self.d_model * self.d_ff
        layer = 4 * self.d_model * inner + self.buckets * self.heads + 2 * self.d_model + ffn
        return self.vocab * self.d_model + self.layers * layer + self.d_model  # UMT5: a position bias in every layer


@dataclass(frozen=True)
class QwenVLDims:
    """A transformers Qwen2-VL model. Defaults: Qwen2-VL-2B(-Instruct), the VideoReward backbone."""

    hidden: int = 1536
    layers: int = 28
    intermediate: int = 8960
    heads: int = 12
    kv_heads: int = 2
    vocab: int = 151_936
    tied: bool = True
    vision_depth: int = 32
    vision_embed: int = 1280
    vision_mlp_ratio: float = 4
    merge: int = 2
    patch: int = 14
    temporal_patch: int = 2

    @classmethod
    def from_config(cls, c: dict) -> QwenVLDims:
        t, v = c.get("text_config") or c, c["vision_config"]
        return cls(
            hidden=t["hidden_size"],
            layers=t["num_hidden_layers"],
            intermediate=t["intermediate_size"],
            heads=t["num_attention_heads"],
            kv_heads=t["num_key_value_heads"],
            vocab=t["vocab_size"],
            tied=bool(c.get("tie_word_embeddings", t.get("tie_word_embeddings", False))),
            vision_depth=v["depth"],
            vision_embed=v["embed_dim"],
            vision_mlp_ratio=v["mlp_ratio"],
            merge=v["spatial_merge_size"],
            patch=v["patch_size"],
            temporal_patch=v["temporal_patch_size"],
        )

    def params(self) -> int:
        H, inter, hd = self.hidden, self.intermediate, self.hidden // self.heads
        kv = self.kv_heads * hd
        layer = (H * H + H) + 2 * (H * kv + kv) + H * H + 3 * H * inter + 2 * H
        text = self.vocab * H + self.layers * layer + H + (0 if self.tied else self.vocab * H)
        E, M = self.vision_embed, int(self.vision_embed * self.vision_mlp_ratio)
        block = 4 * E + (E * 3 * E + 3 * E) + (E * E + E) + (E * M + M) + (M * E + E)
        ctx = E * self.merge**2
        merger = 2 * E + (ctx * ctx + ctx) + (ctx * H + H)
        vision = 3 * self.temporal_patch * self.patch**2 * E + self.vision_depth * block + merger
        return text + vision


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------------------- generator
@dataclass(frozen=True)
class GeneratorModel:
    """What the estimates need to know about a generator checkpoint and the clips it makes."""

    transformer: WanDims
    text: UMT5Dims
    video: tuple[int, int, int]  # frames, height, width
    latent: tuple[int, int, int, int]  # channels, frames, height, width
    text_tokens: int
    vae_params: int  # 0: the moving-shapes world's parameter-free codec
    fps: float  # of the clips (the reward samples frames by time)
    source: str  # where the dimensions came from
    wan_vae: bool = True  # frames = 4 k + 1, sides multiples of 8 (else the world layout: fixed shape)

    @property
    def tokens(self) -> int:
        """Latent tokens of one clip (Wan2.1 at 81x480x832: 21 x 30 x 52 = 32,760)."""
        pt, ph, pw = self.transformer.patch
        _, f, h, w = self.latent
        return (f // pt) * (h // ph) * (w // pw)

    def with_video(self, video: tuple[int, int, int]) -> GeneratorModel:
        if not self.wan_vae:
            return self
        f, h, w = video
        return replace(self, video=tuple(video), latent=(self.latent[0], (f - 1) // 4 + 1, h // 8, w // 8))


def generator_model(path: str | Path, video_shape, text_tokens: int, fps: float) -> GeneratorModel:
    """Dimensions of the generator at ``path`` (its config.json files), or Wan2.1-T2V-1.3B's built-in ones
    when the directory is not on this machine. ``video_shape`` and ``text_tokens`` apply to Wan checkpoints;
    ``fps`` too; the moving-shapes world layout (``generator.json``) records its own. A hub id is read from the
    Hugging Face cache when it is there (the check never downloads)."""
    from rlhf.hub import cached_or_path

    path = cached_or_path(path)
    world = _read_json(path / "generator.json")
    tcfg = _read_json(path / "transformer" / "config.json")
    ecfg = _read_json(path / "text_encoder" / "config.json")
    transformer = WanDims.from_config(tcfg) if tcfg else WanDims()
    text = UMT5Dims.from_config(ecfg) if ecfg else UMT5Dims()
    if world:
        f, c = world["codec_factor"], world["frames"]
        return GeneratorModel(
            transformer,
            text,
            (c, world["height"], world["width"]),
            (3 * f * f, c, world["height"] // f, world["width"] // f),
            world["max_text_tokens"],
            0,
            float(world.get("fps", 8.0)),
            f"{path} (world layout)",
            wan_vae=False,
        )
    vcfg = _read_json(path / "vae" / "config.json") or {}
    vae_params = round(WAN_VAE_PARAMS * (vcfg.get("base_dim", 96) / 96) ** 2)
    frames, height, width = (int(x) for x in video_shape)
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise ValueError(
            f"video_shape {list(video_shape)}: a Wan VAE + 1x2x2 patches need frames = 4 k + 1 and "
            "height, width multiples of 16 (e.g. [81, 480, 832])"
        )
    source = str(path) if tcfg else f"built-in Wan2.1-T2V-1.3B dimensions ({path} has no transformer/config.json here)"
    return GeneratorModel(
        transformer,
        text,
        (frames, height, width),
        (vcfg.get("z_dim", 16), (frames - 1) // 4 + 1, height // 8, width // 8),
        text_tokens,
        vae_params,
        float(fps),
        source,
    )


# ------------------------------------------------------------------------------------------- reward
@dataclass(frozen=True)
class RewardModel:
    dims: QwenVLDims
    sampling: object  # the checkpoint's rlhf.reward.processor.FrameSampling (the release's when not on disk)
    source: str = "built-in Qwen2-VL-2B dimensions"

    def patches(self, video: tuple[int, int, int], fps: float) -> int:
        """Vision patches of one clip after the checkpoint's frame sampling (what the reward model reads)."""
        from rlhf.reward.processor import VisionGeometry

        g = VisionGeometry(self.dims.patch, self.dims.temporal_patch, self.dims.merge)
        t = len(self.sampling.indices(video[0], fps, g))
        h, w = self.sampling.size(video[1], video[2], g)
        return (t // self.dims.temporal_patch) * (h // self.dims.patch) * (w // self.dims.patch)


def reward_model(model: str) -> RewardModel | None:
    """``model`` as RewardServiceConfig names it: None for the oracle (numpy, no model), else the backbone's
    dimensions and the checkpoint's frame sampling (built-in Qwen2-VL-2B and VideoAlign's when not on disk)."""
    if model == "oracle":
        return None
    from rlhf.hub import cached_or_path
    from rlhf.reward.checkpoint import DEFAULT_REWARD, read_info  # imports torch: only when a model is asked for
    from rlhf.reward.processor import RELEASE_SAMPLING

    root = DEFAULT_REWARD if model == "default" else cached_or_path(model)
    if not (root / "model_config.json").is_file():
        return RewardModel(
            QwenVLDims(),
            RELEASE_SAMPLING,
            source=f"built-in Qwen2-VL-2B dimensions and the release's frame sampling ({model} has no "
            "model_config.json here)",
        )
    info = read_info(root)
    local = root / info.model_name_or_path
    base = local if local.is_dir() else cached_or_path(info.model_name_or_path)
    cfg = _read_json(base / "config.json")
    return RewardModel(
        QwenVLDims.from_config(cfg) if cfg else QwenVLDims(),
        info.sampling,
        str(base) if cfg else f"built-in Qwen2-VL-2B dimensions ({base} not here)",
    )


# -------------------------------------------------------------------------------------------- estimates
@dataclass
class Estimate:
    """One process's peak: named parts (bytes) by kind: weights, state, activations, overhead."""

    cuda: bool
    parts: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, what, bytes)

    def add(self, kind: str, what: str, nbytes: float) -> None:
        self.parts.append((kind, what, float(nbytes)))

    def total(self, *kinds: str) -> float:
        return sum(b for k, _, b in self.parts if not kinds or k in kinds)

    @property
    def allocated(self) -> float:
        """What torch.cuda.max_memory_allocated would report (no context, no allocator slack)."""
        return self.total("weights", "state", "activations")

    @property
    def need(self) -> float:
        return self.total()

    def finish(self, nccl: bool = False) -> Estimate:
        if not self.cuda:
            self.add("overhead", "the process (Python, torch, Ray worker)", CPU_PROCESS_BYTES)
        else:
            self.add(
                "overhead",
                f"allocator slack ({ALLOCATOR_OVERHEAD:.0%} of non-weights)",
                ALLOCATOR_OVERHEAD * self.total("state", "activations"),
            )
            self.add("overhead", "CUDA context", CUDA_CONTEXT_BYTES)
            if nccl:
                self.add("overhead", "NCCL buffers", NCCL_BYTES)
        return self


def _per_token(counts: dict, D: int, F: int, r: int, a: int) -> int:
    return (
        counts.get("fp32_D", 0) * 4 * D
        + counts.get("act_D", 0) * a * D
        + counts.get("act_F", 0) * a * F
        + counts.get("act_r", 0) * a * r
    )


@dataclass(frozen=True)
class TrainerSetting:
    model: GeneratorModel
    micro_batch: int
    lora_rank: int
    precision: str = "bf16"
    checkpointing: bool = True
    zero_stage: int = 0
    world: int = 1
    pairwise: bool = True  # Flow-DPO (winner + loser + reference forward) or Flow-RWR (one clip per row)
    cuda: bool = True


def trainer_memory(s: TrainerSetting) -> Estimate:
    """One trainer worker's peak during an optimiser step (module docstring: the model)."""
    m, a = s.model, BYTES[s.precision]
    wan = m.transformer
    D, F, r, L = wan.dim, wan.ffn_dim, s.lora_rank, m.tokens
    n = s.micro_batch * (2 if s.pairwise else 1)
    e = Estimate(s.cuda)
    base = wan.params() * a
    if s.zero_stage == 3 and s.world > 1:
        e.add(
            "weights",
            f"transformer {count(wan.params())} {s.precision}, ZeRO-3 over {s.world} workers + 2 blocks gathered",
            base / s.world + 2 * wan.block_params() * a,
        )
    else:
        e.add("weights", f"transformer {count(wan.params())} {s.precision}", base)
    lora = wan.lora_params(r)
    per_param = sum(b / (s.world if s.zero_stage >= stage else 1) for b, stage in LORA_STATE_BYTES[s.precision])
    e.add(
        "state",
        f"LoRA r{r} {count(lora)} + AdamW (DeepSpeed {s.precision}, ZeRO-{s.zero_stage}: {per_param:.1f} B/param)",
        lora * per_param,
    )
    saved = _per_token(WAN_BLOCK_SAVED, D, F, r, a)
    working = _per_token(WAN_BLOCK_WORKING, D, F, r, a)
    text = n * m.text_tokens * (_per_token(WAN_BLOCK_SAVED_TEXT, D, F, r, a) + (wan.text_dim + D) * a)
    step = n * L * math.prod(wan.patch) * wan.out_channels * STEP_TENSORS_PER_LATENT_VALUE
    if s.checkpointing:
        e.add(
            "activations",
            f"block inputs kept by checkpointing: {wan.layers} x {n} clips x {L:,} tokens x D {D}",
            wan.layers * n * L * D * a,
        )
        e.add(
            "activations",
            "one block recomputed in backward (saved tensors + gradients in flight)",
            n * L * (saved + working),
        )
        e.add("activations", "prompt embeddings and one block's cross-attention keys/values", text)
    else:
        e.add(
            "activations",
            f"saved tensors of all {wan.layers} blocks, {n} clips x {L:,} tokens",
            wan.layers * n * L * saved + n * L * working,
        )
        e.add(
            "activations",
            f"prompt embeddings and {wan.layers} blocks' cross-attention keys/values",
            text + (wan.layers - 1) * n * m.text_tokens * _per_token(WAN_BLOCK_SAVED_TEXT, D, F, r, a),
        )
    e.add("activations", "latents, targets, predictions (fp32)", step)
    return e.finish(nccl=s.cuda and s.world > 1)


@dataclass(frozen=True)
class GeneratorSetting:
    model: GeneratorModel
    sampler_batch: int  # clips per transformer forward before guidance doubles it
    guidance: bool  # classifier-free guidance (cond + uncond in one forward)
    clips_per_call: int  # clips one sample() call holds and decodes at once: an actor's share of a batch
    lora_rank: int
    min_clips_per_call: int = 1  # the smallest share there can be (one prompt group)
    decode_batch: int = 0  # clips per VAE decode (sampler.decode_batch_size; 0 = the whole call)
    precision: str = "bf16"
    cuda: bool = True


def generator_memory(s: GeneratorSetting) -> Estimate:
    """One generator actor's peak: resident models plus the largest of encoding, sampling and decoding."""
    m, a = s.model, BYTES[s.precision]
    wan, t5 = m.transformer, m.text
    e = Estimate(s.cuda)
    e.add("weights", f"transformer {count(wan.params())} {s.precision}", wan.params() * a)
    e.add("weights", f"text encoder {count(t5.params())} {s.precision}", t5.params() * a)
    if m.vae_params:
        e.add("weights", f"VAE {count(m.vae_params)} fp32", m.vae_params * 4)
    lora = wan.lora_params(s.lora_rank)
    e.add("weights", f"LoRA r{s.lora_rank} {count(lora)} fp32", lora * 4)
    fwd = s.sampler_batch * (2 if s.guidance else 1)
    latent_bytes = math.prod(m.latent) * 4
    T = m.text_tokens
    encode = s.sampler_batch * (t5.heads * T * T * (2 * a + 4) + T * (3 * t5.d_ff + 4 * t5.d_model) * a)
    D, F = wan.dim, wan.ffn_dim
    sampling = (
        fwd * m.tokens * _per_token(WAN_BLOCK_WORKING, D, F, s.lora_rank, a)
        + fwd * m.tokens * D * a
        + 2 * s.sampler_batch * T * (wan.text_dim + D) * a
    )
    video_fp32 = 3 * math.prod(m.video) * 4
    # the VAE's working set with its fp32 output, or the output and two temporaries of the uint8 conversion
    vae = m.video[1] * m.video[2] * WAN_VAE_DECODE_BYTES_PER_PIXEL if m.vae_params else 0
    at_once = min(s.clips_per_call, s.decode_batch or s.clips_per_call)
    # the VAE's working set for the clips decoded together; the uint8 videos of the whole call stay
    decode = at_once * max(vae + video_fp32, 3 * video_fp32) + (s.clips_per_call - at_once) * math.prod(m.video) * 3
    phases = {
        f"prompt encoding ({s.sampler_batch} prompts x {T} tokens)": encode,
        f"sampling ({fwd} clips per forward x {m.tokens:,} tokens)": sampling,
        f"decoding ({at_once} of {s.clips_per_call} clips of {m.video[0]}x{m.video[1]}x{m.video[2]} at once)": decode,
    }
    name = max(phases, key=phases.get)
    e.add("activations", f"latents of the call's {s.clips_per_call} clips (fp32)", s.clips_per_call * latent_bytes * 2)
    e.add("activations", f"peak phase: {name}", phases[name])
    return e.finish()


@dataclass(frozen=True)
class RewardSetting:
    model: RewardModel
    batch: int
    video: tuple[int, int, int]
    fps: float
    precision: str = "bf16"
    cuda: bool = True


def reward_memory(s: RewardSetting) -> Estimate:
    """One reward replica's peak: Qwen2-VL weights plus one forward of ``batch`` clips."""
    q, a = s.model.dims, BYTES[s.precision]
    e = Estimate(s.cuda)
    e.add("weights", f"Qwen2-VL {count(q.params())} {s.precision}", q.params() * a)
    patches = s.model.patches(s.video, s.fps)
    tokens = patches // q.merge**2 + REWARD_PROMPT_TOKENS
    M = int(q.vision_embed * q.vision_mlp_ratio)
    vision = patches * (QWEN_VISION_WORKING["mlp"] * M + QWEN_VISION_WORKING["embed"] * q.vision_embed) * a
    text = tokens * (QWEN_TEXT_WORKING["intermediate"] * q.intermediate + QWEN_TEXT_WORKING["hidden"] * q.hidden) * a
    e.add(
        "activations",
        f"{s.batch} clips x {patches:,} vision patches ({tokens:,} LM tokens): pixels, embeddings",
        s.batch * (patches * 3 * q.temporal_patch * q.patch**2 * (4 + a) + tokens * q.hidden * a),
    )
    e.add(
        "activations",
        f"working set of the {'vision tower' if vision >= text else 'language model'}",
        s.batch * max(vision, text),
    )
    return e.finish()


def estimate(setting) -> Estimate:
    return {TrainerSetting: trainer_memory, GeneratorSetting: generator_memory, RewardSetting: reward_memory}[
        type(setting)
    ](setting)


# ------------------------------------------------------------------------------------------------ fixes
def _size_down(setting, budget: float):
    """The largest frame size (multiples of 16, the aspect ratio kept) below the current one with which
    ``setting`` fits ``budget``."""
    m = setting.model
    f, h, w = m.video
    for hh in range(h - 16, 15, -16):
        ww = max(16, round(w * hh / h / 16) * 16)
        s = replace(setting, model=m.with_video((f, hh, ww)))
        if estimate(s).need <= budget:
            return s
    return None


def _frames_down(setting, budget: float):
    """The most frames (4 k + 1) below the current count with which ``setting`` fits ``budget``."""
    m = setting.model
    f, h, w = m.video
    for frames in range(f - 4, 4, -4):
        s = replace(setting, model=m.with_video((frames, h, w)))
        if estimate(s).need <= budget:
            return s
    return None


def fixes(setting, budget: float) -> list[tuple[str, float]]:
    """Changes (in the online job's config keys) for a role that does not fit ``budget`` bytes, each with the
    need it leaves: every single change, all of them together, then with them the most frames (trainer) or the
    largest frame size (generator: its decoder scales with pixels, not frames) that fit."""
    cands: list[tuple[str, dict]] = []
    if isinstance(setting, TrainerSetting):
        if not setting.checkpointing:
            cands.append(("trainer.device.gradient_checkpointing=true", {"checkpointing": True}))
        if setting.micro_batch > 1:
            cands.append(("trainer.micro_batch=1", {"micro_batch": 1}))
        if setting.world > 1 and setting.zero_stage < 3:
            cands.append(("trainer.zero_stage=3", {"zero_stage": 3}))
        if setting.precision == "fp32":
            cands.append(("trainer.device.precision=bf16", {"precision": "bf16"}))
    elif isinstance(setting, GeneratorSetting):
        if setting.sampler_batch > 1:
            cands.append(("sampler.batch_size=1", {"sampler_batch": 1}))
        if min(setting.clips_per_call, setting.decode_batch or setting.clips_per_call) > 1:
            cands.append(("sampler.decode_batch_size=1", {"decode_batch": 1}))
        if setting.clips_per_call > setting.min_clips_per_call:
            cands.append(
                (
                    f"{setting.min_clips_per_call} clips per actor (more generators or fewer prompts_per_iter / "
                    "eval_n_prompts)",
                    {"clips_per_call": setting.min_clips_per_call},
                )
            )
        if setting.precision == "fp32":
            cands.append(("generator_device.precision=bf16", {"precision": "bf16"}))
    elif isinstance(setting, RewardSetting):
        fitting = [b for b in (8, 4, 2, 1) if b < setting.batch and estimate(replace(setting, batch=b)).need <= budget]
        if fitting:
            cands.append((f"reward.max_batch_size={fitting[0]}", {"batch": fitting[0]}))
        if setting.precision == "fp32":
            cands.append(("reward.device.precision=bf16", {"precision": "bf16"}))
    out = [(label, estimate(replace(setting, **change)).need) for label, change in cands]
    combined = replace(setting, **{k: v for _, change in cands for k, v in change.items()})
    labels = " ".join(label for label, _ in cands)
    if len(cands) > 1:
        out.append((labels, estimate(combined).need))
    smaller = None
    if isinstance(setting, GeneratorSetting) and setting.model.wan_vae:
        smaller = _size_down(combined, budget)
    elif isinstance(setting, TrainerSetting) and setting.model.wan_vae:
        smaller = _frames_down(combined, budget)
    if smaller:
        f, h, w = smaller.model.video
        out.append(((labels + " " if labels else "") + f"video_shape=[{f},{h},{w}]", estimate(smaller).need))
    return out


def bigger_gpus(need: float, current: str) -> list[str]:
    """Instance types of :data:`INSTANCES` whose GPU holds ``need`` bytes: smallest GPU first, then the GPU count
    closest to ``current``'s."""
    have = INSTANCES.get(current, Instance("", 0, 1, 0))
    ok = sorted(
        (i.gpu_mib, abs(i.gpus - have.gpus), name)
        for name, i in INSTANCES.items()
        if i.gpu_mib * 2**20 >= need and i.gpu_mib > have.gpu_mib
    )
    return [f"{name} ({INSTANCES[name].gpus} x {INSTANCES[name].gpu}, {mib / 1024:.1f} GiB)" for mib, _, name in ok]


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def role_report(role: str, setting, node: tuple[str, str] | None, per_gpu: int = 1) -> tuple[list[str], float]:
    """Printable lines for one role and how many bytes it is short of its GPU (0 when it fits, or on CPU).
    ``node`` is (node type, instance type) from :func:`node_for`; ``per_gpu`` processes share one GPU."""
    e = estimate(setting)
    lines = [f"    {kind:<11} {what:<84} {gib(b):>10}" for kind, what, b in e.parts]
    where = f"node type '{node[0]}' ({node[1]})" if node else "no node type of cluster.yaml"
    if not e.cuda:
        inst = INSTANCES.get(node[1]) if node else None
        host = f" of the {inst.host_gib} GiB of {where}" if inst else ""
        return lines + [f"    on cpu: host RAM need {gib(e.need)}{host} (no GPU to check)"], 0.0
    need = e.need * per_gpu
    share = f" x {per_gpu} processes per GPU" if per_gpu > 1 else ""
    inst = INSTANCES.get(node[1]) if node else None
    if inst is None or not inst.gpus:
        why = (
            f'its resources name no node type of cluster.yaml (e.g. {{"{role}": 1}})'
            if node is None
            else f"{node[1]!r} is not a GPU instance type this check knows ({', '.join(INSTANCES)})"
        )
        return lines + [f"    need {gib(need)} on cuda, but {why}: cannot check, counted as not fitting"], need
    budget = inst.gpu_mib * 2**20
    head = f"    need {gib(need)}{share} of {gib(budget)} ({inst.gpu} on {where})"
    if need <= budget:
        return lines + [f"{head}: fits, {gib(budget - need)} spare"], 0.0
    lines.append(f"{head}: DOES NOT FIT, {gib(need - budget)} short; fixes:")
    for label, n in fixes(setting, budget / per_gpu):
        verdict = "fits" if n * per_gpu <= budget else f"still {gib(n * per_gpu - budget)} short"
        lines.append(f"      {label}  -> {gib(n * per_gpu)} ({verdict})")
    gpus = bigger_gpus(need, node[1])
    lines.append(
        f"      a bigger GPU for node type '{node[0]}' in cluster.yaml: {', '.join(gpus[:3])}"
        if gpus
        else f"      no GPU type this check knows ({', '.join(INSTANCES)}) holds {gib(need)}"
    )
    return lines, need - budget


# --------------------------------------------------------------------------------- the online job's check
def check_online(cfg, cluster: str | Path) -> int:
    """``--check``: the GPU memory each role needs (rlhf/memory.py) against the GPU of the node type
    ``cluster`` gives it; loads no weights and starts no Ray. 0 when every role fits, 2 naming the ones
    that do not (with the changes that would make them fit)."""
    import yaml

    from rlhf.generator.model import DEFAULT_GENERATOR

    nodes = yaml.safe_load(Path(cluster).read_text())
    gen = generator_model(cfg.generator or DEFAULT_GENERATOR, cfg.video_shape, cfg.text_tokens, cfg.fps)
    tgen = (
        gen
        if not cfg.trainer.generator
        else generator_model(cfg.trainer.generator, cfg.video_shape, cfg.text_tokens, cfg.fps)
    )
    t, d = cfg.trainer, cfg.generator_device
    share = max(
        math.ceil(cfg.prompts_per_iter / cfg.generators) * cfg.group,
        math.ceil(cfg.eval_n_prompts * cfg.eval_seeds / cfg.generators),
    )
    roles = [
        (
            "generator",
            f"{cfg.generators} actors",
            GeneratorSetting(
                gen,
                cfg.sampler.batch_size,
                cfg.sampler.guidance != 1.0,
                share,
                t.lora_rank,
                min_clips_per_call=cfg.group,
                precision=d.precision,
                cuda=d.is_cuda,
                decode_batch=cfg.sampler.decode_batch_size,
            ),
            cfg.generator_resources,
            cfg.generator_gpus,
        ),
        (
            "trainer",
            f"{t.num_workers} workers",
            TrainerSetting(
                tgen,
                t.micro_batch,
                t.lora_rank,
                t.device.precision,
                t.device.gradient_checkpointing,
                t.zero_stage,
                t.num_workers,
                t.algo.pairwise,
                t.device.is_cuda,
            ),
            t.resources_per_worker,
            1.0,
        ),
    ]
    reward = reward_model(cfg.reward.model)
    if reward is not None:
        roles.append(
            (
                "reward",
                f"{cfg.reward.max_replicas} replica(s) max",
                RewardSetting(
                    reward,
                    cfg.reward.max_batch_size,
                    gen.video,
                    gen.fps,
                    cfg.reward.device.precision,
                    cfg.reward.device.is_cuda,
                ),
                dict(cfg.reward.resources),
                cfg.reward.num_gpus,
            )
        )
    f, h, w = gen.video
    print(
        f"[check] config valid; each role's peak memory per process against the GPUs of {cluster}\n"
        f"  clips {f}x{h}x{w} at {gen.fps:g} fps -> latent {'x'.join(map(str, gen.latent))}, "
        f"{gen.tokens:,} tokens per clip\n  generator dimensions: {gen.source}"
        + ("" if reward is None else f"\n  reward dimensions: {reward.source}")
    )
    short = {}
    for name, how_many, setting, resources, gpus in roles:
        node = node_for(nodes, name, resources, by_name=name == "reward")  # or the node type named "reward"
        per_gpu = max(1, math.floor(1 / gpus)) if 0 < gpus < 1 else 1
        lines, missing = role_report(name, setting, node, per_gpu)
        print(f"  {name} ({how_many}, {'cuda' if setting.cuda else 'cpu'} {setting.precision}):")
        print("\n".join(lines))
        if missing > 0:
            short[name] = missing
    if reward is None:
        print("  reward: the oracle (numpy on the replica's CPU, no model)")
    if cfg.guidance.scale > 0:
        print("  note: the Flow-NRG latent reward model on the generator actors is not counted")
    if reward is not None and cfg.reward.backend == "vllm":
        print("  note: vLLM reserves its own share of the reward GPU (gpu_memory_utilization), not counted")
    if short:
        print("error: " + "; ".join(f"{k} does not fit ({gib(v)} short)" for k, v in short.items()), file=sys.stderr)
        return 2
    print("[check] every role fits")
    return 0


__all__ = [
    "ALLOCATOR_OVERHEAD",
    "CUDA_CONTEXT_BYTES",
    "Estimate",
    "check_online",
    "GeneratorModel",
    "GeneratorSetting",
    "INSTANCES",
    "QwenVLDims",
    "RewardModel",
    "RewardSetting",
    "TrainerSetting",
    "UMT5Dims",
    "WanDims",
    "bigger_gpus",
    "count",
    "estimate",
    "fixes",
    "generator_memory",
    "generator_model",
    "gib",
    "node_for",
    "reward_memory",
    "reward_model",
    "role_report",
    "trainer_memory",
]
