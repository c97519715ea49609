"""The reward service's client: ``RewardClient`` scores arrays or mp4 bytes through the deployment's
``DeploymentHandle``, one call per video so that the replica batches across callers, with timeouts and
retries; bad input is raised at once, never retried."""

from __future__ import annotations

import time

import numpy as np

from rlhf.dims import DIMS

from .backends import WORLD_FPS, RewardRequestError, RewardServiceError
from .config import STORED_CRF


def _cause(e: BaseException) -> BaseException:
    """The replica's own exception inside Ray's task-error wrapper."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


class RewardClient:
    """Scores videos through the reward service's ``DeploymentHandle``; usable from any Ray worker or
    actor (in an ``async`` actor, call it through ``asyncio.to_thread``).

    Every video is one ``handle.score`` call, all sent at once, so the replica batches them with other
    callers' requests. A call that fails or takes longer than ``timeout_s`` is retried up to
    ``retries`` times with exponential backoff (``backoff_s``, doubling, at most ``max_backoff_s``); bad input
    (:class:`RewardRequestError`) is raised at once, never retried."""

    def __init__(
        self,
        handle_or_app_name="reward",
        timeout_s: float = 60,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
    ):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError(
                f"need timeout_s > 0, retries >= 0, backoff_s >= 0; got {timeout_s}, {retries}, {backoff_s}"
            )
        if isinstance(handle_or_app_name, str):
            self.app_name, self._handle, self._by_name = handle_or_app_name, None, True
        else:
            self._handle, self._by_name = handle_or_app_name, False
            self.app_name = getattr(handle_or_app_name, "app_name", None) or "<handle>"
        self.timeout_s, self.retries, self.backoff_s, self.max_backoff_s = timeout_s, retries, backoff_s, max_backoff_s
        self.retried = 0  # requests sent again after a failure, over this client's life

    def _resolve(self):
        if self._handle is None:
            import ray
            from ray import serve

            if not ray.is_initialized():
                raise RewardServiceError("Ray is not initialised in this process: call ray.init(address=...) first")
            self._handle = serve.get_app_handle(self.app_name)
        return self._handle

    @staticmethod
    def _encode(videos: list, prompts: list[str], fps: float) -> list[bytes]:
        from rlhf.video import encode_video

        if len(videos) != len(prompts):
            raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
        out = []
        for i, v in enumerate(videos):
            if isinstance(v, (bytes, bytearray)):
                out.append(bytes(v))
            elif isinstance(v, np.ndarray):
                out.append(encode_video(v, fps=fps, crf=STORED_CRF, name=f"video {i}"))
            else:
                raise TypeError(f"video {i}: expected a uint8 (T, H, W, 3) array or mp4 bytes, got {type(v).__name__}")
        return out

    def score(self, videos: list, prompts: list[str], fps: float = WORLD_FPS) -> list[dict]:
        """One ``{"raw", "normalised", "model", "reward_version", "backend", "batch_size"}`` per video (arrays are sent as
        H.264 mp4 at crf 12, the datasets' stored quality, at ``fps``)."""
        mp4s = self._encode(videos, prompts, fps)
        results: list = [None] * len(mp4s)
        pending, last_error = list(range(len(mp4s))), None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
                if self._by_name:
                    self._handle = None  # the app may have been redeployed
            try:
                handle = self._resolve()
                responses = {i: handle.score.remote(mp4s[i], prompts[i]) for i in pending}
            except RewardServiceError:
                raise
            except Exception as e:  # app not found, Serve not running yet
                last_error = e
                continue
            deadline, failed = time.monotonic() + self.timeout_s, []
            for i, response in responses.items():
                try:
                    results[i] = response.result(timeout_s=max(0.0, deadline - time.monotonic()))
                except Exception as e:
                    cause = _cause(e)
                    if isinstance(cause, RewardRequestError):
                        raise RewardRequestError(f"video {i} ({prompts[i]!r}): {cause}", cause.status) from None
                    last_error, failed = cause, failed + [i]
                    response.cancel()
            pending = failed
            if not pending:
                return results
            self.retried += len(pending)
        brief = (
            f"{type(last_error).__name__}: {str(last_error).strip().splitlines()[0] if str(last_error).strip() else ''}"
        )
        raise RewardServiceError(
            f"reward service app {self.app_name!r}: {len(pending)} of {len(mp4s)} request(s) failed after "
            f"{self.retries + 1} attempt(s) (last error {brief}); is the service deployed and healthy? "
            "Check `serve status`, or deploy it with serve.deployment.deploy(cfg)"
        )

    def score_matrix(
        self, videos: list, prompts: list[str], fps: float = WORLD_FPS, view: str = "normalised"
    ) -> np.ndarray:
        """``(n, 3)`` float64 array of VQ, MQ, TA (``view`` = "normalised" or "raw")."""
        if view not in ("normalised", "raw"):
            raise ValueError(f"view must be 'normalised' or 'raw', got {view!r}")
        return np.array([[s[view][d] for d in DIMS] for s in self.score(videos, prompts, fps)], dtype=np.float64)
