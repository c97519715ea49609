"""Device and precision of the reward roles (issue 16): VideoReward in bf16, every tensor of the
latent reward and of the reward-training loss made on the model's device (checked on ``meta``), the
reward service's device / num_gpus agreement, and a clear error where no GPU is."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from rlhf.config import ConfigError, load_config
from rlhf.device import DeviceConfig, DeviceError, module_dtype
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.reward.checkpoint import RewardCheckpointInfo
from rlhf.reward.data import batch_from_frames
from rlhf.reward.inference import VideoReward
from rlhf.reward.latent import LatentPairs, LatentReward, LatentRewardConfig, LatentTrainConfig, step_loss
from rlhf.reward.model import TrainableParts, apply_trainable_parts, build_model
from rlhf.reward.processor import RewardProcessor
from rlhf.reward.tokens import world_tokenizer
from rlhf.reward.train import RewardTrainConfig, pair_loss
from rlhf.synthetic.render import render
from serve.config import RewardServiceConfig
from tests.device_guard import DeviceGuard

P1 = "a red circle moving left slowly on a black background"
P2 = "a blue triangle moving up quickly on a gray background"
META = DeviceConfig(device="meta")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.fixture(scope="module")
def reward_model(tok):
    """A fresh tiny VideoReward (text 4 layers x 128, vision depth 2), fp32 on the CPU."""
    return build_model(tok, seed=0)


@pytest.fixture(scope="module")
def clips():
    videos = [
        render(P1, seed=1),
        render(P1, {"blur": 0.8}, seed=2),
        render(P2, seed=3),
        render(P2, {"noise": 0.5}, seed=4),
    ]
    return videos, [P1, P1, P2, P2]


def pair_batch(tok, caption_mask: bool = False, pairs: int = 2):
    """Up to two labelled pairs (one with per-video scores, one without), as the trainer builds them."""
    scores = {"VQ": 0.9, "MQ": 0.4, "TA": 0.95}
    recs = [
        {
            "prompt": P1,
            "VQ": "A",
            "MQ": "B",
            "TA": "same",
            "Overall": "A",
            "score_a": scores,
            "score_b": {"VQ": 0.2, "MQ": 0.6, "TA": 0.5},
        },
        {"prompt": P2, "VQ": "B", "MQ": None, "TA": "A", "Overall": "B", "score_a": None, "score_b": None},
    ]
    frames_a = [render(P1, seed=1), render(P2, seed=3)]
    frames_b = [render(P1, {"blur": 0.8}, seed=2), render(P2, {"noise": 0.5}, seed=4)]
    proc = RewardProcessor(tok, caption_mask=caption_mask)
    return batch_from_frames(recs[:pairs], frames_a[:pairs], frames_b[:pairs], [8.0] * pairs, [8.0] * pairs, proc)


# ---------------------------------------------------------------- (a) bf16 against fp32
def test_videoreward_in_bf16_agrees_with_fp32_within_the_rounding_bound(tok, reward_model, clips):
    """bf16 scores are finite, returned as fp32, and within the error bf16 rounding can make.

    The bound, derived: bf16 keeps 8 significant bits, so one rounding moves a value by at most
    u = 2^-8 of itself. On the way to a reward token about K = 70 roundings happen in sequence (per
    text layer: norm, q/k/v, rotary, attention, o_proj, residual add, norm, gate/up, act x up, down,
    residual add = 11, times 4 layers = 44; 11 per vision block x 2 = 22; patch embedding and merger 4).
    Independent roundings add in quadrature: a relative error of sqrt(K) u = 0.033 on the hidden
    state h read at the token. h leaves the final RMSNorm, whose weight is 1 here, so rms(h) = 1; the
    head stays fp32 and gives r_d = w_d . h, so an error spread over h's H components moves r_d by
    about |w_d| sqrt(K) u (one standard deviation). Allowed: 4 standard deviations,
    |r_bf16 - r_fp32| <= 4 sqrt(K) u |w_d|, about 0.13 for |w_d| ~ 1 (errors seen: up to 0.024).
    The fp32 scores of these clips are measured to spread far more than the bound (it is checked to be
    under a quarter of their standard deviation), so a wrong score cannot hide inside it."""
    videos, prompts = clips
    info = RewardCheckpointInfo()
    full = VideoReward(copy.deepcopy(reward_model), tok, info, "cpu")  # a plain string: the older API
    half = VideoReward(copy.deepcopy(reward_model), tok, info, DeviceConfig(precision="bf16"))
    assert module_dtype(half.model) == torch.bfloat16 and half.model.rm_head.weight.dtype == torch.float32
    assert torch.all(half.model.base_model().language_model.norm.weight == 1)  # rms(h) = 1 in the derivation

    r32, r16 = full.raw(videos, prompts), half.raw(videos, prompts)
    assert r16.dtype == np.float32 and np.isfinite(r16).all()
    w = reward_model.rm_head.weight.detach().norm(dim=1).numpy()  # |w_d| for VQ, MQ, TA
    bound = 4 * math.sqrt(70) * 2.0**-8 * w
    assert bound.max() < 0.25 * r32.std(), (bound, r32.std())
    assert (np.abs(r16 - r32) <= bound).all(), (np.abs(r16 - r32), bound)
    assert np.abs(r16 - r32).max() > 0  # the bf16 path did run in bf16
    normalised = half.reward(videos, prompts)
    assert all(type(r[d]) is float for r in normalised for d in ("VQ", "MQ", "TA", "Overall"))


# ---------------------------------------------------------------- (b) every tensor on the model's device
class StandInReward(torch.nn.Module):
    """VideoRewardModel's forward signature on arithmetic that meta tensors support: the Qwen2-VL
    backbone cannot run on meta (transformers reads ``video_grid_thw`` and the attention mask on the
    host, ``.tolist()`` / ``.all()``, and a meta tensor has no data). Every input enters the result, so
    an input left on the CPU meets the meta weights in some op."""

    def __init__(self, vocab: int, patch: int = 1176, hidden: int = 8):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.pixels = torch.nn.Linear(patch, hidden)
        self.head = torch.nn.Linear(hidden, 3)

    def forward(
        self, input_ids, attention_mask, pixel_values_videos, video_grid_thw, mm_token_type_ids, caption_mask=None
    ):
        weight = (attention_mask * (mm_token_type_ids + 1)).unsqueeze(-1).to(self.embed.weight.dtype)
        pixels = self.pixels(pixel_values_videos).mean(0) * video_grid_thw.prod(1, keepdim=True)
        h = (self.embed(input_ids) * weight).sum(1) + pixels
        rewards = self.head(h)
        return rewards if caption_mask is None else (rewards, h.pow(2).mean(1) * caption_mask.sum(1))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_reward_training_loss_makes_every_tensor_on_the_models_device(tok, precision):
    """The batch comes from the CPU processor; pair_loss must move all of it (inputs, labels, scores,
    caption targets) to the model and compute the losses there, in fp32."""
    model = StandInReward(len(tok)).to(device="meta", dtype=DeviceConfig(precision=precision).dtype)
    plain, captioned = pair_batch(tok), pair_batch(tok, caption_mask=True)
    with DeviceGuard("meta") as guard:
        for loss in ("btt", "bt", "regression"):
            value, margins = pair_loss(model, plain, loss, 5.0)
            assert value.device.type == "meta" and value.dtype == margins.dtype == torch.float32
            value.backward()
        value, _ = pair_loss(model, captioned, "btt", 5.0, caption_weight=1.0)
        assert value.device.type == "meta" and value.dtype == torch.float32
        value.backward()
    assert guard.ops > 0


def test_latent_reward_forward_and_loss_make_every_tensor_on_the_models_device():
    """The latent reward on meta: its forward, and the training loss with noise (t drawn from the
    shifted distribution, noise drawn, latents moved) and without (t = 0). Text embeddings are given on
    the device: the UMT5 text encoder is transformers' code and cannot run on meta (``mask.all()``)."""
    model = LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1, features=8, hidden=16))
    model.place(META)
    shape = model.backbone.latent_shape
    text = {P1: torch.zeros(model.backbone.text.max_tokens, model.backbone.text.dim, device="meta")}
    pairs = LatentPairs(
        torch.randn(4, *shape), [P1] * 4, np.array([0, 2]), np.array([1, 3]), torch.tensor([[1, -1, 0], [0, 1, -1]])
    )  # clean latents: data on the CPU
    with DeviceGuard("meta") as guard:
        r = model(
            torch.zeros(2, *shape, device="meta"), torch.full((2,), 0.5, device="meta"), torch.stack([text[P1]] * 2)
        )
        assert r.shape == (2, 3) and r.device.type == "meta" and r.dtype == torch.float32
        for noise in (True, False):
            loss = step_loss(model, pairs, text, 0, LatentTrainConfig(noise=noise, batch=2))
            assert loss.device.type == "meta" and loss.dtype == torch.float32
            loss.backward()
    assert guard.ops > 0


def test_latent_reward_loads_in_a_precision_with_an_fp32_head(tmp_path):
    LatentReward.from_generator(DEFAULT_GENERATOR, LatentRewardConfig(blocks=1, features=8, hidden=16)).save(tmp_path)
    model = LatentReward.load(tmp_path, device=DeviceConfig(precision="bf16"))
    assert module_dtype(model.backbone) == torch.bfloat16 and model.head[1].weight.dtype == torch.float32
    scores = model.score(torch.randn(2, *model.backbone.latent_shape), 0.5, [P1, P2])
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()


# ---------------------------------------------------------------- gradient checkpointing
def test_gradient_checkpointing_recomputes_layers_and_keeps_the_lora_gradients(tok, reward_model):
    """Under LoRA (frozen embeddings) the checkpointed model gives the gradients of the plain one, and
    a text layer's attention runs twice per step (forward, then recomputed in backward)."""
    batch = pair_batch(tok, pairs=1)
    lora = apply_trainable_parts(copy.deepcopy(reward_model), TrainableParts(lora_rank=4))  # LoRA A drawn once

    def grads(gradient_checkpointing: bool):
        model = copy.deepcopy(lora)
        model.place(DeviceConfig(gradient_checkpointing=gradient_checkpointing))
        calls = []
        model.base_model().language_model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
        loss, _ = pair_loss(model, batch, "btt", 5.0)
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)

    plain, plain_calls = grads(False)
    checkpointed, checkpointed_calls = grads(True)
    assert (plain_calls, checkpointed_calls) == (1, 2)
    assert any("lora_" in n for n in plain) and all(g is not None for g in checkpointed.values())
    for n, g in plain.items():
        torch.testing.assert_close(checkpointed[n], g, rtol=1e-5, atol=1e-7, msg=n)


# ---------------------------------------------------------------- (c) the service's device and num_gpus
def test_reward_service_refuses_num_gpus_and_device_that_disagree():
    with pytest.raises(ValueError, match=r"num_gpus=1 reserves a GPU.*device.device='cpu'.*set device.device=cuda"):
        RewardServiceConfig(num_gpus=1).validate()
    with pytest.raises(ValueError, match=r"device.device='cuda' but num_gpus=0.*set num_gpus=1"):
        RewardServiceConfig(device=DeviceConfig(device="cuda")).validate()
    RewardServiceConfig(num_gpus=1, device=DeviceConfig(device="cuda", precision="bf16")).validate()
    RewardServiceConfig(num_gpus=0.5, device=DeviceConfig(device="cuda:0")).validate()  # a shared GPU
    with pytest.raises(ConfigError, match="num_gpus=1"):  # the same check from a config file or override
        load_config(RewardServiceConfig, overrides=["num_gpus=1"])
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        load_config(RewardServiceConfig, overrides=["device.precision=fp16"])


def test_reward_training_config_names_device_instead_of_use_gpu_and_bf16():
    cfg = load_config(
        RewardTrainConfig, overrides=["device.precision=bf16", "device.gradient_checkpointing=true", "zero_stage=1"]
    )
    assert cfg.device == DeviceConfig(precision="bf16", gradient_checkpointing=True)
    with pytest.raises(ConfigError, match="device.precision=bf16 needs zero_stage=1, 2 or 3"):
        load_config(RewardTrainConfig, overrides=["device.precision=bf16"])
    for old in ("use_gpu=true", "bf16=true"):
        with pytest.raises(ConfigError, match="device.device"):  # unknown key; the valid ones are listed
            load_config(RewardTrainConfig, overrides=[old])


def test_latent_reward_job_trains_in_fp32_only():
    from rlhf.reward.latent_job import LatentRewardJobConfig

    cfg = load_config(LatentRewardJobConfig, overrides=["device.device=cuda", "device.gradient_checkpointing=true"])
    assert cfg.device == DeviceConfig(device="cuda", gradient_checkpointing=True)  # no GPU needed to configure
    with pytest.raises(ConfigError, match="train in fp32 and load the model in bf16 for guidance"):
        load_config(LatentRewardJobConfig, overrides=["device.precision=bf16"])


def test_the_learned_backend_runs_on_the_services_device_setting():
    from serve.backends import make_backend

    backend = make_backend(RewardServiceConfig(model="default", device=DeviceConfig(precision="bf16")))
    model = backend.reward.model
    assert module_dtype(model) == torch.bfloat16 and model.rm_head.weight.dtype == torch.float32
    scores = backend.score([render(P1, seed=5)], [P1])[0]
    assert all(math.isfinite(v) for view in scores.values() for v in view.values())


# ---------------------------------------------------------------- (d) no GPU here
@no_cuda
def test_a_cuda_device_without_a_gpu_is_a_clear_error(tok, reward_model):
    with pytest.raises(DeviceError, match="set its device to cpu"):
        DeviceConfig(device="cuda").torch_device()
    with pytest.raises(DeviceError, match="no CUDA GPU"):  # VideoReward's device string goes the same way
        VideoReward(copy.deepcopy(reward_model), tok, RewardCheckpointInfo(), device="cuda")
