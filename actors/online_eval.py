"""What the online job measures: each iteration's record, the final evaluation against the pretrained
policy (win rates, the reward-hacking check, the served reward's on-policy accuracy), the run's summary and
the lines the console shows for them.

The evaluation's clips are kept: ``eval_clips/`` holds the policy's and the pretrained policy's clip of a
few varied prompts (same seed), which the report and TensorBoard show side by side without sampling again.
"""

from __future__ import annotations

import json
import time

import numpy as np

from actors.online_config import OnlineConfig
from actors.run import IterationRecord, get, seeds_digest, split_even
from rlhf.dims import DIMS
from rlhf.eval.judges import TIE_MARGINS
from rlhf.eval.onpolicy import onpolicy_table, rater_labels, within_group_pairs
from rlhf.eval.winrate import reward_hacking, win_rates

EVAL_CLIPS = "eval_clips"


def iteration_record(
    cfg: OnlineConfig,
    reward_state: dict,
    it: int,
    metas: list[dict],
    pstats,
    res: dict,
    version: int,
    sample_version: int,
    wall: float,
    roll_wait: float,
    t_data: float,
    queue: int,
) -> IterationRecord:
    """One iteration's record from the rollouts' metadata ``metas``, the preference statistics and the
    trainer's result ``res``."""
    w = cfg.pairs.weights
    n = np.array([m["n"] for m in metas], np.float64)
    reward = np.average([m["reward"] for m in metas], axis=0, weights=n)
    oracle = np.average([m["oracle"] for m in metas], axis=0, weights=n)
    videos = int(n.sum())
    phases = {
        "generate": float(max(m["generate_s"] for m in metas)),
        "reward_wait": float(max(m["reward_wait_s"] for m in metas)),
        "rollout_wait": roll_wait,  # driver time blocked on the rollouts
        "data": t_data,
        "train": float(res.get("train_s", 0.0)),
        "train_read": float(res.get("read_s", 0.0)),  # of train: the trainer reading its shard (rank 0)
        "weight_sync": float(res.get("publish", {}).get("seconds", 0.0))
        + float(max(m["weight_sync_s"] for m in metas)),
        "checkpoint": float(res.get("checkpoint_s", 0.0)),
        "iteration": wall,
    }
    trained = res.get("loss") is not None
    return IterationRecord(
        iteration=it,
        algo=cfg.trainer.algo.algo,
        time=time.time(),
        policy_version=version,
        sample_version=sample_version,
        staleness=version - 1 - sample_version if trained else version - sample_version,
        videos=videos,
        videos_per_second=videos / max(wall, 1e-9),
        pairs=pstats.rows,
        groups=pstats.groups,
        tie_groups=pstats.tie_groups,
        batch_digest=pstats.digest,
        mean_group_gap=pstats.mean_group_gap,
        loss=res.get("loss"),
        first_loss=res.get("first_loss"),
        implicit_accuracy=res.get("implicit_accuracy"),
        reward={**dict(zip(DIMS, reward.tolist())), "weighted": float(w.weighted(reward))},
        oracle=(
            {**dict(zip(DIMS, oracle.tolist())), "weighted": float(w.weighted(oracle))}
            if np.isfinite(oracle).all()
            else {}
        ),
        phases=phases,
        queue_depth=queue,
        restarted_actors=[m["actor"] for m in metas if m["restarted"]],
        samples_unique=len({s for m in metas for s in m["seeds"]}),
        seeds_sha256=seeds_digest([s for m in metas for s in m["seeds"]]),
        weights_sha256=sorted({m["weights_sha256"] for m in metas}),
        published_sha256=res.get("publish", {}).get("sha256"),
        reward_retries=int(sum(m["reward_retries"] for m in metas)),
        reward_versions=sorted({v for m in metas for v in m.get("reward_versions", [])}),
        reward_version=reward_state["version"],
        labels_spent=reward_state["labels_spent"],
        reward_replica_pids=sorted({p for m in metas for p in m["reward_replica_pids"]}),
    )


def describe(rec: IterationRecord) -> str:
    """The iteration's line in the run's log."""
    loss = "-" if rec.loss is None else f"{rec.loss:.4f}"
    acc = "-" if rec.implicit_accuracy is None else f"{rec.implicit_accuracy:.2f}"
    r, o = rec.reward, rec.oracle
    return (
        f"iter {rec.iteration} v{rec.policy_version} (sampled v{rec.sample_version}) {rec.videos} clips "
        f"{rec.pairs} {'pairs' if rec.algo.startswith('dpo') else 'weighted'} loss {loss} acc {acc} "
        f"reward VQ/MQ/TA {r['VQ']:+.2f}/{r['MQ']:+.2f}/{r['TA']:+.2f} "
        + (f"oracle {o['VQ']:.3f}/{o['MQ']:.3f}/{o['TA']:.3f} " if o else "")
        + "| "
        + " ".join(f"{k} {v:.1f}s" for k, v in rec.phases.items())
    )


def progress_line(rec: IterationRecord) -> str:
    """The progress bar's postfix: the iteration's headline numbers."""
    loss = "-" if rec.loss is None else f"{rec.loss:.4f}"
    oracle = f" oracle {rec.oracle['weighted']:.3f}" if rec.oracle else ""
    return (
        f"v{rec.policy_version} loss {loss} reward {rec.reward['weighted']:+.3f}{oracle} "
        f"{rec.videos_per_second:.2f} clip/s"
    )


def varied_clips(prompts: list[str], per_prompt: int, n: int) -> list[int]:
    """Indices of ``n`` evaluation clips (seed 0 of each prompt) whose prompts differ as much as the list
    allows: greedily the prompt sharing the fewest words with those already chosen (colours, shapes and
    directions are words of the world's prompts)."""
    first = list(range(0, len(prompts), per_prompt))
    chosen: list[int] = []
    seen: set[str] = set()
    while first and len(chosen) < n:
        best = min(first, key=lambda i: (len(set(prompts[i].split()) & seen), i))
        chosen.append(best)
        first.remove(best)
        seen |= set(prompts[best].split())
    return chosen


def evaluate(job, version: int, keep_clips: int = 0) -> dict:
    """The final policy against the pretrained one on the evaluation prompts, same seeds: judged by the
    oracle in the world (and by the served reward too when it is a learned one: the hacking check), by the
    served reward alone with world=false. ``job``: the running ``OnlineRun`` (its generators and reward).
    ``keep_clips``: side-by-side clips written to ``eval_clips/`` (``clips.json`` lists them)."""
    from actors.refresh import roll_deployment

    cfg = job.cfg
    t0 = time.time()
    prompts = cfg.read_prompts()[1][: cfg.eval_n_prompts]
    texts = [p for p in prompts for _ in range(cfg.eval_seeds)]
    seeds = [10_000 + i for i in range(len(texts))]
    learned = cfg.reward.model != "oracle"
    keep = varied_clips(texts, cfg.eval_seeds, keep_clips)

    def judged(v: int, clips: list[int] = ()) -> dict:
        """Scores of version ``v`` on every evaluation clip, and the mp4 of those at ``clips``."""
        chunks = [idx for idx in split_even(list(range(len(texts))), len(job.gens)) if idx]
        refs = [
            g.evaluate.remote([texts[i] for i in idx], [seeds[i] for i in idx], v, learned,
                              [k for k, i in enumerate(idx) if i in clips])
            for g, idx in zip(job.gens, chunks)
        ]  # fmt: skip
        parts = get(refs)
        out = {k: np.concatenate([p[k] for p in parts]) for k in ("oracle", "reward") if k in parts[0]}
        out["clips"] = {idx[k]: mp4 for idx, p in zip(chunks, parts) for k, mp4 in p["clips"].items()}
        return out

    res = {name: judged(v, keep) for name, v in (("policy", version), ("pretrained", 0))}
    w = cfg.pairs.weights
    out = {
        "n": len(texts),
        "prompts": cfg.eval_prompt_spec(),
        "policy_version": version,
        "judge": "oracle" if cfg.world else f"served reward ({cfg.reward.model})",
    }
    if cfg.world:
        out["oracle_win_rate"] = win_rates(
            res["policy"]["oracle"], res["pretrained"]["oracle"], w, TIE_MARGINS["oracle"]
        )
        out["oracle_mean"] = {k: res[k]["oracle"].mean(0).tolist() for k in ("policy", "pretrained")}
    if learned:
        lr = win_rates(res["policy"]["reward"], res["pretrained"]["reward"], w, TIE_MARGINS["learned"])
        out["learned_win_rate"] = lr
        out["reward_mean"] = {k: res[k]["reward"].mean(0).tolist() for k in ("policy", "pretrained")}
        if cfg.world:
            out["reward_hacking"] = reward_hacking(lr, out["oracle_win_rate"], len(texts))
            start = res["pretrained"]
            if job.reward_state["version"] != cfg.reward.version:  # refreshed: the start's reward judges the start
                roll_deployment(cfg.reward, cfg.reward.model, cfg.reward.version)
                start = judged(0)
            out["reward_onpolicy"] = onpolicy(cfg, job.reward_state, start, res["policy"], len(texts))
    out["clips"] = write_clips(job.rundir.out, texts, seeds, keep, res)
    out["seconds"] = round(time.time() - t0, 1)
    job.rundir.write_json("evaluation.json", out)
    return out


def write_clips(out, texts: list[str], seeds: list[int], keep: list[int], res: dict) -> list[dict]:
    """``eval_clips/<i>_{pretrained,aligned}.mp4`` of the kept evaluation clips, with their scores."""
    where = out / EVAL_CLIPS
    where.mkdir(parents=True, exist_ok=True)
    listed = []
    for i in keep:
        entry = {"prompt": texts[i], "seed": seeds[i]}
        for name, key in (("pretrained", "pretrained"), ("aligned", "policy")):
            f = where / f"{i:04d}_{name}.mp4"
            f.write_bytes(res[key]["clips"][i])
            entry[name] = f"{EVAL_CLIPS}/{f.name}"
            if "oracle" in res[key]:
                entry[f"{name}_oracle"] = dict(zip(DIMS, res[key]["oracle"][i].tolist()))
        listed.append(entry)
    (where / "clips.json").write_text(json.dumps(listed, indent=2))
    return listed


def onpolicy(cfg: OnlineConfig, reward_state: dict, start: dict, end: dict, n: int) -> dict | None:
    """The reward's on-policy accuracy on the evaluation's own clips: within-prompt pairs of the pretrained
    policy's samples judged by the reward served at the start of the run (``start``), and of the final
    policy's judged by the reward served at its end (``end``; the same model unless refreshed), labelled by
    the simulated raters (``rlhf.eval.onpolicy``); needs eval_seeds >= 2."""
    if cfg.eval_seeds < 2:
        return None
    pairs = within_group_pairs([i // cfg.eval_seeds for i in range(n)])
    out = {
        "pairs": len(pairs),
        "start_reward_version": cfg.reward.version,
        "end_reward_version": reward_state["version"],
    }
    for when, res in (("start", start), ("end", end)):
        labels = rater_labels(res["oracle"], pairs, seed=cfg.seed)
        out[when] = onpolicy_table(res["reward"], res["oracle"], pairs, labels)
    return out


def summarize(
    cfg: OnlineConfig,
    recs: list[dict],
    version: int,
    train_wall: float,
    evaluation: dict | None,
    trainer_failures: list[str],
) -> dict:
    phases: dict[str, float] = {}
    for r in recs:
        for k, v in r["phases"].items():
            phases[k] = phases.get(k, 0.0) + v
    return {
        "iterations": len(recs),
        "policy_version": version,
        "mode": cfg.mode,
        "algo": cfg.trainer.algo.algo,
        "reward": cfg.reward.model,
        "weights": cfg.pairs.weights.label,
        "videos": sum(r["videos"] for r in recs),
        "loop_seconds": round(train_wall, 1),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "trainer_restarts": trainer_failures,
        "restarted_actors": sorted({a for r in recs for a in r.get("restarted_actors", [])}),
        "evaluation": evaluation,
    }


def _dims(o: dict) -> str:
    return f"VQ {100 * o['VQ']:.1f}, MQ {100 * o['MQ']:.1f}, TA {100 * o['TA']:.1f}"


def result_lines(summary: dict) -> list[str]:
    """The run's result for the console: win rates of the final policy and the served reward's accuracy."""
    ev = summary.get("evaluation")
    if not ev:
        return []
    v = summary["policy_version"]
    if "oracle_win_rate" not in ev:  # world=false: the served reward is the only judge
        o = ev["learned_win_rate"]
        return [
            f"win rate of the final policy (v{v}) against the pretrained one on {ev['n']} clips, judged by the "
            f"{ev['judge']} (no oracle: world=false): weighted {100 * o['weighted']:.1f}% ({_dims(o)})"
        ]
    o = ev["oracle_win_rate"]
    line = (
        f"oracle win rate of the final policy (v{v}) against the pretrained one on {ev['n']} held-out clips: "
        f"weighted {100 * o['weighted']:.1f}% ({_dims(o)})"
    )
    if "learned_win_rate" in ev:
        hacking = ev["reward_hacking"]
        line += f"; learned reward {100 * ev['learned_win_rate']['weighted']:.1f}%"
        line += f", HACKING FLAGGED on {', '.join(hacking)}" if hacking else ""
    lines = [line]
    op = ev.get("reward_onpolicy")
    if op:
        lines.append(
            "on-policy accuracy of the served reward without ties (within-prompt pairs, rater labels; the "
            "oracle's ceiling in brackets): "
            + "; ".join(
                f"{when} "
                + ", ".join(
                    f"{d} {100 * op[when][d]['without_ties']:.1f}% ({100 * op[when][d]['ceiling_without_ties']:.1f}%)"
                    for d in DIMS
                )
                for when in ("start", "end")
            )
            + f" on {op['pairs']} pairs each"
        )
    return lines
