"""Flow-matching Euler sampling with classifier-free guidance (the sampler Wan's pipeline runs).

With ``x_t = (1 - t) x0 + t noise`` and ``v = noise - x0``, ``dx/dt = v``; integrating from t = 1 to
0 over the schedule ``t_0 = 1 > t_1 > ... > t_N = 0`` gives the Euler step
``x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i) v``. The schedule is ``FlowMatchEulerDiscreteScheduler``'s,
whose ``shift`` s maps a uniform grid u to ``s u / (1 + (s - 1) u)``, spending more steps at high noise
where the layout of the clip is decided. Guidance: ``v = v_uncond + g (v_cond - v_uncond)`` with the
empty prompt as the unconditional branch.

Each sample's starting noise depends only on its own seed, so a sample is reproduced by
``(prompt, seed, SamplerConfig, policy, device)`` whatever batch it was drawn in. Noise is drawn on the
generator's device by a generator on that device (CUDA and CPU streams differ, as in diffusers); the
integration runs in fp32, the network in the generator's precision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from rlhf.device import seeded_generator


@dataclass
class SamplerConfig:
    steps: int = 20  # Euler steps
    guidance: float = 3.0  # classifier-free guidance scale (1 = no guidance)
    shift: float = 3.0  # timestep shift toward high noise (Wan uses 3-5)
    batch_size: int = 32  # samples per forward pass (CFG doubles it)
    # clips per codec decode (0 = all at once): a Wan VAE holds ~7 GiB per 480x832 clip while decoding
    decode_batch_size: int = 0

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise ValueError(f"sampler.shift must be > 0, got {self.shift}")
        if self.batch_size < 1:
            raise ValueError(f"sampler.batch_size must be >= 1, got {self.batch_size}")
        if self.decode_batch_size < 0:
            raise ValueError(f"sampler.decode_batch_size must be >= 0 (0 = all at once), got {self.decode_batch_size}")


@dataclass
class SampleBatch:
    """What a sampling call produced, and what reproduces it."""

    prompts: list[str]
    seeds: list[int]
    latents: torch.Tensor  # (B, C, F, h, w), final x_0
    videos: np.ndarray  # uint8 (B, T, H, W, 3)
    config: dict = field(default_factory=dict)  # the SamplerConfig used


def schedule(cfg: SamplerConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``steps + 1`` times ``1 = t_0 > ... > t_N = 0`` of the shifted flow-matching schedule, on
    ``device`` (diffusers' scheduler builds them on the device it is given)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift)
    sched.set_timesteps(cfg.steps, device=device)
    return sched.sigmas.to(device=device, dtype=torch.float32)


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Starting noise (fp32) on ``device``, one ``torch.Generator`` per seed on that device (independent of
    batch composition)."""
    return torch.stack(
        [torch.randn(shape, generator=seeded_generator(s, device), device=device, dtype=torch.float32) for s in seeds]
    )


def euler_sample(
    velocity,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    cfg: SamplerConfig,
    reward_guidance=None,
) -> torch.Tensor:
    """Integrate ``dx/dt = v`` from ``noise`` at t = 1 to t = 0; ``velocity(x, t, text)``.

    ``reward_guidance = (reward_fn, GuidanceConfig)`` applies Flow-NRG on the configured steps:
    ``v' = v - w grad_x r(x_t, t)`` with ``reward_fn(x, t) -> (B, 3)`` (see ``guidance.py``)."""
    sigmas = schedule(cfg, noise.device)
    x = noise.float()
    guided = uncond is not None and cfg.guidance != 1.0
    for i in range(cfg.steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        tb = t.expand(x.shape[0])
        if guided:
            v_c, v_u = velocity(torch.cat([x, x]), torch.cat([tb, tb]), torch.cat([cond, uncond])).float().chunk(2)
            v = v_u + cfg.guidance * (v_c - v_u)
        else:
            v = velocity(x, tb, cond).float()
        if reward_guidance is not None and reward_guidance[1].active(i, cfg.steps):
            from .guidance import guided_velocity

            v = guided_velocity(v, x, tb, *reward_guidance)
        x = x + (t_next - t) * v
    return x


@torch.no_grad()
def sample(
    generator,
    prompts: list[str],
    seeds: list[int],
    cfg: SamplerConfig = SamplerConfig(),
    decode: bool = True,
    guidance=None,
) -> SampleBatch:
    """Sample one video per (prompt, seed) from ``generator`` (a :class:`FlowGenerator`).

    ``guidance = (latent_reward, GuidanceConfig)`` turns on Flow-NRG: ``latent_reward`` is an
    ``rlhf.reward.latent.LatentReward`` (anything with ``reward_fn(prompts) -> (x, t) -> (B, 3)``)."""
    cfg.validate()
    if guidance is not None:
        guidance[1].validate()
        if guidance[1].scale == 0:
            guidance = None
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        raise ValueError("nothing to sample: the prompt list is empty")
    was_training = generator.training
    generator.eval()
    out = []
    for start in range(0, len(prompts), cfg.batch_size):
        ps, ss = list(prompts[start : start + cfg.batch_size]), seeds[start : start + cfg.batch_size]
        cond = generator.encode_prompts(ps)
        uncond = generator.encode_prompts([""] * len(ps))
        noise = initial_noise(ss, generator.latent_shape, generator.device)
        rg = (guidance[0].reward_fn(ps), guidance[1]) if guidance is not None else None
        out.append(euler_sample(generator.velocity, noise, cond, uncond, cfg, rg))
    generator.train(was_training)
    latents = torch.cat(out)
    step = cfg.decode_batch_size or len(latents)
    videos = (
        np.concatenate([generator.codec.decode(latents[i : i + step]) for i in range(0, len(latents), step)])
        if decode
        else np.zeros((0,), np.uint8)
    )
    latents = latents.cpu()  # the batch's record leaves the device (Arrow tables, object store)
    config = asdict(cfg)
    if guidance is not None:
        config["reward_guidance"] = asdict(guidance[1])
    return SampleBatch(list(prompts), [int(s) for s in seeds], latents, videos, config)
