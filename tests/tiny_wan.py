"""The parts of a tiny Wan2.1-layout pipeline (UMT5 encoder, Wan VAE, Wan transformer) that tests build."""

import torch


def tiny_wan_parts(num_layers: int = 1):
    """(tokenizer, text encoder, VAE, transformer), seeded, in eval mode; the tokenizer pads on the right."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from rlhf.reward.tokens import world_tokenizer

    torch.manual_seed(0)
    tok = world_tokenizer()
    tok.padding_side = "right"
    enc = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tok),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=tok.pad_token_id,
            decoder_start_token_id=tok.pad_token_id,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.5, 2.0, 1.0],
    ).eval()
    tr = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=num_layers,
    ).eval()
    return tok, enc, vae, tr
