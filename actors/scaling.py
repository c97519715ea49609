# Long on purpose: the model, its calibration from measured runs, the GPU table and the benchmark that measures are one
# argument, read top to bottom; splitting them would scatter the formulas the docstring states once.
"""The online loop's scaling model: measured per-role costs predict its throughput on N, M and R devices.

Per-role costs measured on this machine (and by the GPU check) predict an iteration's seconds and clips per second
on N generator devices, M trainer workers and R reward replicas, in sync and one-step-off mode
(``python -m actors.scaling`` writes ``docs/results/scaling.md``; ``jobs/bench.py only=[scaling]`` measures).

Where it fits: ``actors/bench.py`` runs the online job (``actors/online.py``) at the sizes this machine allows and
keeps each run's ``metrics.jsonl`` phases (``IterationRecord.phases``, written by ``actors/online_eval.py``);
this module turns those into per-role costs (``RoleCosts``), checks the model against every measured size, and
sizes a GPU deployment of Wan2.1-1.3B from ``docs/results/bench_gpu_*.json`` and
``jobs/configs/wan21_t2v_1.3b.yaml`` (``docs/results/scaling.md``). Pure Python and numpy: Ray and torch are
imported only by ``bench_scaling`` (it runs jobs) and ``main`` (it reads the typed online config).

The model, for one steady-state iteration of B clips (prompt groups of G), K optimiser steps and the costs below:

    clips per actor  b   = G * ceil(B / (G * N))          whole prompt groups per actor (actors.run.split_even)
    generate             = b * gen_s
    reward               = B * reward_s / R                after generation: every actor samples all its clips,
                                                           then has them scored, and equal shares finish together
                                                           (scoring each sampler batch while the next one samples
                                                           would hide all but the last: not what rollout does)
    oracle metrics       = b * oracle_s                    world-only; 0 on a real cluster
    all-reduce(M)        = lat * (M - 1) + 2 (M - 1) / M * lora_bytes / bw     ring; bw across nodes when M > per node
    train                = K * (train_s + all-reduce(M))   weak scaling: each worker takes micro_batch rows per step
    sample = generate + reward + oracle;   learn = data + train + sync
    sync mode            T = sample + learn + overhead
    one-step-off         T = max(sample, learn) + overhead  (batch i + 1 samples while the trainer trains on i)

Weak scaling is this project's trainer (``actors/trainer.py``): a worker takes K steps of ``micro_batch`` rows of
its shard, so M workers train K * M * micro_batch rows per iteration and more workers never shorten an iteration;
they raise the rows trained. A split must therefore give the trainer the rows the pair rule makes
(K * M * micro_batch >= B * rows_per_clip), which is what sets M in the GPU table.

On a CPU machine (``cores`` given) every actor and worker is one thread and all share ``cores`` cores: a phase
run by several processes at once takes at least its CPU-seconds / cores (generate >= B * gen_s / cores; the same
for reward, oracle and each train step: train_s * max(1, M / cores)), and a one-step-off iteration takes at least
the CPU-seconds of all its phases / cores (the all-reduce counted once, as its wall time: it mostly waits).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rlhf.artefacts import repo_relative
from rlhf.config import parse_cli

MODES = ("sync", "one_step_off")  # the online job's modes (actors.online_config.MODES, which imports torch)
SIZES = ((1, 1), (2, 1), (1, 2), (2, 2))  # (generator actors, trainer workers) this 2-core machine runs
CONFIGS = tuple((n, m, mode) for n, m in SIZES for mode in MODES)

# GPU figures the GPU check does not measure (each is stated in the table's notes)
NVLINK_BW = 150e9  # bytes/s: effective all-reduce bus bandwidth within a node (NVLink)
NETWORK_BW = 25e9  # bytes/s: across nodes
ALLREDUCE_LATENCY_S = 50e-6  # per ring hop
GPUS_PER_NODE = 8
OBJECT_STORE_BW = 2e9  # bytes/s: a LoRA blob through Ray's object store (publish, then every generator fetches)
CALIBRATION = (1, 1, "sync")  # the run the costs are read from: its phases run one after another


@dataclass
class RoleCosts:
    """Per-role costs of one online iteration, and the loop's shape they were measured at."""

    clips: int  # B: clips per iteration (prompts_per_iter x group)
    group: int  # G: clips per prompt; an actor gets whole groups
    steps: int  # K: optimiser steps per iteration
    micro_batch: int  # rows per trainer worker per step
    gen_s_per_clip: float  # one generator device: sampling (VAE decode included), text encoding, H.264 encoding
    reward_s_per_clip: float  # one reward replica
    train_s_per_step: float  # one trainer worker, one optimiser step of micro_batch rows, without the all-reduce
    data_s: float  # per iteration: Ray Data pairs and statistics (driver)
    sync_s: float  # per iteration: weight publish and fetch
    overhead_s: float  # per iteration: the driver's time outside every phase above
    lora_bytes: float  # the all-reduced gradients (fp32 LoRA)
    oracle_s_per_clip: float = 0.0  # world-only metrics in each actor (0 on real clusters)
    allreduce_latency_s: float = 0.0  # per ring hop
    allreduce_bandwidth: float | None = None  # bytes/s within a node (None: no bandwidth term)
    allreduce_bandwidth_across: float | None = None  # bytes/s across nodes (None: as within a node)
    devices_per_node: int = 0  # trainer devices per node (0: one node)
    notes: list[str] = field(default_factory=list)  # how each figure was obtained

    def allreduce_s(self, m: int) -> float:
        """Ring all-reduce of the LoRA gradients over ``m`` workers: lat (m - 1) + 2 (m - 1) / m bytes / bw."""
        if m <= 1:
            return 0.0
        bw = self.allreduce_bandwidth
        if self.devices_per_node and m > self.devices_per_node and self.allreduce_bandwidth_across:
            bw = self.allreduce_bandwidth_across  # a ring is as fast as its slowest link
        t = self.allreduce_latency_s * (m - 1)
        return t + (2 * (m - 1) / m * self.lora_bytes / bw if bw else 0.0)

    def clips_per_actor(self, n_gen: int) -> int:
        """Clips of the slowest actor: whole prompt groups split as evenly as they go."""
        return self.group * math.ceil(self.clips / (self.group * n_gen))


def throughput(
    costs: RoleCosts, n_gen: int, m_train: int, mode: str, cores: int | None = None, reward_replicas: int = 1
) -> dict:
    """Predicted seconds of one steady-state iteration and clips per second (the model in the module docstring).

    ``cores``: a CPU machine whose ``cores`` cores every role shares (one thread per actor, replica and worker):
    each phase takes at least its CPU-seconds / cores, and a one-step-off iteration at least the CPU-seconds of
    all its phases / cores. None: every role has its own devices."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for name, v in (("n_gen", n_gen), ("m_train", m_train), ("reward_replicas", reward_replicas)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if cores is not None and cores < 1:
        raise ValueError(f"cores must be >= 1 or None, got {cores}")
    c = costs
    b = c.clips_per_actor(n_gen)
    gen, oracle = b * c.gen_s_per_clip, b * c.oracle_s_per_clip
    reward = c.clips * c.reward_s_per_clip / reward_replicas
    step = c.train_s_per_step
    if cores:
        gen = max(gen, c.clips * c.gen_s_per_clip / cores)
        oracle = max(oracle, c.clips * c.oracle_s_per_clip / cores)
        reward = max(reward, c.clips * c.reward_s_per_clip / cores)
        step = c.train_s_per_step * max(1.0, m_train / cores)
    train = c.steps * (step + c.allreduce_s(m_train))
    sample, learn = gen + reward + oracle, c.data_s + train + c.sync_s
    if mode == "sync":
        t, bound = sample + learn + c.overhead_s, "sum of phases"
    else:
        t, bound = max(sample, learn) + c.overhead_s, "sampling" if sample >= learn else "training"
        if cores:
            cpu = (
                c.clips * (c.gen_s_per_clip + c.reward_s_per_clip + c.oracle_s_per_clip)
                + c.data_s
                + c.steps * (m_train * c.train_s_per_step + c.allreduce_s(m_train))
                + c.sync_s
                + c.overhead_s
            )
            if cpu / cores > t:
                t, bound = cpu / cores, f"{cores} cores"
    return {
        "mode": mode,
        "n_gen": n_gen,
        "m_train": m_train,
        "reward_replicas": reward_replicas,
        "cores": cores,
        "clips": c.clips,
        "rows_trained": c.steps * m_train * c.micro_batch,
        "phases": {
            "generate": gen,
            "reward": reward,
            "oracle": oracle,
            "data": c.data_s,
            "train": train,
            "weight_sync": c.sync_s,
            "overhead": c.overhead_s,
        },
        "iteration_s": t,
        "clips_per_s": c.clips / t,
        "bound": bound,
    }


# ------------------------------------------------------------------------------------------ measured costs
def steady_records(records: list[dict]) -> list[dict]:
    """The records of a run's steady state: without iteration 0 (cold start) when there are more, and in
    one-step-off without the last iteration (queue depth 0: no next batch samples while it trains)."""
    recs = records[1:] if len(records) > 1 else list(records)
    if any(r.get("queue_depth", 0) for r in recs):
        recs = [r for r in recs if r.get("queue_depth", 0)] or recs
    if not recs:
        raise ValueError("no iteration records: the run wrote an empty metrics.jsonl")
    return recs


def mean_phases(records: list[dict]) -> dict[str, float]:
    """Mean seconds per phase over ``records`` (a phase a record lacks counts 0)."""
    keys = sorted({k for r in records for k in r["phases"]})
    return {k: float(np.mean([r["phases"].get(k, 0.0) for r in records])) for k in keys}


def measured_iteration_s(records: list[dict]) -> float:
    """Mean steady-state iteration seconds of a run, without checkpoint time (the benchmark's runs checkpoint
    only at the end, which the model leaves out)."""
    p = mean_phases(steady_records(records))
    return p["iteration"] - p.get("checkpoint", 0.0)


def costs_from_records(
    records: list[dict],
    *,
    steps: int,
    micro_batch: int,
    group: int = 1,
    n_gen: int = 1,
    m_train: int = 1,
    lora_bytes: float = 0.0,
    reward_replicas: int = 1,
    cores: int | None = None,
    allreduce_latency_s: float = 0.0,
) -> RoleCosts:
    """Per-role costs from a sync run's ``metrics.jsonl`` records (``IterationRecord`` dicts) with ``n_gen``
    actors, ``m_train`` workers and ``reward_replicas`` replicas; iteration 0 is left out when there are more.

    ``generate`` is the slowest actor's seconds for its clips; ``reward_wait`` the slowest actor's wait for the
    batch's scores; the oracle's seconds are ``phases["oracle"]`` when recorded, else what of ``rollout_wait`` the
    generate, reward and weight-sync phases leave (a lower bound: weight_sync also holds the trainer's publish,
    which is outside the rollout); ``train`` is K steps plus the all-reduce model with ``allreduce_latency_s``.
    The overhead is what the iteration (checkpoint left out) spends outside all of them, so that the model gives
    back the measured iteration at the run's own size."""
    if any(r.get("queue_depth", 0) for r in records):
        raise ValueError(
            "costs come from a sync run's records: these have queue_depth > 0 (one-step-off), whose overlapped "
            "phases hide each role's cost"
        )
    recs = steady_records(records)
    p = mean_phases(recs)
    clips = int(recs[0]["videos"])
    per_actor = group * math.ceil(clips / (group * n_gen))
    if cores:
        per_actor = max(per_actor, clips / cores)
    replicas = min(reward_replicas, cores) if cores else reward_replicas
    if "oracle" in p:
        oracle = p["oracle"]
    else:
        oracle = max(0.0, p["rollout_wait"] - p["generate"] - p["reward_wait"] - p["weight_sync"])
    costs = RoleCosts(
        clips=clips,
        group=group,
        steps=steps,
        micro_batch=micro_batch,
        gen_s_per_clip=p["generate"] / per_actor,
        reward_s_per_clip=p["reward_wait"] * replicas / clips,
        oracle_s_per_clip=oracle / per_actor,
        train_s_per_step=0.0,
        data_s=p["data"],
        sync_s=p["weight_sync"],
        overhead_s=0.0,
        lora_bytes=lora_bytes,
        allreduce_latency_s=allreduce_latency_s,
    )
    step = p["train"] / steps - costs.allreduce_s(m_train)
    costs.train_s_per_step = max(step, 0.0) / (max(1.0, m_train / cores) if cores else 1.0)
    busy = p["weight_sync"] + p["generate"] + p["reward_wait"] + oracle + p["data"] + p["train"]
    costs.overhead_s = max(0.0, p["iteration"] - p.get("checkpoint", 0.0) - busy)
    costs.notes = [
        f"from {len(recs)} steady iteration(s) of a sync run with {n_gen} generator actor(s), {m_train} trainer "
        f"worker(s), {reward_replicas} reward replica(s)" + (f" on {cores} cores" if cores else ""),
        "oracle: " + ("the recorded phase" if "oracle" in p else "rollout_wait - generate - reward_wait - weight_sync"),
    ]
    return costs


def run_name(n_gen: int, m_train: int, mode: str) -> str:
    return f"gen{n_gen}_train{m_train}_{mode}"


def calibrate(runs: dict, loop: dict) -> dict:
    """Costs from the (1 actor, 1 worker, sync) run of ``runs`` (the benchmark's section), the all-reduce from the
    (1, 2, sync) run's extra train seconds per step, and the model's prediction for every run.

    ``runs``: run_name -> {"n_gen", "m_train", "mode", "records"}; ``loop``: the loop's shape ("steps",
    "micro_batch", "group", "lora_bytes", "cores")."""
    base = runs.get(run_name(*CALIBRATION))
    if base is None:
        raise ValueError(
            f"the costs are read from the {run_name(*CALIBRATION)} run, which is not among {sorted(runs)}: "
            "include (1, 1, 'sync') in the configs"
        )
    cores = loop.get("cores")
    k = loop["steps"]
    two = runs.get(run_name(1, 2, "sync"))
    latency = 0.0
    if two is not None:  # one measured size: all of the second worker's extra per step goes into the latency term
        extra = (
            mean_phases(steady_records(two["records"]))["train"] - mean_phases(steady_records(base["records"]))["train"]
        )
        latency = max(0.0, extra / k)
    costs = costs_from_records(
        base["records"],
        steps=k,
        micro_batch=loop["micro_batch"],
        group=loop["group"],
        lora_bytes=loop["lora_bytes"],
        cores=cores,
        allreduce_latency_s=latency,
    )
    costs.notes.append(
        f"all-reduce: {1000 * latency:.1f} ms per step at 2 workers, the extra train seconds per step of the "
        f"{run_name(1, 2, 'sync')} run, all of it in the latency term (one measured size cannot separate latency "
        "from bandwidth)"
        if two is not None
        else "all-reduce: not measured (no 2-worker sync run): 0"
    )
    measured = {name: measured_iteration_s(r["records"]) for name, r in runs.items()}
    predicted = {
        name: throughput(costs, r["n_gen"], r["m_train"], r["mode"], cores=cores)["iteration_s"]
        for name, r in runs.items()
    }
    return {"costs": asdict(costs), "measured": measured, "predicted": predicted}


def check_table(measured: dict[str, float], predicted: dict[str, float]) -> str:
    """Markdown rows: measured against predicted steady-state iteration seconds, per size and mode."""
    lines = [
        "| generator actors N | trainer workers M | mode | measured s | predicted s | predicted / measured |",
        "|---|---|---|---|---|---|",
    ]
    for n, m, mode in CONFIGS:
        name = run_name(n, m, mode)
        if name in measured and name in predicted:
            lines.append(
                f"| {n} | {m} | {mode} | {measured[name]:.1f} | {predicted[name]:.1f} | "
                f"{predicted[name] / measured[name]:.2f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ GPU deployment
def rows_per_clip(algo: str, pair_mode: str, group: int) -> float:
    """Training rows the pair rule makes per clip, at most: RWR one per clip; DPO best-vs-worst one per group;
    DPO margin every pair of a group, G (G - 1) / 2 per G clips (ties under the margin make fewer)."""
    if algo == "rwr":
        return 1.0
    return (group - 1) / 2 if pair_mode == "margin" else 1.0 / group


def costs_from_gpu_check(gpu: dict, online, driver: RoleCosts | None = None) -> RoleCosts:
    """Costs of Wan2.1-1.3B with a Qwen2-VL-2B VideoReward on the GPU check's device (``gpu``: the JSON of
    ``jobs/bench_gpu.py``) at the loop shape of ``online`` (an ``OnlineConfig``, e.g. wan21_t2v_1.3b.yaml).
    ``driver``: costs measured on a CPU machine whose per-iteration data and driver overhead seconds are taken
    (CPU work in any deployment); None: 1 s each, assumed."""
    w, r = gpu["wan"], gpu["reward"]
    data_s, overhead_s = (driver.data_s, driver.overhead_s) if driver else (1.0, 1.0)
    steps = online.sampler.steps
    lora_bytes = w["lora_params_m"] * 1e6 * 4
    micro = online.trainer.micro_batch
    dev = gpu.get("device", "the GPU check's device")
    return RoleCosts(
        clips=online.prompts_per_iter * online.group,
        group=online.group,
        steps=online.steps_per_iter,
        micro_batch=micro,
        gen_s_per_clip=w["wan_sample_step"]["median_s"] * steps,
        reward_s_per_clip=1.0 / r["reward_forward"]["clips_per_s"],
        train_s_per_step=w["wan_dpo_step"]["median_s"] * micro,
        data_s=data_s,
        sync_s=2 * lora_bytes / OBJECT_STORE_BW,
        overhead_s=overhead_s,
        lora_bytes=lora_bytes,
        allreduce_latency_s=ALLREDUCE_LATENCY_S,
        allreduce_bandwidth=NVLINK_BW,
        allreduce_bandwidth_across=NETWORK_BW,
        devices_per_node=GPUS_PER_NODE,
        notes=[
            f"generation: {w['wan_sample_step']['median_s']} s per Euler step with classifier-free guidance "
            f"(cond + uncond as a batch of 2, {dev}) x {steps} sampler steps, one clip at a time per GPU; the "
            "UMT5 text encoding, the VAE decode and the H.264 encode are not in the GPU check and are left out "
            "(generation is a lower bound)",
            f"reward: 1 / {r['reward_forward']['clips_per_s']} clips/s per replica GPU (Qwen2-VL-2B shape, 16 "
            "frames at 448x448, batch 4: Serve's dynamic batching is assumed to reach that batch)",
            f"train: {w['wan_dpo_step']['median_s']} s per Flow-DPO pair (policy forward with activation "
            f"checkpointing on both clips, reference forward, backward, AdamW on the LoRA) x micro_batch {micro}",
            f"all-reduce: ring over the fp32 LoRA gradients ({w['lora_params_m']} M parameters x 4 bytes), "
            f"{ALLREDUCE_LATENCY_S * 1e6:.0f} us per hop, {NVLINK_BW / 1e9:.0f} GB/s within a node of "
            f"{GPUS_PER_NODE} GPUs (NVLink), {NETWORK_BW / 1e9:.0f} GB/s across nodes; once per step, not "
            "overlapped with the backward pass (DeepSpeed overlaps part of it: an upper bound)",
            f"weight sync: the fp32 LoRA published once and fetched by every generator in parallel through Ray's "
            f"object store at {OBJECT_STORE_BW / 1e9:.0f} GB/s (2 x bytes / bandwidth)",
            f"data and driver overhead: {data_s:.2f} s and {overhead_s:.2f} s per iteration, "
            + ("measured on the CPU machine" if driver else "assumed")
            + ", independent of the batch size",
        ],
    )


def _best(costs: RoleCosts, total: int, mode: str, rows: float, clips_of, tolerance: float) -> dict | None:
    """The smallest split (N, M, R >= 1, N + M + R <= total) within ``tolerance`` of the best clips/s whose
    trainer takes every row the pair rule makes; None if no split fits. M is the least that takes the rows: with
    weak scaling a larger M only adds all-reduce time and GPUs, so no larger M can be faster or smaller."""
    found = []
    for n in range(1, total - 1):
        c = replace(costs, clips=clips_of(n))
        m = max(1, math.ceil(c.clips * rows / (c.steps * c.micro_batch)))
        for r in range(1, total - n - m + 1):
            found.append((throughput(c, n, m, mode, reward_replicas=r), n + m + r))
    if not found:
        return None
    top = max(t["clips_per_s"] for t, _ in found)
    t, used = min(((t, u) for t, u in found if t["clips_per_s"] >= (1 - tolerance) * top), key=lambda x: x[1])
    return {**t, "gpus": used}


def gpu_table(
    costs: RoleCosts,
    totals=(8, 32, 128),
    rows_per_clip: float = 0.0,
    clips_per_generator: float | None = None,
    tolerance: float = 0.01,
) -> list[dict]:
    """For each total GPU count, scenario and mode: the best split into N generator, M trainer and R reward GPUs
    (all splits searched; the smallest within ``tolerance`` of the best clips/s), its iteration seconds, clips/s
    and speed-up over the first total of the same scenario and mode.

    Scenarios: "fixed batch" keeps B = costs.clips (generators beyond B / G idle: throughput saturates);
    "batch grows" gives every generator GPU ``clips_per_generator`` clips (B = G ceil(c N / G)), which is how one
    deploys more generators. ``rows_per_clip``: the trainer must take the rows the pair rule makes, so
    K M micro_batch >= B rows_per_clip sets the least M."""
    g = costs.group
    scenarios = [("fixed batch", lambda n: costs.clips)]
    if clips_per_generator:
        scenarios.append(("batch grows", lambda n: g * math.ceil(clips_per_generator * n / g)))
    out = []
    for scenario, clips_of in scenarios:
        for mode in MODES:
            first = None
            for total in totals:
                best = _best(costs, total, mode, rows_per_clip, clips_of, tolerance)
                if best is None:
                    continue
                first = first or best
                out.append(
                    {
                        "total": total,
                        "scenario": scenario,
                        **best,
                        "speedup": best["clips_per_s"] / first["clips_per_s"],
                    }
                )
    return out


def weak_scaling(costs: RoleCosts, n_gen: int, workers=(1, 2, 4, 8, 16, 32), mode: str = "sync") -> list[dict]:
    """Iteration seconds and rows trained as trainer workers are added at a fixed K (and N, B): the iteration
    never gets shorter (the all-reduce grows), the rows trained grow with M."""
    return [throughput(costs, n_gen, m, mode) for m in workers]


# ------------------------------------------------------------------------------------------ report
def costs_table(costs: RoleCosts) -> str:
    c = costs
    rows = [
        ("clips per iteration B (group G)", f"{c.clips} ({c.group})"),
        ("optimiser steps K, rows per worker per step", f"{c.steps}, {c.micro_batch}"),
        ("generate s per clip (one generator device)", f"{c.gen_s_per_clip:.4g}"),
        ("reward s per clip (one replica)", f"{c.reward_s_per_clip:.4g}"),
        ("oracle metrics s per clip", f"{c.oracle_s_per_clip:.4g}"),
        ("train s per step (one worker, no all-reduce)", f"{c.train_s_per_step:.4g}"),
        ("all-reduce s at 2 / 8 / 32 workers", " / ".join(f"{c.allreduce_s(m):.4g}" for m in (2, 8, 32))),
        ("data s per iteration", f"{c.data_s:.3g}"),
        ("weight sync s per iteration", f"{c.sync_s:.3g}"),
        ("driver overhead s per iteration", f"{c.overhead_s:.3g}"),
        ("LoRA bytes", f"{c.lora_bytes:.4g}"),
    ]
    return "\n".join(["| cost | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def table_markdown(rows: list[dict]) -> str:
    lines = [
        "| GPUs | scenario | mode | N gen | M train | R reward | used | B | iteration s | clips/s | clips/s per "
        "used GPU | speed-up | bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['total']} | {r['scenario']} | {r['mode']} | {r['n_gen']} | {r['m_train']} | "
            f"{r['reward_replicas']} | {r['gpus']} | {r['clips']} | {r['iteration_s']:.1f} | "
            f"{r['clips_per_s']:.3f} | {r['clips_per_s'] / r['gpus']:.4f} | {r['speedup']:.2f}x | {r['bound']} |"
        )
    return "\n".join(lines)


def weak_markdown(rows: list[dict]) -> str:
    lines = ["| M trainer workers | iteration s | train s | rows trained |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['m_train']} | {r['iteration_s']:.2f} | {r['phases']['train']:.2f} | {r['rows_trained']} |")
    return "\n".join(lines)


def markdown(cpu: dict | None, gpu_costs: RoleCosts, rows: list[dict], weak: list[dict], sources: dict) -> str:
    """The whole ``docs/results/scaling.md``: the model, the check against this machine (``cpu``: calibrate's
    result with the benchmark's loop shape, None when not measured), the GPU costs, the table and the
    weak-scaling sweep."""
    measured = sources["measured"] or "''"
    out = [
        "# Scaling model of the online loop",
        "",
        f"Written by `python -m actors.scaling --measured {measured} --out {sources['out']}` "
        f"from the benchmark's `scaling` section (`python jobs/bench.py only=[scaling]`), `{sources['gpu']}` and "
        f"`{sources['online']}`. The model and its rules are in `actors/scaling.py`'s docstring:",
        "",
        "    generate = G ceil(B / (G N)) gen_s;  reward = B reward_s / R;  train = K (train_s + all-reduce(M))",
        "    all-reduce(M) = lat (M - 1) + 2 (M - 1) / M lora_bytes / bw",
        "    sync: T = generate + reward + oracle + data + train + weight sync + overhead",
        "    one-step-off: T = max(generate + reward + oracle, data + train + weight sync) + overhead",
        "",
        "## Check against this machine",
        "",
    ]
    if cpu is None:
        out += ["Not measured: no benchmark `scaling` section was given.", ""]
    else:
        loop = cpu["loop"]
        costs = RoleCosts(**cpu["costs"])
        out += [
            f"The online job (`reward.model=oracle`, {loop['iterations']} iterations per run, "
            f"`{' '.join(loop.get('overrides', []))}`) at each size this {loop['cores']}-core machine runs; measured: "
            "mean steady-state iteration seconds (iteration 0 and, in one-step-off, the last iteration left out; "
            "checkpoint time left out); predicted: the model with the costs below, every role sharing "
            f"{loop['cores']} cores. The 1-actor 1-worker sync run is the one the costs are read from, so it is "
            "reproduced by construction; the other rows test the model.",
            "",
            check_table(cpu["measured"], cpu["predicted"]),
            "",
            "Where the model falls short here it underpredicts, most with the most busy processes per core (two actors,"
            " two workers and the replica on 2 cores, more so in one-step-off where all of them run at once): it counts"
            " each phase's CPU-seconds against the cores but not what oversubscribing them costs (context switches,"
            " caches, the Ray system's, Serve's and Ray Train's own processes polling and reporting). On GPUs each"
            " role has its own device and these costs do not arise; a one-step-off run here also has a single steady"
            " iteration (iteration 0 and the last are left out), so its row carries one sample's noise.",
            "",
            "Per-role costs measured here:",
            "",
            costs_table(costs),
            "",
            *(f"- {n}" for n in costs.notes),
            "",
        ]
    out += [
        "## GPU deployment (Wan2.1-T2V-1.3B, VideoReward)",
        "",
        f"Costs from the GPU check (`{sources['gpu']}`) at the loop shape of `{sources['online']}`:",
        "",
        costs_table(gpu_costs),
        "",
        *(f"- {n}" for n in gpu_costs.notes),
        "",
        "Best split per total (all splits N + M + R <= total searched, N, M, R >= 1; the smallest within 1% of "
        "the best clips/s; the trainer must take every pair row the batch makes). The headline is **batch "
        "grows**: every generator GPU samples the config's clips per generator, which is how a deployment uses "
        "more generators; **fixed batch** keeps the config's B and shows the saturation when generators outnumber "
        "its prompt groups. Speed-up: against the smallest total of the same scenario and mode.",
        "",
        table_markdown(rows),
        "",
        f"Weak scaling of the trainer: {weak[0]['n_gen']} generators, B = {weak[0]['clips']}, K = {gpu_costs.steps}, "
        f"sync mode. Each worker takes K steps of micro_batch rows, so adding workers raises the rows trained per "
        "iteration and never shortens it (the all-reduce only adds):",
        "",
        weak_markdown(weak),
        "",
        "Assumptions of every row: one iteration in steady state (no start-up, failures, stragglers, checkpoint or "
        "evaluation time); generators start together and the slowest takes G ceil(B / (G N)) clips; each actor "
        "has its clips scored after sampling all of them (`GeneratorActor.rollout`), so the reward follows "
        "generation; one-step-off samples batch i + 1 with the version before training on batch i (staleness 1).",
        "",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ benchmark
def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _slim(rec: dict) -> dict:
    return {k: rec[k] for k in ("iteration", "videos", "queue_depth", "phases") if k in rec}


def bench_scaling(cfg, configs=CONFIGS) -> dict:
    """The online job in-process at every (generator actors, trainer workers, mode) of ``configs`` (``cfg``: the
    benchmark's config: ``scaling_iterations``, ``loop_overrides``), then the costs, the model's prediction
    and the check. The (1, 1, sync) run must be among them: the costs are read from it."""
    from actors.online import OnlineConfig, run
    from rlhf.config import load_config

    configs = [tuple(c) for c in configs]
    if CALIBRATION not in configs:
        raise ValueError(f"configs {configs} lack {CALIBRATION}, the run the costs are read from")
    iterations = getattr(cfg, "scaling_iterations", 3)
    base = [
        f"iterations={iterations}",
        "eval_n_prompts=0",
        "checkpoint_every=0",
        "progress=false",
        "report_clips=-1",
        "reward.model=oracle",
        *getattr(cfg, "loop_overrides", []),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    runs, loop = {}, {}
    try:
        for n, m, mode in configs:
            name = run_name(n, m, mode)
            print(f"  {name} ...", flush=True)
            ocfg = load_config(
                OnlineConfig,
                overrides=[*base, f"generators={n}", f"trainer.num_workers={m}", f"mode={mode}", f"out={tmp / name}"],
            )
            summary = run(ocfg)
            lines = (tmp / name / "metrics.jsonl").read_text().splitlines()
            recs = [_slim(json.loads(ln)) for ln in lines if ln.strip()]
            runs[name] = {
                "n_gen": n,
                "m_train": m,
                "mode": mode,
                "iteration_s": measured_iteration_s(recs),
                "startup_s": summary.get("startup_s"),
                "records": recs,
            }
            if (n, m, mode) == CALIBRATION:
                adapter = tmp / name / "adapter"
                loop = {
                    "iterations": iterations,
                    "overrides": base,
                    "clips": ocfg.prompts_per_iter * ocfg.group,
                    "group": ocfg.group,
                    "steps": ocfg.steps_per_iter,
                    "micro_batch": ocfg.trainer.micro_batch,
                    # the fp32 LoRA the workers all-reduce gradients of: the final adapter's size
                    "lora_bytes": float(sum(f.stat().st_size for f in adapter.glob("*.safetensors"))),
                    "cores": usable_cores(),
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = calibrate(runs, loop)
    return {"loop": loop, "runs": runs, **res, "check": check_table(res["measured"], res["predicted"])}


# ------------------------------------------------------------------------------------------ command line
@dataclass
class ScalingConfig:
    # the benchmark's JSON with a "scaling" section (python jobs/bench.py only=[scaling]); "" = GPU table only
    measured: str = "runs/bench/bench.json"
    gpu: str = "docs/results/bench_gpu_h100.json"  # the GPU check's figures (jobs/bench_gpu.py)
    online: str = "jobs/configs/wan21_t2v_1.3b.yaml"  # the GPU deployment whose loop shape the table sizes
    out: str = "docs/results/scaling.md"  # Markdown (a JSON with the same figures goes next to it)
    totals: list[int] = field(default_factory=lambda: [8, 32, 128])  # GPU counts of the table


CLI_FLAGS = {
    "--measured": ("measured", str, "benchmark JSON with a scaling section"),
    "--gpu": ("gpu", str, "GPU check JSON"),
    "--online": ("online", str, "online job config of the GPU deployment"),
    "--out": ("out", str, "Markdown output"),
}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(ScalingConfig, argv, __doc__.splitlines()[0], CLI_FLAGS)
    from actors.online_config import OnlineConfig  # imports torch
    from rlhf.config import load_config

    cpu = None
    if cfg.measured:
        path = Path(cfg.measured)
        if not path.is_file():
            print(f"error: {path} does not exist: run python jobs/bench.py only=[scaling] first", file=sys.stderr)
            return 2
        section = json.loads(path.read_text()).get("scaling")
        if not section or "runs" not in section:
            print(f"error: {path} has no 'scaling' section: run python jobs/bench.py only=[scaling]", file=sys.stderr)
            return 2
        cpu = {"loop": section["loop"], "runs": section["runs"], **calibrate(section["runs"], section["loop"])}
    online = load_config(OnlineConfig, cfg.online)
    driver = RoleCosts(**cpu["costs"]) if cpu else None
    gpu_costs = costs_from_gpu_check(json.loads(Path(cfg.gpu).read_text()), online, driver)
    rows = gpu_table(
        gpu_costs,
        tuple(cfg.totals),
        rows_per_clip(online.trainer.algo.algo, online.pairs.mode, online.group),
        clips_per_generator=gpu_costs.clips / online.generators,
    )
    weak = weak_scaling(gpu_costs, online.generators)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(cpu, gpu_costs, rows, weak, repo_relative(vars(cfg))))
    result = {"cpu": cpu, "gpu_costs": asdict(gpu_costs), "gpu_table": rows, "weak_scaling": weak}
    out.with_suffix(".json").write_text(json.dumps(repo_relative(result), indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
