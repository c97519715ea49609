"""The reward service's deployment: VideoReward (or the oracle) behind Ray Serve.

* ``RewardDeployment``: one replica: decode mp4 -> dynamic batch (``serve.batch``) -> backend, a health
  check that runs a real forward pass; its JSON API is ``serve.http.JsonApi``;
* ``build_app`` / ``deploy`` / ``shutdown``: start Serve on 127.0.0.1 and run or delete this app;
* ``app``: the application builder for ``serve run serve.deployment:app`` / ``serve deploy`` (the service
  without the online job).

Ray is imported inside functions: configs and clients are built by light code (job configs, actors)
that should not pay Ray Serve's ~2 s import.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from pathlib import Path

import numpy as np

from rlhf.config import ConfigError, load_config, parse_override

from .backends import WORLD_FPS, RewardBackend, RewardRequestError, RewardServiceError, make_backend
from .config import CONSTRUCTOR_RETRIES, HEALTH_PROMPT, RewardServiceConfig
from .http import JsonApi

logger = logging.getLogger("ray.serve")


def _decode(mp4: bytes) -> tuple[np.ndarray, float]:
    from rlhf.video import VideoError, read_video_fps

    try:
        return read_video_fps(mp4, name=f"<{len(mp4)} bytes of mp4>")
    except VideoError as e:
        raise RewardRequestError(str(e)) from None


def _all_finite(scores: dict) -> bool:
    return all(math.isfinite(v) for view in ("raw", "normalised") for v in scores[view].values())


class RewardDeployment(JsonApi):
    """One replica of the reward service (``build_app`` makes it a Serve deployment).

    Each request is decoded on its own, then joins a dynamic batch: the backend is called once per
    batch of up to ``max_batch_size`` requests gathered within ``batch_wait_timeout_s``. Backend calls
    run in a worker thread under a lock, so the event loop keeps accepting requests while a batch
    computes and health checks never run concurrently with a batch."""

    def __init__(self, cfg: RewardServiceConfig):
        from ray import serve

        from rlhf.synthetic.render import render

        cfg.validate()
        self.cfg = cfg
        self.backend: RewardBackend = make_backend(cfg)
        self._lock = asyncio.Lock()
        # Configured per instance (rather than @serve.batch on the class) so that the batch settings
        # come from the config and this module does not import Ray at import time.
        self._batched = serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s)(
            self._score_batch
        )
        self._health_clip = render(HEALTH_PROMPT, seed=0)

    async def _run(self, videos: list[np.ndarray], prompts: list[str], rates: list[float]) -> list[dict]:
        async with self._lock:
            return await asyncio.to_thread(self.backend.score, videos, prompts, rates)

    async def _score_batch(self, videos: list[np.ndarray], rates: list[float], prompts: list[str]) -> list:
        """One backend call for the whole batch; if it fails, each item alone, so that one bad item
        fails only its own request (its exception is returned in its place)."""
        n = len(videos)
        try:
            results = await self._run(videos, prompts, rates)
        except Exception as e:
            if n == 1:
                results = [e]
            else:
                logger.warning("batch of %d failed (%s: %s); scoring its items one by one", n, type(e).__name__, e)
                results = []
                for v, r, p in zip(videos, rates, prompts):
                    try:
                        results.append((await self._run([v], [p], [r]))[0])
                    except Exception as item_error:
                        results.append(item_error)
        out = []
        for r in results:
            if isinstance(r, Exception) and not isinstance(r, (RewardRequestError, RewardServiceError)):
                r = RewardServiceError(f"the {self.backend.name} backend failed on this clip ({type(r).__name__}: {r})")
            out.append(r if isinstance(r, Exception) else {**r, "batch_size": n})
        return out

    async def score(self, mp4: bytes, prompt: str) -> dict:
        """Score one H.264 mp4 for ``prompt``: ``{"raw", "normalised", "model", "backend", "batch_size"}``.

        Raises RewardRequestError for bad input, TimeoutError past ``request_timeout_s``."""
        if not isinstance(mp4, (bytes, bytearray)):
            raise RewardRequestError(f"video must be mp4 bytes, got {type(mp4).__name__}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RewardRequestError(f"prompt must be a non-empty string, got {prompt!r}")
        if len(mp4) > self.cfg.max_body_bytes:
            raise RewardRequestError(f"mp4 of {len(mp4)} bytes exceeds max_body_bytes={self.cfg.max_body_bytes}", 413)
        frames, fps = await asyncio.to_thread(_decode, bytes(mp4))
        self.backend.check(frames, fps, prompt)
        try:
            result = await asyncio.wait_for(self._batched(frames, fps, prompt), self.cfg.request_timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"not scored within request_timeout_s={self.cfg.request_timeout_s}s: the service is "
                "overloaded; raise max_replicas or request_timeout_s"
            ) from None
        if isinstance(result, Exception):
            raise result
        return {
            **result,
            "model": self.cfg.model,
            "reward_version": self.cfg.version,
            "backend": self.backend.name,
            "replica_pid": os.getpid(),
        }

    async def _health(self) -> dict:
        scores = (await self._run([self._health_clip], [HEALTH_PROMPT], [WORLD_FPS]))[0]
        if not _all_finite(scores):
            raise RewardServiceError(
                f"the {self.backend.name} backend returned non-finite scores on the canned clip: {scores}"
            )
        return scores

    async def check_health(self) -> None:
        """Serve's periodic health check: a real forward pass on a rendered clip, finite scores."""
        await self._health()


def build_app(cfg: RewardServiceConfig):
    """The Serve application: ``RewardDeployment`` with batching, autoscaling and resources from ``cfg``."""
    from ray import serve

    cfg.validate()
    if cfg.model not in ("default", "oracle") and not Path(cfg.model).is_dir():
        raise RewardServiceError(
            f"reward model {cfg.model!r} is neither 'default', 'oracle' nor a checkpoint directory"
        )
    deployment = serve.deployment(RewardDeployment).options(
        max_ongoing_requests=cfg.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
        ray_actor_options=cfg.ray_actor_options(),
        health_check_timeout_s=max(30.0, cfg.request_timeout_s),
        health_check_period_s=cfg.health_check_period_s,
        # Loading fails for lasting reasons (no checkpoint, no vllm): fail the deploy in seconds, not
        # after Serve's default of 20 constructor attempts.
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        # One access-log line per scored clip drowns the driver's console (log_to_driver); the replica's
        # log file keeps warnings and errors.
        logging_config={"log_level": "WARNING", "enable_access_log": cfg.access_log},
    )
    return deployment.bind(cfg)


# Keys that configure Serve rather than the app. An application builder cannot set them: `serve run` takes
# them as --name / --route-prefix (HTTP: Serve's defaults, 127.0.0.1:8000), a config file as the
# application's name / route_prefix and its http_options.
SERVE_KEYS = {
    "app_name": "--name NAME (serve run) or the application's name: (config file)",
    "route_prefix": "--route-prefix /PATH (serve run) or the application's route_prefix: (config file)",
    "http_host": "http_options.host in a config file (serve run on an import path binds 127.0.0.1)",
    "http_port": "http_options.port in a config file (serve run on an import path uses 8000)",
}


def app(args: dict):
    """Application builder: the reward service on its own, without the online job.

    ``serve run serve.deployment:app num_gpus=1 device.device=cuda resources='{"reward": 1}'``
    or ``import_path: serve.deployment:app`` with an ``args:`` mapping in a Serve config file
    (``serve/reward_config.yaml``). ``args`` holds RewardServiceConfig keys, nested ones dotted
    (``device.precision``) or as a mapping (``device: {...}``); string values are read as YAML, like the
    jobs' ``key=value`` overrides, since ``serve run`` passes every value as a string. The four keys
    that configure Serve itself (``SERVE_KEYS``) are refused with where they belong. A relative
    ``model`` directory is resolved against the directory the builder runs in."""
    serve_keys = [k for k in args if k.split(".")[0] in SERVE_KEYS]
    if serve_keys:
        raise ConfigError(
            "reward app args: "
            + "; ".join(
                f"{k} is Serve's setting, not the app's: give it as {SERVE_KEYS[k.split('.')[0]]}" for k in serve_keys
            )
        )
    values = {k: parse_override(f"{k}={v}")[1] if isinstance(v, str) else v for k, v in args.items()}
    try:
        cfg = load_config(RewardServiceConfig, values=values)
    except ConfigError as e:
        raise ConfigError(f"reward app args: {e}") from None
    if cfg.model not in ("default", "oracle"):
        cfg.model = str(Path(cfg.model).resolve())
    return build_app(cfg)


def deploy(cfg: RewardServiceConfig):
    """Start Serve (HTTP on ``cfg.http_host:http_port``) if needed and run this app; returns its handle.

    The app outlives the caller: call :func:`shutdown` when done. Serve's HTTP options are
    cluster-wide and fixed when Serve starts, so a Serve already running elsewhere is refused."""
    from ray import serve
    from ray.serve.context import _get_global_client

    app = build_app(cfg)
    serve.start(http_options={"host": cfg.http_host, "port": cfg.http_port})
    http = _get_global_client().http_config
    if (http.host, http.port) != (cfg.http_host, cfg.http_port):
        raise RewardServiceError(
            f"Serve already runs on this cluster with HTTP on {http.host}:{http.port}, not {cfg.http_host}:{cfg.http_port} "
            "(HTTP options are fixed when Serve starts); set http_host/http_port to those, or `serve shutdown` first"
        )
    try:
        return serve.run(app, name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=False)
    except RuntimeError as e:  # Serve names only the deployment; the reason is in its status message
        reason = _failure_reason(cfg.app_name) or str(e)
        shutdown(cfg)
        raise RewardServiceError(f"deploying reward app {cfg.app_name!r} failed and it was deleted: {reason}") from None


def _failure_reason(app_name: str) -> str:
    """The last line of the failed replica's error (its exception and message), if Serve reports one."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    messages = [d.message for d in app.deployments.values() if d.message] if app else []
    lines = [line.strip() for m in messages for line in m.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def shutdown(cfg_or_app_name: RewardServiceConfig | str) -> None:
    """Delete this app (only it: Serve and other apps keep running). No-op if it is not running."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    name = cfg_or_app_name if isinstance(cfg_or_app_name, str) else cfg_or_app_name.app_name
    try:
        serve.delete(name)
    except RayServeException:  # Serve itself is not running: nothing to delete
        pass
