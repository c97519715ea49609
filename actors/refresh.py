"""Online reward refresh: the loop's reward model learns from labels of the current policy's own videos.

Every ``every`` iterations the online job (``jobs/online_dpo.py``, option ``refresh``) takes the clips the
policy has just sampled and

1. picks ``pairs`` within-prompt pairs of them (the label budget of this refresh), seeded by the run seed
   and the iteration, so a resumed run picks the same ones;
2. has them labelled by the simulated raters (``rlhf.eval.onpolicy.rater_labels``: the stand-in for sending
   the videos to annotators) and writes them as a preference dataset (mp4s + ``prefs.parquet``) under the
   run storage, ``refresh/iter_NNNNN``;
3. measures the served reward's on-policy accuracy on these pairs *before* it learns from them (the
   scores the policy was trained on are the ones the rollouts carry);
4. fine-tunes the current reward model on them (Ray Train + DeepSpeed: ``actors.reward_trainer.fit`` with
   ``init_from``), mixing in fresh rendered pairs so that what it knew is not forgotten, into
   ``reward/v{N}`` under the run storage;
5. rolls the Serve deployment to the new model with version ``N`` (``serve.run`` of the changed app:
   new replicas start, old ones finish the requests they hold before they stop). Every score names the
   version that made it (``reward_version``), and the job refreshes only when no rollout is in flight,
   so the clips of one iteration are scored by one version.

The refreshed reward's directory, its version and the labels spent so far go into every checkpoint's
state, so ``--resume`` (and a trainer restart) serves the same reward as the run it continues.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhf.dims import DIMS

LABEL_NAMES = {1: "A", -1: "B", 0: "same"}


@dataclass
class RefreshConfig:
    """Online reward refresh (off unless ``every`` > 0; needs a learned reward and the world's raters)."""

    every: int = 0  # iterations between refreshes (0 = off); none after the last iteration
    pairs: int = 64  # label budget per refresh: within-prompt pairs of the iteration's clips
    steps: int = 40  # fine-tuning steps per refresh
    batch_size: int = 8  # pairs per step
    generated_fraction: float = 0.5  # share of each batch from the labelled pairs; the rest fresh rendered pairs
    lr: float = 1e-4  # learning rate of each refresh's fine-tuning (constant, no warm-up)
    caption_weight: float = 1.0  # the shipped recipe's caption auxiliary loss (keeps the TA signal)
    workers: int = 1  # Ray Train workers of a refresh
    replay: bool = True  # also learn every pair labelled by the run's earlier refreshes (False: only the new ones)

    def validate(self) -> None:
        if self.every < 0:
            raise ValueError(f"refresh.every must be >= 0 (0 = off), got {self.every}")
        if self.every and (self.pairs < 1 or self.steps < 1 or self.batch_size < 1 or self.workers < 1):
            raise ValueError("refresh.pairs, refresh.steps, refresh.batch_size and refresh.workers must be >= 1")
        if not 0.0 < self.generated_fraction <= 1.0:
            raise ValueError(f"refresh.generated_fraction must be in (0, 1], got {self.generated_fraction}")


def due(cfg: RefreshConfig, iteration: int, iterations: int) -> bool:
    """A refresh follows ``iteration`` (0-based) when it closes a block of ``every`` and is not the last."""
    return bool(cfg.every) and (iteration + 1) % cfg.every == 0 and iteration + 1 < iterations


def choose_pairs(prompts: list[str], budget: int, seed: int, iteration: int) -> np.ndarray:
    """(P, 2) row indices of up to ``budget`` within-prompt pairs, drawn without replacement with the
    generator ``(seed, iteration)`` and kept in row order."""
    from rlhf.eval.onpolicy import within_group_pairs

    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    every = within_group_pairs([index[p] for p in prompts])
    if len(every) <= budget:
        return every
    pick = np.random.default_rng([seed, iteration, 0x5EF]).choice(len(every), size=budget, replace=False)
    return every[np.sort(pick)]


def label_rollouts(table, budget: int, seed: int, iteration: int, policy_version: int, out_dir: Path) -> dict:
    """Label ``budget`` pairs of one iteration's rollout table (pyarrow, the generator actors' columns) and
    write them as a preference dataset in ``out_dir``; returns the pairs, labels, scores and records."""
    from rlhf.data.schema import write_preferences
    from rlhf.eval.onpolicy import rater_labels

    cols = table.to_pydict()
    prompts = cols["prompt"]
    oracle = np.array([cols[f"oracle_{d}"] for d in DIMS], dtype=np.float64).T
    served = np.array([cols[f"r_{d}"] for d in DIMS], dtype=np.float64).T
    if not np.isfinite(oracle).all():
        raise ValueError(
            "reward refresh needs the world's raters (oracle scores of every rollout): world=false has none"
        )
    pairs = choose_pairs(prompts, budget, seed, iteration)
    labels = rater_labels(oracle, pairs, seed=seed * 1_000_003 + iteration)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    used = sorted({int(i) for pair in pairs for i in pair})
    for i in used:
        (out_dir / "videos" / f"{i:05d}.mp4").write_bytes(cols["mp4"][i])

    versions = cols.get("reward_version") or [0] * len(prompts)

    def served_scores(i: int) -> dict:
        return {d: float(served[i, k]) for k, d in enumerate(DIMS)}

    def scores(i: int) -> dict:
        return {**{d: float(oracle[i, k]) for k, d in enumerate(DIMS)}, "Overall": float(oracle[i].mean())}

    records = [
        {
            "id": f"refresh{iteration}-{k:04d}",
            "prompt": prompts[i],
            "video_a": f"videos/{i:05d}.mp4",
            "video_b": f"videos/{j:05d}.mp4",
            **{d: LABEL_NAMES[int(labels[k, n])] for n, d in enumerate(DIMS)},
            "Overall": None,
            "score_a": scores(i),
            "score_b": scores(j),
            "split": "train",
            "source": "refresh",
            "generator_a": f"policy_v{policy_version}",
            "generator_b": f"policy_v{policy_version}",
            "seed_a": int(cols["seed"][i]),
            "seed_b": int(cols["seed"][j]),
            # what the served reward said of each clip in the rollout (normalised), and which version said it
            "served_a": served_scores(i),
            "served_b": served_scores(j),
            "reward_version_a": int(versions[i]),
            "reward_version_b": int(versions[j]),
        }
        for k, (i, j) in enumerate(pairs)
    ]
    write_preferences(records, out_dir / "prefs.parquet")
    return {"pairs": pairs, "labels": labels, "oracle": oracle, "served": served, "records": records}


def reward_dir(model: str) -> str:
    """The checkpoint directory (or hub id) a served ``model`` names ("default": the shipped one)."""
    if model == "default":
        from rlhf.reward.checkpoint import DEFAULT_REWARD

        return str(DEFAULT_REWARD)
    return model


def labels_dir(iteration: int) -> str:
    """Where (under the run storage) the pairs labelled after ``iteration`` (0-based) are written."""
    return f"refresh/iter_{iteration + 1:05d}"


def earlier_refreshes(cfg: RefreshConfig, iteration: int, iterations: int) -> list[str]:
    """``labels_dir`` of every refresh before the one after ``iteration``: the labels a replaying refresh learns
    again (a function of the config alone, so a resumed run replays the same ones)."""
    return [labels_dir(j) for j in range(iteration) if due(cfg, j, iterations)]


def fine_tune(
    cfg: RefreshConfig,
    init_from: str,
    data_dir: Path,
    out: Path,
    seed: int,
    hub_cache: str = "",
    device=None,
    replay: list[Path] = (),
) -> Path:
    """Fine-tune ``init_from`` on the labelled pairs in ``data_dir`` and the ``replay`` dirs (plus fresh
    rendered pairs) with Ray Train on the connected cluster; returns ``out``, a checkpoint directory the reward
    service loads. The on-policy evaluation is on ``data_dir``'s pairs."""
    from actors.reward_trainer import TrainRewardJob, fit, prepare

    data = ",".join(str(d) for d in [*replay, data_dir])
    job = TrainRewardJob(
        data="synthetic",
        generated_data=data,
        generated_fraction=cfg.generated_fraction,
        init_from=reward_dir(init_from),
        eval_data=str(data_dir),
        eval_split="train",
        eval_pairs=cfg.pairs,
        out=str(out),
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule="constant",
        warmup_steps=0,
        caption_weight=cfg.caption_weight,
        checkpoint_every=0,
        num_workers=cfg.workers,
        seed=seed,
        hub_cache=hub_cache,
        norm_pairs=64,
    )
    if device is not None:  # the trainer role's device and precision
        job = dataclasses.replace(job, device=device)
    job, cfg_file = prepare(job)
    fit(job, cfg_file, name=f"reward_refresh_{out.name}")
    return out


def roll_deployment(reward_cfg, model: str, version: int) -> float:
    """Serve the reward ``model`` as ``version``: the app is re-run with the new config and Serve replaces its
    replicas (each old one stops after the requests it holds are answered). Returns the seconds it took."""
    from serve.deployment import deploy

    t0 = time.time()
    deploy(dataclasses.replace(reward_cfg, model=model, version=version))
    wait_running(reward_cfg.app_name)
    return time.time() - t0


def wait_running(app_name: str, timeout_s: float = 300.0) -> None:
    """Wait until the app's deployments are all RUNNING (the roll is over: old replicas gone)."""
    from ray import serve

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(app_name)
        if (
            app is not None
            and str(app.status).endswith("RUNNING")
            and all(str(d.status).endswith("HEALTHY") for d in app.deployments.values())
        ):
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"reward app {app_name!r} did not finish rolling to the refreshed model in {timeout_s:.0f} s; "
        "see `serve status`"
    )


def state_of(model: str, version: int, labels_spent: int) -> dict:
    return {"model": model, "version": version, "labels_spent": labels_spent}


def summary_line(rec: dict) -> str:
    acc = rec["onpolicy_before"]
    return (
        f"reward refresh -> v{rec['version']}: {rec['pairs']} pairs labelled ({rec['labels_spent']} so far); "
        "on-policy accuracy before it w/o ties "
        + ", ".join(f"{d} {100 * acc[d]['without_ties']:.1f}%" for d in DIMS)
        + f"; fine-tune {rec['train_s']:.0f} s, roll {rec['roll_s']:.0f} s"
    )


def refresh_served(cfg, storage, reward_state: dict, it: int, tables: list, version: int) -> tuple[dict, dict]:
    """One refresh of the online job ``cfg`` after iteration ``it``: label pairs of its clips (``tables``,
    sampled with policy ``version``), measure the served reward on them, fine-tune it and roll the deployment
    to the new version. Returns the refresh's record and the new served-reward state."""
    import pyarrow as pa
    import ray

    from rlhf.eval.onpolicy import onpolicy_table

    r = cfg.refresh
    t0 = time.time()
    new_version = reward_state["version"] + 1
    data_dir = Path(storage.location(labels_dir(it)))
    labelled = label_rollouts(pa.concat_tables(ray.get(tables)), r.pairs, cfg.seed, it, version, data_dir)
    before = onpolicy_table(labelled["served"], labelled["oracle"], labelled["pairs"], labelled["labels"])
    t1 = time.time()
    out = Path(storage.location(f"reward/v{new_version:03d}"))
    replay = [Path(storage.location(d)) for d in earlier_refreshes(r, it, cfg.iterations)] if r.replay else []
    fine_tune(r, reward_state["model"], data_dir, out, seed=cfg.seed * 1000 + new_version,
              hub_cache=cfg.hub_cache, device=cfg.trainer.device, replay=replay)  # fmt: skip
    t2 = time.time()
    roll_s = roll_deployment(cfg.reward, str(out), new_version)
    spent = reward_state["labels_spent"] + len(labelled["pairs"])
    rec = {
        "version": new_version,
        "model": str(out),
        "pairs": len(labelled["pairs"]),
        "labels_spent": spent,
        "onpolicy_before": before,
        "label_s": t1 - t0,
        "train_s": t2 - t1,
        "roll_s": roll_s,
    }
    return rec, state_of(str(out), new_version, spent)
