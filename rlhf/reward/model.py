"""VideoReward: a Qwen2-VL backbone with a 3-output linear head read at special tokens.

The last hidden state at ``<|VQ_reward|>``, ``<|MQ_reward|>`` and ``<|TA_reward|>`` goes through
one ``Linear(hidden, 3, bias=False)``; dimension d is read from the output of its own token (the
diagonal of the 3 x 3 result), as VideoAlign does. With ``separate_tokens=False`` one shared token
at the end gives all three outputs (the ablation).

Training recipe (VideoAlign): LoRA on the language model's attention and MLP projections, the
vision tower fully trainable, only the special tokens' rows of the embedding matrix trainable
(peft ``trainable_token_indices``), the reward head trainable. Each part is switchable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlhf.device import DeviceConfig, place


@dataclass(frozen=True)
class BackboneConfig:
    """Size of a Qwen2-VL built from scratch (the tiny default suits the moving-shapes world on CPU)."""

    text_hidden: int = 128  # language model width (text_hidden / text_heads a multiple of 4)
    text_layers: int = 4  # language model layers
    text_heads: int = 4  # language model attention heads
    text_kv_heads: int = 2  # its key/value heads (grouped-query attention; divides text_heads)
    text_intermediate: int = 256  # language model MLP width
    vision_depth: int = 2  # vision tower blocks
    vision_embed: int = 64  # vision tower width
    vision_heads: int = 2  # vision tower attention heads
    patch_size: int = 14  # pixels per patch side (Qwen2-VL: 14)
    temporal_patch_size: int = 2  # frames per patch (Qwen2-VL: 2)
    vocab_size: int = 512  # of the locally trained tokenizer
    grammar: str = "single"  # prompts the locally trained tokenizer reads: single | pair | mixed
    # M-RoPE base of the language model. Qwen2-VL gives the temporal, height and width sections of each head
    # the highest, middle and lowest frequencies in that order: with a 32-wide head at 1e4 the width section
    # turns by under 0.01 rad across a 4-token row, so the model cannot tell left from right; a small base
    # (e.g. 10: 0.12-0.24 rad per token) lets it read where things are.
    rope_theta: float = 10000.0

    def validate(self) -> None:
        if self.rope_theta <= 1.0:
            raise ValueError(f"rope_theta must be > 1, got {self.rope_theta}")
        head_dim = self.text_hidden // self.text_heads
        if self.text_hidden % self.text_heads or head_dim % 4:
            raise ValueError(
                f"text_hidden / text_heads must be a multiple of 4, got {self.text_hidden} / {self.text_heads}"
            )
        if self.text_heads % self.text_kv_heads:
            raise ValueError("text_heads must be a multiple of text_kv_heads")
        if self.vision_embed % self.vision_heads:
            raise ValueError("vision_embed must be a multiple of vision_heads")


@dataclass(frozen=True)
class TrainableParts:
    """What the optimiser updates (VideoAlign's recipe by default)."""

    lora_rank: int = 16  # 0 = full fine-tuning of the language model
    lora_alpha: int = 32  # LoRA scale alpha / rank
    lora_dropout: float = 0.0  # dropout on the LoRA inputs
    vision: bool = True  # the vision tower (and its merger)
    special_token_embeddings: bool = True  # only the rows of the added special tokens
    lm_head: bool = False  # the language-model head (the caption auxiliary loss trains it)


def qwen2vl_config(tokenizer, bc: BackboneConfig = BackboneConfig()):
    """A Qwen2-VL config of size ``bc`` whose special token ids match ``tokenizer``."""
    from transformers import Qwen2VLConfig

    from .tokens import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

    head_dim = bc.text_hidden // bc.text_heads
    half = head_dim // 2
    t = half // 4
    mrope = [half - 2 * ((half - t) // 2), (half - t) // 2, (half - t) // 2]  # sums to head_dim / 2
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=max(bc.vocab_size, len(tokenizer)),
            hidden_size=bc.text_hidden,
            intermediate_size=bc.text_intermediate,
            num_hidden_layers=bc.text_layers,
            num_attention_heads=bc.text_heads,
            num_key_value_heads=bc.text_kv_heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": bc.rope_theta, "mrope_section": mrope},
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            depth=bc.vision_depth,
            embed_dim=bc.vision_embed,
            hidden_size=bc.text_hidden,
            num_heads=bc.vision_heads,
            mlp_ratio=2,
            patch_size=bc.patch_size,
            temporal_patch_size=bc.temporal_patch_size,
        ),
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids(VIDEO_PAD),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
    )


class VideoRewardModel(nn.Module):
    """Qwen2-VL + reward head. ``forward`` returns raw rewards (B, 3) in the order VQ, MQ, TA."""

    def __init__(self, vlm: nn.Module, reward_token_ids: list[int], separate_tokens: bool = True):
        super().__init__()
        expected = 3 if separate_tokens else 1
        if len(reward_token_ids) != expected:
            raise ValueError(f"need {expected} reward token id(s), got {reward_token_ids}")
        self.vlm = vlm
        self.separate_tokens = separate_tokens
        self.register_buffer("reward_token_ids", torch.tensor(reward_token_ids, dtype=torch.long), persistent=False)
        hidden = vlm.config.text_config.hidden_size
        self.rm_head = nn.Linear(hidden, 3, bias=False)
        nn.init.normal_(self.rm_head.weight, std=1.0 / hidden**0.5)

    def place(self, device: DeviceConfig) -> VideoRewardModel:
        """On ``device.device`` in ``device.precision``, except the reward head, which stays fp32 (the
        rewards are what losses and comparisons read); with ``device.gradient_checkpointing``, transformers'
        own activation checkpointing of the backbone's layers. Non-reentrant checkpointing: the reentrant
        variant passes no gradient through a layer whose inputs do not require grad (frozen embeddings
        under LoRA) unless the embeddings' outputs are forced to (``enable_input_require_grads``);
        the non-reentrant one needs no such hook (same gradients, tests/test_reward_device.py)."""
        place(self, device)
        self.rm_head.float()
        if device.gradient_checkpointing:
            self.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return self

    def base_model(self) -> nn.Module:
        """The Qwen2VLModel inside (through a peft wrapper when there is one)."""
        m = self.vlm
        while not hasattr(m, "language_model") and hasattr(m, "model"):
            m = m.model
        return m

    def forward(
        self, input_ids, attention_mask, pixel_values_videos, video_grid_thw, mm_token_type_ids, caption_mask=None
    ):
        """Raw rewards (B, 3); with ``caption_mask`` (B, L) also the per-sequence mean negative
        log-likelihood of the masked (prompt) tokens given everything before them (B,)."""
        out = self.base_model()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state  # (B, L, H)
        rewards = self._read_rewards(input_ids, hidden)
        if caption_mask is None:
            return rewards
        return rewards, self._caption_nll(input_ids, hidden, caption_mask)

    def _caption_nll(self, input_ids, hidden, caption_mask) -> torch.Tensor:
        target = caption_mask[:, 1:].bool()  # token j is predicted from position j - 1
        rows = target.nonzero(as_tuple=True)[0]
        logits = self.vlm.get_output_embeddings()(hidden[:, :-1][target])
        nll = nn.functional.cross_entropy(logits.float(), input_ids[:, 1:][target], reduction="none")
        total = torch.zeros(len(input_ids), dtype=nll.dtype, device=nll.device).index_add(0, rows, nll)
        return total / target.sum(1).clamp(min=1)

    def _read_rewards(self, input_ids, hidden) -> torch.Tensor:
        match = input_ids[:, :, None] == self.reward_token_ids[None, None, :]  # (B, L, n_tokens)
        counts = match.sum(dim=1)
        if not torch.all(counts == 1):
            raise ValueError(f"every sequence needs each reward token exactly once, got counts {counts.tolist()}")
        pos = match.float().argmax(dim=1)  # (B, n_tokens)
        h = torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, n_tokens, H)
        scores = self.rm_head(h.to(self.rm_head.weight.dtype))  # (B, n_tokens, 3)
        if self.separate_tokens:
            return torch.diagonal(scores, dim1=1, dim2=2)  # token d -> output d
        return scores[:, 0]


def build_model(
    tokenizer,
    bc: BackboneConfig = BackboneConfig(),
    separate_tokens: bool = True,
    seed: int = 0,
    vlm: nn.Module | None = None,
) -> VideoRewardModel:
    """A reward model on a fresh Qwen2-VL of size ``bc`` (or on ``vlm`` when given)."""
    from transformers import Qwen2VLForConditionalGeneration

    from .tokens import REWARD_TOKENS, SHARED_TOKEN

    torch.manual_seed(seed)
    if vlm is None:
        vlm = Qwen2VLForConditionalGeneration(qwen2vl_config(tokenizer, bc))
    names = list(REWARD_TOKENS.values()) if separate_tokens else [SHARED_TOKEN]
    return VideoRewardModel(vlm, [tokenizer.convert_tokens_to_ids(t) for t in names], separate_tokens)


LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def apply_trainable_parts(
    model: VideoRewardModel, parts: TrainableParts, lora_targets: list[str] | None = None, use_rslora: bool = False
) -> VideoRewardModel:
    """Freeze everything, then open LoRA on the language model, the vision tower, the special-token
    embedding rows and the head, as ``parts`` says. ``lora_targets``: the modules LoRA wraps (names inside
    the Qwen2-VL model, as a loaded adapter lists them); default every attention and MLP projection of the
    language model, as VideoAlign. ``use_rslora``: scale alpha / sqrt(r) (peft's rsLoRA) instead of alpha / r."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    token_ids = sorted(set(model.reward_token_ids.tolist()))
    if parts.lora_rank > 0:
        cfg = LoraConfig(
            r=parts.lora_rank,
            lora_alpha=parts.lora_alpha,
            lora_dropout=parts.lora_dropout,
            target_modules=list(lora_targets) if lora_targets else LORA_TARGETS,
            use_rslora=use_rslora,
            trainable_token_indices={"embed_tokens": token_ids} if parts.special_token_embeddings else None,
        )
        model.vlm = get_peft_model(model.vlm, cfg)
    else:
        for p in model.base_model().language_model.parameters():
            p.requires_grad_(True)
    if parts.vision:
        for p in model.base_model().visual.parameters():
            p.requires_grad_(True)
    if parts.lm_head:
        for p in model.vlm.get_output_embeddings().parameters():
            p.requires_grad_(True)
    for p in model.rm_head.parameters():
        p.requires_grad_(True)
    return model
