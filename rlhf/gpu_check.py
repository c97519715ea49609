# Long on purpose: the GPU check is one prepared script that runs as a whole on a lent accelerator (minutes of
# device time); each check sits beside the plain reference figure it is compared with.
"""GPU check through the project's own code, each figure beside the plain-PyTorch copy of ``bench_gpu.py``.

    python jobs/gpu_check.py --out runs/bench/gpu_check.json             # on a CUDA machine, bf16
    python jobs/gpu_check.py --tiny --device cpu --out /tmp/check.json    # a seconds-long smoke run

``bench_gpu.py`` times Wan2.1-1.3B- and Qwen2-VL-2B-shaped models written in plain PyTorch; this job
times the same work through ``rlhf/`` and puts the two side by side, in the same process, as the ratio
project / plain of seconds and of peak GPU memory (target: 1.2 at most). Both run in bf16 on a GPU and
in fp32 on a CPU (where bf16 is the slower one). What runs through the project:

* ``wan_dpo_step``: diffusers' ``WanTransformer3DModel`` built from Wan2.1-T2V-1.3B's config (random
  weights) in a :class:`FlowGenerator` without text encoder (prompt embeddings are random
  ``(1, 512, 4096)`` tensors, as trainer workers receive them), ``add_lora`` r 64 on q/k/v/o, placed in
  bf16 with diffusers' activation checkpointing, one ``train_step`` of Flow-DPO on one pair of
  81 x 480 x 832 latents with ``plain_update`` (AdamW on the adapter). Seconds per pair.
* ``wan_cfg_step``: one ``euler_sample`` step with guidance 5 on one clip (cond + uncond: batch 2).
* ``wan_nrg_step``: the same step with Flow-NRG: ``reward_guidance`` from a :class:`LatentReward` on a
  2-block Wan backbone of the same width, reading the noised latents. ``bench_gpu`` has no guided step;
  the JSON gives its cost against the project's own CFG step instead.
* ``reward_forward``: ``VideoRewardModel`` on a Qwen2-VL-2B-config backbone (random weights, the
  training recipe's peft LoRA attached, as a served checkpoint has it), 16 frames at 448 x 448 per clip,
  a batch of 4 clips; the prompt is padded to ``bench_gpu``'s 96 tokens around the video, and the
  plain model is given the project's exact count.
* ``reward_btt_step``: one BTT optimiser step on 2 pairs (the same 4 clips) with ``pair_loss``, the
  recipe's trainable parts and transformers' activation checkpointing. ``bench_gpu`` has no training
  step of the reward model: project figures only.

Both sides are built from one shape description (:class:`WanCheck`, :class:`RewardCheck`), so they
always see the same tokens. Needs only torch, transformers, peft, safetensors and diffusers: no Ray,
DeepSpeed or PyAV (the plain AdamW here stands in for DeepSpeed's optimiser in the reward step).
Peak memory is ``torch.cuda.max_memory_allocated`` after a reset, weights included; CPU runs give times
only.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from rlhf.align.step import AlgoConfig, plain_update, train_step
from rlhf.device import DeviceConfig, DeviceError, seeded_generator
from rlhf.dims import RewardWeights
from rlhf.generator.guidance import GuidanceConfig
from rlhf.generator.model import LORA_TARGETS, FlowGenerator
from rlhf.generator.sampler import SamplerConfig, euler_sample
from rlhf.memory import WanDims
from rlhf.plain import RewardShape, WanShape, bench_reward, bench_wan, timed
from rlhf.reward.data import PairBatch
from rlhf.reward.latent import LatentReward, LatentRewardConfig
from rlhf.reward.model import BackboneConfig, TrainableParts, apply_trainable_parts, build_model, qwen2vl_config
from rlhf.reward.processor import RewardProcessor, VisionGeometry
from rlhf.reward.tokens import VIDEO_PAD, build_tokenizer
from rlhf.reward.train import pair_loss

PRECISION = {"cuda": "bf16", "cpu": "fp32"}  # bf16 autocast is ~10x slower than fp32 on CPUs
TARGET_RATIO = 1.2  # project / plain, time and peak memory
SECTIONS = ("wan", "reward")


# ----------------------------------------------------------------------------------------- shapes
class WanLatentCodec:
    """Wan2.1's VAE geometry (16 channels, 4x in time, 8x in space) without a VAE: only the transformer
    is timed, and it never sees pixels."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        if (frames - 1) % 4 or height % 8 or width % 8:
            raise ValueError(
                f"Wan video shape must be (4k + 1) frames of sides divisible by 8, got {frames} x {height} x {width}"
            )
        return 16, (frames - 1) // 4 + 1, height // 8, width // 8


@dataclass
class WanCheck:
    """Wan2.1-T2V-1.3B as diffusers configures it, at 81 x 480 x 832 (32,760 latent tokens)."""

    heads: int = 12
    head_dim: int = 128
    ffn: int = 8960
    layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096  # UMT5-XXL width
    text_tokens: int = 512
    video: tuple = (81, 480, 832)  # frames, height, width
    lora_rank: int = 64
    guidance: float = 5.0  # classifier-free guidance of the sampling steps
    nrg_blocks: int = 2  # Wan blocks in the latent reward's backbone
    nrg_scale: float = 1.0

    @classmethod
    def tiny(cls) -> WanCheck:
        return cls(heads=4, head_dim=16, ffn=128, layers=2, text_dim=32, text_tokens=8, video=(9, 64, 64), lora_rank=4)

    def diffusers_config(self, **override) -> dict:
        return WanDims(
            layers=self.layers,
            heads=self.heads,
            head_dim=self.head_dim,
            ffn_dim=self.ffn,
            text_dim=self.text_dim,
            freq_dim=self.freq_dim,
        ).diffusers_config(**override)

    def bench_shape(self) -> WanShape:
        _, frames, height, width = WanLatentCodec().latent_shape(*self.video)
        return WanShape(
            dim=self.heads * self.head_dim,
            heads=self.heads,
            ffn=self.ffn,
            layers=self.layers,
            text_dim=self.text_dim,
            text_tokens=self.text_tokens,
            frames=frames,
            height=height,
            width=width,
            lora_rank=self.lora_rank,
        )


@dataclass
class RewardCheck:
    """Qwen2-VL-2B's dimensions, VideoAlign's clips (16 frames at 448 x 448), 4 clips per batch."""

    text_hidden: int = 1536
    text_layers: int = 28
    text_heads: int = 12
    text_kv_heads: int = 2
    text_intermediate: int = 8960
    vocab_size: int = 151936
    rope_theta: float = 1e6
    vision_depth: int = 32
    vision_embed: int = 1280
    vision_heads: int = 16
    vision_mlp_ratio: int = 4
    frames: int = 16
    size: int = 448
    clips: int = 4  # the forward's batch; the BTT step trains on clips / 2 pairs
    text_tokens: int = 96  # tokens around the video (the prompt is padded to reach it)

    @classmethod
    def tiny(cls) -> RewardCheck:
        return cls(
            text_hidden=64,
            text_layers=2,
            text_heads=4,
            text_kv_heads=2,
            text_intermediate=128,
            vocab_size=512,
            vision_depth=2,
            vision_embed=64,
            vision_heads=4,
            vision_mlp_ratio=2,
            frames=4,
            size=56,
            clips=2,
            text_tokens=16,
        )

    def backbone(self) -> BackboneConfig:
        return BackboneConfig(
            text_hidden=self.text_hidden,
            text_layers=self.text_layers,
            text_heads=self.text_heads,
            text_kv_heads=self.text_kv_heads,
            text_intermediate=self.text_intermediate,
            vision_depth=self.vision_depth,
            vision_embed=self.vision_embed,
            vision_heads=self.vision_heads,
            vocab_size=self.vocab_size,
        )

    def bench_shape(self, text_tokens: int) -> RewardShape:
        return RewardShape(
            vis_dim=self.vision_embed,
            vis_heads=self.vision_heads,
            vis_mlp=self.vision_embed * self.vision_mlp_ratio,
            vis_layers=self.vision_depth,
            dim=self.text_hidden,
            heads=self.text_heads,
            kv_heads=self.text_kv_heads,
            ffn=self.text_intermediate,
            layers=self.text_layers,
            frames=self.frames,
            size=self.size,
            text_tokens=text_tokens,
            batch=self.clips,
        )


# ----------------------------------------------------------------------------------------- measuring
def measure(fn, device: torch.device, warmup: int, reps: int) -> dict:
    """Median seconds of ``fn`` over ``reps`` synchronised runs after ``warmup``; on CUDA also the peak
    memory allocated meanwhile (GiB, everything resident included, as ``bench_gpu`` counts it)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(fn, device, warmup, reps)
    out = {"seconds": [round(s, 4) for s in seconds], "median_s": sorted(seconds)[len(seconds) // 2]}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def release(dc: DeviceConfig) -> None:
    """Free what the last section held, so the next one's peak memory is its own."""
    gc.collect()
    if dc.is_cuda:
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------- Wan through rlhf
def project_wan(c: WanCheck, dc: DeviceConfig, warmup: int, reps: int) -> dict:
    from diffusers import WanTransformer3DModel

    device = dc.torch_device()

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a CPU init of 1.4 B parameters takes longer than the timing
        transformer = WanTransformer3DModel(**c.diffusers_config())
    gen = FlowGenerator(transformer, None, WanLatentCodec(), c.video, fps=16)
    gen.add_lora(rank=c.lora_rank, targets=LORA_TARGETS)
    gen.place(replace(dc, gradient_checkpointing=True))

    rng = seeded_generator(0, device)
    shape = (1, *gen.latent_shape)
    text = torch.randn(1, c.text_tokens, c.text_dim, generator=rng, device=device).to(dc.dtype)
    pair = {
        "x_w": torch.randn(shape, generator=rng, device=device),
        "x_l": torch.randn(shape, generator=rng, device=device),
        "text": text,
    }
    params = gen.lora_parameters()
    update = plain_update(torch.optim.AdamW(params, lr=1e-5), params)
    dpo = measure(lambda: train_step(gen, pair, AlgoConfig(), rng, update), device, warmup, reps)

    gen.eval()
    noise = torch.randn(shape, generator=rng, device=device)
    uncond = torch.zeros_like(text)
    one_step = SamplerConfig(steps=1, guidance=c.guidance)
    with torch.no_grad():
        cfg = measure(lambda: euler_sample(gen.velocity, noise, text, uncond, one_step), device, warmup, reps)

    # The latent reward: the generator's input stage and first blocks (random weights, like everything here)
    with torch.device(device):
        scorer = WanTransformer3DModel(
            **c.diffusers_config(num_layers=c.nrg_blocks, out_channels=LatentRewardConfig().features)
        )
    backbone = FlowGenerator(scorer, None, WanLatentCodec(), c.video, fps=16)
    reward = LatentReward(backbone, LatentRewardConfig(blocks=c.nrg_blocks))
    reward.place(dc).eval()
    guide = (reward.reward_fn(text), GuidanceConfig(scale=c.nrg_scale, weights=RewardWeights(1.0, 1.0, 1.0)))
    with torch.no_grad():
        nrg = measure(lambda: euler_sample(gen.velocity, noise, text, uncond, one_step, guide), device, warmup, reps)
    return {
        "params_m": round(sum(p.numel() for p in gen.parameters()) / 1e6, 1),
        "lora_params_m": round(sum(p.numel() for p in params) / 1e6, 2),
        "latent_shape": list(gen.latent_shape),
        "dpo_step": dpo,
        "cfg_step": cfg,
        "nrg_step": nrg,
    }


# ----------------------------------------------------------------------------------------- VideoReward through rlhf
def reward_inputs(c: RewardCheck, tokenizer, geometry: VisionGeometry, n: int) -> dict:
    """``n`` clips of random patches in the reward template; the prompt is padded until the tokens
    around the video number ``c.text_tokens`` (or the template's own count, when that is more)."""
    grid = (c.frames // geometry.temporal, c.size // geometry.patch, c.size // geometry.patch)
    processor = RewardProcessor(tokenizer, geometry=geometry)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)

    def around(words: int) -> int:  # the grid alone sets the text: no patches needed to count
        ids = processor.encode([(torch.empty(0), grid)], [" ".join(["video"] * words)])["input_ids"][0]
        return int((ids != video_id).sum())

    words = 0
    while around(words) < c.text_tokens:
        words += 1
    patches = torch.randn(grid[0] * grid[1] * grid[2], 3 * geometry.temporal * geometry.patch**2)
    return processor.encode([(patches, grid)] * n, [" ".join(["video"] * words)] * n)


def project_reward(c: RewardCheck, dc: DeviceConfig, warmup: int, reps: int) -> dict:
    from transformers import Qwen2VLForConditionalGeneration

    device = dc.torch_device()

    tokenizer = build_tokenizer(["a video"], c.vocab_size)
    config = qwen2vl_config(tokenizer, c.backbone())
    # Qwen2-VL-2B values that BackboneConfig does not carry
    config.vision_config.mlp_ratio = c.vision_mlp_ratio
    config.text_config.rope_parameters["rope_theta"] = c.rope_theta
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    with torch.device(device):
        vlm = Qwen2VLForConditionalGeneration(config)
    model = apply_trainable_parts(build_model(tokenizer, c.backbone(), vlm=vlm), TrainableParts())
    model.place(replace(dc, gradient_checkpointing=True))

    inputs = reward_inputs(c, tokenizer, VisionGeometry.of(vlm), c.clips)
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    tokens = {"sequence": inputs["input_ids"].shape[1], "video": int((inputs["input_ids"][0] == video_id).sum())}
    tokens["around_video"] = tokens["sequence"] - tokens["video"]
    on_device = {k: v.to(device, dc.dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}

    model.eval()
    with torch.no_grad():
        forward = measure(lambda: model(**on_device), device, warmup, reps)

    pairs = c.clips // 2
    labels = torch.tensor([[1, -1, 0], [-1, 0, 1], [0, 1, -1]])[torch.arange(pairs) % 3]
    nan = torch.full((pairs, 3), float("nan"))
    batch = PairBatch(
        inputs=inputs,
        labels=labels,
        overall=labels[:, 0],
        score_a=nan,
        score_b=nan,
        records=[{"prompt": "video"}] * pairs,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4)

    def btt_step():
        loss, _ = pair_loss(model, batch, "btt", tie_k=5.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    btt = measure(btt_step, device, warmup, reps)
    return {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "trainable_params_m": round(sum(p.numel() for p in params) / 1e6, 1),
        "tokens": tokens,
        "attn_implementation": vlm.config._attn_implementation,
        "forward": forward,
        "btt_step": btt,
        "btt_pairs": pairs,
    }


# ----------------------------------------------------------------------------------------- the two side by side
def figure(unit: str, project: float | None, plain: float | None) -> dict | None:
    """One row: the project's figure, the plain one and project / plain when both exist."""
    if project is None:
        return None
    row = {"unit": unit, "project": project}
    if plain is not None:
        row.update(plain=plain, ratio=project / plain if plain > 0 else math.nan)
    return row


def check_wan(c: WanCheck, dc: DeviceConfig, warmup: int, reps: int) -> dict:
    plain = bench_wan(c.bench_shape(), dc.torch_device(), dc.dtype, warmup, reps)
    release(dc)
    project = project_wan(c, dc, warmup, reps)
    release(dc)
    dpo, smp = plain["wan_dpo_step"], plain["wan_sample_step"]
    figures = {
        "wan_dpo_step.seconds": figure("s/pair", project["dpo_step"]["median_s"], dpo["median_s"]),
        "wan_dpo_step.peak_gib": figure("GiB", project["dpo_step"].get("peak_gib"), dpo.get("peak_gib")),
        "wan_cfg_step.seconds": figure("s/step", project["cfg_step"]["median_s"], smp["median_s"]),
        "wan_cfg_step.peak_gib": figure("GiB", project["cfg_step"].get("peak_gib"), smp.get("peak_gib")),
        "wan_nrg_step.seconds": figure("s/step", project["nrg_step"]["median_s"], None),
        "wan_nrg_step.peak_gib": figure("GiB", project["nrg_step"].get("peak_gib"), None),
    }
    extra = {"wan_nrg_over_cfg_step": project["nrg_step"]["median_s"] / project["cfg_step"]["median_s"]}
    return {"figures": figures, "extra": extra, "project": project, "plain": plain}


def check_reward(c: RewardCheck, dc: DeviceConfig, warmup: int, reps: int) -> dict:
    project = project_reward(c, dc, warmup, reps)
    release(dc)
    plain = bench_reward(c.bench_shape(project["tokens"]["around_video"]), dc.torch_device(), dc.dtype, warmup, reps)
    release(dc)
    fwd = plain["reward_forward"]
    per_clip = lambda s: s / c.clips  # noqa: E731
    figures = {
        "reward_forward.seconds": figure("s/clip", per_clip(project["forward"]["median_s"]), per_clip(fwd["median_s"])),
        "reward_forward.peak_gib": figure("GiB", project["forward"].get("peak_gib"), fwd.get("peak_gib")),
        "reward_btt_step.seconds": figure(
            f"s/step ({project['btt_pairs']} pairs)", project["btt_step"]["median_s"], None
        ),
        "reward_btt_step.peak_gib": figure("GiB", project["btt_step"].get("peak_gib"), None),
    }
    extra = {
        "reward_forward_clips_per_s": {"project": c.clips / project["forward"]["median_s"], "plain": fwd["clips_per_s"]}
    }
    return {"figures": figures, "extra": extra, "project": project, "plain": plain}


def table(figures: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    rows = [f"{'figure':<26} {'unit':<18} {'project':>10} {'plain':>10} {'ratio':>7}"]
    for name, row in figures.items():
        ratio = row.get("ratio")
        flag = " !" if ratio is not None and ratio > TARGET_RATIO else ""
        rows.append(
            f"{name:<26} {row['unit']:<18} {fmt(row['project']):>10} {fmt(row.get('plain')):>10} {fmt(ratio):>7}{flag}"
        )
    return "\n".join(rows)


def versions() -> dict:
    return {name: importlib.import_module(name).__version__ for name in ("torch", "diffusers", "transformers", "peft")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/gpu_check.json", help="JSON with every figure, the card, versions")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke run of the same code on any device")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: wan, reward")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before each timed figure")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per figure (the median is reported)")
    a = ap.parse_args(argv)
    sections = [s for s in a.only.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        ap.error(f"--only takes {' and/or '.join(SECTIONS)} separated by commas, got {a.only!r}")
    if a.reps < 1 or a.warmup < 0:
        ap.error(f"need --reps >= 1 and --warmup >= 0, got {a.reps} and {a.warmup}")
    dc = DeviceConfig(device=a.device, precision=PRECISION[a.device])
    try:
        device = dc.torch_device()
    except DeviceError as e:
        print(f"error: {e}; run with --device cpu --tiny for a smoke run")
        return 2
    if dc.is_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as bench_gpu
    checks = {
        "wan": (check_wan, WanCheck.tiny() if a.tiny else WanCheck()),
        "reward": (check_reward, RewardCheck.tiny() if a.tiny else RewardCheck()),
    }

    res = {
        "device": torch.cuda.get_device_name(device) if dc.is_cuda else "cpu",
        "precision": dc.precision,
        "tiny": a.tiny,
        "target_ratio": TARGET_RATIO,
        "shapes": {},
        "figures": {},
        "extra": {},
        "sections": {},
    }
    for name in sections:
        t0 = time.time()
        check, c = checks[name]
        out = check(c, dc, a.warmup, a.reps)
        res["shapes"][name] = asdict(c)
        res["figures"].update({k: v for k, v in out.pop("figures").items() if v is not None})
        res["extra"].update(out.pop("extra"))
        res["sections"][name] = {**out, "check_seconds": round(time.time() - t0, 1)}
        print(f"{name}: {res['sections'][name]['check_seconds']} s", flush=True)
    res.update(versions())
    res["over_target"] = [k for k, v in res["figures"].items() if v.get("ratio", 0) > TARGET_RATIO]
    bad = [
        k
        for k, v in res["figures"].items()
        if not all(math.isfinite(x) and x > 0 for x in (v["project"], v.get("plain", 1), v.get("ratio", 1)))
    ]

    print(
        f"\n{res['device']}, torch {res['torch']}, diffusers {res['diffusers']}, transformers {res['transformers']}"
        f", {dc.precision}{', tiny shapes' if a.tiny else ''}; ratio = project / plain, target <= {TARGET_RATIO}"
    )
    print(table(res["figures"]))
    for k, v in res["extra"].items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: " + ", ".join(f"{n} {x:.4g}" for n, x in v.items()))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    if bad:
        print(f"error: figures not finite and positive: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
