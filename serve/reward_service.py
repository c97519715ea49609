"""The reward service: VideoReward (or the oracle) behind a Ray Serve deployment.

* ``RewardServiceConfig``: every knob, documented where declared;
* ``RewardDeployment``: one replica: decode mp4 -> dynamic batch (``serve.batch``) -> backend, plus
  the JSON API (``POST {prefix}/score``, ``GET {prefix}/health``);
* ``build_app`` / ``deploy`` / ``shutdown``: start Serve on 127.0.0.1 and run or delete this app;
* ``app``: the application builder for ``serve run`` / ``serve deploy`` (the service without the online job);
* ``RewardClient``: scores arrays or mp4 bytes through a ``DeploymentHandle``, one call per video so
  that the replica batches across callers, with timeouts and retries.

Ray is imported inside functions: configs and clients are built by light code (job configs, actors)
that should not pay Ray Serve's ~2 s import.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlhf.config import ConfigError, load_config, parse_override
from rlhf.device import DeviceConfig

from .backends import (
    DIMS,
    VLLM_RUNTIME_ENV,
    WORLD_FPS,
    RewardBackend,
    RewardRequestError,
    RewardServiceError,
    make_backend,
)

logger = logging.getLogger("ray.serve")

BACKENDS = ("transformers", "vllm")
STORED_CRF = 12  # the datasets' H.264 quality: the learned reward was trained on clips encoded like this
HEALTH_PROMPT = "a red circle moving right slowly on a black background"
ITEM_FIELDS = ("prompt", "video_b64", "path")
CONSTRUCTOR_RETRIES = 2
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")  # set by num_cpus, num_gpus, memory_gib


@dataclass
class RewardServiceConfig:
    # "default" = the shipped VideoReward (artefacts/reward_default), "oracle" = the moving-shapes oracle
    # annotator, or a VideoReward checkpoint directory (VideoAlign layout).
    model: str = "default"
    # version of the reward model: every score names it (reward_version); the online job's reward refresh bumps it
    # and rolls the deployment to the new model, so each sample records which version scored it
    version: int = 0
    backend: str = "transformers"  # "transformers" (CPU or GPU) | "vllm" (GPU only; its own runtime_env)
    max_batch_size: int = 16  # most requests one backend call scores (serve.batch)
    batch_wait_timeout_s: float = 0.02  # how long a batch's first request waits for others to join
    max_ongoing_requests: int = 32  # per replica; below max_batch_size a batch could never fill
    min_replicas: int = 1  # autoscaling bounds; 0 scales to zero (the next request waits for a replica)
    max_replicas: int = 1
    target_ongoing_requests: float = 8  # autoscaling adds replicas above this many ongoing requests each
    num_cpus: float = 1  # CPUs Ray reserves per replica
    num_gpus: float = 0  # GPUs Ray reserves per replica: > 0 needs device.device=cuda, a cuda device needs > 0
    # Custom Ray resources per replica: {"reward": 1} puts each replica on cluster.yaml's reward node type (and
    # makes the autoscaler launch one); a resource no node offers leaves the replica pending.
    resources: dict[str, float] = field(default_factory=dict)
    memory_gib: float = 0  # host memory Ray reserves per replica (GiB; 0 reserves none): keeps Ray from packing
    # more replicas onto a node than its RAM holds
    # Where and in what precision a replica runs the learned model (bf16 is for GPUs: slower on CPUs);
    # scores come back in fp32 either way. The oracle ignores it.
    device: DeviceConfig = field(default_factory=DeviceConfig)
    threads: int = 1  # torch intra-op threads per replica
    request_timeout_s: float = 30  # a request not scored by then fails (HTTP 504; RewardClient retries)
    health_check_period_s: float = 10  # Serve's health check (a forward pass on a canned clip); a dead replica is
    # noticed and replaced within about this long
    max_body_bytes: int = 8 * 2**20  # larger HTTP bodies, mp4s and server-side files are refused (413)
    http_host: str = "127.0.0.1"  # Serve's HTTP proxy address (cluster-wide); keep it on loopback
    http_port: int = 8123
    route_prefix: str = "/reward"  # the JSON API lives under this path
    app_name: str = "reward"  # Serve application name; RewardClient finds the service by it
    # Absolute directory the JSON API's {"path": ...} form may read under (403 outside it); "" refuses
    # server-side paths altogether, so that a local port cannot be used to probe the file system.
    video_root: str = ""
    access_log: bool = False  # one log line per request (Serve's access log)

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model must be 'default', 'oracle' or a VideoReward checkpoint directory, got ''")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.model == "oracle" and self.backend != "transformers":
            raise ValueError("model='oracle' runs on numpy and has no vllm backend; use backend=transformers")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.health_check_period_s <= 0:
            raise ValueError(f"health_check_period_s must be > 0, got {self.health_check_period_s}")
        if self.batch_wait_timeout_s < 0:
            raise ValueError(f"batch_wait_timeout_s must be >= 0, got {self.batch_wait_timeout_s}")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) is below max_batch_size ({self.max_batch_size}): "
                "a replica would never hold enough requests to fill a batch; set max_ongoing_requests >= max_batch_size"
            )
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                f"min_replicas={self.min_replicas}, max_replicas={self.max_replicas}"
            )
        if self.target_ongoing_requests <= 0:
            raise ValueError(f"target_ongoing_requests must be positive, got {self.target_ongoing_requests}")
        quantities = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory_gib": self.memory_gib,
            **{f"resources.{k}": v for k, v in self.resources.items()},
        }
        for key, value in quantities.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0 (a Ray resource quantity), got {value!r}")
        for name in self.resources:
            if not name or name in RAY_BUILTIN_RESOURCES:
                raise ValueError(
                    f"resources may name only custom resources (e.g. {{'reward': 1}}, cluster.yaml's reward "
                    f"node type), got {name!r}; CPUs, GPUs and memory are num_cpus, num_gpus and memory_gib"
                )
        self.device.check_gpus(self.num_gpus, "device", "num_gpus")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {self.request_timeout_s}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if not 1 <= self.http_port <= 65535:
            raise ValueError(f"http_port must be in 1..65535, got {self.http_port}")
        if not self.route_prefix.startswith("/") or (self.route_prefix != "/" and self.route_prefix.endswith("/")):
            raise ValueError(f"route_prefix must start with '/' and not end with one, got {self.route_prefix!r}")
        if not self.app_name:
            raise ValueError("app_name must not be empty")
        if self.video_root and not Path(self.video_root).is_absolute():
            raise ValueError(
                f"video_root must be an absolute directory (replicas do not share the caller's working "
                f"directory), got {self.video_root!r}"
            )

    def ray_actor_options(self) -> dict:
        """What Ray reserves for each replica (Serve's ``ray_actor_options``)."""
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            options["resources"] = dict(self.resources)
        if self.memory_gib:
            options["memory"] = int(self.memory_gib * 2**30)
        if self.backend == "vllm":
            options["runtime_env"] = VLLM_RUNTIME_ENV
        return options


def _decode(mp4: bytes) -> tuple[np.ndarray, float]:
    from rlhf.video import VideoError, read_video_fps

    try:
        return read_video_fps(mp4, name=f"<{len(mp4)} bytes of mp4>")
    except VideoError as e:
        raise RewardRequestError(str(e)) from None


def _all_finite(scores: dict) -> bool:
    return all(math.isfinite(v) for view in ("raw", "normalised") for v in scores[view].values())


class RewardDeployment:
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

    async def __call__(self, request) -> object:
        """The JSON API; every failure is a JSON ``{"error": ...}`` and the replica keeps serving."""
        try:
            return await self._http(request)
        except RewardRequestError as e:
            return _json({"error": str(e)}, e.status, getattr(e, "headers", None))
        except TimeoutError as e:
            return _json({"error": str(e)}, 504)
        except RewardServiceError as e:
            return _json({"error": str(e)}, 503)
        except Exception as e:
            logger.exception("reward service: unexpected error")
            return _json({"error": f"internal error ({type(e).__name__}: {e}); the replica's log has the trace"}, 500)

    async def _http(self, request):
        # The prefix the app was actually deployed under: `serve run` and config files set it, not cfg.
        prefix = request.scope.get("root_path", "").rstrip("/")
        routes = {"/score": "POST", "/health": "GET"}
        path = _route(request.scope)
        if path not in routes:
            raise RewardRequestError(
                f"no route {request.method} {prefix}{path}; routes are POST {prefix}/score and GET {prefix}/health", 404
            )
        if request.method != routes[path]:
            e = RewardRequestError(f"{request.method} is not allowed on {prefix}{path}; use {routes[path]}", 405)
            e.headers = {"Allow": routes[path]}
            raise e
        if path == "/health":
            scores = await asyncio.wait_for(self._health(), self.cfg.request_timeout_s)
            return _json({"status": "ok", "model": self.cfg.model, "backend": self.backend.name, **scores}, 200)
        data = self._parse_json(await self._read_body(request))
        if "videos" in data:
            extra = sorted(set(data) - {"videos"})
            if extra:
                raise RewardRequestError(f"unknown field(s) {extra} next to 'videos'; give only 'videos'")
            items = data["videos"]
            if not isinstance(items, list) or not items:
                raise RewardRequestError(
                    f"'videos' must be a non-empty list of {{prompt, video_b64 | path}} objects, "
                    f"got {type(items).__name__}"
                )
            parsed = [await self._parse_item(item, f"videos[{i}]") for i, item in enumerate(items)]
        else:
            parsed = [await self._parse_item(data, "body")]
        results = await asyncio.gather(*(self.score(mp4, prompt) for mp4, prompt in parsed), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, RewardRequestError) and "videos" in data:
                raise RewardRequestError(f"videos[{i}]: {r}", r.status)
            if isinstance(r, BaseException):
                raise r
        return _json({"results": results} if "videos" in data else results[0], 200)

    async def _read_body(self, request) -> bytes:
        limit = self.cfg.max_body_bytes
        fix = "send fewer or smaller videos, or a 'path' under the service's video_root"
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise RewardRequestError(f"Content-Length {declared!r} is not an integer", 400) from None
            if size > limit:
                raise RewardRequestError(f"body of {size} bytes exceeds max_body_bytes={limit}; {fix}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():  # the header may be absent (chunked) or wrong: count
            size += len(chunk)
            if size > limit:
                raise RewardRequestError(f"body exceeds max_body_bytes={limit} (over {size} bytes read); {fix}", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse_json(body: bytes) -> dict:
        usage = 'send {"prompt": "...", "video_b64": "<base64 mp4>"} or {"prompt": "...", "path": "..."}'
        if not body:
            raise RewardRequestError(f"empty body; {usage}", 400)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise RewardRequestError(f"body is not valid JSON ({e}); {usage}", 400) from None
        if not isinstance(data, dict):
            raise RewardRequestError(f"body must be a JSON object, got {type(data).__name__}; {usage}")
        return data

    async def _parse_item(self, item: object, where: str) -> tuple[bytes, str]:
        if not isinstance(item, dict):
            raise RewardRequestError(
                f"{where} must be an object with 'prompt' and 'video_b64' or 'path', got {type(item).__name__}"
            )
        unknown = sorted(set(item) - set(ITEM_FIELDS))
        if unknown:
            raise RewardRequestError(f"{where}: unknown field(s) {unknown}; fields are {', '.join(ITEM_FIELDS)}")
        if "prompt" not in item:
            raise RewardRequestError(f"{where}: missing 'prompt' (the text the video should show)")
        prompt = item["prompt"]
        if not isinstance(prompt, str):
            raise RewardRequestError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise RewardRequestError(f"{where}: 'prompt' is empty")
        has_b64, has_path = "video_b64" in item, "path" in item
        if has_b64 == has_path:
            what = "both 'video_b64' and 'path'" if has_b64 else "no video"
            raise RewardRequestError(
                f"{where}: {what}; give exactly one of 'video_b64' (base64 of an mp4) or "
                "'path' (an mp4 under the service's video_root)"
            )
        if has_b64:
            b64 = item["video_b64"]
            if not isinstance(b64, str):
                raise RewardRequestError(f"{where}: 'video_b64' must be a base64 string, got {type(b64).__name__}")
            try:
                return base64.b64decode(b64, validate=True), prompt
            except (binascii.Error, ValueError) as e:
                raise RewardRequestError(f"{where}: 'video_b64' is not valid base64 ({e})") from None
        return await asyncio.to_thread(self._read_path, item["path"], where), prompt

    def _read_path(self, path: object, where: str) -> bytes:
        if not isinstance(path, str):
            raise RewardRequestError(f"{where}: 'path' must be a string, got {type(path).__name__}")
        if not self.cfg.video_root:
            raise RewardRequestError(
                f"{where}: server-side paths are disabled (the service was deployed without "
                "video_root); send 'video_b64' or redeploy with video_root set",
                403,
            )
        root = Path(self.cfg.video_root).resolve()
        try:
            target = (root / path).resolve()  # an absolute ``path`` replaces root; '..' and symlinks resolve here
        except (OSError, ValueError) as e:  # a NUL byte, a symlink loop
            raise RewardRequestError(f"{where}: path {path!r} cannot be resolved ({e})") from None
        if not target.is_relative_to(root):
            raise RewardRequestError(f"{where}: path {path!r} lies outside video_root {str(root)!r}", 403)
        if not target.is_file():
            raise RewardRequestError(f"{where}: no file {path!r} under video_root {str(root)!r}", 404)
        size = target.stat().st_size
        if size > self.cfg.max_body_bytes:
            raise RewardRequestError(
                f"{where}: {path!r} is {size} bytes, over max_body_bytes={self.cfg.max_body_bytes}", 413
            )
        return target.read_bytes()


def _route(scope: dict) -> str:
    """The request path below the app's route prefix (Serve puts the prefix in ``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "").rstrip("/")
    if root and path.startswith(root):
        path = path[len(root) :]
    return "/" + path.strip("/")


def _json(content: dict, status: int, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(content, status_code=status, headers=headers)


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

    ``serve run serve.reward_service:app num_gpus=1 device.device=cuda resources='{"reward": 1}'``
    or ``import_path: serve.reward_service:app`` with an ``args:`` mapping in a Serve config file
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
            "Check `serve status`, or deploy it with serve.reward_service.deploy(cfg)"
        )

    def score_matrix(
        self, videos: list, prompts: list[str], fps: float = WORLD_FPS, view: str = "normalised"
    ) -> np.ndarray:
        """``(n, 3)`` float64 array of VQ, MQ, TA (``view`` = "normalised" or "raw")."""
        if view not in ("normalised", "raw"):
            raise ValueError(f"view must be 'normalised' or 'raw', got {view!r}")
        return np.array([[s[view][d] for d in DIMS] for s in self.score(videos, prompts, fps)], dtype=np.float64)
