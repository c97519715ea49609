"""Special tokens, the VideoAlign prompt template, and a locally built tokenizer for the tiny world.

Template (separate tokens, as VideoAlign): the VQ and MQ tokens come *before* the prompt text, so
under causal attention they read the video but never the prompt; TA comes after it::

    <|im_start|>user
    <|vision_start|><|video_pad|>...<|vision_end|>Visual quality: <|VQ_reward|> Motion quality:
    <|MQ_reward|> Caption: {prompt} Text alignment: <|TA_reward|><|im_end|>

Shared-token variant (ablation): one ``<|reward|>`` at the end reads all three outputs.
"""

from __future__ import annotations

VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
REWARD_TOKENS = {"VQ": "<|VQ_reward|>", "MQ": "<|MQ_reward|>", "TA": "<|TA_reward|>"}
SHARED_TOKEN = "<|reward|>"
CAPTION_PREFIX = "Caption: "  # the prompt text follows it in both templates
SPECIAL_TOKENS = [
    PAD,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    VIDEO_PAD,
    IMAGE_PAD,
    *REWARD_TOKENS.values(),
    SHARED_TOKEN,
]


def render_prompt(prompt: str, n_video_tokens: int, separate_tokens: bool = True) -> str:
    """The reward model's input text for one video with ``n_video_tokens`` placeholder tokens."""
    video = VISION_START + VIDEO_PAD * n_video_tokens + VISION_END
    if separate_tokens:
        body = (
            f"Visual quality: {REWARD_TOKENS['VQ']} Motion quality: {REWARD_TOKENS['MQ']} "
            f"{CAPTION_PREFIX}{prompt} Text alignment: {REWARD_TOKENS['TA']}"
        )
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
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus + [render_prompt("", 0), render_prompt("", 0, False)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=IM_END, additional_special_tokens=SPECIAL_TOKENS[1:]
    )
    fast.padding_side = "left"
    return fast


def world_tokenizer(vocab_size: int = 512, grammar: str = "single"):
    """The moving-shapes world's tokenizer, trained on every prompt of ``grammar`` ("single" keeps the
    tokenizer the shipped single-object models were trained with; "pair" and "mixed" read both kinds)."""
    from rlhf.synthetic.prompts import all_prompts, check_grammar

    if check_grammar(grammar) == "single":
        return build_tokenizer([p.text for p in all_prompts()], vocab_size)
    return build_tokenizer([p.text for p in all_prompts("single") + all_prompts("pair")], vocab_size)


# ----------------------------------------------------------------------------- the VideoAlign release
# VideoReward's prompt (VideoAlign prompt_template.py, ``prompt_template_type="detailed_special"``), verbatim;
# the release puts it after the video in one user message of the base model's chat template.
DETAILED_SPECIAL = """
You are tasked with evaluating a generated video based on three distinct criteria: Visual Quality, Motion Quality, and Text Alignment. Please provide a rating from 0 to 10 for each of the three categories, with 0 being the worst and 10 being the best. Each evaluation should be independent of the others.

**Visual Quality:**  
Evaluate the overall visual quality of the video, with a focus on static factors. The following sub-dimensions should be considered:
- **Reasonableness:** The video should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.
- **Clarity:** Evaluate the sharpness and visibility of the video. The image should be clear and easy to interpret, with no blurring or indistinct areas.
- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).
- **Aesthetic and Creativity:** Assess the artistic aspects of the video, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.
- **Safety:** The video should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. 

Please provide the ratings of Visual Quality: <|VQ_reward|>
END

**Motion Quality:**  
Assess the dynamic aspects of the video, with a focus on dynamic factors. Consider the following sub-dimensions:
- **Stability:** Evaluate the continuity and stability between frames. There should be no sudden, unnatural jumps, and the video should maintain stable attributes (e.g., no fluctuating colors, textures, or missing body parts).
- **Naturalness:** The movement should align with physical laws and be realistic. For example, clothing should flow naturally with motion, and facial expressions should change appropriately (e.g., blinking, mouth movements).
- **Aesthetic Quality:** The movement should be smooth and fluid. The transitions between different motions or camera angles should be seamless, and the overall dynamic feel should be visually pleasing.
- **Fusion:** Ensure that elements in motion (e.g., edges of the subject, hair, clothing) blend naturally with the background, without obvious artifacts or the feeling of cut-and-paste effects.
- **Clarity of Motion:** The video should be clear and smooth in motion. Pay attention to any areas where the video might have blurry or unsteady sections that hinder visual continuity.
- **Amplitude:** If the video is largely static or has little movement, assign a low score for motion quality.

Please provide the ratings of Motion Quality: <|MQ_reward|>
END

**Text Alignment:**  
Assess how well the video matches the textual prompt across the following sub-dimensions:
- **Subject Relevance** Evaluate how accurately the subject(s) in the video (e.g., person, animal, object) align with the textual description. The subject should match the description in terms of number, appearance, and behavior.
- **Motion Relevance:** Evaluate if the dynamic actions (e.g., gestures, posture, facial expressions like talking or blinking) align with the described prompt. The motion should match the prompt in terms of type, scale, and direction.
- **Environment Relevance:** Assess whether the background and scene fit the prompt. This includes checking if real-world locations or scenes are accurately represented, though some stylistic adaptation is acceptable.  
- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well the video adheres to this style.
- **Camera Movement Relevance:** Check if the camera movements (e.g., following the subject, focus shifts) are consistent with the expected behavior from the prompt.

Textual prompt - {text_prompt}
Please provide the ratings of Text Alignment: <|TA_reward|>
END
"""
TEMPLATES = ("world", "detailed_special")  # ours (render_prompt) | the release's
RELEASE_CAPTION_PREFIX = "Textual prompt - "  # the prompt text follows it in the release's template


def release_prompt(prompt: str, template_type: str = "detailed_special") -> str:
    """The release's ``build_prompt(prompt, ["VQ", "MQ", "TA"], template_type)``."""
    if template_type != "detailed_special":
        raise ValueError(
            f"prompt template {template_type!r} is not supported: VideoReward reads its rewards at "
            "the special tokens only 'detailed_special' contains"
        )
    return DETAILED_SPECIAL.format(text_prompt=prompt)


def render_chat(tokenizer, prompt: str, n_video_tokens: int, template_type: str = "detailed_special") -> str:
    """The release's model input text: one user message (the video, then ``release_prompt``) in the
    tokenizer's chat template with the generation prompt, the video placeholder expanded to
    ``n_video_tokens`` tokens (what Qwen2-VL's processor does)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template (the base model's chat_template.json / "
            "tokenizer_config.json): the release's prompt lives inside it"
        )
    messages = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": release_prompt(prompt, template_type)}],
        }
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(VIDEO_PAD) != 1:
        raise ValueError(
            f"the chat template rendered {text.count(VIDEO_PAD)} {VIDEO_PAD} for one video; "
            "expected Qwen2-VL's template"
        )
    return text.replace(VIDEO_PAD, VIDEO_PAD * n_video_tokens)


def add_reward_tokens(tokenizer, separate_tokens: bool = True) -> bool:
    """Add the reward tokens as the release's trainer does (``additional_special_tokens``, in the order VQ,
    MQ, TA) when the tokenizer lacks them; True when tokens were added (the embeddings must then grow)."""
    names = list(REWARD_TOKENS.values()) if separate_tokens else [SHARED_TOKEN]
    if all(tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id) for t in names):
        return False
    tokenizer.add_special_tokens({"additional_special_tokens": names}, replace_extra_special_tokens=False)
    return True
