"""Turn (video, prompt) pairs into Qwen2-VL reward-model inputs, without torchvision.

Videos go through VideoAlign frame sampling (``rlhf.video.sample_for_reward``), then the Qwen2-VL
patchify: scale to [0, 1], normalise with the CLIP mean / std, cut into 2 x 14 x 14 patches ordered
so that each 2 x 2 group of neighbouring patches is contiguous (the vision tower merges them into one
token). A video of T x H x W frames gives grid (T/2, H/14, W/14) and T*H*W / (2*14*14*4) tokens.
Texts are left-padded; ``mm_token_type_ids`` marks video tokens with 2 (M-RoPE needs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .tokens import (
    CAPTION_PREFIX,
    RELEASE_CAPTION_PREFIX,
    REWARD_TOKENS,
    SHARED_TOKEN,
    TEMPLATES,
    VIDEO_PAD,
    render_chat,
    render_prompt,
)

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PATCH, TEMPORAL, MERGE = 14, 2, 2  # Qwen2-VL's; a backbone built from config may choose others


@dataclass(frozen=True)
class VisionGeometry:
    """How the vision tower cuts a video: ``patch`` x ``patch`` pixels over ``temporal`` frames per
    patch, ``merge`` x ``merge`` patches per language-model token. Read it off the model's config."""

    patch: int = PATCH
    temporal: int = TEMPORAL
    merge: int = MERGE

    @classmethod
    def of(cls, vlm_or_config) -> VisionGeometry:
        cfg = getattr(vlm_or_config, "config", vlm_or_config)
        v = getattr(cfg, "vision_config", cfg)
        return cls(int(v.patch_size), int(v.temporal_patch_size), int(v.spatial_merge_size))


@dataclass(frozen=True)
class FrameSampling:
    """VideoAlign frame sampling for the reward model (defaults fit the 8 x 32 x 32 world at 8 fps).

    The release's (``RELEASE_SAMPLING``): 2 fps, at least 4 frames, frames resized within
    [128 * 28 * 28, ``max_frame_pixels``] pixels (the maximum wins when the two conflict)."""

    fps: float = 8.0  # VideoAlign samples real videos at 2.0
    min_pixels: int = 56 * 56  # fewest pixels of a resized frame (VideoAlign: 128 * 28 * 28)
    max_pixels: int = 56 * 56  # VideoAlign: 448 * 448
    max_frames: int = 64  # most frames read per clip (fps sampling; the release: 768)
    min_frames: int = 2  # the release: 4
    num_frames: int = 0  # > 0: exactly this many frames instead of fps (the release's ``num_frames``)

    def validate(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if min(self.min_pixels, self.max_pixels) < 28 * 28:
            raise ValueError(f"need min_pixels and max_pixels >= 784, got {self.min_pixels}, {self.max_pixels}")
        if self.num_frames < 0 or self.min_frames < 1 or self.max_frames < 2:
            raise ValueError(
                f"need num_frames >= 0, min_frames >= 1, max_frames >= 2, got {self.num_frames}, "
                f"{self.min_frames}, {self.max_frames}"
            )

    def indices(self, num_frames: int, src_fps: float, geometry: VisionGeometry) -> np.ndarray:
        """Which frames of a ``num_frames``-frame clip at ``src_fps`` the reward model reads."""
        from rlhf.video import sample_indices

        return sample_indices(
            num_frames, src_fps, self.fps, self.max_frames, geometry.temporal, self.min_frames, self.num_frames
        )

    def size(self, height: int, width: int, geometry: VisionGeometry) -> tuple[int, int]:
        """The frame size the reward model reads."""
        from rlhf.video import smart_resize

        return smart_resize(height, width, geometry.patch * geometry.merge, self.min_pixels, self.max_pixels)

    def sample(self, frames: np.ndarray, src_fps: float, geometry: VisionGeometry, name: str = "<video>") -> np.ndarray:
        """The frames the reward model reads, resized, uint8."""
        from rlhf.video import sample_for_reward

        g = geometry
        return sample_for_reward(
            frames,
            src_fps,
            self.fps,
            self.min_pixels,
            self.max_pixels,
            self.max_frames,
            name=name,
            factor=g.patch * g.merge,
            frame_factor=g.temporal,
            min_frames=self.min_frames,
            num_frames=self.num_frames,
        )


# The VideoAlign release's sampling (train.sh and vision_process.py): fps 2, frames within [128 * 28 * 28,
# 448 * 448] pixels (its checkpoint's data_config.max_frame_pixels replaces the maximum), at least 4 frames.
RELEASE_SAMPLING = FrameSampling(fps=2.0, min_pixels=128 * 28 * 28, max_pixels=448 * 448, max_frames=768, min_frames=4)


def patchify(
    frames: np.ndarray, geometry: VisionGeometry = VisionGeometry()
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``uint8 (T, H, W, 3)`` -> (patches (N, 3 * temporal * patch^2), grid (t, h, w)); Qwen2-VL's
    geometry needs T even and H, W multiples of 28 and gives patches of 1176 values."""
    P, TP, M = geometry.patch, geometry.temporal, geometry.merge
    T, H, W, C = frames.shape
    if T % TP or H % (P * M) or W % (P * M):
        raise ValueError(f"frames must have T a multiple of {TP} and H, W multiples of {P * M}, got {T} x {H} x {W}")
    x = (frames.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    x = torch.from_numpy(x).permute(0, 3, 1, 2)  # (T, C, H, W)
    gt, gh, gw = T // TP, H // P, W // P
    x = x.reshape(gt, TP, C, gh // M, M, P, gw // M, M, P)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, C * TP * P * P).contiguous(), (gt, gh, gw)


class RewardProcessor:
    """Batches (video, prompt) pairs for :class:`VideoRewardModel`; deterministic and padded."""

    def __init__(
        self,
        tokenizer,
        sampling: FrameSampling = FrameSampling(),
        separate_tokens: bool = True,
        caption_mask: bool = False,
        geometry: VisionGeometry = VisionGeometry(),
        template: str = "world",
    ):
        if template not in TEMPLATES:
            raise ValueError(f"prompt template must be one of {TEMPLATES}, got {template!r}")
        if template != "world" and not separate_tokens:
            raise ValueError(f"prompt template {template!r} holds the three reward tokens (separate_tokens=True)")
        self.template = template  # world: render_prompt | detailed_special: the release's, in the chat template
        self.tokenizer = tokenizer
        self.geometry = geometry
        self.sampling = sampling
        self.separate_tokens = separate_tokens
        self.caption_mask = caption_mask  # also return ``caption_mask``: the prompt's tokens (caption loss)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        names = list(REWARD_TOKENS.values()) if separate_tokens else [SHARED_TOKEN]
        self.reward_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in names]

    def video_inputs(self, frames: np.ndarray, fps: float, name: str = "<video>"):
        return patchify(self.sampling.sample(frames, fps, self.geometry, name), self.geometry)

    def render(self, prompt: str, n_video_tokens: int) -> str:
        if self.template == "world":
            return render_prompt(prompt, n_video_tokens, self.separate_tokens)
        return render_chat(self.tokenizer, prompt, n_video_tokens, self.template)

    def __call__(self, videos: list[np.ndarray], prompts: list[str], fps: float | list[float] = 8.0) -> dict:
        if len(videos) != len(prompts):
            raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
        fpss = fps if isinstance(fps, (list, tuple)) else [fps] * len(videos)
        return self.encode(
            [self.video_inputs(v, f, name=f"video {i}") for i, (v, f) in enumerate(zip(videos, fpss))], prompts
        )

    def encode(self, video_inputs: list[tuple[torch.Tensor, tuple[int, int, int]]], prompts: list[str]) -> dict:
        """A padded batch from already patchified videos (``video_inputs`` results) and their prompts."""
        merge = self.geometry.merge
        texts = [self.render(p, g[0] * g[1] * g[2] // (merge * merge)) for (_, g), p in zip(video_inputs, prompts)]
        enc = self.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=self.caption_mask)
        ids = enc["input_ids"]
        out = {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"],
            "pixel_values_videos": torch.cat([px for px, _ in video_inputs]),
            "video_grid_thw": torch.tensor([g for _, g in video_inputs], dtype=torch.long),
            "mm_token_type_ids": (ids == self.video_token_id).to(torch.int32) * 2,
        }
        if self.caption_mask:
            prefix = CAPTION_PREFIX if self.template == "world" else RELEASE_CAPTION_PREFIX
            out["caption_mask"] = prompt_token_mask(
                texts, prompts, enc["offset_mapping"], enc["attention_mask"], prefix
            )
        return out


def prompt_token_mask(
    texts: list[str], prompts: list[str], offsets: torch.Tensor, attention: torch.Tensor, prefix: str = CAPTION_PREFIX
) -> torch.Tensor:
    """(B, L) bool: tokens whose characters overlap the prompt (after ``prefix``) inside its rendered text."""
    mask = torch.zeros(attention.shape, dtype=torch.bool)
    for i, (text, prompt) in enumerate(zip(texts, prompts)):
        start = text.index(prefix) + len(prefix)
        end = start + len(prompt)
        s, e = offsets[i, :, 0], offsets[i, :, 1]
        mask[i] = (e > start) & (s < end) & (e > s) & attention[i].bool()
    return mask
