"""Special tokens, the VideoAlign prompt template, and a locally built tokenizer for the tiny world.

Template (separate tokens, as VideoAlign): the VQ and MQ tokens come *before* the prompt text, so
under causal attention they read the video but never the prompt; TA comes after it::

    <|im_start|>user
    <|vision_start|><|video_pad|>...<|vision_end|>Visual quality: <|VQ_reward|> Motion quality:
    <|MQ_reward|> Caption: {prompt} Text alignment: <|TA_reward|><|im_end|>

Shared-token variant (ablation): one ``<|reward|>`` at the end reads all three outputs.
"""

from __future__ import annotations

from pathlib import Path

VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
REWARD_TOKENS = {"VQ": "<|VQ_reward|>", "MQ": "<|MQ_reward|>", "TA": "<|TA_reward|>"}
SHARED_TOKEN = "<|reward|>"
CAPTION_PREFIX = "Caption: "  # the prompt text follows it in both templates
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD,
                  *REWARD_TOKENS.values(), SHARED_TOKEN]


def render_prompt(prompt: str, n_video_tokens: int, separate_tokens: bool = True) -> str:
    """The reward model's input text for one video with ``n_video_tokens`` placeholder tokens."""
    video = VISION_START + VIDEO_PAD * n_video_tokens + VISION_END
    if separate_tokens:
        body = (f"Visual quality: {REWARD_TOKENS['VQ']} Motion quality: {REWARD_TOKENS['MQ']} "
                f"{CAPTION_PREFIX}{prompt} Text alignment: {REWARD_TOKENS['TA']}")
    else:
        body = f"{CAPTION_PREFIX}{prompt} Rating: {SHARED_TOKEN}"
    return f"{IM_START}user\n{video}{body}{IM_END}"


def build_tokenizer(corpus: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``corpus`` (milliseconds), with the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus + [render_prompt("", 0), render_prompt("", 0, False)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=IM_END,
                                   additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.padding_side = "left"
    return fast


def world_tokenizer(vocab_size: int = 512):
    """The moving-shapes world's tokenizer, trained on every prompt of its grammar."""
    from rlhf.synthetic.prompts import all_prompts

    return build_tokenizer([p.text for p in all_prompts()], vocab_size)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    missing = [t for t in (*REWARD_TOKENS.values(), VIDEO_PAD, VISION_START, VISION_END)
               if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks special token(s) {', '.join(missing)}")
    return tok
