"""The run layer: what every Ray job stands on besides its own roles.

* ``get``: ``ray.get`` that stays interruptible (Ctrl-C, SIGTERM) while it waits;
* ``stop_on_sigterm``: SIGTERM stops a job like Ctrl-C, so its ``finally`` clean-up runs;
* ``quiet_ray_data``: no per-execution progress bars or INFO lines from Ray Data;
* ``RunDir``: a run's directory and storage: the config, the checkpoint state (``state.json``,
  ``latest.json``), the metrics records (``metrics.jsonl``) and their truncation on a restart;
* ``IterationRecord`` and ``Metrics``: one iteration's numbers, written to ``metrics.jsonl``, the
  Prometheus gauges of the Ray dashboard (``ray_videoalign_*``) and TensorBoard / wandb (``rlhf.tracking``).

Starting, joining and stopping the cluster itself is ``actors.cluster`` (``connect``, ``check_fit``,
``Cluster.stop``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from actors.storage import RunStorage
from rlhf.config import save_config
from rlhf.dims import DIMS
from rlhf.tracking import Tracker


def get(refs, poll_s: float = 1.0):
    """``ray.get`` that keeps the main thread responsive to Ctrl-C / SIGTERM (a plain ``ray.get`` does not
    return to Python until the objects are ready)."""
    import ray

    single = not isinstance(refs, list)
    todo = [refs] if single else list(refs)
    while True:
        ready, _ = ray.wait(todo, num_returns=len(todo), timeout=poll_s)
        if len(ready) == len(todo):
            out = ray.get(todo)
            return out[0] if single else out


def split_even(items: list, n: int) -> list[list]:
    """Contiguous chunks, sizes differing by at most one."""
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + k + (i < r)
        out.append(items[start:end])
        start = end
    return out


def quiet_ray_data() -> None:
    """No progress bars or per-execution INFO lines from Ray Data (one per iteration and worker otherwise)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill PID``) stops the job like Ctrl-C: the ``finally`` clean-up runs (actors,
    Serve app, the local Ray cluster); the last checkpoint stays for ``--resume``."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def seeds_digest(seeds: list[int]) -> str:
    """sha256 of the sorted seeds: the same clips, whichever actor sampled them in what order."""
    return hashlib.sha256(np.sort(np.asarray(seeds, np.int64)).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------ run directory
class RunDir:
    """A run's directory (``out``: config, metrics, results) and its checkpoint storage (``storage``: a path
    every node mounts or a URI; ``out/checkpoints`` by default)."""

    METRICS = "metrics.jsonl"

    def __init__(self, out: str | Path, storage: str = ""):
        self.out = Path(out).resolve()
        self.storage = RunStorage(storage or str(self.out / "checkpoints"))

    def start(self, cfg, resume: bool, results: tuple[str, ...] = ()) -> None:
        """Create the directory and write the config; a fresh run (not ``resume``) in a directory that holds
        an earlier run drops that run's records, ``results`` and checkpoint pointer first."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume and (self.out / self.METRICS).exists():
            print(f"[run] {self.out} holds an earlier run: starting afresh (--resume continues one)", flush=True)
            for stale in (self.METRICS, *results):
                (self.out / stale).unlink(missing_ok=True)
            self.storage.delete("latest.json")
        save_config(cfg, self.out)

    def latest_checkpoint(self) -> dict | None:
        """The newest checkpoint's state (``dir``: its folder under the storage), or None."""
        if not self.storage.exists("latest.json"):
            return None
        state = json.loads(self.storage.read_text("latest.json"))
        state["dir"] = Path(state["dir"]).name  # runs written before storage existed recorded a path
        return state

    def write_state(self, ck: str, state: dict) -> None:
        """``ck``/state.json, then latest.json pointing at ``ck``: a reader sees the old or the new, whole."""
        self.storage.write_text(f"{ck}/state.json", json.dumps(state, indent=2))
        self.storage.write_text("latest.json", json.dumps({**state, "dir": ck}, indent=2))

    def records(self) -> list[dict]:
        p = self.out / self.METRICS
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []

    def truncate_metrics(self, next_iteration: int) -> int:
        """Drop the records of iterations at or after ``next_iteration`` (they are run again after a restart
        from a checkpoint: no iteration is counted twice); returns how many went."""
        p = self.out / self.METRICS
        if not p.is_file():
            return 0
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln)["iteration"] < next_iteration]
        if len(keep) != len(lines):
            tmp = p.with_suffix(".part")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(p)
        return len(lines) - len(keep)

    def write_json(self, name: str, obj: dict) -> Path:
        p = self.out / name
        p.write_text(json.dumps(obj, indent=2))
        return p


# ---------------------------------------------------------------------------------------------- metrics
@dataclass
class IterationRecord:
    """One online iteration, as written to ``metrics.jsonl`` (one JSON object per line)."""

    iteration: int
    algo: str
    time: float
    policy_version: int  # after this iteration's update
    sample_version: int  # the version that sampled its clips
    staleness: int  # policy versions between sampling and the update trained on the clips
    videos: int
    videos_per_second: float
    pairs: int  # preference pairs (DPO) or weighted samples (RWR)
    groups: int
    tie_groups: int
    batch_digest: str
    mean_group_gap: float
    loss: float | None
    first_loss: float | None
    implicit_accuracy: float | None
    reward: dict  # mean served reward per dimension and 'weighted'
    oracle: dict  # the same by the oracle ({} outside the world)
    phases: dict  # seconds per phase
    queue_depth: int  # rollout batches in flight when training starts
    restarted_actors: list
    samples_unique: int  # accounting: every clip of the batch exactly once
    seeds_sha256: str
    weights_sha256: list  # the weights each actor sampled with
    published_sha256: str | None
    reward_retries: int
    reward_versions: list  # the reward version(s) that scored the clips (one unless a roll overlapped them)
    reward_version: int
    labels_spent: int
    reward_replica_pids: list
    refresh: dict | None = field(default=None)  # the reward refresh after this iteration, if any

    def to_dict(self) -> dict:
        return asdict(self)

    def scalars(self) -> dict[str, float | None]:
        """The record's numbers as tracking tags ('reward/VQ', 'phase/train', ...)."""
        out: dict[str, float | None] = {
            k: getattr(self, k)
            for k in (
                "loss",
                "implicit_accuracy",
                "videos_per_second",
                "staleness",
                "queue_depth",
                "policy_version",
                "pairs",
                "reward_version",
                "labels_spent",
            )
        }
        out.update({f"reward/{d}": v for d, v in self.reward.items()})
        out.update({f"oracle/{d}": v for d, v in self.oracle.items()})
        out.update({f"phase_seconds/{p}": s for p, s in self.phases.items()})
        if self.refresh:
            for d in DIMS:
                out[f"reward_onpolicy_accuracy/{d}"] = self.refresh["onpolicy_before"][d]["without_ties"]
        return out


GAUGES = [  # name, description, tag keys: exported as ray_videoalign_<name> (docs/grafana reads them)
    ("reward", "mean reward of the iteration's samples (normalised)", ("dimension",)),
    ("oracle", "mean oracle score of the iteration's samples", ("dimension",)),
    ("loss", "training loss (mean over the iteration's steps)", ()),
    ("implicit_accuracy", "Flow-DPO implicit accuracy", ()),
    ("videos_per_second", "clips generated, scored and trained on per second", ()),
    ("phase_seconds", "seconds per phase of the iteration", ("phase",)),
    ("staleness", "policy versions between sampling and training", ()),
    ("queue_depth", "rollout batches in flight when training starts", ()),
    ("policy_version", "latest published policy version", ()),
    ("pairs", "preference pairs (or weighted samples) of the iteration", ()),
    ("reward_version", "version of the served reward model (reward refresh bumps it)", ()),
    ("labels_spent", "pairs labelled by the raters for reward refresh so far", ()),
    (
        "reward_onpolicy_accuracy",
        "served reward's accuracy without ties on the policy's labelled pairs, before the refresh learns them",
        ("dimension",),
    ),
]


class Metrics:
    """The same numbers to ``metrics.jsonl``, the Ray dashboard (``ray.util.metrics``) and TensorBoard
    (wandb too when configured)."""

    def __init__(
        self,
        run: RunDir,
        name: str,
        config: dict | None = None,
        resume_step: int | None = None,
        wandb_project: str = "",
    ):
        from ray.util.metrics import Counter, Gauge

        self.path = run.out / RunDir.METRICS
        self.g = {n: Gauge(f"videoalign_{n}", description=d, tag_keys=tags) for n, d, tags in GAUGES}
        self.videos = Counter("videoalign_videos_total", description="clips generated and scored")
        self.tracker = Tracker(run.out, name, config, resume_step=resume_step, wandb_project=wandb_project)

    def record(self, rec: IterationRecord) -> None:
        scalars = rec.scalars()
        for tag, v in scalars.items():
            if v is None or v != v:  # None or NaN (every pair a tie) is not a reading
                continue
            name, _, sub = tag.partition("/")
            tags = {"phase": sub} if name == "phase_seconds" else {"dimension": sub} if sub else None
            self.g[name].set(float(v), tags=tags)
        self.videos.inc(rec.videos)
        self.tracker.scalars(rec.iteration, scalars)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec.to_dict()) + "\n")

    def close(self) -> None:
        self.tracker.close()


def log_clips(tracker: Tracker, out: Path, clips: list[dict], fps: float, step: int) -> None:
    """The evaluation's kept clips (``actors.online_eval.write_clips``) to TensorBoard: pretrained | aligned,
    side by side, one animated image per prompt."""
    from rlhf.video import read_video

    for i, c in enumerate(clips):
        a, b = read_video(out / c["pretrained"]), read_video(out / c["aligned"])
        n = min(len(a), len(b))
        tracker.clip(f"eval/{i}_pretrained|aligned: {c['prompt']}", np.concatenate([a[:n], b[:n]], axis=2), fps, step)
