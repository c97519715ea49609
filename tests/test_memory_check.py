"""``jobs/online_dpo.py --check`` and the memory model behind it (rlhf/memory.py).

Parameter counts are checked against the real diffusers / transformers classes built on the ``meta`` device
(no memory, no weights) and against the published totals; the training-step estimate against the one
figure measured on a GPU (PLATFORM.md, docs/results/bench_gpu_h100.json).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from rlhf import memory as mem

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "jobs" / "configs" / "wan21_t2v_1.3b.yaml"
GIB = 2**30

# Wan2.1-T2V-1.3B's transformer/config.json (diffusers layout), UMT5-XXL's encoder, Qwen2-VL-2B-Instruct.
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)


def meta_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_wan_transformer_count_matches_diffusers_and_the_published_size():
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        real = meta_params(WanTransformer3DModel(**WAN_1_3B))
    ours = mem.WanDims.from_config({**WAN_1_3B, "patch_size": list(WAN_1_3B["patch_size"])}).params()
    assert {k: v for k, v in mem.WanDims().diffusers_config().items() if k in WAN_1_3B} == WAN_1_3B
    assert abs(ours - real) / real < 0.03
    assert ours == mem.WanDims().params()  # the built-in dimensions are Wan2.1-T2V-1.3B's
    assert abs(ours - 1.42e9) / 1.42e9 < 0.03  # "1.3B" on the model card; 1.42 B counted


def test_umt5_xxl_encoder_count_matches_transformers():
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(
        d_model=4096,
        d_kv=64,
        num_heads=64,
        num_layers=24,
        d_ff=10240,
        vocab_size=256384,
        feed_forward_proj="gated-gelu",
    )
    with torch.device("meta"):
        real = meta_params(UMT5EncoderModel(cfg))
    ours = mem.UMT5Dims.from_config(cfg.to_dict()).params()
    assert abs(ours - real) / real < 0.03
    assert abs(ours - 5.7e9) / 5.7e9 < 0.03


def test_qwen2_vl_2b_count_matches_transformers_and_the_published_size():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(
            hidden_size=1536,
            num_hidden_layers=28,
            intermediate_size=8960,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
        ),
        vision_config=dict(
            depth=32,
            embed_dim=1280,
            mlp_ratio=4,
            num_heads=16,
            hidden_size=1536,
            spatial_merge_size=2,
            patch_size=14,
            temporal_patch_size=2,
        ),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        real = meta_params(Qwen2VLForConditionalGeneration(cfg))
    ours = mem.QwenVLDims.from_config(cfg.to_dict()).params()
    assert abs(ours - real) / real < 0.03
    assert ours == mem.QwenVLDims().params()
    assert abs(ours - 2.2e9) / 2.2e9 < 0.03


def test_wan_vae_constant_is_the_diffusers_count():
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        assert meta_params(AutoencoderKLWan()) == mem.WAN_VAE_PARAMS


def test_latent_tokens_of_a_wan_clip():
    # 81 frames -> (81 - 1) / 4 + 1 = 21 latent frames; 480 / 8 / 2 = 30; 832 / 8 / 2 = 52
    g = mem.generator_model(ROOT / "no-such-dir", [81, 480, 832], 512, 16.0)
    assert g.latent == (16, 21, 60, 104)
    assert g.tokens == 21 * 30 * 52 == 32_760


def test_flow_dpo_step_estimate_is_within_25_percent_of_the_h100_measurement():
    """jobs/bench_gpu.py on an H100 (docs/results/bench_gpu_h100.json): one Flow-DPO step of a Wan2.1-1.3B-shaped
    model on one pair at 81x480x832, per-block checkpointing, bf16, LoRA r64 on q/k/v/o of both attentions,
    peaked at 16.78 GiB (torch.cuda.max_memory_allocated: no CUDA context, no allocator slack). That run used
    plain AdamW with fp32 LoRA (16 B/param) where the estimate assumes DeepSpeed bf16 (20 B/param): 0.18 GiB."""
    g = mem.generator_model(ROOT / "no-such-dir", [81, 480, 832], 512, 16.0)
    e = mem.trainer_memory(
        mem.TrainerSetting(g, micro_batch=1, lora_rank=64, precision="bf16", checkpointing=True, zero_stage=0, world=1)
    )
    assert abs(e.allocated / GIB - 16.78) / 16.78 < 0.25
    # the block inputs checkpointing keeps, by hand: 30 blocks x 2 clips x 32,760 tokens x 1536 x 2 bytes
    kept = [b for kind, what, b in e.parts if what.startswith("block inputs kept by checkpointing")]
    assert kept == [30 * 2 * 32_760 * 1536 * 2]


def test_the_wan_config_loads_and_every_role_fits(capsys):
    from actors.online import OnlineConfig, main
    from rlhf.config import load_config

    cfg = load_config(OnlineConfig, path=CONFIG)
    assert cfg.generator == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and cfg.trainer.device.gradient_checkpointing
    assert cfg.reward.model == "KwaiVGI/VideoReward" and not cfg.world  # hub ids, free-text prompts
    assert main(["--config", str(CONFIG), "--check"]) == 0
    out = capsys.readouterr().out
    for role in ("generator (8 actors, cuda bf16)", "trainer (4 workers, cuda bf16)", "reward (2 replica(s) max"):
        assert role in out
    assert out.count(": fits,") == 3 and "every role fits" in out


def test_an_oversized_trainer_fails_with_its_shortfall_and_fixes(capsys):
    from actors.online import main

    rc = main(
        [
            "--config",
            str(CONFIG),
            "--check",
            "video_shape=[321,720,1280]",
            "trainer.micro_batch=8",
            "trainer.device.gradient_checkpointing=false",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 2
    assert "trainer does not fit" in captured.err
    trainer = captured.out.split("  trainer (")[1].split("  reward (")[0]
    assert "DOES NOT FIT" in trainer
    fixes = trainer.split("fixes:")[1]
    for fix in ("trainer.device.gradient_checkpointing=true", "trainer.micro_batch=1", "trainer.zero_stage=3"):
        assert fix in fixes
    # all three together are not enough at 321 frames; with them, fewer frames (a valid Wan count) fit
    frames = re.search(r"trainer.zero_stage=3 video_shape=\[(\d+),720,1280\]  -> [0-9.]+ GiB \(fits\)", fixes)
    assert frames and int(frames[1]) < 321 and (int(frames[1]) - 1) % 4 == 0


def test_the_embedded_default_runs_on_cpu_and_needs_no_gpu(capsys):
    from actors.online import main

    assert main(["--check"]) == 0
    out = capsys.readouterr().out
    # generator and trainer on the CPU, and the shipped VideoReward (the default served reward) on the reward node
    assert out.count("on cpu: host RAM need") == 3 and "Qwen2-VL 1.0 M fp32" in out
