# Long on purpose: every benchmark's figure is a ratio against a baseline measured in the same run (these machines are
# noisy), so the benchmarks and their baselines run from one job (the scaling model lives in actors/scaling.py).
"""Benchmarks: figures measured side by side in one run, written as JSON and Markdown and printed as a table.

    python jobs/bench.py                          # every benchmark (about 20 minutes on 2 cores)
    python jobs/bench.py only=[loop] loop_iterations=2
    python jobs/bench.py only=[hot,service]

Benchmarks (every figure that is compared is a ratio of two measurements taken in the same run):
  dataset  seconds to build N moving-shapes pairs (mp4 + parquet) with the configured workers, and the
           per-video cost of each stage (render, H.264 encode, decode, oracle) in one process.
  hot      model hot paths against plain PyTorch: a Flow-DPO step through DeepSpeed (the trainer's engine)
           against the same step with torch.optim.AdamW, and a reward forward through the Serve handle
           against the same backend called in-process (both on the same clips).
  service  the reward service over HTTP: throughput with dynamic batching against batch size 1, and
           p50 / p99 request latency, with ``service_concurrency`` clients.
  loop     the online loop (the ``make run`` config, ``loop_iterations`` iterations, no final evaluation):
           the Ray system in sync and one-step-off mode against a single-process baseline doing the same
           work sequentially in one Python process (sample, encode, score, pairs, K AdamW steps on the
           same global batch; run in a child process, so that the Ray runs' driver starts clean); throughput
           over the whole loop (iteration 0 included) and in steady state, start-up (the job's start to its
           first iteration's launch), time share of each phase, and peak memory (RSS) of each role and of
           the whole run, sampled from the process tree every ``memory_interval_s``.
  scaling  the online job at 1-2 generator actors x 1-2 trainer workers (``scaling_runs``), the per-role costs
           read from them and the scaling model's prediction for each (actors/scaling.py; ``python -m
           actors.scaling`` then writes docs/results/scaling.md with the GPU table).
  gpu      the plain-PyTorch hot paths at Wan-1.3B / Qwen2-VL-2B size (jobs/bench_gpu.py) where CUDA is
           available; elsewhere the figures of the last GPU run committed in docs/results/bench_gpu_*.json.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlhf.config import parse_cli
from rlhf.dims import DIMS

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchConfig:
    out: str = "runs/bench/bench.json"  # JSON results (a Markdown table goes next to it)
    only: list[str] = field(default_factory=list)  # subset of: dataset, hot, service, loop, gpu (empty = all)
    pairs: int = 2000  # dataset benchmark: pairs to build
    workers: int = 2  # dataset benchmark: worker processes
    stage_videos: int = 100  # videos timed per stage
    hot_steps: int = 12  # hot: timed Flow-DPO steps per variant (after 2 warm-up steps)
    hot_clips: int = 16  # hot: clips per reward forward
    service_model: str = "default"  # service and hot: reward model (default = the shipped VideoReward | oracle)
    service_requests: int = 96  # service: HTTP requests per variant
    service_concurrency: int = 16  # service: concurrent clients
    service_batch: int = 16  # service: max_batch_size of the batching variant
    loop_iterations: int = 4  # loop: online iterations per variant
    loop_overrides: list[str] = field(default_factory=list)  # loop: OnlineConfig key=value for every variant
    memory_interval_s: float = 1.0  # loop: process-tree RSS sampling period (each sample reads ~40 processes)
    scaling_iterations: int = 3  # scaling: online iterations per (generator actors, trainer workers, mode) run
    # scaling: the (generator actors, trainer workers, mode) runs; (1, 1, sync) is required (costs are read from it)
    scaling_runs: list[str] = field(
        default_factory=lambda: ["1,1,sync", "2,1,sync", "1,2,sync", "2,2,sync", "2,2,one_step_off"]
    )


def bench_dataset(cfg: BenchConfig) -> dict:
    from rlhf.synthetic.dataset import build_dataset, pair_spec
    from rlhf.synthetic.oracle import score
    from rlhf.synthetic.render import render
    from rlhf.video import encode_video, read_video

    specs = [pair_spec(0, i) for i in range(cfg.stage_videos)]
    stages = {"render": [], "encode": [], "decode": [], "oracle": []}
    for s in specs:
        t0 = time.perf_counter()
        v = render(s.prompt, s.defects_a, s.seed_a)
        t1 = time.perf_counter()
        data = encode_video(v)
        t2 = time.perf_counter()
        d = read_video(data)
        t3 = time.perf_counter()
        score(d, s.prompt)
        t4 = time.perf_counter()
        for k, a, b in (("render", t0, t1), ("encode", t1, t2), ("decode", t2, t3), ("oracle", t3, t4)):
            stages[k].append(b - a)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ds_"))
    try:
        res = build_dataset(tmp, cfg.pairs, seed=0, workers=cfg.workers, progress=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "pairs": cfg.pairs,
        "workers": cfg.workers,
        "seconds": round(res.seconds, 2),
        "pairs_per_second": round(cfg.pairs / res.seconds, 1),
        "target_seconds_for_2000": 120,
        "ms_per_video": {k: round(1000 * float(np.median(v)), 2) for k, v in stages.items()},
    }


# ------------------------------------------------------------------------------------------ helpers
def _median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def _free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _clips(n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` moving-shapes clips as the datasets store them (H.264 crf 12) and their prompts."""
    from rlhf.synthetic.dataset import pair_spec
    from rlhf.synthetic.render import render
    from rlhf.video import encode_video

    specs = [pair_spec(seed, i) for i in range(n)]
    return [encode_video(render(s.prompt, s.defects_a, s.seed_a), crf=12) for s in specs], [
        s.prompt.text for s in specs
    ]


_CLUSTER = []


def _start_local_ray(num_cpus: int = 4) -> None:
    from actors.cluster import connect

    _CLUSTER.append(connect(num_cpus=num_cpus, dashboard=False, log_to_driver=False))


def _stop_local_ray() -> None:
    """Stop Serve (its driver-side client polls the controller from a thread: after ``ray.shutdown`` that thread
    would auto-start a new 2-CPU local Ray, which the next benchmark's job would then find and join), then the
    cluster."""
    from ray import serve

    serve.shutdown()
    while _CLUSTER:
        _CLUSTER.pop().stop()


# Process title (Ray sets "ray::<Class>.<method>") or command line -> role, first match wins.
ROLES = (
    ("GeneratorActor", "generator actors"),
    ("ServeReplica", "reward replica"),
    ("RayTrainWorker", "trainer workers"),
    ("TrainWorker", "trainer workers"),
    ("_set_torch_distributed", "trainer workers"),  # a trainer worker's title while Ray Train sets it up
    # the trainer group's own actors: ours (coordinator) and Ray Train's (controller, barrier, placement group
    # cleaner, dataset manager, preemption watcher)
    ("TrainerCoordinator", "trainer system"),
    ("TrainController", "trainer system"),
    ("SynchronizationActor", "trainer system"),
    ("PlacementGroupCleaner", "trainer system"),
    ("DatasetManager", "trainer system"),
    ("PreemptionWatcher", "trainer system"),
    ("ServeController", "serve system"),
    ("ProxyActor", "serve system"),
    ("WeightStore", "weight store"),
    # Ray Data's tasks (MapBatches, ReadRange...) and its actors
    ("_StatsActor", "Ray Data"),
    ("AutoscalingCoordinator", "Ray Data"),
    ("MapBatches", "Ray Data"),
    ("get_table_block_metadata", "Ray Data"),
    ("ray::IDLE", "idle Ray workers"),
    ("gcs_server", "ray system"),
    ("raylet", "ray system"),
    ("dashboard", "ray system"),
    ("DashboardAgent", "ray system"),
    ("RuntimeEnvAgent", "ray system"),
    ("runtime_env", "ray system"),
    ("log_monitor", "ray system"),
    ("monitor.py", "ray system"),
    ("forkserver", "ray system"),
    ("ray::", "other Ray workers"),
)


def process_title(cmd: str, width: int = 60) -> str:
    """A process's command line as the benchmark records it: every absolute path cut to its file name (no machine's
    paths in committed results), at most ``width`` characters."""
    import re

    return re.sub(r"(?<![\w.~-])/(?:[^/\s]+/)+([^/\s]*)", r"\1", cmd)[:width]


class MemorySampler:
    """Resident memory of this process and its descendants (a local Ray cluster started by this process is
    one), sampled every ``interval_s`` on a thread; per role, the peak of the role's summed RSS.
    RSS counts pages shared between processes (torch's libraries) once per process: an upper bound."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak: dict[str, int] = defaultdict(int)
        self.peak_process: dict[str, int] = defaultdict(int)
        self.other: dict[str, int] = defaultdict(int)  # peak RSS per title of the processes no role claims
        self.peak_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-sampler")

    @staticmethod
    def role(cmd: str) -> str:
        for needle, role in ROLES:
            if needle in cmd:
                return role
        return "other processes"

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        per: dict[str, int] = defaultdict(int)
        for p in [me, *me.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
                role = "driver" if p.pid == me.pid else self.role(" ".join(p.cmdline()) or p.name())
            except psutil.Error:
                continue
            per[role] += rss
            self.peak_process[role] = max(self.peak_process[role], rss)
            if role.startswith("other"):
                title = process_title(" ".join(p.cmdline()) or p.name())
                self.other[title] = max(self.other[title], rss)
        for role, v in per.items():
            self.peak[role] = max(self.peak[role], v)
        self.peak_total = max(self.peak_total, sum(per.values()))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        mib = lambda b: round(b / 2**20)  # noqa: E731
        return {
            "peak_total_mib": mib(self.peak_total),
            "samples": self.samples,
            "peak_by_role_mib": {k: mib(v) for k, v in sorted(self.peak.items())},
            "peak_process_by_role_mib": {k: mib(v) for k, v in sorted(self.peak_process.items())},
            "other_processes_mib": {k: mib(v) for k, v in sorted(self.other.items(), key=lambda kv: -kv[1])[:8]},
        }


# ------------------------------------------------------------------------------------------ hot paths
def _dpo_batch(gen, n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x_w = torch.randn(n, *gen.latent_shape, generator=g)
    x_l = torch.randn(n, *gen.latent_shape, generator=g)
    from rlhf.synthetic.dataset import pair_spec

    with torch.no_grad():
        text = gen.encode_prompts([pair_spec(seed, i).prompt.text for i in range(n)])
    return x_w, x_l, text


def _time_steps(step, n: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def bench_hot(cfg: BenchConfig) -> dict:
    """Flow-DPO step: DeepSpeed engine vs plain AdamW (same model, batch, seeds; one process, all threads).
    Reward forward: through the Serve deployment (handle) vs the backend in-process (same clips)."""
    import torch

    from actors.trainer import TrainerConfig
    from rlhf.align.step import plain_update, train_step
    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator
    from rlhf.reward.distributed import deepspeed_config, init_deepspeed

    tc = TrainerConfig()
    torch.set_num_threads(os.cpu_count() or 2)
    micro = tc.micro_batch * tc.num_workers  # the online loop's global batch per step

    def model():
        torch.manual_seed(0)
        gen = load_generator(DEFAULT_GENERATOR)
        gen.add_lora(tc.lora_rank, tc.lora_alpha)
        gen.train()
        return gen

    gen = model()
    x_w, x_l, text = _dpo_batch(gen, micro)
    params = gen.lora_parameters()
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
    rng = torch.Generator().manual_seed(1)
    batch = {"x_w": x_w, "x_l": x_l, "text": text}
    update = plain_update(opt, params, tc.grad_clip)

    def plain_step():
        train_step(gen, batch, tc.algo, rng, update)

    plain = _time_steps(plain_step, cfg.hot_steps)

    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }.items():
        os.environ.setdefault(k, v)
    init_deepspeed(False)
    import deepspeed

    gen2 = model()
    params2 = gen2.lora_parameters()
    engine, _, _, _ = deepspeed.initialize(
        model=gen2,
        optimizer=torch.optim.AdamW(params2, lr=tc.lr, weight_decay=0.0),
        model_parameters=params2,
        config=deepspeed_config(micro, tc.zero_stage, False, tc.grad_clip),
    )
    rng2 = torch.Generator().manual_seed(1)

    def ds_update(loss):
        engine.backward(loss)
        engine.step()

    def ds_step():
        train_step(gen2, batch, tc.algo, rng2, ds_update)

    ds = _time_steps(ds_step, cfg.hot_steps)
    # the two loops trained the same model on the same batches and noise: their adapters agree
    drift = max(float((a - b).abs().max()) for a, b in zip(params, params2))
    torch.distributed.destroy_process_group()
    out = {
        "flow_dpo_step": {
            "pairs_per_step": micro,
            "plain_pytorch_ms": round(1000 * _median(plain), 2),
            "deepspeed_ms": round(1000 * _median(ds), 2),
            "deepspeed_over_plain": round(_median(ds) / _median(plain), 3),
            "max_lora_difference_after_both": drift,
            "threads": torch.get_num_threads(),
        }
    }
    out["reward_forward"] = _hot_reward(cfg)
    return out


def _hot_reward(cfg: BenchConfig) -> dict:
    from rlhf.video import read_video
    from serve.backends import OracleBackend, TransformersBackend
    from serve.client import RewardClient
    from serve.config import RewardServiceConfig
    from serve.deployment import deploy, shutdown

    mp4s, prompts = _clips(cfg.hot_clips, seed=7)
    backend = OracleBackend() if cfg.service_model == "oracle" else TransformersBackend(cfg.service_model, threads=1)

    def direct():
        backend.score([read_video(m) for m in mp4s], prompts)

    direct_s = _time_steps(direct, 5, warmup=1)
    _start_local_ray()
    try:
        scfg = RewardServiceConfig(
            model=cfg.service_model,
            max_batch_size=cfg.hot_clips,
            max_ongoing_requests=2 * cfg.hot_clips,
            http_port=_free_port(),
            app_name="bench_hot",
        )
        deploy(scfg)
        client = RewardClient("bench_hot", timeout_s=300)
        served = _time_steps(lambda: client.score(mp4s, prompts), 5, warmup=1)
        shutdown(scfg)
    finally:
        _stop_local_ray()
    return {
        "model": cfg.service_model,
        "clips": cfg.hot_clips,
        "in_process_ms": round(1000 * _median(direct_s), 1),
        "serve_handle_ms": round(1000 * _median(served), 1),
        "serve_over_in_process": round(_median(served) / _median(direct_s), 3),
        "note": "both decode the mp4s and score them with one thread; the handle path adds Serve routing, "
        "the @serve.batch queue and object transfer",
    }


# ------------------------------------------------------------------------------------------ service
def _http_load(port: int, prefix: str, bodies: list[bytes], concurrency: int) -> dict:
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    def one(body: bytes) -> tuple[float, int]:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            conn.request("POST", prefix + "/score", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return time.perf_counter() - t0, resp.status
        finally:
            conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        res = list(ex.map(one, bodies))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in res])
    bad = [r[1] for r in res if r[1] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(bodies)} benchmark requests failed (status {bad[:5]})")
    return {
        "requests": len(bodies),
        "seconds": round(wall, 2),
        "videos_per_s": round(len(bodies) / wall, 2),
        "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
        "p99_ms": round(1000 * float(np.percentile(lat, 99)), 1),
    }


def bench_service(cfg: BenchConfig) -> dict:
    import base64

    from serve.config import RewardServiceConfig
    from serve.deployment import deploy, shutdown

    mp4s, prompts = _clips(cfg.service_requests, seed=11)
    bodies = [
        json.dumps({"prompt": p, "video_b64": base64.b64encode(m).decode()}).encode() for m, p in zip(mp4s, prompts)
    ]
    port = _free_port()
    out = {"model": cfg.service_model, "concurrency": cfg.service_concurrency}
    _start_local_ray()
    try:
        for name, batch in (("batch_1", 1), (f"batch_{cfg.service_batch}", cfg.service_batch)):
            scfg = RewardServiceConfig(
                model=cfg.service_model,
                max_batch_size=batch,
                max_ongoing_requests=max(batch, cfg.service_concurrency),
                http_port=port,
                app_name="bench_service",
                request_timeout_s=300,
            )
            deploy(scfg)
            _http_load(port, scfg.route_prefix, bodies[: cfg.service_concurrency], cfg.service_concurrency)  # warm-up
            out[name] = _http_load(port, scfg.route_prefix, bodies, cfg.service_concurrency)
            shutdown(scfg)
    finally:
        _stop_local_ray()
    b = out[f"batch_{cfg.service_batch}"]
    out["batching_speedup"] = round(b["videos_per_s"] / out["batch_1"]["videos_per_s"], 3)
    if cfg.service_model != "oracle":
        out["profile"] = _replica_profile(cfg, mp4s, prompts)
    return out


def _processor_stages(reward, vids: list, ps: list[str]) -> dict:
    import torch

    b, proc = len(vids), reward.processor
    res = {
        "sample_resize_ms": _time_steps(lambda: [proc.sampling.sample(v, 8.0, proc.geometry) for v in vids], 3),
        "processor_ms": _time_steps(lambda: proc(vids, ps, [8.0] * b), 3),
    }
    inputs = proc(vids, ps, [8.0] * b)
    with torch.no_grad():
        res["forward_ms"] = _time_steps(lambda: reward._forward(inputs), 3)
    return {k: round(1000 * _median(v) / b, 2) for k, v in res.items()}


def _replica_profile(cfg: BenchConfig, mp4s: list[bytes], prompts: list[str]) -> dict:
    """Where a replica's time goes per clip, in-process with the replica's one thread: decode, the VideoAlign
    processor (frame sampling and bicubic resize, patchify; tokenising the batch), the forward pass, at batch
    1 and at the service's batch size."""
    import torch

    from rlhf.video import read_video_fps
    from serve.backends import TransformersBackend

    threads = torch.get_num_threads()
    backend = TransformersBackend(cfg.service_model, threads=1)
    reward = backend.reward
    n = cfg.service_batch
    frames = [read_video_fps(m)[0] for m in mp4s[:n]]
    out = {"decode_ms": round(1000 * _median(_time_steps(lambda: [read_video_fps(m) for m in mp4s[:n]], 3)) / n, 2)}
    for b in (1, n):
        out[f"batch_{b}_per_clip"] = _processor_stages(reward, frames[:b], prompts[:b])
    out["forward_batching_speedup"] = round(
        out["batch_1_per_clip"]["forward_ms"] / out[f"batch_{n}_per_clip"]["forward_ms"], 3
    )
    torch.set_num_threads(threads)
    return out


# ------------------------------------------------------------------------------------------ online loop
def single_process_loop(ocfg, iterations: int) -> dict:
    """The online loop as flow_grpo / DanceGRPO-style scripts run it: one Python process, sequentially,
    with the same models and settings as the Ray job (sampler, reward backend, pair rule, global batch
    ``num_workers x micro_batch``, K AdamW steps with gradient clipping, oracle metrics)."""
    import torch

    from actors.generator import _oracle_scores
    from actors.online_config import prompt_batch
    from actors.preferences import block_rows, shuffled, to_tensors
    from rlhf.align.offline import read_prompts
    from rlhf.align.step import plain_update, train_step
    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator
    from rlhf.generator.sampler import sample
    from rlhf.video import encode_video, read_video
    from serve.backends import OracleBackend, TransformersBackend

    tc = ocfg.trainer
    torch.set_num_threads(os.cpu_count() or 2)
    t_start = time.time()
    gen = load_generator(ocfg.generator or DEFAULT_GENERATOR)
    torch.manual_seed(tc.seed)
    gen.add_lora(tc.lora_rank, tc.lora_alpha)
    params = gen.lora_parameters()
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=0.0)
    update = plain_update(opt, params, tc.grad_clip)
    backend = (
        OracleBackend()
        if ocfg.reward.model == "oracle"
        else TransformersBackend(ocfg.reward.model, threads=os.cpu_count() or 2)
    )
    prompts = read_prompts(ocfg.prompts)
    startup = time.time() - t_start
    algo, micro = tc.algo.algo, tc.micro_batch * tc.num_workers
    recs = []
    for it in range(iterations):
        t0 = time.time()
        texts, seeds = prompt_batch(ocfg, prompts, it)
        batch = sample(gen, texts, seeds, ocfg.sampler)
        mp4s = [encode_video(v, fps=gen.fps, crf=12) for v in batch.videos]
        t1 = time.time()
        scores = backend.score([read_video(m) for m in mp4s], texts)
        reward = np.array([[s["normalised"][d] for d in DIMS] for s in scores])
        t2 = time.time()
        oracle = _oracle_scores(mp4s, texts)
        t3 = time.time()
        cols = {
            "prompt": np.array(texts, dtype=object),
            "seed": np.asarray(seeds, np.int64),
            "policy_version": np.full(len(texts), it, np.int64),
            **{f"r_{d}": reward[:, i] for i, d in enumerate(DIMS)},
            "latent": batch.latents.numpy().astype(np.float32),
        }
        data = to_tensors(shuffled(block_rows(cols, ocfg.pairs, algo, ocfg.seed, it)), algo)
        t4 = time.time()
        n = len(data["prompt"])
        trng = torch.Generator().manual_seed(int(np.random.default_rng([tc.seed, it]).integers(2**62)))
        if n:
            with torch.no_grad():
                emb = dict(zip(sorted(set(data["prompt"])), gen.encode_prompts(sorted(set(data["prompt"])))))
            for k in range(ocfg.steps_per_iter):
                idx = np.array([(k * micro + j) % n for j in range(min(micro, n))])
                step = {key: v[idx] for key, v in data.items() if key != "prompt"}
                step["text"] = torch.stack([emb[data["prompt"][i]] for i in idx])
                train_step(gen, step, tc.algo, trng, update)
        t5 = time.time()
        ph = {
            "generate": t1 - t0,
            "reward": t2 - t1,
            "oracle_metrics": t3 - t2,
            "data": t4 - t3,
            "train": t5 - t4,
            "iteration": t5 - t0,
        }
        recs.append({"iteration": it, "videos": len(texts), "rows": n, "phases": ph, "oracle": oracle.mean(0).tolist()})
    return {"startup_s": round(startup, 1), "records": recs}


def _child(queue, fn, args) -> None:
    queue.put(fn(*args))


def _in_child(fn, *args):
    """``fn(*args)`` in a fresh (spawned) process; its result."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    try:
        return queue.get()
    finally:
        proc.join()


def _loop_summary(recs: list[dict], startup_s: float) -> dict:
    wall = sum(r["phases"]["iteration"] for r in recs)
    videos = sum(r["videos"] for r in recs)
    steady = recs[1:] or recs
    phases = sorted({k for r in recs for k in r["phases"]} - {"iteration"})
    share = {k: round(sum(r["phases"].get(k, 0.0) for r in recs) / wall, 4) for k in phases}
    steady_wall = sum(r["phases"]["iteration"] for r in steady)
    return {
        "iterations": len(recs),
        "videos": videos,
        "loop_seconds": round(wall, 1),
        "startup_seconds": round(startup_s, 1),
        "videos_per_s": round(videos / wall, 4),
        "steady_videos_per_s": round(sum(r["videos"] for r in steady) / steady_wall, 4),
        "videos_per_s_with_startup": round(videos / (wall + startup_s), 4),
        "iteration_seconds": [round(r["phases"]["iteration"], 1) for r in recs],
        "phase_share": share,
        "steady_phase_share": {k: round(sum(r["phases"].get(k, 0.0) for r in steady) / steady_wall, 4) for k in phases},
    }


def bench_loop(cfg: BenchConfig) -> dict:
    from actors.online import OnlineConfig, run
    from rlhf.config import load_config

    tmp = Path(tempfile.mkdtemp(prefix="bench_loop_"))
    # the oracle serves the loop's reward, as when docs/results/bench.md was measured (the learned reward costs more)
    base = [
        f"iterations={cfg.loop_iterations}",
        "eval_n_prompts=0",
        "checkpoint_every=0",
        "progress=false",
        "report_clips=-1",
        "reward.model=oracle",
        *cfg.loop_overrides,
    ]
    out = {"config": base}
    try:
        ocfg = load_config(OnlineConfig, overrides=[*base, f"out={tmp / 'single'}"])
        ocfg.validate()
        print("  single-process baseline ...", flush=True)
        with MemorySampler(cfg.memory_interval_s) as mem:  # a child process: the driver's memory stays the Ray runs'
            res = _in_child(single_process_loop, ocfg, cfg.loop_iterations)
        out["single_process"] = {**_loop_summary(res["records"], res["startup_s"]), "memory": mem.result()}
        for mode in ("sync", "one_step_off"):
            print(f"  Ray system, {mode} ...", flush=True)
            ocfg = load_config(OnlineConfig, overrides=[*base, f"out={tmp / mode}", f"mode={mode}"])
            with MemorySampler(cfg.memory_interval_s) as mem:
                summary = run(ocfg)
            recs = [json.loads(ln) for ln in (tmp / mode / "metrics.jsonl").read_text().splitlines() if ln.strip()]
            # start-up: from the job's start to its first iteration's launch (the job measures it)
            s = _loop_summary(recs, summary["startup_s"])
            s["memory"] = mem.result()
            s["policy_version"] = summary["policy_version"]
            out[f"ray_{mode}"] = s
            b = out["single_process"]["videos_per_s"]
            s["throughput_vs_single_process"] = round(s["videos_per_s"] / b, 3)
            s["steady_throughput_vs_single_process"] = round(
                s["steady_videos_per_s"] / out["single_process"]["steady_videos_per_s"], 3
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_gpu(cfg: BenchConfig) -> dict:
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        import subprocess

        path = Path(cfg.out).with_name("gpu.json")
        subprocess.run([sys.executable, str(ROOT / "jobs" / "bench_gpu.py"), "--out", str(path)], check=True)
        return {"measured_here": True, **json.loads(path.read_text())}
    runs = sorted((ROOT / "docs" / "results").glob("bench_gpu_*.json"))
    if not runs:
        return {"measured_here": False, "note": "no CUDA device here and no committed GPU run"}
    return {"measured_here": False, "source": str(runs[-1].relative_to(ROOT)), **json.loads(runs[-1].read_text())}


def bench_scaling_runs(cfg: BenchConfig) -> dict:
    """The scaling model checked against this machine (actors/scaling.py)."""
    from actors.scaling import bench_scaling

    runs = [(int(n), int(m), mode) for n, m, mode in (r.split(",") for r in cfg.scaling_runs)]
    return bench_scaling(cfg, configs=runs)


BENCHES = {
    "dataset": bench_dataset,
    "hot": bench_hot,
    "service": bench_service,
    "loop": bench_loop,
    "gpu": bench_gpu,
    "scaling": bench_scaling_runs,
}


def table(results: dict) -> str:
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    add = lambda b, f, v: lines.append(f"| {b} | {f} | {v} |")  # noqa: E731
    if "dataset" in results:
        r = results["dataset"]
        add("dataset", f"seconds for {r['pairs']} pairs ({r['workers']} workers)", r["seconds"])
        add("dataset", "pairs per second", r["pairs_per_second"])
        for k, v in r["ms_per_video"].items():
            add("dataset", f"{k} ms per video (1 process)", v)
    if "hot" in results:
        d, r = results["hot"]["flow_dpo_step"], results["hot"]["reward_forward"]
        add(
            "hot",
            f"Flow-DPO step ({d['pairs_per_step']} pairs): plain PyTorch / DeepSpeed ms",
            f"{d['plain_pytorch_ms']} / {d['deepspeed_ms']} ({d['deepspeed_over_plain']}x)",
        )
        add(
            "hot",
            f"reward forward ({r['clips']} clips, {r['model']}): in-process / Serve handle ms",
            f"{r['in_process_ms']} / {r['serve_handle_ms']} ({r['serve_over_in_process']}x)",
        )
    if "service" in results:
        r = results["service"]
        for k in [k for k in r if k.startswith("batch_")]:
            v = r[k]
            add(
                "service",
                f"{k} ({r['model']}, {r['concurrency']} clients): videos/s, p50 / p99 ms",
                f"{v['videos_per_s']}, {v['p50_ms']} / {v['p99_ms']}",
            )
        add("service", "dynamic batching speed-up", f"{r['batching_speedup']}x")
        if "profile" in r:
            p, n = r["profile"], [k for k in r["profile"] if k.startswith("batch_") and k != "batch_1_per_clip"][0]
            for k in ("batch_1_per_clip", n):
                v = p[k]
                add(
                    "service",
                    f"replica ms per clip, {k.split('_per')[0].replace('_', ' ')} (1 thread): decode / processor "
                    "(of which sample+resize) / forward",
                    f"{p['decode_ms']} / {v['processor_ms']} ({v['sample_resize_ms']}) / {v['forward_ms']}",
                )
    if "loop" in results:
        r = results["loop"]
        for k in ("single_process", "ray_sync", "ray_one_step_off"):
            if k not in r:
                continue
            v = r[k]
            ratio = (
                f" ({v['throughput_vs_single_process']}x; steady {v['steady_throughput_vs_single_process']}x)"
                if "throughput_vs_single_process" in v
                else ""
            )
            add("loop", f"{k}: videos/s over {v['iterations']} iterations", f"{v['videos_per_s']}{ratio}")
            add(
                "loop",
                f"{k}: start-up s (to iteration 0's launch); seconds per iteration",
                f"{v['startup_seconds']}; {', '.join(str(x) for x in v['iteration_seconds'])}",
            )
            add(
                "loop",
                f"{k}: time share per phase",
                ", ".join(f"{p} {100 * s:.1f}%" for p, s in v["phase_share"].items()),
            )
            add(
                "loop",
                f"{k}: peak RSS MiB (whole run {v['memory']['peak_total_mib']})",
                ", ".join(f"{p} {m}" for p, m in v["memory"]["peak_by_role_mib"].items()),
            )
    if "scaling" in results:
        r = results["scaling"]
        for name, measured in r.get("measured", {}).items():
            add("scaling", f"{name}: measured / model iteration s", f"{measured:.1f} / {r['predicted'][name]:.1f}")
    if "gpu" in results and "wan" in results["gpu"]:
        g = results["gpu"]
        w, rw = g["wan"], g["reward"]
        src = "measured here" if g["measured_here"] else g["source"]
        add(
            "gpu",
            f"{g['device']} ({src}): Wan-1.3B-shaped Flow-DPO step, {w['latent_tokens_per_clip']} tokens/clip",
            f"{w['wan_dpo_step']['latent_tokens_per_s']} latent tokens/s ({w['wan_dpo_step']['median_s']} s/pair)",
        )
        add(
            "gpu",
            f"{g['device']}: Wan-1.3B-shaped sampling step (CFG batch 2)",
            f"{w['wan_sample_step']['latent_tokens_per_s']} latent tokens/s",
        )
        add(
            "gpu",
            f"{g['device']}: Qwen2-VL-2B-shaped reward forward",
            f"{rw['reward_forward']['clips_per_s']} clips/s ({rw['reward_forward']['visual_tokens_per_s']} visual tokens/s)",
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(BenchConfig, argv, __doc__.splitlines()[0])
    # every benchmark starts and stops its own cluster: a Ray call after a stop must fail, not start another one
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    unknown = [b for b in cfg.only if b not in BENCHES]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; available: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.is_file() else {}  # other benchmarks of an earlier run stay
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    for name in cfg.only or list(BENCHES):
        print(f"running {name} ...", flush=True)
        t0 = time.time()
        results[name] = BENCHES[name](cfg)
        results[name]["bench_seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(results, indent=2))  # what is measured is kept if a later benchmark fails
    text = table(results)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
