"""Video flow generator: Wan transformer, UMT5 text encoder, codecs, LoRA and the Euler sampler."""
