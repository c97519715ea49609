"""Preference batches with Ray Data: scored samples -> pairs (Flow-DPO) or weighted samples (Flow-RWR).

Input: the Arrow tables the generator actors returned (object refs; one row per sample). Pipeline:

1. ``map_batches`` over whole blocks: the driver hands every generator actor whole prompt groups, so each
   block (one actor's table) holds complete groups and grouping by prompt needs no shuffle (a
   ``groupby`` shuffle costs 20-60 s per iteration on 2 cores for a few dozen rows). Per prompt group: the
   weighted reward ``w . (VQ, MQ, TA)`` of each
   sample, the group statistics (size, mean, std, best - worst), and either the pairs of
   :func:`rlhf.align.pairs.build_pairs` (best vs worst, or every pair above a margin) or, for RWR,
   every sample with its reward standardised within its group;
2. a seeded shuffle key: each row gets a key drawn from ``(seed, iteration, sample seeds)``;
3. ``materialize``; the driver reads the small columns (statistics, and the keys), sorts the keys and gives
   rank ``r`` of ``W`` trainer workers the keys at positions ``r, r + W, ...`` (:func:`shard_keys`); each
   worker reads a lazy ``map_batches`` over the materialised blocks that keeps its keys' rows
   (:func:`worker_shard`): the blocks are filtered where they live and only the worker's own rows travel
   to it (the latents are the bulk: ~1.7 GB per iteration for Wan2.1 at 100 pairs). ``Dataset.split`` /
   ``streaming_split`` would hand out blocks as the streaming executor bundled them, which depends on
   timing; this rule depends only on the seeds, so a resumed run (or one on another cluster) gives every
   rank exactly the rows of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlhf.align.pairs import PairConfig, build_pairs
from rlhf.dims import DIMS


@dataclass
class PreferenceStats:
    samples: int
    groups: int
    rows: int  # pairs (DPO) or weighted samples (RWR)
    mean_group_std: float
    mean_group_gap: float  # mean best - worst weighted reward
    tie_groups: int  # groups that gave no pair
    digest: str  # sha256 of the rows' identities and rewards, in training order (resume checks)
    order: np.ndarray = field(default=None, repr=False, compare=False)  # every row's key (shard_keys)


def _weighted(batch: dict, cfg: PairConfig) -> np.ndarray:
    return cfg.weights.weighted(np.stack([batch[f"r_{d}"] for d in DIMS], axis=-1))


def _order_key(seed: int, iteration: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.random.default_rng([seed, iteration, int(x), int(y)]).random() for x, y in zip(a, b)])


def group_pairs(batch: dict, cfg: PairConfig, seed: int, iteration: int) -> dict:
    """One prompt group (numpy batch) -> its preference pairs, each with the group's statistics."""
    r = _weighted(batch, cfg)
    pairs = build_pairs(list(batch["prompt"]), list(r), cfg)
    w = np.array([p[0] for p in pairs], np.int64)
    lo = np.array([p[1] for p in pairs], np.int64)
    n = len(pairs)
    lat = batch["latent"]
    return {
        "prompt": np.array([batch["prompt"][0]] * n, dtype=object),
        "latent_w": lat[w] if n else np.zeros((0, *lat.shape[1:]), np.float32),
        "latent_l": lat[lo] if n else np.zeros((0, *lat.shape[1:]), np.float32),
        "seed_w": batch["seed"][w],
        "seed_l": batch["seed"][lo],
        "reward_w": r[w],
        "reward_l": r[lo],
        "version_w": batch["policy_version"][w],
        "version_l": batch["policy_version"][lo],
        "group_size": np.full(n, len(r), np.int64),
        "group_mean": np.full(n, r.mean()),
        "group_std": np.full(n, r.std()),
        "group_gap": np.full(n, r.max() - r.min()),
        "order": _order_key(seed, iteration, batch["seed"][w], batch["seed"][lo]),
    }


def group_weighted(batch: dict, cfg: PairConfig, seed: int, iteration: int) -> dict:
    """One prompt group -> every sample with its reward standardised within the group (Flow-RWR)."""
    r = _weighted(batch, cfg)
    n = len(r)
    return {
        "prompt": np.asarray(batch["prompt"], dtype=object),
        "latent": batch["latent"],
        "seed": batch["seed"],
        "reward": r,
        "advantage": (r - r.mean()) / max(float(r.std()), 1e-6),
        "version": batch["policy_version"],
        "group_size": np.full(n, n, np.int64),
        "group_mean": np.full(n, r.mean()),
        "group_std": np.full(n, r.std()),
        "group_gap": np.full(n, r.max() - r.min()),
        "order": _order_key(seed, iteration, batch["seed"], batch["seed"]),
    }


def _concat(parts: list[dict]) -> dict:
    parts = [p for p in parts if len(p["prompt"])] or parts[:1]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def block_rows(batch: dict, cfg: PairConfig, algo: str, seed: int, iteration: int) -> dict:
    """A block of whole prompt groups -> the training rows of every group, in group order."""
    fn = group_pairs if algo.startswith("dpo") else group_weighted
    prompts = np.asarray(batch["prompt"])
    out = []
    for p in dict.fromkeys(prompts.tolist()):
        idx = np.flatnonzero(prompts == p)
        out.append(fn({k: np.asarray(v)[idx] for k, v in batch.items()}, cfg, seed, iteration))
    return _concat(out)


def preference_dataset(table_refs: list, cfg: PairConfig, algo: str, seed: int, iteration: int):
    """The materialised training rows of one iteration, from the generators' tables (one per actor,
    whole prompt groups each)."""
    import ray.data

    ds = ray.data.from_arrow_refs(list(table_refs))
    ds = ds.map_batches(
        block_rows,
        batch_size=None,
        batch_format="numpy",
        fn_kwargs={"cfg": cfg, "algo": algo, "seed": seed, "iteration": iteration},
    )
    return ds.materialize()


def stats_of(ds, samples: int, groups: int) -> PreferenceStats:
    """Statistics of a materialised preference dataset (small columns only; no latents to the driver)."""
    import hashlib

    cols = ds.select_columns(
        [
            "prompt",
            "group_std",
            "group_gap",
            "order",
            *(["seed_w", "seed_l", "reward_w", "reward_l"] if "seed_w" in ds.columns() else ["seed", "reward"]),
        ]
    ).to_pandas()
    per_group = cols.drop_duplicates("prompt")
    ident = cols.sort_values("order", kind="stable").drop(columns=["prompt", "group_std", "group_gap"])
    return PreferenceStats(
        samples=samples,
        groups=groups,
        rows=len(cols),
        mean_group_std=float(per_group["group_std"].mean()) if len(per_group) else 0.0,
        mean_group_gap=float(per_group["group_gap"].mean()) if len(per_group) else 0.0,
        tie_groups=groups - len(per_group),
        digest=hashlib.sha256(ident.to_numpy(dtype=np.float64).tobytes()).hexdigest(),
        order=cols["order"].to_numpy(np.float64),
    )


def shard_keys(order: np.ndarray, world: int) -> list[np.ndarray]:
    """The keys of each rank's rows: the rows in the seeded order (ascending key), rank ``r`` takes positions
    ``r, r + world, ...`` (shard sizes differ by at most one). A function of the seeds alone."""
    keys = np.sort(np.asarray(order, np.float64), kind="stable")
    if len(np.unique(keys)) != len(keys):  # a key is drawn from the row's sample seeds, distinct in an iteration
        raise ValueError(
            f"{len(keys) - len(np.unique(keys))} preference rows share an order key: the iteration's sample "
            "seeds must be distinct (prompt_batch draws them so)"
        )
    return [keys[r::world] for r in range(world)]


def _rows_with_keys(batch: dict, keys: np.ndarray) -> dict:
    keep = np.isin(batch["order"], keys)
    return {k: np.asarray(v)[keep] for k, v in batch.items()}


def worker_shard(ds, keys: np.ndarray):
    """One rank's rows of a materialised preference dataset: lazy, executed when the worker reads it (each
    block filtered as a Ray Data task near the block; only the kept rows reach the worker)."""
    return ds.map_batches(_rows_with_keys, batch_size=None, batch_format="numpy", fn_kwargs={"keys": keys})


def shuffled(rows: dict) -> dict:
    """A worker's shard in the seeded order (by each row's ``order`` key)."""
    idx = np.argsort(rows["order"], kind="stable")
    return {k: np.asarray(v)[idx] for k, v in rows.items()}


def to_tensors(rows: dict, algo: str) -> dict:
    """A shard read as numpy (``iter_batches``) -> the tensors a trainer step needs."""
    import torch

    if algo.startswith("dpo"):
        return {
            "prompt": list(rows["prompt"]),
            "x_w": torch.as_tensor(np.asarray(rows["latent_w"], np.float32)),
            "x_l": torch.as_tensor(np.asarray(rows["latent_l"], np.float32)),
        }
    return {
        "prompt": list(rows["prompt"]),
        "x0": torch.as_tensor(np.asarray(rows["latent"], np.float32)),
        "reward": torch.as_tensor(np.asarray(rows["advantage"], np.float32)),
    }


__all__ = [
    "PreferenceStats",
    "block_rows",
    "group_pairs",
    "group_weighted",
    "preference_dataset",
    "shuffled",
    "stats_of",
    "shard_keys",
    "to_tensors",
    "worker_shard",
]
