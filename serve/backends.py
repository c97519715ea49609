"""Reward backends: what turns decoded clips and prompts into VQ / MQ / TA scores inside a replica.

One small interface, three implementations:

* ``TransformersBackend``: a VideoReward checkpoint run with transformers (CPU, or one GPU);
* ``OracleBackend``: the moving-shapes oracle annotator (numpy, milliseconds per clip);
* ``VLLMBackend``: the same checkpoint through vLLM's pooling API (GPU machines only).

Every backend returns, per video, ``{"raw": {...}, "normalised": {...}}`` with keys VQ, MQ, TA and
Overall. VideoAlign semantics: normalised = (raw - mean) / std per dimension with the checkpoint's
constants, and Overall is the *sum* of the three dimensions in both views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlhf.device import DeviceConfig
from rlhf.dims import DIMS

WORLD_FPS = 8.0  # frame rate of the moving-shapes world, used when a caller gives none
# vllm 0.32.0 is the release built for torch 2.13.0; it pins transformers<5.20, so it lives in the replica's
# own runtime_env rather than in the project's environment.
VLLM_RUNTIME_ENV = {"pip": ["vllm==0.32.0"]}
VLLM_MISSING = (
    "the vllm backend needs a GPU node and vllm==0.32.0 in the replica's runtime_env (the deployment adds it); "
    "use backend=transformers on CPU"
)


class RewardServiceError(RuntimeError):
    """The reward service cannot do its job (not deployed, not loadable, unreachable); the message says
    what to check."""


class RewardRequestError(ValueError):
    """One request's input is bad (undecodable video, wrong prompt, path not allowed). Retrying the same
    input cannot help. ``status`` is the HTTP status the JSON API answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keep ``status`` across Ray's pickling
        return (type(self), (str(self), self.status))


def scores_from_raw(raw: np.ndarray | list[float], norm: dict[str, float]) -> dict:
    """``{"raw", "normalised"}`` for one video from its raw (VQ, MQ, TA) and ``{D_mean, D_std}``."""
    from rlhf.reward.inference import normalise, with_overall

    return {"raw": with_overall(raw), "normalised": with_overall(normalise(np.asarray(raw, np.float64), norm))}


class RewardBackend:
    """Scores a batch: ``score(videos, prompts, fps)`` with ``uint8 (T, H, W, 3)`` clips.

    ``check`` runs before a request joins a batch and raises :class:`RewardRequestError` for input this
    backend can never score, so one bad request does not cost a batch its forward pass."""

    name = "base"

    def check(self, frames: np.ndarray, fps: float, prompt: str) -> None:
        """Raise RewardRequestError if this clip and prompt cannot be scored."""

    def score(self, videos: list[np.ndarray], prompts: list[str], fps: float | list[float] = WORLD_FPS) -> list[dict]:
        raise NotImplementedError


class OracleBackend(RewardBackend):
    """The moving-shapes oracle (``rlhf.synthetic.oracle.score``) on pixels and prompt alone.

    The oracle has no normalisation constants: its scores already lie in [0, 1], so ``normalised`` is
    ``raw``. Overall here is VQ + MQ + TA like every backend's, i.e. three times the oracle's own
    Overall (which is their mean). Prompts must follow the world's grammar."""

    name = "oracle"

    def check(self, frames: np.ndarray, fps: float, prompt: str) -> None:
        from rlhf.synthetic.prompts import PromptError, parse_prompt

        try:
            parse_prompt(prompt)
        except PromptError as e:
            raise RewardRequestError(f"the oracle reads only moving-shapes prompts: {e}") from None

    def score(self, videos, prompts, fps=WORLD_FPS):
        from rlhf.synthetic.oracle import score

        out = []
        for v, p in zip(videos, prompts):
            s = score(v, p)
            raw = {d: s[d] for d in DIMS}
            raw["Overall"] = raw["VQ"] + raw["MQ"] + raw["TA"]
            out.append({"raw": raw, "normalised": dict(raw)})
        return out


def _load_video_reward(model: str, device: DeviceConfig | str):
    from rlhf.reward.checkpoint import CheckpointError
    from rlhf.reward.inference import VideoReward

    try:
        return VideoReward.default(device) if model == "default" else VideoReward.from_checkpoint(model, device=device)
    except CheckpointError as e:
        raise RewardServiceError(f"reward model {model!r} could not be loaded: {e}") from None


def check_sampling(frames: np.ndarray, fps: float, sampling, geometry) -> None:
    """Raise RewardRequestError if VideoAlign frame sampling cannot take this clip (too few frames...)."""
    try:
        sampling.indices(frames.shape[0], fps, geometry)
        sampling.size(frames.shape[1], frames.shape[2], geometry)
    except ValueError as e:
        raise RewardRequestError(f"this clip cannot be sampled for the reward model: {e}") from None


class TransformersBackend(RewardBackend):
    """A VideoReward checkpoint (``"default"`` = the shipped ``artefacts/reward_default``, or a
    checkpoint directory or hub id, such as the release ``KwaiVGI/VideoReward``) with transformers; normalised
    scores are ``VideoReward.reward(use_norm=True)``'s."""

    name = "transformers"

    def __init__(self, model: str = "default", device: DeviceConfig | str = "cpu", threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.reward = _load_video_reward(model, device)
        self.norm = dict(self.reward.info.norm)

    def check(self, frames, fps, prompt):
        check_sampling(frames, fps, self.reward.info.sampling, self.reward.processor.geometry)

    def score(self, videos, prompts, fps=WORLD_FPS):
        return [scores_from_raw(row, self.norm) for row in self.reward.raw(videos, list(prompts), fps)]


class VLLMBackend(RewardBackend):
    """A VideoReward checkpoint through vLLM's pooling API. Written against vLLM >= 0.11 and **never run
    here** (no GPU, and vLLM has no CPU build): compare it with TransformersBackend on a few clips
    before trusting it.

    How: LoRA is merged and the plain Qwen2-VL written to a temporary directory; ``LLM(runner="pooling",
    convert="embed")`` serves it and ``LLM.encode(..., pooling_task="token_embed")`` returns every
    token's last hidden state, from which the reward head is read at the reward tokens, as
    ``VideoRewardModel`` does. Frames are sampled and resized by our VideoAlign sampling first, and the
    vLLM processor is given the same pixel bounds so that it does not resize again."""

    name = "vllm"

    def __init__(self, model: str = "default", threads: int = 1):
        try:
            import vllm
        except Exception:  # ImportError, or a CUDA-less vllm failing at import
            raise RewardServiceError(VLLM_MISSING) from None
        import tempfile

        import torch

        torch.set_num_threads(threads)
        ref = _load_video_reward(model, "cpu")
        vlm = ref.model.vlm
        if hasattr(vlm, "merge_and_unload"):
            vlm = vlm.merge_and_unload()
        self._dir = tempfile.TemporaryDirectory(prefix="videoreward_vllm_")
        vlm.save_pretrained(self._dir.name)
        ref.processor.tokenizer.save_pretrained(self._dir.name)
        self.head = ref.model.rm_head.weight.detach().float()  # (3, hidden)
        self.token_ids = list(ref.processor.reward_token_ids)
        self.render = ref.processor.render  # the checkpoint's template (the release's: in the chat template)
        self.sampling, self.geometry, self.norm = ref.info.sampling, ref.processor.geometry, dict(ref.info.norm)
        del ref, vlm
        self.llm = vllm.LLM(model=self._dir.name, runner="pooling", convert="embed", trust_remote_code=False)
        self.params = vllm.PoolingParams(normalize=False)

    def check(self, frames, fps, prompt):
        check_sampling(frames, fps, self.sampling, self.geometry)

    def score(self, videos, prompts, fps=WORLD_FPS):
        import torch

        s, g = self.sampling, self.geometry
        rates = fps if isinstance(fps, (list, tuple)) else [fps] * len(videos)
        inputs = []
        for v, p, r in zip(videos, prompts, rates):
            clip = s.sample(v, r, g)
            inputs.append(
                {
                    "prompt": self.render(p, 1),  # vLLM expands the one placeholder
                    "multi_modal_data": {"video": clip},
                    "mm_processor_kwargs": {"min_pixels": s.min_pixels, "max_pixels": s.max_pixels},
                }
            )
        outs = self.llm.encode(inputs, pooling_params=self.params, pooling_task="token_embed", use_tqdm=False)
        results = []
        for out in outs:
            ids = torch.as_tensor(out.prompt_token_ids)
            hidden = torch.as_tensor(out.outputs.data).float()
            rows = torch.stack([hidden[(ids == t).nonzero()[0, 0]] for t in self.token_ids])  # (n_tokens, hidden)
            scores = rows @ self.head.T  # (n_tokens, 3)
            raw = torch.diagonal(scores) if self.separate else scores[0]
            results.append(scores_from_raw(raw.tolist(), self.norm))
        return results


def make_backend(cfg) -> RewardBackend:
    """The backend a :class:`serve.config.RewardServiceConfig` asks for."""
    if cfg.model == "oracle":
        return OracleBackend()
    if cfg.model != "default" and not Path(cfg.model).is_dir():
        raise RewardServiceError(
            f"reward model {cfg.model!r} is neither 'default', 'oracle' nor a checkpoint directory on this machine"
        )
    if cfg.backend == "vllm":
        return VLLMBackend(cfg.model, threads=cfg.threads)
    return TransformersBackend(cfg.model, device=cfg.device, threads=cfg.threads)
