"""Device and precision: bf16 agrees with fp32 within derived bounds, every tensor of the sampler, the
step function, the codec and the guidance is made on the model's device, and the trainer workers'
module holds no text encoder."""

import math

import numpy as np
import pytest
import torch

from rlhf.align.step import AlgoConfig, batch_loss, plain_update, train_step
from rlhf.device import DeviceConfig, DeviceError, seeded_generator
from rlhf.dims import RewardWeights
from rlhf.generator.codec import SpaceToDepthCodec, WanVAECodec
from rlhf.generator.guidance import GuidanceConfig
from rlhf.generator.model import DEFAULT_GENERATOR, FlowGenerator, GeneratorConfig, GeneratorError, load_generator
from rlhf.generator.sampler import SamplerConfig, euler_sample, initial_noise, sample
from tests.device_guard import DeviceGuard

PROMPTS = [
    "a red circle moving left slowly on a black background",
    "a blue square moving up fast on a white background",
]
# bf16 keeps 8 significant bits: each rounding has relative error at most u = 2^-8.
U_BF16 = 2.0**-8


def _tiny(seed: int = 0) -> FlowGenerator:
    return FlowGenerator.from_config(GeneratorConfig(layers=2, frames=2, height=8, width=8, seed=seed))


def test_bf16_velocity_and_sampling_agree_with_fp32():
    """Bound: the shipped generator's velocity passes through about 30 bf16 roundings on its longest path
    (input and weight casts, attention, feed-forward and residual of 3 blocks, in and out projections);
    independent rounding errors add in quadrature, sqrt(30) u = 0.021, and we allow 2x that: 5% relative
    (L2) error. Euler steps sum to dt = 1, so the sampled latent's error is at most the integral of the
    velocity error, about the same relative size of a velocity whose norm is ~2x the latent's (v = noise - x0):
    10%. A bf16 path that dropped the prompt or mixed precisions wrongly errs by ~100%."""
    torch.manual_seed(0)
    x = torch.randn(1, 48, 8, 8, 8)
    t = torch.tensor([0.6])
    out = {}
    for prec in ("fp32", "bf16"):
        g = load_generator(DEFAULT_GENERATOR, device=DeviceConfig(precision=prec))
        assert g.dtype == (torch.float32 if prec == "fp32" else torch.bfloat16)
        with torch.no_grad():
            v = g.velocity(x, t, g.encode_prompts(PROMPTS[:1]))
        batch = sample(g, PROMPTS[:1], [3], SamplerConfig(steps=3), decode=False)
        assert batch.latents.dtype == torch.float32 and torch.isfinite(batch.latents).all()
        out[prec] = (v.float(), batch.latents)
    (v32, x32), (v16, x16) = out["fp32"], out["bf16"]
    assert torch.isfinite(v16).all()
    print(
        "relative L2 error bf16 vs fp32: velocity",
        float((v16 - v32).norm() / v32.norm()),
        "sampled latent",
        float((x16 - x32).norm() / x32.norm()),
    )
    assert float((v16 - v32).norm() / v32.norm()) < 2 * math.sqrt(30) * U_BF16
    assert float((x16 - x32).norm() / x32.norm()) < 0.10


def test_bf16_dpo_step_matches_fp32_step():
    """With B = 0 the policy is the reference, so the first Flow-DPO loss is exactly ln 2 in either precision
    (inside = 0), and Adam's first step moves every LoRA B entry by lr * g / (|g| + eps) = +-lr. So the bf16
    step and the fp32 step give the same update wherever the gradients agree in sign; an entry can flip only
    where |g| is within bf16's error of 0, so at least 90% must agree (measured: see the assertion)."""
    x_w = torch.randn(2, 48, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    x_l = torch.randn(2, 48, 2, 2, 2, generator=torch.Generator().manual_seed(2))
    lr, res = 1e-3, {}
    for prec in ("fp32", "bf16"):
        g = _tiny()
        text = g.encode_prompts(PROMPTS)
        g.add_lora(4)
        g.place(DeviceConfig(precision=prec))
        assert all(p.dtype == torch.float32 for p in g.lora_parameters())  # adapter and optimiser in fp32
        before = {n: p.detach().clone() for n, p in g.transformer.named_parameters() if "lora_B" in n}
        params = g.lora_parameters()
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        rec = train_step(
            g,
            {"x_w": x_w, "x_l": x_l, "text": text},
            AlgoConfig(beta=500.0),
            seeded_generator(0, g.device),
            plain_update(opt, params, grad_clip=1e9),
        )
        assert rec["loss"] == pytest.approx(math.log(2), abs=1e-6)
        res[prec] = torch.cat(
            [(p.detach() - before[n]).flatten() for n, p in g.transformer.named_parameters() if "lora_B" in n]
        )
    d32, d16 = res["fp32"], res["bf16"]
    assert torch.isfinite(d16).all()
    moved = d32.abs() > 0
    # |update| = lr |g| / (|g| + eps) <= lr, and within 0.1% of lr unless |g| < 1000 eps = 1e-5
    assert float(d32.abs().max()) <= lr * (1 + 1e-6)
    assert float(((d32[moved].abs() - lr).abs() < 1e-3 * lr).float().mean()) >= 0.99
    agree = float((torch.sign(d32) == torch.sign(d16))[moved].float().mean())
    print("bf16 / fp32 LoRA update sign agreement", agree)
    assert agree >= 0.9, agree


def _meta_generator() -> tuple[FlowGenerator, torch.Tensor]:
    g = _tiny()
    text = g.encode_prompts(PROMPTS)
    g.add_lora(4)
    g.place(DeviceConfig(device="meta"))
    return g, text.to("meta")


def test_sampler_guidance_and_step_make_every_tensor_on_the_models_device():
    """With the model on the meta device, the guard fails on a host-made tensor meeting a device tensor or
    on host-drawn noise (see tests/device_guard.py); it passes only if the code follows the device rule."""
    g, text = _meta_generator()
    assert g.device.type == "meta"

    def latent_reward(x, t):  # stands in for the latent reward: any differentiable (B, 3) of x_t
        return torch.stack([x.mean((1, 2, 3, 4)), x.pow(2).mean((1, 2, 3, 4)), x.std((1, 2, 3, 4))], 1)

    with DeviceGuard("meta") as guard:
        noise = initial_noise([1, 2], g.latent_shape, g.device)
        x = euler_sample(
            g.velocity,
            noise,
            text,
            text,
            SamplerConfig(steps=2, guidance=3.0),
            (latent_reward, GuidanceConfig(scale=1.0, weights=RewardWeights(1, 1, 1))),
        )
        lat = torch.zeros(2, *g.latent_shape, device="meta")
        rng = seeded_generator(0, g.device)
        dpo = batch_loss(g, {"x_w": lat, "x_l": lat, "text": text}, AlgoConfig(), rng)
        rwr = batch_loss(
            g, {"x0": lat, "text": text, "reward": torch.ones(2, device="meta")}, AlgoConfig(algo="rwr"), rng
        )
    assert guard.ops > 100
    assert {x.device.type, dpo["loss"].device.type, rwr["loss"].device.type} == {"meta"}


def test_codecs_work_on_the_device_they_are_given():
    from diffusers import AutoencoderKLWan

    s2d = SpaceToDepthCodec(2)
    video = np.zeros((1, 2, 4, 4, 3), np.uint8)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.5, 2.0, 1.0],
    )
    wan = WanVAECodec(vae).to("meta")
    with DeviceGuard("meta"):
        z = s2d.encode(video, device="meta")
        assert z.device.type == "meta" and s2d.decode_tensor(z).device.type == "meta"
        zw = wan.encode(np.zeros((1, 5, 16, 16, 3), np.uint8))
        assert zw.device.type == "meta" and tuple(zw.shape) == (1, 4, 2, 2, 2)
        assert wan.decode_tensor(zw).device.type == "meta"


def test_device_guard_catches_host_made_tensors():
    """The guard is not vacuous: the two mistakes this work removed fail under it."""
    with pytest.raises(AssertionError, match="random tensor on cpu"), DeviceGuard("meta"):
        torch.randn(2, 3, generator=torch.Generator().manual_seed(0))  # noise drawn on the host
    with pytest.raises(AssertionError, match="random tensor on cpu"), DeviceGuard("meta"):
        torch.empty(4).normal_()  # in place, too
    w = torch.tensor([1.0, 0.0, 0.0])  # guidance weights made on the host, then used with device scores
    with pytest.raises(AssertionError, match="mixes devices"), DeviceGuard("meta"):
        torch.zeros(2, 3, device="meta") @ w


def test_trainer_worker_module_holds_no_text_encoder():
    from actors.trainer import TrainerConfig, worker_generator

    gen = worker_generator(TrainerConfig(lora_rank=4), DeviceConfig())
    names = [n for n, _ in gen.named_parameters()]
    assert gen.text is None and not any(n.startswith("text.") for n in names)
    assert any("lora_A" in n for n in names)
    full = load_generator(DEFAULT_GENERATOR)
    text_params = sum(p.numel() for p in full.text.parameters())
    assert (
        sum(p.numel() for p in gen.parameters() if not p.requires_grad)
        == sum(p.numel() for p in full.parameters()) - text_params
    )
    with pytest.raises(GeneratorError, match="without its text encoder"):
        gen.encode_prompts(PROMPTS)


def test_device_config_errors():
    with pytest.raises(DeviceError, match="precision"):
        DeviceConfig(precision="fp16").validate()
    with pytest.raises(DeviceError, match="cpu, cuda"):
        DeviceConfig(device="tpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="set its device to cpu"):
            DeviceConfig(device="cuda").torch_device()


def test_deepspeed_bf16_engine_trains_the_worker_module(monkeypatch):
    """The online trainer's path in one process: the worker's module under a DeepSpeed engine with the
    bf16 config (module cast to bf16, fp32 master weights in DeepSpeed's ZeRO-1 optimiser) and the one
    step function. By hand: the zero LoRA's first loss is ln 2, and after one step every LoRA B entry that
    moved moved by lr (Adam's first step, see above) up to bf16's rounding of the stored weight (u = 2^-8,
    relative to lr as the weight is ~lr), and no entry moved by more."""
    import socket

    from actors.trainer import TrainerConfig, worker_generator
    from rlhf.reward.distributed import deepspeed_config, init_deepspeed

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(k, v)
    init_deepspeed(False)
    import deepspeed

    with pytest.raises(ValueError, match="ZeRO stage 1"):
        deepspeed_config(2, 0, True)
    tc = TrainerConfig(lora_rank=4, device=DeviceConfig(precision="bf16"), zero_stage=1)
    gen = worker_generator(tc, tc.device)
    full = load_generator(DEFAULT_GENERATOR)
    text = full.encode_prompts(PROMPTS)
    params = gen.lora_parameters()
    lr = 1e-3
    engine, _, _, _ = deepspeed.initialize(
        model=gen,
        optimizer=torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
        model_parameters=params,
        config=deepspeed_config(2, tc.zero_stage, True, 1e9),
    )
    try:
        assert gen.dtype == torch.bfloat16
        before = {n: p.detach().float().clone() for n, p in gen.transformer.named_parameters() if "lora_B" in n}
        x = torch.randn(2, *gen.latent_shape, generator=torch.Generator().manual_seed(0))

        def update(loss):
            engine.backward(loss)
            engine.step()

        rec = train_step(
            gen, {"x_w": x, "x_l": x.flip(0), "text": text}, AlgoConfig(), seeded_generator(0, gen.device), update
        )
        assert rec["loss"] == pytest.approx(math.log(2), abs=1e-6)
        delta = torch.cat(
            [(p.detach().float() - before[n]).flatten() for n, p in gen.transformer.named_parameters() if "lora_B" in n]
        )
        moved = delta.abs() > 0
        assert float(moved.float().mean()) > 0.5
        assert float(delta.abs().max()) <= lr * (1 + 2 * U_BF16)
        assert float(((delta[moved].abs() - lr).abs() <= 2 * U_BF16 * lr).float().mean()) >= 0.99
    finally:
        torch.distributed.destroy_process_group()


def test_generator_actor_encodes_clips_at_the_generators_frame_rate():
    """The reward samples frames by time (VideoAlign: 2 fps), so a clip must carry its generator's frame rate:
    8 fps in the world layout, 16 fps for Wan2.1 (the loader's default for diffusers checkpoints)."""
    from types import SimpleNamespace

    from actors.generator import GeneratorActor
    from rlhf.video import read_video_fps

    assert load_generator(DEFAULT_GENERATOR).fps == 8.0
    videos = np.zeros((2, 16, 32, 32, 3), np.uint8)
    for fps in (8.0, 16.0):
        mp4s = GeneratorActor._encode(SimpleNamespace(gen=SimpleNamespace(fps=fps)), videos)
        frames, got = read_video_fps(mp4s[0])
        assert got == pytest.approx(fps) and frames.shape[0] == 16
