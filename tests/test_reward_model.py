"""VideoReward model: patchify, template, token positions, causal reading, checkpoints."""

import json
import os

import numpy as np
import pytest
import torch

from rlhf.reward.checkpoint import CheckpointError, RewardCheckpointInfo, load_checkpoint
from rlhf.reward.inference import VideoReward
from rlhf.reward.model import TrainableParts, apply_trainable_parts, build_model
from rlhf.reward.processor import CLIP_MEAN, CLIP_STD, RewardProcessor, VisionGeometry, patchify
from rlhf.reward.tokens import REWARD_TOKENS, VIDEO_PAD, world_tokenizer
from rlhf.synthetic.render import render

P1 = "a red circle moving left slowly on a black background"
P2 = "a blue triangle moving up quickly on a gray background"


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.fixture(scope="module")
def videos():
    return [render(P1, seed=1), render(P1, {"blur": 0.8}, seed=2), render(P2, seed=3)]


@pytest.mark.parametrize("geometry,shape", [(VisionGeometry(), (4, 56, 84)), (VisionGeometry(4, 1, 2), (3, 16, 24))])
def test_patchify_matches_explicit_patch_extraction(geometry, shape):
    P, TP, M = geometry.patch, geometry.temporal, geometry.merge
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    patches, grid = patchify(frames, geometry)
    gt, gh, gw = shape[0] // TP, shape[1] // P, shape[2] // P
    assert grid == (gt, gh, gw) and patches.shape == (gt * gh * gw, 3 * TP * P * P)
    norm = (frames / 255.0 - CLIP_MEAN) / CLIP_STD
    # Patches are listed per frame group, then per M x M block of patches (row-major), then inside the block.
    j = 0
    for t in range(gt):
        for bh in range(gh // M):
            for bw in range(gw // M):
                for mh in range(M):
                    for mw in range(M):
                        h, w = (M * bh + mh) * P, (M * bw + mw) * P
                        block = norm[TP * t : TP * t + TP, h : h + P, w : w + P, :]  # (TP, P, P, C)
                        expected = block.transpose(3, 0, 1, 2).reshape(-1)  # channel, time, row, col
                        assert np.allclose(patches[j].numpy(), expected, atol=1e-5), j
                        j += 1


def test_processor_template_and_padding(tok, videos):
    proc = RewardProcessor(tok)
    batch = proc(videos[:2], [P1, "a red circle"])
    ids = batch["input_ids"]
    grid = batch["video_grid_thw"]
    assert grid.tolist() == [[4, 4, 4], [4, 4, 4]]  # 8 x 56 x 56 after sampling
    video_id = tok.convert_tokens_to_ids(VIDEO_PAD)
    assert ((ids == video_id).sum(dim=1) == 16).all()  # 4*4*4 patches / 4 merged
    assert torch.equal(batch["mm_token_type_ids"] == 2, ids == video_id)
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][0].all()  # left padding
    text = tok.decode(ids[0])
    assert (
        text.index(REWARD_TOKENS["VQ"])
        < text.index(REWARD_TOKENS["MQ"])
        < text.index(P1)
        < text.index(REWARD_TOKENS["TA"])
    )


def test_vq_and_mq_never_see_the_prompt(tok, videos):
    model = build_model(tok, seed=0).eval()
    proc = RewardProcessor(tok)
    with torch.no_grad():
        a = model(**proc(videos[:1], [P1]))
        b = model(**proc(videos[:1], [P2]))
    assert torch.allclose(a[0, :2], b[0, :2], atol=1e-6)  # causal: tokens before the prompt
    assert not torch.allclose(a[0, 2], b[0, 2], atol=1e-4)  # TA reads the prompt


def test_scores_do_not_depend_on_batch_padding(tok, videos):
    model = build_model(tok, seed=0).eval()
    proc = RewardProcessor(tok)
    with torch.no_grad():
        alone = torch.cat([model(**proc([v], [p])) for v, p in zip(videos, [P1, P1, "a cyan square"])])
        batched = model(**proc(videos, [P1, P1, "a cyan square"]))
    assert torch.allclose(alone, batched, atol=1e-4)


def test_shared_token_variant(tok, videos):
    model = build_model(tok, separate_tokens=False, seed=0).eval()
    proc = RewardProcessor(tok, separate_tokens=False)
    with torch.no_grad():
        a, b = model(**proc(videos[:1], [P1])), model(**proc(videos[:1], [P2]))
    assert a.shape == (1, 3)
    assert not torch.allclose(a, b, atol=1e-4)  # one token at the end sees the prompt for every output


def test_trainable_parts_follow_the_recipe(tok):
    model = apply_trainable_parts(build_model(tok), TrainableParts())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and "rm_head.weight" in trainable
    assert any(".visual." in n for n in trainable)
    assert any("trainable_tokens_delta" in n for n in trainable)
    frozen_lm = [
        n
        for n, p in model.named_parameters()
        if "language_model" in n and "lora_" not in n and "trainable_tokens" not in n
    ]
    assert frozen_lm and not any(dict(model.named_parameters())[n].requires_grad for n in frozen_lm)
    no_vision = apply_trainable_parts(build_model(tok), TrainableParts(vision=False, special_token_embeddings=False))
    assert not any(".visual." in n for n, p in no_vision.named_parameters() if p.requires_grad)


def test_own_lora_checkpoint_round_trips_in_the_release_layout(tok, videos, tmp_path):
    """save_checkpoint writes the release's names (transformers 4.45 under peft), the trained reward-token rows
    merged into the full embedding matrix, and loads back with identical outputs."""
    from safetensors.torch import load_file

    from rlhf.reward.checkpoint import save_backbone, save_checkpoint
    from rlhf.reward.processor import FrameSampling

    model = build_model(tok, seed=3)
    save_backbone(model.vlm, tok, tmp_path)
    model = apply_trainable_parts(model, TrainableParts(lora_rank=4, lora_alpha=8))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    norm = {"VQ_mean": 0.5, "VQ_std": 2.0, "MQ_mean": -1.0, "MQ_std": 0.5, "TA_mean": 0.0, "TA_std": 1.0}
    sampling = FrameSampling(fps=8.0, min_pixels=3136, max_pixels=3136)
    ck = save_checkpoint(model, tmp_path, 120, RewardCheckpointInfo(sampling=sampling, norm=norm))
    lora = load_file(ck / "adapter_model.safetensors")
    rest = torch.load(ck / "non_lora_state_dict.pth", weights_only=True)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in lora
    assert {"base_model.model.rm_head.weight", "base_model.model.model.embed_tokens.weight"} <= set(rest)
    assert any(k.startswith("base_model.model.visual.blocks.0.") for k in rest)
    ids = [tok.convert_tokens_to_ids(t) for t in REWARD_TOKENS.values()]
    base_rows = dict(model.named_parameters())[  # the rows before training
        "vlm.base_model.model.model.language_model.embed_tokens.token_adapter.base_layer.weight"
    ][ids]
    assert not torch.allclose(rest["base_model.model.model.embed_tokens.weight"][ids], base_rows)
    proc = RewardProcessor(tok)
    with torch.no_grad():
        expected = model.eval()(**proc(videos, [P1, P1, P2]))
    loaded, _, info, step = load_checkpoint(tmp_path)
    assert step == 120 and info.norm["MQ_mean"] == -1.0 and info.sampling == sampling
    with torch.no_grad():
        got = loaded(**proc(videos, [P1, P1, P2]))
    assert torch.allclose(expected, got, atol=1e-5)
    # the inference API normalises with the stored constants; Overall is the sum
    r = VideoReward(loaded, tok, info).reward(videos, [P1, P1, P2])
    assert r[0]["VQ"] == pytest.approx((expected[0, 0].item() - 0.5) / 2.0, abs=1e-4)
    assert r[0]["MQ"] == pytest.approx((expected[0, 1].item() + 1.0) / 0.5, abs=1e-4)
    assert r[0]["Overall"] == pytest.approx(r[0]["VQ"] + r[0]["MQ"] + r[0]["TA"])
    # a missing part is named
    os.remove(ck / "adapter_model.safetensors")
    with pytest.raises(CheckpointError, match="missing: checkpoint-120/adapter_model.safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / "model_config.json").unlink()
    with pytest.raises(CheckpointError, match="lacks model_config.json"):
        load_checkpoint(tmp_path)


def test_checkpoint_without_steps(tmp_path):
    (tmp_path / "model_config.json").write_text(
        json.dumps({"model_config": {"use_special_tokens": True}, "peft_lora_config": {}})
    )
    with pytest.raises(CheckpointError, match="no checkpoint-<step> folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="nope: no such directory, and not a hub id"):
        load_checkpoint(tmp_path / "nope")
    assert RewardCheckpointInfo().norm["VQ_std"] == 1.0


def test_caption_mask_marks_exactly_the_prompt(tok, videos):
    proc = RewardProcessor(tok, caption_mask=True)
    prompts = [P1, "a red circle"]
    batch = proc(videos[:2], prompts)
    for i, p in enumerate(prompts):
        picked = batch["input_ids"][i][batch["caption_mask"][i]]
        assert tok.decode(picked).strip() == p
    assert "caption_mask" not in RewardProcessor(tok)(videos[:1], [P1])


def test_caption_nll_matches_the_language_model_loss(tok, videos):
    """Per-sequence NLL of the prompt tokens == transformers' own causal-LM loss with every other
    label set to -100 (an independent implementation of the shift and the cross-entropy)."""
    model = build_model(tok, seed=0).eval()
    proc = RewardProcessor(tok, caption_mask=True)
    batch = proc(videos[:2], [P1, "a red circle"])
    with torch.no_grad():
        rewards, nll = model(**batch)
        assert torch.allclose(rewards, model(**{k: v for k, v in batch.items() if k != "caption_mask"}))
        for i in range(2):
            one = proc(videos[i : i + 1], [[P1, "a red circle"][i]])
            labels = torch.where(one["caption_mask"], one["input_ids"], torch.full_like(one["input_ids"], -100))
            inputs = {k: v for k, v in one.items() if k != "caption_mask"}
            ref = model.vlm(**inputs, labels=labels, use_cache=False).loss
            assert abs(float(nll[i]) - float(ref)) < 1e-4, (float(nll[i]), float(ref))


def test_export_drops_backbone_weights_of_a_full_finetune_and_scores_identically(tok, videos, tmp_path):
    from rlhf.reward.checkpoint import export_checkpoint, save_backbone, save_checkpoint, verify_manifest

    model = build_model(tok, seed=3)
    save_backbone(model.vlm, tok, tmp_path / "run")
    parts = TrainableParts(lora_rank=0, lm_head=True)  # every parameter trained (as the shipped model)
    model = apply_trainable_parts(model, parts)
    with torch.no_grad():  # move every weight away from the saved backbone
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(model, tmp_path / "run", 5, RewardCheckpointInfo(parts=parts))
    manifest = export_checkpoint(tmp_path / "run", tmp_path / "art", meta={"command": "x"})
    assert not manifest["backbone_weights_included"] and manifest["command"] == "x"
    assert not any(n.endswith(".safetensors") and n.startswith("backbone/") for n in manifest["files"])
    assert verify_manifest(tmp_path / "art")["step"] == 5
    prompts = [P1, P1, P2]
    with torch.no_grad():
        ref = model.eval()(**RewardProcessor(tok)(videos, prompts))
    got = VideoReward.from_checkpoint(tmp_path / "art").raw(videos, prompts)
    assert np.allclose(got, ref.numpy(), atol=1e-5)
    ck = tmp_path / "art" / "checkpoint-5" / "non_lora_state_dict.pth"
    state = torch.load(ck, weights_only=True)
    torch.save({k: v for k, v in state.items() if "visual" not in k}, ck)  # a partial state without weights
    with pytest.raises(CheckpointError, match="changed since export"):
        verify_manifest(tmp_path / "art")
    with pytest.raises(CheckpointError, match="restore the backbone weights"):
        load_checkpoint(tmp_path / "art")


def test_rope_theta_reaches_the_width_section(tok):
    """Qwen2-VL's M-RoPE sections take the inverse frequencies in order t, h, w: with a 32-wide head
    (sections 4, 6, 6 of 16) the width section holds theta^(-10/16) .. theta^(-15/16)."""
    from rlhf.reward.model import BackboneConfig

    for theta in (10000.0, 10.0):
        vlm = build_model(tok, BackboneConfig(rope_theta=theta)).vlm
        inv = next(m for n, m in vlm.named_modules() if n.endswith("rotary_emb") and "visual" not in n).inv_freq
        assert inv.shape == (16,)
        width = inv[10:].double().numpy()
        assert width == pytest.approx([theta ** (-i / 16) for i in range(10, 16)], rel=1e-5)
    # at 1e4 a 4-token row turns the width section by under 0.01 rad; at 10 by more than 0.3
    assert 3 * 10000.0 ** (-10 / 16) < 0.01 < 0.3 < 3 * 10.0 ** (-15 / 16)
    with pytest.raises(ValueError, match="rope_theta"):
        BackboneConfig(rope_theta=1.0).validate()
