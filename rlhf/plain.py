# Long on purpose: the plain-PyTorch reference the project's code is measured against must stay self-contained
# (torch only, no project imports), so that it is an independent second implementation.
"""GPU hot paths at a realistic size, in plain PyTorch (no Ray, diffusers or transformers needed).

    python jobs/bench_gpu.py --out runs/bench/gpu.json          # on a CUDA machine
    python jobs/bench_gpu.py --tiny --device cpu                  # a seconds-long smoke run of the same code

What it times, in bf16 on one GPU, each as latent (or visual) tokens per second:

* ``wan_dpo_step``: one Flow-DPO optimiser step of a Wan2.1-1.3B-shaped transformer (30 blocks, dim 1536,
  12 heads, FFN 8960, 3-D RoPE, text cross-attention over 512 UMT5 tokens of dim 4096) with LoRA r 64 on
  q/k/v/o of both attentions, the reference being the same weights with the adapter off: policy forward on
  the winner and loser latents (with activation checkpointing per block), reference forward without
  gradients, backward, AdamW on the adapter. A pair of 81-frame 480x832 clips is 2 x 32,760 latent tokens
  (Wan VAE 4x8x8, patch 1x2x2).
* ``wan_sample_step``: one Euler step with classifier-free guidance (cond + uncond in one batch of 2).
* ``reward_forward``: a Qwen2-VL-2B-shaped VideoReward forward (vision tower depth 32 x 1280 with attention
  within each 2-frame patch group, 2x2 merger, 28 decoder layers x 1536 with GQA 12/2 heads, SwiGLU 8960),
  on a batch of clips of 16 frames at 448x448 (VideoAlign's sampling), with the three reward-token heads.

The weights are random (only the shapes matter for speed); the script writes JSON with the card's name.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class WanShape:
    dim: int = 1536
    heads: int = 12
    ffn: int = 8960
    layers: int = 30
    in_channels: int = 16
    text_dim: int = 4096
    text_tokens: int = 512
    frames: int = 21  # latent frames (81 video frames / 4 + 1)
    height: int = 60  # latent 480 / 8
    width: int = 104  # latent 832 / 8
    patch: tuple = (1, 2, 2)
    lora_rank: int = 64

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.frames // self.patch[0], self.height // self.patch[1], self.width // self.patch[2]

    @property
    def tokens(self) -> int:
        f, h, w = self.grid
        return f * h * w


@dataclass
class RewardShape:
    vis_dim: int = 1280
    vis_heads: int = 16
    vis_mlp: int = 5120
    vis_layers: int = 32
    dim: int = 1536
    heads: int = 12
    kv_heads: int = 2
    ffn: int = 8960
    layers: int = 28
    frames: int = 16
    size: int = 448
    text_tokens: int = 96
    batch: int = 4

    @property
    def patches_per_group(self) -> int:  # 14x14 patches of one 2-frame group
        return (self.size // 14) ** 2

    @property
    def visual_tokens(self) -> int:  # after the 2x2 merger, per clip
        return self.frames // 2 * self.patches_per_group // 4


# ----------------------------------------------------------------------------------------- Wan blocks
class LoRALinear(nn.Module):
    enabled = True  # class-wide switch: the reference policy is the same module with the adapter off

    def __init__(self, i: int, o: int, rank: int):
        super().__init__()
        self.base = nn.Linear(i, o)
        self.base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, i) / math.sqrt(i)) if rank else None
        self.B = nn.Parameter(torch.zeros(o, rank)) if rank else None

    def forward(self, x):
        y = self.base(x)
        if self.A is not None and LoRALinear.enabled:
            y = y + (x @ self.A.to(x.dtype).t()) @ self.B.to(x.dtype).t()
        return y


def rms(x, eps=1e-6):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


def rope_tables(grid: tuple[int, int, int], head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's 3-D RoPE: the head dimension split over (frame, height, width)."""
    d_hw = 2 * (head_dim // 6)
    parts = []
    for n, d in zip(grid, (head_dim - 2 * d_hw, d_hw, d_hw)):
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2, device=device).float() / d))
        parts.append(torch.outer(torch.arange(n, device=device).float(), freqs))
    f, h, w = grid
    ang = torch.cat(
        [
            parts[0][:, None, None].expand(f, h, w, -1),
            parts[1][None, :, None].expand(f, h, w, -1),
            parts[2][None, None, :].expand(f, h, w, -1),
        ],
        -1,
    ).reshape(f * h * w, -1)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):  # x (B, H, N, D)
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rank: int, kv_dim: int | None = None):
        super().__init__()
        kv_dim = kv_dim or dim
        self.heads = heads
        self.q, self.k, self.v = (
            LoRALinear(dim, dim, rank),
            LoRALinear(kv_dim, dim, rank),
            LoRALinear(kv_dim, dim, rank),
        )
        self.o = LoRALinear(dim, dim, rank)

    def forward(self, x, ctx=None, rope=None):
        ctx = x if ctx is None else ctx
        B, N, D = x.shape
        q = rms(self.q(x)).view(B, N, self.heads, -1).transpose(1, 2)
        k = rms(self.k(ctx)).view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.v(ctx).view(B, ctx.shape[1], self.heads, -1).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).reshape(B, N, D))


class WanBlock(nn.Module):
    def __init__(self, s: WanShape):
        super().__init__()
        self.attn1 = Attention(s.dim, s.heads, s.lora_rank)
        self.attn2 = Attention(s.dim, s.heads, s.lora_rank)
        self.norm2 = nn.LayerNorm(s.dim)
        self.ffn = nn.Sequential(nn.Linear(s.dim, s.ffn), nn.GELU(approximate="tanh"), nn.Linear(s.ffn, s.dim))
        self.table = nn.Parameter(torch.randn(1, 6, s.dim) / s.dim**0.5)

    def forward(self, x, text, temb6, cos, sin):
        sh, sc, g, csh, csc, cg = (self.table + temb6).chunk(6, dim=1)
        h = F.layer_norm(x.float(), x.shape[-1:]).to(x.dtype) * (1 + sc) + sh
        x = x + self.attn1(h, rope=(cos, sin)) * g
        x = x + self.attn2(self.norm2(x), ctx=text)
        h = F.layer_norm(x.float(), x.shape[-1:]).to(x.dtype) * (1 + csc) + csh
        return x + self.ffn(h) * cg


class WanLike(nn.Module):
    def __init__(self, s: WanShape):
        super().__init__()
        self.s = s
        p = s.patch[0] * s.patch[1] * s.patch[2]
        self.patch = nn.Linear(s.in_channels * p, s.dim)
        self.text = nn.Sequential(nn.Linear(s.text_dim, s.dim), nn.GELU(approximate="tanh"), nn.Linear(s.dim, s.dim))
        self.time = nn.Sequential(nn.Linear(256, s.dim), nn.SiLU(), nn.Linear(s.dim, s.dim))
        self.time6 = nn.Linear(s.dim, 6 * s.dim)
        self.blocks = nn.ModuleList(WanBlock(s) for _ in range(s.layers))
        self.head = nn.Linear(s.dim, s.in_channels * p)
        for n, prm in self.named_parameters():
            prm.requires_grad_(n.endswith(".A") or n.endswith(".B"))

    def forward(self, tokens, t, text, rope, grad_ckpt: bool):
        half = torch.arange(128, device=t.device).float()
        freqs = torch.exp(-math.log(10000) * half / 128)
        temb = torch.cat([torch.cos(t[:, None] * 1000 * freqs), torch.sin(t[:, None] * 1000 * freqs)], -1).to(
            tokens.dtype
        )
        temb = self.time(temb)
        temb6 = self.time6(F.silu(temb)).view(-1, 6, self.s.dim)
        x, ctx = self.patch(tokens), self.text(text)
        for b in self.blocks:
            x = checkpoint(b, x, ctx, temb6, *rope, use_reentrant=False) if grad_ckpt else b(x, ctx, temb6, *rope)
        return self.head(F.layer_norm(x.float(), x.shape[-1:]).to(x.dtype))

    def lora_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------------- reward model
class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, kv_heads, ffn):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.hd)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate_up = nn.Linear(dim, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, dim, bias=False)
        self.n1, self.n2 = nn.RMSNorm(dim), nn.RMSNorm(dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(self.n1(x)).split(
            [self.heads * self.hd, self.kv_heads * self.hd, self.kv_heads * self.hd], -1
        )
        q = q.view(B, N, self.heads, self.hd).transpose(1, 2)
        k = k.view(B, N, self.kv_heads, self.hd).transpose(1, 2)
        v = v.view(B, N, self.kv_heads, self.hd).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, N, D))
        g, u = self.gate_up(self.n2(x)).chunk(2, -1)
        return x + self.down(F.silu(g) * u)


class VisionLayer(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.qkv, self.o = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x):  # x (groups, N, D): attention within each 2-frame group
        G, N, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(G, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(G, N, D))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x)), approximate="tanh"))


class RewardLike(nn.Module):
    def __init__(self, s: RewardShape):
        super().__init__()
        self.s = s
        self.patch = nn.Linear(3 * 2 * 14 * 14, s.vis_dim)
        self.vision = nn.ModuleList(VisionLayer(s.vis_dim, s.vis_heads, s.vis_mlp) for _ in range(s.vis_layers))
        self.merge = nn.Sequential(nn.Linear(4 * s.vis_dim, 4 * s.vis_dim), nn.GELU(), nn.Linear(4 * s.vis_dim, s.dim))
        self.embed = nn.Embedding(1000, s.dim)
        self.layers = nn.ModuleList(DecoderLayer(s.dim, s.heads, s.kv_heads, s.ffn) for _ in range(s.layers))
        self.norm = nn.RMSNorm(s.dim)
        self.heads = nn.Linear(s.dim, 3)

    def forward(self, patches, text_ids):  # patches (B, groups, P, 1176)
        B, G, P, _ = patches.shape
        x = self.patch(patches.reshape(B * G, P, -1))
        for layer in self.vision:
            x = layer(x)
        x = self.merge(x.reshape(B, G * P // 4, 4 * self.s.vis_dim))
        h = torch.cat([self.embed(text_ids[:, :8]), x, self.embed(text_ids[:, 8:])], 1)
        for layer in self.layers:
            h = layer(h)
        return self.heads(self.norm(h[:, -3:]))  # VQ / MQ / TA at the three reward tokens


# ----------------------------------------------------------------------------------------- timing
def timed(fn, device, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def peak_gib(device) -> float | None:
    """Peak CUDA memory since the last reset, GiB (None off CUDA)."""
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def flow_dpo(pred_w, pred_l, ref_w, ref_l, v_w, v_l, beta):
    err = lambda a, b: (a.float() - b.float()).pow(2).mean(dim=(1, 2))  # noqa: E731
    diff = (err(pred_w, v_w) - err(ref_w, v_w)) - (err(pred_l, v_l) - err(ref_l, v_l))
    return -F.logsigmoid(-0.5 * beta * diff).mean()


def bench_wan(s: WanShape, device, dtype, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a CPU init of 1.4 B parameters takes longer than the timing
        model = WanLike(s).to(dtype)
    for p in model.lora_parameters():
        p.data = p.data.float()
    opt = torch.optim.AdamW(model.lora_parameters(), lr=1e-5)
    rope = rope_tables(s.grid, s.dim // s.heads, device)
    N, C = s.tokens, s.in_channels * s.patch[0] * s.patch[1] * s.patch[2]
    x_w, x_l = torch.randn(1, N, C, device=device, dtype=dtype), torch.randn(1, N, C, device=device, dtype=dtype)
    text = torch.randn(1, s.text_tokens, s.text_dim, device=device, dtype=dtype)

    def dpo_step():
        t = torch.rand(1, device=device)
        noise = torch.randn_like(x_w)
        xt = torch.cat([(1 - t) * x_w + t * noise, (1 - t) * x_l + t * noise]).to(dtype)
        tt, txt = torch.cat([t, t]), torch.cat([text, text])
        pred_w, pred_l = model(xt, tt, txt, rope, grad_ckpt=True).chunk(2)
        with torch.no_grad():
            LoRALinear.enabled = False
            ref_w, ref_l = model(xt, tt, txt, rope, grad_ckpt=False).chunk(2)
            LoRALinear.enabled = True
        loss = flow_dpo(pred_w, pred_l, ref_w, ref_l, (noise - x_w).float(), (noise - x_l).float(), 2000.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample_step():
        t = torch.full((2,), 0.5, device=device)
        v = model(torch.cat([x_w, x_w]), t, torch.cat([text, torch.zeros_like(text)]), rope, grad_ckpt=False)
        return x_w - 0.05 * (v[1:] + 5.0 * (v[:1] - v[1:]))

    reset_peak(device)
    dpo = timed(dpo_step, device, warmup, reps)
    dpo_mem = peak_gib(device)
    reset_peak(device)
    smp = timed(sample_step, device, warmup, reps)
    smp_mem = peak_gib(device)
    params = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for p in model.lora_parameters())
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {
        "shape": asdict(s),
        "latent_tokens_per_clip": N,
        "params_m": round(params / 1e6, 1),
        "lora_params_m": round(lora / 1e6, 2),
        "wan_dpo_step": {
            "seconds": [round(x, 4) for x in dpo],
            "median_s": round(med(dpo), 4),
            "latent_tokens_per_s": round(2 * N / med(dpo)),
            "pairs_per_s": round(1 / med(dpo), 3),
            "peak_gib": dpo_mem,
        },
        "wan_sample_step": {
            "seconds": [round(x, 4) for x in smp],
            "median_s": round(med(smp), 4),
            "latent_tokens_per_s": round(2 * N / med(smp)),
            "peak_gib": smp_mem,
            "seconds_per_50_step_clip": round(50 * med(smp), 2),
        },
    }


def bench_reward(s: RewardShape, device, dtype, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    with torch.device(device):
        model = RewardLike(s).to(dtype).eval()
    G, P = s.frames // 2, s.patches_per_group
    patches = torch.randn(s.batch, G, P, 1176, device=device, dtype=dtype)
    ids = torch.randint(0, 1000, (s.batch, s.text_tokens), device=device)

    @torch.no_grad()
    def fwd():
        return model(patches, ids)

    reset_peak(device)
    sec = timed(fwd, device, warmup, reps)
    mem = peak_gib(device)
    med = sorted(sec)[len(sec) // 2]
    return {
        "shape": asdict(s),
        "visual_tokens_per_clip": s.visual_tokens,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "reward_forward": {
            "seconds": [round(x, 4) for x in sec],
            "median_s": round(med, 4),
            "clips_per_s": round(s.batch / med, 2),
            "peak_gib": mem,
            "visual_tokens_per_s": round(s.batch * s.visual_tokens / med),
        },
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/gpu.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke run of the code on any device")
    ap.add_argument("--frames", type=int, default=21, help="latent frames (21 = 81 video frames)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="wan,reward")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --tiny for a smoke run")
        return 2
    dtype = torch.bfloat16
    wan = WanShape(frames=a.frames)
    rew = RewardShape()
    if a.tiny:
        wan = WanShape(
            dim=64, heads=4, ffn=128, layers=2, text_dim=32, text_tokens=8, frames=3, height=8, width=8, lora_rank=4
        )
        rew = RewardShape(
            vis_dim=64,
            vis_heads=4,
            vis_mlp=128,
            vis_layers=2,
            dim=64,
            heads=4,
            kv_heads=2,
            ffn=128,
            layers=2,
            frames=4,
            size=56,
            text_tokens=16,
            batch=2,
        )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "tiny": a.tiny,
    }
    for name in a.only.split(","):
        t0 = time.time()
        res[name] = (
            bench_wan(wan, device, dtype, 1, a.reps) if name == "wan" else bench_reward(rew, device, dtype, 1, a.reps)
        )
        res[name]["bench_seconds"] = round(time.time() - t0, 1)
        print(json.dumps({name: res[name]}, indent=1), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
