"""The reward service's config: every knob of the deployment, documented where declared and validated
before anything starts (``RewardServiceConfig``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.device import DeviceConfig

from .backends import VLLM_RUNTIME_ENV

BACKENDS = ("transformers", "vllm")
STORED_CRF = 12  # the datasets' H.264 quality: the learned reward was trained on clips encoded like this
HEALTH_PROMPT = "a red circle moving right slowly on a black background"
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
    max_replicas: int = 1  # autoscaling upper bound (>= 1 and >= min_replicas)
    target_ongoing_requests: float = 8  # autoscaling adds replicas above this many ongoing requests each
    num_cpus: float = 1  # CPUs Ray reserves per replica
    num_gpus: float = 0  # GPUs Ray reserves per replica: > 0 needs device.device=cuda, a cuda device needs > 0
    # Custom Ray resources per replica: {"reward": 1} puts each replica on cluster.yaml's reward node type (and
    # makes the autoscaler launch one); a resource no node offers leaves the replica pending.
    resources: dict[str, float] = field(default_factory=dict)
    # host memory Ray reserves per replica (GiB; 0 reserves none): keeps Ray from packing more replicas onto a
    # node than its RAM holds
    memory_gib: float = 0
    # Where and in what precision a replica runs the learned model (bf16 is for GPUs: slower on CPUs);
    # scores come back in fp32 either way. The oracle ignores it.
    device: DeviceConfig = field(default_factory=DeviceConfig)
    threads: int = 1  # torch intra-op threads per replica
    request_timeout_s: float = 30  # a request not scored by then fails (HTTP 504; RewardClient retries)
    # Serve's health check (a forward pass on a canned clip); a dead replica is noticed and replaced within about
    # this long
    health_check_period_s: float = 10
    max_body_bytes: int = 8 * 2**20  # larger HTTP bodies, mp4s and server-side files are refused (413)
    http_host: str = "127.0.0.1"  # Serve's HTTP proxy address (cluster-wide); keep it on loopback
    http_port: int = 8123  # Serve's HTTP proxy port (cluster-wide; fixed when Serve starts)
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
