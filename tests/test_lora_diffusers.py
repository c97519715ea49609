"""LoRA adapters in diffusers' format (issue 17): an adapter the project writes loads with diffusers alone
and gives the project's policy; a run started from an adapter (diffusers' or peft's format) samples and
trains from its weights, against it as reference; generators load by hub id from the Hugging Face cache.

Every comparison is between two independent implementations of the same policy: the project's
``FlowGenerator`` and diffusers' ``WanPipeline`` / ``WanTransformer3DModel.load_lora_adapter`` or peft's
``PeftModel``, on fixed inputs in fp32. Each also checks that the adapter changes the output, so that a
loader that dropped it would fail."""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rlhf.align.step import AlgoConfig, dpo_loss, plain_update, train_step
from rlhf.device import DeviceConfig
from rlhf.generator.lora import LORA_WEIGHTS
from rlhf.generator.lora import main as convert_main
from rlhf.generator.model import DEFAULT_GENERATOR, GeneratorError, load_generator
from rlhf.hub import HubError
from tests.hub_cache import cache_repo

TINY_WAN = {"text_tokens": 12, "video_shape": (5, 16, 16)}


def _randomize(gen, seed: int) -> None:
    """Non-zero A and B: the adapter moves the output by about as much as the base's own spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _inputs(gen, seed: int = 0):
    """Fixed latents, times and prompt embeddings (zero past 3 tokens, as WanPipeline pads) for ``gen``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *gen.latent_shape, generator=g)
    t = torch.tensor([0.3, 0.8])
    width = gen.transformer.config.text_dim
    text = torch.zeros(2, 8, width)
    text[:, :3] = torch.randn(2, 3, width, generator=g)
    return x, t, text


def _file_state(adapter_dir) -> dict:
    """The adapter file read with safetensors alone, ``transformer.`` prefix removed: peft's names."""
    return {k.removeprefix("transformer."): v for k, v in load_file(adapter_dir / LORA_WEIGHTS).items()}


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    """A tiny Wan2.1-layout checkpoint written by diffusers' own WanPipeline (as tests/test_generator.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from tests.tiny_wan import tiny_wan_parts

    tok, enc, vae, tr = tiny_wan_parts(num_layers=2)
    path = tmp_path_factory.mktemp("wan") / "ckpt"
    WanPipeline(
        tokenizer=tok, text_encoder=enc, vae=vae, transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def wan_adapter(wan_dir, tmp_path_factory):
    """The project's policy on the tiny Wan checkpoint (rank 4, alpha 2: scale 1/2) and its saved adapter."""
    gen = load_generator(wan_dir, **TINY_WAN)
    gen.add_lora(rank=4, alpha=2.0)
    _randomize(gen, 1)
    return gen, gen.save_lora(tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def world_adapter(tmp_path_factory):
    """The shipped world generator with a rank-4, alpha-8 LoRA (scale 2), and its saved adapter."""
    gen = load_generator(DEFAULT_GENERATOR)
    gen.add_lora(rank=4, alpha=8.0)
    _randomize(gen, 2)
    return gen, gen.save_lora(tmp_path_factory.mktemp("lora") / "world")


def test_adapter_is_written_as_wan_pipeline_save_lora_weights_writes_it(wan_adapter):
    """One weights file with diffusers' keys (transformer. prefix, peft's lora_A / lora_B) for the 4 targets
    of both attentions of both blocks (2 x 2 x 4 modules x A, B = 32 tensors), and the LoraConfig in its
    header; adapter_info.json beside it."""
    _, path = wan_adapter
    assert sorted(p.name for p in path.iterdir()) == ["adapter_info.json", LORA_WEIGHTS]
    with safe_open(str(path / LORA_WEIGHTS), "pt") as f:
        keys, header = list(f.keys()), f.metadata()
    assert len(keys) == 32
    assert all(k.startswith("transformer.blocks.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert "transformer.blocks.1.attn2.to_out.0.lora_B.weight" in keys
    meta = json.loads(header["lora_adapter_metadata"])
    assert meta["transformer.r"] == 4 and meta["transformer.lora_alpha"] == 2.0
    assert sorted(meta["transformer.target_modules"]) == ["to_k", "to_out.0", "to_q", "to_v"]


def test_wan_pipeline_load_lora_weights_gives_the_projects_policy(wan_dir, wan_adapter):
    from diffusers import WanPipeline

    gen, path = wan_adapter
    x, t, text = _inputs(gen)
    pipe = WanPipeline.from_pretrained(wan_dir)

    def theirs():
        with torch.no_grad():
            return pipe.transformer(x, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]

    base = theirs()
    pipe.load_lora_weights(path)
    with torch.no_grad():
        ours = gen.velocity(x, t, text)
    torch.testing.assert_close(theirs(), ours, rtol=1e-5, atol=1e-6)
    assert (ours - base).abs().max() > 0.05


def test_alpha_travels_in_the_header(wan_dir, wan_adapter):
    """Alpha 2 at rank 4 (scale 1/2) reaches diffusers through the file's header: load_lora_adapter on the
    file gives the policy, while the same tensors without the header load at diffusers' default alpha =
    rank (scale 1) and do not."""
    from diffusers import WanTransformer3DModel

    gen, path = wan_adapter
    x, t, text = _inputs(gen)
    with torch.no_grad():
        ours = gen.velocity(x, t, text)
        outs = {}
        for name, kw in (("header", {"weight_name": LORA_WEIGHTS}), ("bare", None)):
            tr = WanTransformer3DModel.from_pretrained(wan_dir / "transformer")
            if kw is None:
                tr.load_lora_adapter(load_file(path / LORA_WEIGHTS), prefix="transformer")
            else:
                tr.load_lora_adapter(str(path), **kw)
            outs[name] = tr(x, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]
    torch.testing.assert_close(outs["header"], ours, rtol=1e-5, atol=1e-6)
    assert (outs["bare"] - ours).abs().max() > 0.05


def test_world_adapter_loads_with_transformer_load_lora_adapter(world_adapter):
    """The world generator's transformer (with its position and layout input maps around it) takes the
    adapter through diffusers' WanTransformer3DModel.load_lora_adapter and then is the project's policy."""
    gen, path = world_adapter
    fresh = load_generator(DEFAULT_GENERATOR)
    x, t, text = _inputs(gen)
    with torch.no_grad():
        base = fresh.velocity(x, t, text)
        fresh.transformer.load_lora_adapter(str(path), weight_name=LORA_WEIGHTS)
        theirs = fresh.velocity(x, t, text)
        ours = gen.velocity(x, t, text)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)
    assert (ours - base).abs().max() > 0.05


def test_peft_adapter_loads_as_peft_computes_it(wan_dir, tmp_path):
    """An adapter written by peft's save_pretrained (other targets, rank 2, alpha 6) gives what the
    PeftModel that wrote it computes; its rank, alpha and targets are taken from adapter_config.json."""
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    pm = get_peft_model(
        WanTransformer3DModel.from_pretrained(wan_dir / "transformer"),
        LoraConfig(r=2, lora_alpha=6, target_modules=["to_q", "to_v", "net.2"]),
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pm.save_pretrained(tmp_path / "peft")
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    gen = load_generator(wan_dir, **TINY_WAN)
    x, t, text = _inputs(gen)
    with torch.no_grad():
        base = gen.velocity(x, t, text)
        gen.load_lora(tmp_path / "peft")
        ours = gen.velocity(x, t, text)
        theirs = pm(x, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert (ours - base).abs().max() > 0.05
    assert gen.lora_config()["rank"] == 2 and gen.lora_config()["alpha"] == 6
    assert gen.lora_config()["targets"] == ["net.2", "to_q", "to_v"]


def test_trainer_started_from_an_adapter_holds_its_weights_and_rank(world_adapter, capsys):
    """trainer.init_adapter: the worker's LoRA is the file's tensors (read with safetensors alone) and
    computes the saved policy; the adapter's rank 4 / alpha 8 replace the configured 8 / 16, and one
    line says so."""
    from actors.trainer import TrainerConfig, worker_generator

    src, path = world_adapter
    tc = TrainerConfig(init_adapter=str(path), lora_rank=8, lora_alpha=16.0)
    tc.validate()
    assert (tc.lora_rank, tc.lora_alpha) == (4, 8.0)
    assert "rank 4, alpha 8 instead of trainer.lora_rank=8, trainer.lora_alpha=16" in capsys.readouterr().err
    gen = worker_generator(tc, DeviceConfig())
    state, want = gen.lora_state(), _file_state(path)
    assert state.keys() == want.keys()
    assert all(torch.equal(state[k], want[k]) for k in want)
    x, t, text = _inputs(src)
    with torch.no_grad():
        torch.testing.assert_close(gen.velocity(x, t, text), src.velocity(x, t, text), rtol=1e-5, atol=1e-6)


def test_reference_of_a_run_started_from_an_adapter_is_that_adapter(world_adapter):
    """Flow-DPO's reference is the policy the run starts from: with the initial adapter as reference the
    first loss is exactly ln 2 (policy = reference; with the base as reference it would not be); a step
    moves the policy and leaves the reference, its weights frozen, where it was (not at the base)."""
    from actors.trainer import TrainerConfig, worker_generator

    src, path = world_adapter
    gen = worker_generator(TrainerConfig(init_adapter=str(path), lora_rank=4), DeviceConfig())
    x, t, text = _inputs(src)
    with torch.no_grad():
        start = gen.velocity(x, t, text)
        base = load_generator(DEFAULT_GENERATOR).velocity(x, t, text)
    out = dpo_loss(gen, x, x.flip(0), text, AlgoConfig(beta=1000.0), torch.Generator().manual_seed(0))
    assert out["loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    params = gen.lora_parameters()
    assert len(params) == len(_file_state(path)) and all(p.requires_grad for p in params)
    rec = train_step(
        gen,
        {"x_w": x, "x_l": x.flip(0), "text": text},
        AlgoConfig(),
        torch.Generator().manual_seed(0),
        plain_update(torch.optim.SGD(params, lr=1.0), params),
    )
    assert rec["loss"] == pytest.approx(math.log(2), abs=1e-6)
    frozen = [p for n, p in gen.transformer.named_parameters() if ".reference." in n]
    assert frozen and not any(p.requires_grad for p in frozen)
    with torch.no_grad():
        after = gen.velocity(x, t, text)
        with gen.reference():
            ref = gen.velocity(x, t, text)
    assert (after - start).abs().max() > 1e-4
    torch.testing.assert_close(ref, start, rtol=0, atol=1e-6)
    assert (ref - base).abs().max() > 0.05


def test_generator_actor_started_from_an_adapter_samples_with_it(world_adapter):
    """The generator actor's policy version 0 is the initial adapter: its LoRA is the file's tensors."""
    from actors.generator import GeneratorActorConfig, policy_generator

    src, path = world_adapter
    gen = policy_generator(GeneratorActorConfig(init_adapter=str(path)))
    state, want = gen.lora_state(), _file_state(path)
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    x, t, text = _inputs(src)
    text = gen.encode_prompts(["a red circle moving left slowly on a black background"] * 2)
    with torch.no_grad():
        torch.testing.assert_close(gen.velocity(x, t, text), src.velocity(x, t, text), rtol=1e-5, atol=1e-6)


def test_offline_alignment_from_an_adapter_starts_at_ln2(world_adapter):
    """train.init_adapter in offline alignment: the first Flow-DPO loss is ln 2 (reference = initial adapter)."""
    import numpy as np

    from rlhf.align.offline import TrainConfig, align

    _, path = world_adapter
    gen = load_generator(DEFAULT_GENERATOR)
    prompts = ["a red circle moving left slowly on a black background"] * 2 + [
        "a blue square moving up fast on a white background"
    ] * 2
    latents = torch.randn(4, *gen.latent_shape, generator=torch.Generator().manual_seed(0))
    scores = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]])
    records = align(gen, latents, prompts, scores, TrainConfig(init_adapter=str(path), lora_rank=4, steps=2, batch=2))
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert gen.has_reference_adapter


def test_old_layout_is_read_with_a_warning_and_converted(world_adapter, tmp_path):
    """adapter.safetensors + adapter.json (before issue 17) still load, with a FutureWarning naming the
    converter; the converter rewrites the directory in diffusers' format, which diffusers then loads."""
    src, _ = world_adapter
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in src.lora_state().items()}, old / "adapter.safetensors")
    (old / "adapter.json").write_text(
        json.dumps({"rank": 4, "alpha": 8.0, "targets": ["to_k", "to_out.0", "to_q", "to_v"], "policy_version": 3})
    )
    x, t, text = _inputs(src)
    with torch.no_grad():
        want = src.velocity(x, t, text)
    g = load_generator(DEFAULT_GENERATOR)
    with pytest.warns(FutureWarning, match="python -m rlhf.generator.lora"):
        g.load_lora(old)
    with torch.no_grad():
        torch.testing.assert_close(g.velocity(x, t, text), want, rtol=1e-5, atol=1e-6)
    assert convert_main([str(old)]) == 0
    assert sorted(p.name for p in old.iterdir()) == ["adapter_info.json", LORA_WEIGHTS]
    assert json.loads((old / "adapter_info.json").read_text())["policy_version"] == 3
    fresh = load_generator(DEFAULT_GENERATOR)
    fresh.transformer.load_lora_adapter(str(old), weight_name=LORA_WEIGHTS)
    with torch.no_grad():
        torch.testing.assert_close(fresh.velocity(x, t, text), want, rtol=1e-5, atol=1e-6)


def test_adapter_of_another_model_is_refused_naming_it(wan_adapter):
    _, path = wan_adapter
    g = load_generator(DEFAULT_GENERATOR)
    with pytest.raises(GeneratorError, match=str(path)):
        g.load_lora(path)


def test_generator_loads_by_hub_id_from_the_cache_offline(wan_dir, tmp_path, monkeypatch):
    """A hub id resolves to the cached snapshot with HF_HUB_OFFLINE=1 (given cache_dir, or HF_HUB_CACHE) and
    loads the same weights as the directory; an id not in the cache gives one HubError naming it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    cache_repo(cache, "tiny-org/wan-tiny", wan_dir)
    want = load_generator(wan_dir, **TINY_WAN).transformer.state_dict()
    got = load_generator("tiny-org/wan-tiny", cache_dir=cache, **TINY_WAN)
    assert got.latent_shape == (4, 2, 2, 2)
    assert all(torch.equal(v, want[k]) for k, v in got.transformer.state_dict().items())
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert load_generator("tiny-org/wan-tiny", text_encoder=False, **TINY_WAN).text is None
    with pytest.raises(HubError, match="generator tiny-org/not-cached is not in the Hugging Face cache .* offline"):
        load_generator("tiny-org/not-cached", cache_dir=cache)


def test_a_bf16_generator_holds_the_loaded_adapter_in_fp32_exactly(world_adapter):
    """The base in bf16, the LoRA in fp32 (as add_lora keeps it for AdamW): the file's fp32 values, not
    values rounded to bf16 on the way in."""
    _, path = world_adapter
    gen = load_generator(DEFAULT_GENERATOR, device=DeviceConfig(precision="bf16"))
    gen.load_lora(path)
    assert gen.dtype == torch.bfloat16
    state, want = gen.lora_state(), _file_state(path)
    assert all(state[k].dtype == torch.float32 and torch.equal(state[k], want[k]) for k in want)
