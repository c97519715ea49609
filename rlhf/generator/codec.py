"""Codecs between ``uint8`` videos ``(B, T, H, W, 3)`` and generator latents ``(B, C, F, h, w)``.

Two implementations behind one interface:

* :class:`SpaceToDepthCodec`, the moving-shapes world's codec: each ``f x f`` block of pixels becomes
  ``3 f^2`` channels, scaled to [-1, 1]. It is exact (decode(encode(v)) == v) and needs no training,
  which matters because an untrained VAE decodes garbage and no pretrained one can be downloaded here.
* :class:`WanVAECodec`, the real ``AutoencoderKLWan`` of a Wan2.1 checkpoint, with the checkpoint's
  per-channel latent normalisation exactly as ``WanPipeline`` applies it.

Devices: ``encode(videos, device)`` puts the pixels on ``device`` (the VAE's own device for the Wan
codec) before any arithmetic; ``decode_tensor`` works where the latents are and returns uint8 there;
``decode`` brings the videos to the host as numpy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class CodecError(ValueError):
    """A video or latent whose shape the codec cannot handle."""


class Codec(Protocol):
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, F, h, w)`` of the latent of a ``frames x height x width`` video."""

    def encode(self, videos: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
        """``uint8 (B, T, H, W, 3)`` -> float latents ``(B, C, F, h, w)`` on ``device``."""

    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Float latents -> ``uint8 (B, T, H, W, 3)`` videos, on the latents' (or the VAE's) device."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Float latents -> ``uint8 (B, T, H, W, 3)`` videos in host memory."""


def _as_video_batch(videos, device=None) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos, device=device)
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5 or v.shape[-1] != 3:
        raise CodecError(f"videos must be (B, T, H, W, 3) uint8, got shape {tuple(v.shape)}")
    if v.dtype != torch.uint8:
        raise CodecError(f"videos must be uint8, got {v.dtype}")
    return v


class SpaceToDepthCodec:
    """Exact codec: ``f x f`` pixel blocks -> ``3 f^2`` channels in [-1, 1]; one latent frame per frame."""

    def __init__(self, factor: int = 4):
        if factor < 1:
            raise CodecError(f"factor must be >= 1, got {factor}")
        self.factor = factor

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        f = self.factor
        if height % f or width % f:
            raise CodecError(f"video {height}x{width} is not divisible by the codec factor {f}")
        return 3 * f * f, frames, height // f, width // f

    def encode(self, videos, device=None) -> torch.Tensor:
        v = _as_video_batch(videos, device)
        B, T, H, W, _ = v.shape
        C, F, h, w = self.latent_shape(T, H, W)
        f = self.factor
        x = v.float().div(127.5).sub(1.0)
        # (B, T, h, f, w, f, 3) -> (B, 3, f, f, T, h, w): channel index = c * f^2 + dy * f + dx
        x = x.reshape(B, T, h, f, w, f, 3).permute(0, 6, 3, 5, 1, 2, 4)
        return x.reshape(B, C, F, h, w).contiguous()

    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != 3 * self.factor**2:
            raise CodecError(f"latents must be (B, {3 * self.factor**2}, F, h, w), got {tuple(latents.shape)}")
        B, C, F, h, w = latents.shape
        f = self.factor
        x = latents.detach().float().reshape(B, 3, f, f, F, h, w).permute(0, 4, 5, 2, 6, 3, 1)
        x = x.reshape(B, F, h * f, w * f, 3)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.decode_tensor(latents).cpu().numpy()


class WanVAECodec:
    """``AutoencoderKLWan`` with the checkpoint's latent normalisation (as ``WanPipeline``)."""

    def __init__(self, vae):
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self.temporal = cfg.scale_factor_temporal
        self.spatial = cfg.scale_factor_spatial
        self._stats()

    def _stats(self) -> None:
        """The latent normalisation, made on the VAE's device."""
        cfg, device = self.vae.config, next(self.vae.parameters()).device
        self.mean = torch.tensor(cfg.latents_mean, device=device).view(1, cfg.z_dim, 1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(cfg.latents_std, device=device).view(1, cfg.z_dim, 1, 1, 1)

    def to(self, device) -> WanVAECodec:
        """Move the VAE (and the normalisation) to ``device``; it stays fp32, as ``WanPipeline`` runs it."""
        self.vae.to(device)
        self._stats()
        return self

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        if (frames - 1) % self.temporal:
            raise CodecError(f"Wan VAE needs frames = {self.temporal} k + 1, got {frames}")
        if height % self.spatial or width % self.spatial:
            raise CodecError(f"Wan VAE needs sides divisible by {self.spatial}, got {height}x{width}")
        return self.vae.config.z_dim, (frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial

    @torch.no_grad()
    def encode(self, videos, device=None) -> torch.Tensor:
        v = _as_video_batch(videos, self.mean.device)
        self.latent_shape(*v.shape[1:4])
        x = v.float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3).to(self.vae.dtype)
        mu = self.vae.encode(x).latent_dist.mode()
        z = (mu.float() - self.mean) * self.inv_std
        return z if device is None else z.to(device)

    @torch.no_grad()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.mean.device, torch.float32) / self.inv_std + self.mean
        x = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 4, 1)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.decode_tensor(latents).cpu().numpy()
