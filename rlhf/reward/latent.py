# Long on purpose: the latent reward model of Flow-NRG, its noised-pair training and its accuracy at fixed noise
# levels share the noising convention and the pair sampling.
"""Latent reward model for Flow-NRG (VideoAlign, Section 4.3): VQ/MQ/TA read from noised latents.

Reward guidance needs ``grad_x r(x_t, t)`` at every guided sampling step, so the reward must read
the sampler's own latent ``x_t`` at its own ``t``: decoding to pixels and running a VLM per step is
what Flow-NRG avoids. As the paper's VDM-based reward model does, this one is built on the video
diffusion model itself:

* the backbone is a copy of the generator's input stage (latent + position + prompt-layout channels,
  patch embedding, timestep and text conditioning) and its first ``blocks`` transformer blocks,
  initialised from the pretrained generator; the output norm (still modulated by ``t``) projects each
  latent token to ``features`` channels through a fresh linear layer;
* pooling, per frame: the mean over space of every feature channel, and for the first ``keypoints``
  channels a spatial softmax whose expected (x, y) is a learned keypoint (soft-argmax). Mean pooling
  alone discards *where* things are, and motion quality is about trajectories: measured, a head on
  spatial means learned VQ (74% held-out) and left MQ at chance. Over frames the head reads the mean,
  the mean absolute first difference (speed, flicker) and the mean absolute second difference (jerk)
  of these per-frame vectors; a LayerNorm and a two-layer MLP map them to three scores, VQ, MQ, TA;
* training (``fit``): Bradley-Terry-with-ties on preference pairs, per dimension (``losses.btt_loss``).
  "w/ noise" draws one ``t`` per pair from the sampler's shifted distribution and noises both
  latents of the pair with that ``t`` *and the same noise* (the pair differs only by its clean
  latents, so the label explains the difference); "w/o noise" trains on clean latents only (t = 0),
  and at guidance time reads noised latents it never saw: the paper's ablation (Table 7).

The generator's text encoder, position maps and layout map stay frozen; the copied blocks train
fully unless ``train_blocks`` is off. The generator itself is never touched: the copy is a separate
module, and guidance takes gradients with respect to ``x_t`` only (``rlhf.generator.guidance``).

Layout on disk: ``latent_reward.json`` (config, dimensions, source generator, training summary),
``backbone/`` (a world-layout generator directory with the truncated transformer), ``head.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from rlhf.device import DeviceConfig, as_device_config, seeded_generator
from rlhf.dims import DIMS


class LatentRewardError(ValueError):
    """A latent reward model or its training data that cannot be used as asked."""


@dataclass
class LatentRewardConfig:
    blocks: int = 2  # first generator blocks copied into the backbone
    features: int = 64  # per-token feature width after the output projection
    hidden: int = 128  # MLP head width
    keypoints: int = 8  # feature channels read as soft-argmax keypoints (<= features)
    train_blocks: bool = True  # False: the copied blocks stay frozen (norm, projection and head train)
    seed: int = 0  # initialisation of the new layers

    def validate(self) -> None:
        for k in ("blocks", "features", "hidden"):
            if getattr(self, k) < 1:
                raise LatentRewardError(f"latent reward {k} must be >= 1, got {getattr(self, k)}")
        if not 0 <= self.keypoints <= self.features:
            raise LatentRewardError(f"latent reward keypoints must be in [0, features], got {self.keypoints}")


class LatentReward(torch.nn.Module):
    """``r(x_t, t, text) -> (B, 3)`` VQ/MQ/TA scores of noised latents."""

    def __init__(self, backbone, config: LatentRewardConfig, meta: dict | None = None):
        super().__init__()
        config.validate()
        self.backbone = backbone  # a FlowGenerator whose transformer is the truncated copy
        self.config = config
        self.meta = dict(meta or {})
        torch.manual_seed(config.seed)
        d = config.features + 2 * config.keypoints
        self.head = torch.nn.Sequential(
            torch.nn.LayerNorm(3 * d),
            torch.nn.Linear(3 * d, config.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(config.hidden, len(DIMS)),
        )
        self._freeze()

    def _freeze(self) -> None:
        if self.backbone.text is not None:  # a backbone without its text encoder reads given embeddings
            self.backbone.text.requires_grad_(False)
        for p in (self.backbone.position, *(self.backbone.layout.parameters() if self.backbone.layout else ())):
            if p is not None:
                p.requires_grad_(False)
        if not self.config.train_blocks:
            for p in self.backbone.transformer.blocks.parameters():
                p.requires_grad_(False)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_generator(cls, generator: str | Path, config: LatentRewardConfig = LatentRewardConfig()) -> LatentReward:
        """A fresh model whose backbone copies the first ``config.blocks`` blocks of ``generator``."""
        from diffusers import WanTransformer3DModel

        from rlhf.generator.model import FlowGenerator, load_generator

        config.validate()
        gen = load_generator(generator)
        if gen.config is None:
            raise LatentRewardError(
                f"{generator}: latent reward models are built on world-layout generators "
                "(generator.json); a Wan2.1 checkpoint needs its own save layout"
            )
        n = len(gen.transformer.blocks)
        if config.blocks > n:
            raise LatentRewardError(f"latent reward blocks = {config.blocks} but {generator} has {n} blocks")
        torch.manual_seed(config.seed)
        trans = WanTransformer3DModel.from_config(
            gen.transformer.config, num_layers=config.blocks, out_channels=config.features
        )
        keep = {
            k: v
            for k, v in gen.transformer.state_dict().items()
            if not k.startswith("proj_out.") and not (k.startswith("blocks.") and int(k.split(".")[1]) >= config.blocks)
        }
        missing, unexpected = trans.load_state_dict(keep, strict=False)
        if set(missing) != {"proj_out.weight", "proj_out.bias"} or unexpected:
            raise LatentRewardError(f"copying {generator}'s blocks: missing {missing}, unexpected {unexpected}")
        position = gen.position.detach().clone() if gen.position is not None else None
        backbone = FlowGenerator(
            trans, gen.text, gen.codec, gen.video_shape, position, replace(gen.config, layers=config.blocks), gen.layout
        )
        return cls(backbone, config, {"generator": str(generator)})

    @property
    def device(self) -> torch.device:
        """Where the model runs: every tensor made for it (t, noise, targets) is made here."""
        return self.backbone.device

    def place(self, device: DeviceConfig) -> LatentReward:
        """The backbone on ``device.device`` in ``device.precision`` (``FlowGenerator.place``: with
        ``device.gradient_checkpointing``, diffusers' per-block checkpointing of the copied blocks); the
        head on the same device in fp32, as it computes the rewards that losses and guidance read."""
        self.backbone.place(device)
        self.head.to(device=device.torch_device(), dtype=torch.float32)
        return self

    # ---------------------------------------------------------------- the model
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, 3) fp32 scores; the backbone reads ``x_t`` in its own precision (guidance differentiates
        through the cast)."""
        feats = self.backbone.transformer_output(x_t, t, text).float()  # (B, D, F, h, w)
        frames = [feats.mean(dim=(3, 4))]  # (B, D, F)
        k = self.config.keypoints
        if k:
            h, w = feats.shape[3:]
            m = torch.softmax(feats[:, :k].flatten(3), dim=-1).view(feats.shape[0], k, *feats.shape[2:])
            ys = torch.linspace(-1, 1, h, device=feats.device).view(1, 1, 1, h, 1)
            xs = torch.linspace(-1, 1, w, device=feats.device).view(1, 1, 1, 1, w)
            frames += [(m * xs).sum(dim=(3, 4)), (m * ys).sum(dim=(3, 4))]  # (B, k, F) each
        f = torch.cat(frames, dim=1)  # (B, D + 2k, F)
        d1 = f.diff(dim=-1).abs().mean(-1) if f.shape[-1] > 1 else torch.zeros_like(f[..., 0])
        d2 = f.diff(n=2, dim=-1).abs().mean(-1) if f.shape[-1] > 2 else torch.zeros_like(f[..., 0])
        return self.head(torch.cat([f.mean(-1), d1, d2], dim=1))

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.encode_prompts(list(prompts))

    def reward_fn(self, prompts: list[str] | torch.Tensor):
        """``(x, t) -> (B, 3)`` with the prompts' text conditioning bound (what guidance calls); ``prompts``
        may be their embeddings already (a backbone loaded without its text encoder)."""
        text = prompts if isinstance(prompts, torch.Tensor) else self.encode_prompts(prompts)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(x, t, text)

        return fn

    @torch.no_grad()
    def score(self, x_t: torch.Tensor, t, prompts: list[str]) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(-1).expand(x_t.shape[0])
        return self(x_t, t, self.encode_prompts(prompts))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---------------------------------------------------------------- storage
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save(path / "backbone")
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, path / "head.safetensors")
        (path / "latent_reward.json").write_text(
            json.dumps({"config": asdict(self.config), "dims": list(DIMS), **self.meta}, indent=2)
        )
        return path

    @classmethod
    def load(cls, path: str | Path, device: DeviceConfig | str = "cpu") -> LatentReward:
        """A saved model on ``device`` (a DeviceConfig, or a device string meaning fp32), in eval mode."""
        from safetensors.torch import load_file

        from rlhf.generator.model import load_generator

        path = Path(path)
        meta_path = path / "latent_reward.json"
        if not meta_path.is_file():
            raise LatentRewardError(
                f"{path} is not a latent reward model (no latent_reward.json); train one with "
                "python jobs/train_latent_reward.py --out DIR"
            )
        try:
            meta = json.loads(meta_path.read_text())
            known = {f.name for f in fields(LatentRewardConfig)}
            config = LatentRewardConfig(**{k: v for k, v in meta.pop("config").items() if k in known})
        except (ValueError, KeyError, TypeError) as e:
            raise LatentRewardError(f"{meta_path} is malformed ({e}); retrain or restore the file") from None
        model = cls(load_generator(path / "backbone"), config, {k: v for k, v in meta.items() if k != "dims"})
        model.head.load_state_dict(load_file(path / "head.safetensors"))
        return model.place(as_device_config(device)).eval()


# -------------------------------------------------------------------- training data
@dataclass
class LatentPairs:
    """Preference pairs over a set of clean latents: indices into ``latents`` and per-dimension labels."""

    latents: torch.Tensor  # (n, C, F, h, w) clean x_0
    prompts: list[str]  # (n,)
    a: np.ndarray  # (P,) index of clip A
    b: np.ndarray  # (P,) index of clip B
    labels: torch.Tensor  # (P, 3) in {1 (A better), -1 (B better), 0 (tie)}

    def __len__(self) -> int:
        return len(self.a)


def pairs_from_scores(
    latents: torch.Tensor, prompts: list[str], scores: np.ndarray, tie_margin: float = 0.01
) -> LatentPairs:
    """Every within-prompt pair (i < j); per dimension A wins when its score exceeds B's by more than
    ``tie_margin``, B wins symmetrically, otherwise a tie."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(prompts), len(DIMS)) or latents.shape[0] != len(prompts):
        raise LatentRewardError(
            f"need one latent and one VQ/MQ/TA score row per prompt: {latents.shape[0]} latents, "
            f"{len(prompts)} prompts, scores {scores.shape}"
        )
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    a, b = [], []
    for idx in groups.values():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                a.append(idx[x])
                b.append(idx[y])
    if not a:
        raise LatentRewardError("no pairs: every prompt has a single clip (draw at least 2 per prompt)")
    a, b = np.array(a), np.array(b)
    d = scores[a] - scores[b]
    labels = np.where(d > tie_margin, 1, np.where(d < -tie_margin, -1, 0))
    return LatentPairs(latents, list(prompts), a, b, torch.from_numpy(labels).long())


def pairs_from_dataset(path: str | Path, codec, split: str = "train") -> LatentPairs:
    """The labelled pairs of a preference dataset (``prefs.parquet`` + videos, the schema of
    ``rlhf.data.schema``) as latents of ``codec``: the data VideoReward trains on, which the paper's
    latent reward model trains on too. Only rows of ``split``; unannotated labels are masked (2)."""
    import pyarrow.parquet as pq

    from rlhf.data.schema import label_value
    from rlhf.video import read_video

    path = Path(path)
    table_path = path / "prefs.parquet" if path.is_dir() else path
    if not table_path.is_file():
        raise LatentRewardError(f"{path}: no prefs.parquet (build one with python jobs/make_dataset.py --out DIR)")
    rows = [r for r in pq.read_table(table_path).to_pylist() if r.get("split", split) == split]
    if not rows:
        raise LatentRewardError(f"{table_path} has no rows of split {split!r}")
    root = table_path.parent
    videos, prompts, labels = [], [], []
    for r in rows:
        for key in ("video_a", "video_b"):
            videos.append(read_video(root / r[key]))
            prompts.append(r["prompt"])
        labels.append([2 if (v := label_value(r[d])) is None else v for d in DIMS])
    latents = torch.cat([codec.encode(np.stack(videos[i : i + 256])) for i in range(0, len(videos), 256)])
    n = len(rows)
    return LatentPairs(
        latents, prompts, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), torch.tensor(labels, dtype=torch.long)
    )


def merge_pairs(*sets: LatentPairs) -> LatentPairs:
    """One set of pairs over the concatenated latents of ``sets``."""
    offsets = np.cumsum([0] + [s.latents.shape[0] for s in sets[:-1]])
    return LatentPairs(
        torch.cat([s.latents for s in sets]),
        [p for s in sets for p in s.prompts],
        np.concatenate([s.a + o for s, o in zip(sets, offsets)]),
        np.concatenate([s.b + o for s, o in zip(sets, offsets)]),
        torch.cat([s.labels for s in sets]),
    )


@dataclass
class LatentTrainConfig:
    noise: bool = True  # "w/ noise": a noised x_t per pair; False: clean latents only (t = 0)
    steps: int = 1500  # optimiser steps
    batch: int = 32  # pairs per step
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    tie_k: float = 5.0  # Rao-Kupper k of the BTT loss
    t_shift: float = 3.0  # t ~ the sampler's shifted distribution (shift u / (1 + (shift - 1) u))
    seed: int = 0  # batch order, noise and t of every step

    def validate(self) -> None:
        for k in ("steps", "batch"):
            if getattr(self, k) < 1:
                raise LatentRewardError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        if self.lr <= 0 or self.tie_k <= 1 or self.t_shift <= 0:
            raise LatentRewardError("train.lr must be > 0, train.tie_k > 1 and train.t_shift > 0")


def pair_inputs(pairs: LatentPairs, idx: np.ndarray, t: torch.Tensor, gen: torch.Generator):
    """Both clips of pairs ``idx`` noised to their pair's ``t`` with one shared noise per pair, on ``t``'s
    device (the model's): the clean latents of the batch are moved there, the noise is drawn there
    from ``gen`` (a generator on that device, ``rlhf.device.seeded_generator``)."""
    x0a, x0b = pairs.latents[pairs.a[idx]].to(t.device), pairs.latents[pairs.b[idx]].to(t.device)
    noise = torch.randn(x0a.shape, generator=gen, device=t.device)
    from rlhf.generator.model import noised

    return noised(x0a, noise, t)[0], noised(x0b, noise, t)[0]


def step_order(n_pairs: int, step: int, batch: int, seed: int) -> np.ndarray:
    """Pairs of optimiser step ``step``: epochs are seeded permutations, so a resumed run sees the same."""
    per_epoch = max(1, n_pairs // batch)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_pairs)
    return perm[k * batch : (k + 1) * batch]


def step_loss(
    model: LatentReward, pairs: LatentPairs, text: dict[str, torch.Tensor], step: int, cfg: LatentTrainConfig
) -> torch.Tensor:
    """The fp32 BTT loss of optimiser step ``step``'s pairs; ``t``, noise and labels on the model's device."""
    from rlhf.generator.pretrain import shifted_times

    from .losses import btt_loss

    idx = step_order(len(pairs), step, cfg.batch, cfg.seed)
    device = model.device
    gen = seeded_generator(cfg.seed * 1_000_003 + step, device)
    if cfg.noise:
        t = shifted_times(len(idx), cfg.t_shift, gen, device=device)
    else:
        t = torch.zeros(len(idx), device=device)
    xa, xb = pair_inputs(pairs, idx, t, gen)
    emb = torch.stack([text[pairs.prompts[i]] for i in pairs.a[idx]])
    r = model(torch.cat([xa, xb]), torch.cat([t, t]), torch.cat([emb, emb]))
    ra, rb = r.chunk(2)
    return btt_loss(ra, rb, pairs.labels[idx].to(device), k=cfg.tie_k)


def train_step(
    model: LatentReward, opt, pairs: LatentPairs, text: dict[str, torch.Tensor], step: int, cfg: LatentTrainConfig
) -> float:
    loss = step_loss(model, pairs, text, step, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def prompt_embeddings(model: LatentReward, prompts: list[str]) -> dict[str, torch.Tensor]:
    unique = sorted(set(prompts))
    emb = model.encode_prompts(unique)
    return dict(zip(unique, emb))


@torch.no_grad()
def evaluate(
    model: LatentReward, pairs: LatentPairs, times=(0.0, 0.25, 0.5, 0.75), seed: int = 0, batch: int = 64
) -> dict:
    """Pairwise accuracy per dimension at fixed noise levels ``t`` (both clips noised alike, seeded)."""
    from .metrics import accuracy_with_ties, accuracy_without_ties

    was = model.training
    model.eval()
    device = model.device
    text = prompt_embeddings(model, pairs.prompts)
    out = {}
    for t_val in times:
        gen = seeded_generator(seed, device)
        margins = []
        for s in range(0, len(pairs), batch):
            idx = np.arange(s, min(len(pairs), s + batch))
            t = torch.full((len(idx),), float(t_val), device=device)
            xa, xb = pair_inputs(pairs, idx, t, gen)
            emb = torch.stack([text[pairs.prompts[i]] for i in pairs.a[idx]])
            r = model(torch.cat([xa, xb]), torch.cat([t, t]), torch.cat([emb, emb]))
            ra, rb = r.chunk(2)
            margins.append((ra - rb).cpu().numpy())
        m = np.concatenate(margins)
        lab = pairs.labels.numpy()
        row = {}
        for d, name in enumerate(DIMS):
            acc_t, _ = accuracy_with_ties(lab[:, d], m[:, d])
            acc = accuracy_without_ties(lab[:, d], m[:, d]) if (lab[:, d] != 0).any() else None
            row[name] = {"acc_without_ties": acc, "acc_with_ties": acc_t}
        out[f"t={t_val:g}"] = row
    model.train(was)
    return out
