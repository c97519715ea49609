"""The released VideoReward layout (KwaiVGI/VideoReward) loads through hub ids and scores as an independent
forward does: a tiny Qwen2-VL base and a checkpoint written here with the release trainer's key names
(transformers 4.45 under peft), read back by ``VideoReward.from_checkpoint``, compared with a forward pass
written below with transformers' Qwen2-VL, LoRA merged by hand, the head and the release's read-out."""

import hashlib
import json

import numpy as np
import pytest
import torch

from rlhf.reward.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlhf.reward.inference import VideoReward
from rlhf.reward.tokens import release_prompt
from tests.hub_cache import cache_repo

BASE_ID, REWARD_ID = "acme/tiny-qwen2-vl", "acme/tiny-videoreward"
VQ, MQ, TA = "<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>"
PROMPT = "The camera remains still, a girl with braided hair sat on a chair in a cozy bedroom."
RANK, ALPHA = 4, 8
NORM = {"VQ_mean": 3.6757, "VQ_std": 2.2476, "MQ_mean": 1.1646, "MQ_std": 1.3811, "TA_mean": 2.8105, "TA_std": 2.5121}
# Qwen2-VL-2B-Instruct's chat template (its chat_template.json)
QWEN2VL_CHAT = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)  # OpenAI CLIP, as Qwen2-VL's processor
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def test_release_prompt_is_the_release_text():
    # sha256 of VideoAlign prompt_template.build_prompt("a cat", ["VQ", "MQ", "TA"], "detailed_special")
    digest = hashlib.sha256(release_prompt("a cat").encode()).hexdigest()
    assert digest == "3c8e9026e357f4015e5f12406667aa8dffa7cb4222a800e74f87bd9655c3f1f0"


def _base_tokenizer():
    """A byte-level BPE with Qwen2-VL's special tokens and none of the reward tokens (as the hub base)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|video_pad|>",
        "<|image_pad|>",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [release_prompt(PROMPT), "system You are a helpful assistant. user assistant"],
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=specials[0], eos_token="<|im_end|>", additional_special_tokens=specials[1:]
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(cache dir, the release-trained weights as a dict) with the base and the checkpoint cached as hub repos."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    from rlhf.reward.model import BackboneConfig, qwen2vl_config

    root = tmp_path_factory.mktemp("release")
    tok = _base_tokenizer()
    torch.manual_seed(0)
    base_rows = len(tok) + 29  # the hub base has spare rows (Qwen2-VL-2B: 151936 for 151657 tokens)
    vlm = Qwen2VLForConditionalGeneration(qwen2vl_config(tok, BackboneConfig(vocab_size=base_rows)))
    vlm.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    (root / "base" / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2VL_CHAT}))
    cache = root / "hub"
    cache_repo(cache, BASE_ID, root / "base")

    # what the release's training leaves: tokens added, embeddings resized to len(tokenizer), LoRA on every
    # linear layer of the language model, vision tower, embeddings and head trained
    tok = AutoTokenizer.from_pretrained(root / "base")
    tok.add_special_tokens({"additional_special_tokens": [VQ, MQ, TA]})
    vlm.resize_token_embeddings(len(tok))
    g = torch.Generator().manual_seed(1)
    hidden = vlm.config.text_config.hidden_size
    lora, non_lora = {}, {}
    with torch.no_grad():
        embed = vlm.get_input_embeddings().weight
        embed[-3:] = torch.randn(3, hidden, generator=g)
        non_lora["base_model.model.model.embed_tokens.weight"] = embed.clone()
        for k, v in vlm.model.visual.named_parameters():
            v.add_(0.02 * torch.randn(v.shape, generator=g))
            non_lora[f"base_model.model.visual.{k}"] = v.clone()
        head = 0.3 * torch.randn(3, hidden, generator=g)
        non_lora["base_model.model.rm_head.weight"] = head
        targets = []
        for name, mod in vlm.model.language_model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                old = f"model.{name}"  # transformers 4.45's name of this layer
                targets.append(old)
                lora[f"base_model.model.{old}.lora_A.weight"] = 0.1 * torch.randn(RANK, mod.in_features, generator=g)
                lora[f"base_model.model.{old}.lora_B.weight"] = 0.1 * torch.randn(mod.out_features, RANK, generator=g)
    from safetensors.torch import save_file

    ck = root / "reward" / "checkpoint-1200"
    ck.mkdir(parents=True)
    save_file(lora, str(ck / "adapter_model.safetensors"))
    (ck / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": RANK,
                "lora_alpha": ALPHA,
                "lora_dropout": 0.05,
                "target_modules": targets,
                "bias": "none",
                "use_rslora": False,
            }
        )
    )
    torch.save(non_lora, ck / "non_lora_state_dict.pth")
    (root / "reward" / "model_config.json").write_text(
        json.dumps(
            {
                "data_config": {
                    "meta_data": "/data/train.csv",
                    "data_dir": "/data",
                    "meta_data_test": None,
                    "max_frame_pixels": 200704,
                    "num_frames": None,
                    "fps": 2.0,
                    "p_shuffle_frames": 0.0,
                    "p_color_jitter": 0.0,
                    "eval_dim": ["VQ", "MQ", "TA"],
                    "prompt_template_type": "detailed_special",
                    "add_noise": False,
                    "sample_type": "uniform",
                    "use_tied_data": True,
                },
                "training_args": {"output_dir": "rm_output", "bf16": True, "learning_rate": 2e-6},
                "model_config": {
                    "model_name_or_path": BASE_ID,
                    "model_revision": "main",
                    "output_dim": 3,
                    "use_special_tokens": True,
                    "freeze_vision_tower": False,
                    "freeze_llm": False,
                    "tune_merger": True,
                    "torch_dtype": "bfloat16",
                    "reward_token": "special",
                    "loss_type": "btt",
                },
                "peft_lora_config": {
                    "lora_enable": True,
                    "vision_lora": False,
                    "lora_r": RANK,
                    "lora_alpha": ALPHA,
                    "lora_dropout": 0.05,
                    "lora_target_modules": None,
                    "lora_namespan_exclude": ["lm_head", "rm_head", "embed_tokens", "visual"],
                    "lora_modules_to_save": None,
                    "lora_task_type": "CAUSAL_LM",
                    "use_rslora": False,
                    "num_lora_modules": -1,
                },
                "inference_config": NORM,
            }
        )
    )
    cache_repo(cache, REWARD_ID, root / "reward")
    return cache, {"vlm": vlm, "tok": tok, "lora": lora, "head": head}


def _reference_forward(w: dict, frames: np.ndarray) -> np.ndarray:
    """Raw VQ, MQ, TA of one 16-frame 56 x 84 clip at 8 fps, computed from the release's definitions."""
    import copy

    import torch.nn.functional as F

    vlm = copy.deepcopy(w["vlm"]).eval()
    with torch.no_grad():  # merge LoRA: W + alpha / r * B A, on the 4.45 names mapped by hand
        mods = dict(vlm.model.language_model.named_modules())
        for k, a in w["lora"].items():
            if k.endswith("lora_A.weight"):
                name = k[len("base_model.model.model.") : -len(".lora_A.weight")]
                b = w["lora"][k.replace("lora_A", "lora_B")]
                mods[name].weight.add_(ALPHA / RANK * b @ a)
    # qwen-vl-utils: 16 frames / 8 fps * 2 fps = 4 frames (also its minimum), linspace(0, 15, 4) rounded;
    # smart_resize(56, 84, min 128 * 28 * 28, max 200704): 4704 px < min, beta = sqrt(100352 / 4704) = 4.619,
    # ceil(56 * 4.619 / 28) * 28 = 280, ceil(84 * 4.619 / 28) * 28 = 392; torchvision resizes uint8 -> uint8
    x = torch.from_numpy(frames[[0, 5, 10, 15]]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(280, 392), mode="bicubic", antialias=True).round().clamp(0, 255)
    x = (x / 255.0 - torch.from_numpy(CLIP_MEAN)[:, None, None]) / torch.from_numpy(CLIP_STD)[:, None, None]
    patches = []  # Qwen2-VL order: each 2 x 2 group of 14-pixel patches contiguous, (C, 2 frames, 14, 14) each
    for t in range(2):
        for bh in range(10):
            for bw in range(14):
                for mh in range(2):
                    for mw in range(2):
                        r, c = (2 * bh + mh) * 14, (2 * bw + mw) * 14
                        patches.append(x[2 * t : 2 * t + 2, :, r : r + 14, c : c + 14].permute(1, 0, 2, 3).reshape(-1))
    n_tokens = 2 * 20 * 28 // 4
    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        + "<|video_pad|>" * n_tokens
        + "<|vision_end|>"
        + release_prompt(PROMPT)
        + "<|im_end|>\n"
        + "<|im_start|>assistant\n"
    )
    ids = w["tok"](text, return_tensors="pt")["input_ids"]
    video_id = w["tok"].convert_tokens_to_ids("<|video_pad|>")
    with torch.no_grad():
        h = vlm.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values_videos=torch.stack(patches),
            video_grid_thw=torch.tensor([[2, 20, 28]]),
            mm_token_type_ids=(ids == video_id).int() * 2,
        ).last_hidden_state[0]
        special = [w["tok"].convert_tokens_to_ids(t) for t in (VQ, MQ, TA)]
        pos = [int((ids[0] == s).nonzero()) for s in special]
        assert pos == sorted(pos)  # the release reads them in sequence order: VQ, MQ, TA
        logits = h[pos] @ w["head"].T  # (3 tokens, 3 outputs)
    return torch.diagonal(logits).numpy()


def test_release_checkpoint_from_hub_ids_scores_as_the_release(release, monkeypatch, tmp_path):
    cache, w = release
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frames = np.random.default_rng(3).integers(0, 256, (16, 56, 84, 3), dtype=np.uint8)
    reward = VideoReward.from_checkpoint(REWARD_ID, cache_dir=cache)
    info = reward.info
    assert info.template == "detailed_special" and info.parts.lora_rank == RANK
    assert (info.sampling.fps, info.sampling.min_frames, info.sampling.max_pixels) == (2.0, 4, 200704)
    assert reward.model.vlm.get_input_embeddings().weight.shape[0] == len(w["tok"])  # resized as the release
    expected = _reference_forward(w, frames)
    got = reward.raw([frames], [PROMPT], fps=8.0)[0]
    np.testing.assert_allclose(got, expected, atol=2e-4)
    norm = reward.reward([frames], [PROMPT], fps=8.0)[0]
    for i, d in enumerate(("VQ", "MQ", "TA")):
        assert norm[d] == pytest.approx((expected[i] - NORM[f"{d}_mean"]) / NORM[f"{d}_std"], abs=2e-4)
    assert norm["Overall"] == pytest.approx(norm["VQ"] + norm["MQ"] + norm["TA"])

    # our own export of it, in the same layout, scores identically
    model, tok, info, _ = load_checkpoint(REWARD_ID, cache_dir=cache)
    save_checkpoint(model, tmp_path, 7, info)
    again = VideoReward.from_checkpoint(tmp_path, cache_dir=cache).raw([frames], [PROMPT], fps=8.0)[0]
    np.testing.assert_allclose(again, expected, atol=2e-4)
    cfg = json.loads((tmp_path / "model_config.json").read_text())
    assert cfg["model_config"]["model_name_or_path"] == BASE_ID
    assert cfg["data_config"]["prompt_template_type"] == "detailed_special"


def test_uncached_hub_id_offline_names_the_id_and_the_fix(release, monkeypatch):
    cache, _ = release
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError, match=r"acme/absent is not in the Hugging Face cache .* `hf download acme/absent"
    ):
        VideoReward.from_checkpoint("acme/absent", cache_dir=cache)
