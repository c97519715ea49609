"""Text conditioning: a UMT5 encoder (the Wan text encoder class) and its tokenizer.

Embeddings follow ``WanPipeline``: pad to ``max_tokens``, run the encoder with the attention mask,
then zero every position past the prompt's length, so padding carries no signal. The unconditional
branch of classifier-free guidance is the embedding of the empty prompt, as Wan's default negative
prompt.
"""

from __future__ import annotations

import torch


class TextEncoder(torch.nn.Module):
    def __init__(self, encoder, tokenizer, max_tokens: int):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self.max_tokens = max_tokens

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def forward(self, prompts: list[str]) -> torch.Tensor:
        """``(B, max_tokens, dim)`` embeddings, zero past each prompt's tokens."""
        if isinstance(prompts, str):
            prompts = [prompts]
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = next(self.encoder.parameters()).device
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        hidden = self.encoder(ids, mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype)


def world_text_encoder(
    dim: int = 64,
    layers: int = 2,
    heads: int = 2,
    ffn: int = 128,
    max_tokens: int = 16,
    seed: int = 0,
    grammar: str = "single",
) -> TextEncoder:
    """A tiny UMT5 encoder with the moving-shapes world's locally built tokenizer for ``grammar``'s prompts."""
    from transformers import UMT5Config, UMT5EncoderModel

    from rlhf.reward.tokens import world_tokenizer

    tok = world_tokenizer(grammar=grammar)
    cfg = UMT5Config(
        vocab_size=len(tok),
        d_model=dim,
        d_kv=dim // heads,
        d_ff=ffn,
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return TextEncoder(UMT5EncoderModel(cfg), tok, max_tokens)
