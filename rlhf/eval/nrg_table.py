"""Flow-NRG tables (VideoAlign Tables 6 and 7 in miniature): guided against unguided sampling.

    python jobs/nrg_table.py --out runs/nrg --noise-model runs/latent_noise/model \\
        --clean-model runs/latent_clean/model scale=1.0
    python jobs/nrg_table.py --out runs/nrg ... tune_scales=0.5,1,2     # pick the scale on train prompts first
    python jobs/nrg_table.py --out runs/nrg ... --resume                 # keep the rows already drawn

Every row samples the same prompts and seeds as the unguided row (held-out prompts by default), so a
clip and its unguided twin start from the same noise; the oracle annotator scores both (as stored,
H.264) and a row's win rate per dimension counts a win 1, a tie (|difference| <= 0.01) 0.5, a loss 0.
* Table 6: dimension weights VQ:MQ:TA per row (``rows``) with the "w/ noise" latent reward model.
* Table 7: guidance with the "w/ noise" and the "w/o noise" models on the weights ``table7_rows``
  (the paper's is MQ only, 0:1:0).
* Cost: sampling seconds per clip of each row against the unguided row, measured in the same run.
The guidance scale is ``scale``, or, with ``tune_scales``, the one whose guided clips win most often
on the rows' own weighted oracle score over ``tune_prompts`` *training* prompts (never the held-out
ones the table reports). Writes ``rows/*.json`` (per-row scores, resumable), ``table.json``, ``table.md``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlhf.artefacts import repo_relative
from rlhf.config import parse_cli, run_job, save_config
from rlhf.dims import DIMS, RewardWeights
from rlhf.generator.model import DEFAULT_GENERATOR
from rlhf.generator.sampler import SamplerConfig


@dataclass
class NRGTableConfig:
    out: str = "runs/nrg"  # run directory: rows/*.json, table.json, table.md
    generator: str = str(DEFAULT_GENERATOR)  # the generator every row samples (dir or hub id)
    noise_model: str = ""  # latent reward trained on noised latents ("w/ noise")
    clean_model: str = ""  # latent reward trained on clean latents ("w/o noise"); "" = no Table 7 row
    prompts: str = "heldout"  # heldout | all | a text file, optionally :single|pair|mixed (tuning: train of it)
    n_prompts: int = 0  # the first N of those prompts (0 = all; pair listings are in a fixed shuffled order)
    per_prompt: int = 2  # clips per prompt
    seed: int = 0  # clip i uses seed + i, in every row
    rows: str = "0:0:1,0.1:0.1:0.8,0.1:0.1:0.6,0.5:0.5:0"  # Table 6 weights VQ:MQ:TA
    table7_rows: str = "0:1:0"  # Table 7 weights (comma-separated VQ:MQ:TA rows)
    scale: float = 1.0  # guidance scale w (ignored when tune_scales is set)
    start: float = 0.0  # guided steps: start <= i / steps < end
    end: float = 1.0  # end of the guided steps, a fraction of them (tune_ends can choose it)
    control: bool = False  # Table 7 rows also with the noise model's *untrained* initialisation (a control)
    control_rows: str = ""  # weights of the control rows (default: every Table 7 row)
    tune_scales: str = ""  # e.g. 0.5,1,2: choose the scale on training prompts first
    tune_ends: str = ""  # e.g. 0.7,1: also choose the end of the guided step range (default: end)
    tune_prompts: int = 16  # training prompts (x per_prompt clips) per tuning row
    tune_rows: str = ""  # weights rows tried per scale (default: the Table 6 and Table 7 rows)
    cost_reps: int = 3  # interleaved timing rounds of unguided / guided sampling (0 = skip)
    cost_clips: int = 16  # clips per timed batch
    threads: int = 2  # torch intra-op threads
    resume: bool = False  # keep the rows already drawn in out/rows
    # how every row samples (guided rows add the latent reward's gradient)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def validate(self) -> None:
        if not self.noise_model:
            raise ValueError("noise_model is required (train one with python jobs/train_latent_reward.py)")
        self.weight_rows(), self.table7_weights()  # parsing validates each weighting
        if self.scale <= 0 and not self.tune_scales:
            raise ValueError("scale must be > 0")
        if self.per_prompt < 1 or self.tune_prompts < 1 or self.n_prompts < 0:
            raise ValueError("per_prompt and tune_prompts must be >= 1 and n_prompts >= 0")
        self.sampler.validate()

    def weight_rows(self) -> list[RewardWeights]:
        return RewardWeights.parse_list(self.rows)

    def table7_weights(self) -> list[RewardWeights]:
        return RewardWeights.parse_list(self.table7_rows)


def row_name(model: str, w: RewardWeights, suffix: str = "") -> str:
    """File-safe row name: ``noise_0.1-0.1-0.8`` (+ ``suffix``)."""
    return f"{model}_{w.label.replace(':', '-')}{suffix}"


def guidance_config(cfg: NRGTableConfig, weights: RewardWeights, scale: float, end: float | None = None):
    from rlhf.generator.guidance import GuidanceConfig

    return GuidanceConfig(scale=scale, weights=weights, start=cfg.start, end=cfg.end if end is None else end)


class Rows:
    """Draws rows (unguided or guided), scores them with the oracle, caches each row as JSON."""

    def __init__(self, cfg: NRGTableConfig, gen, prompts: list[str], seeds: list[int], where: Path):
        self.cfg, self.gen, self.prompts, self.seeds, self.where = cfg, gen, prompts, seeds, where
        where.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, model=None, weights=None, scale: float = 0.0, end: float | None = None) -> dict:
        import numpy as np
        from tqdm import tqdm

        from rlhf.eval.judges import OracleJudge, as_matrix
        from rlhf.generator.sampler import sample

        path = self.where / f"{name}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row["prompts"] == self.prompts and row["seeds"] == self.seeds:
                return row
        guidance = None
        if model is not None:
            guidance = (model, guidance_config(self.cfg, weights, scale, end))
        step, scores, seconds = self.cfg.sampler.batch_size, [], 0.0
        with tqdm(total=len(self.prompts), desc=name, unit="clip", file=sys.stdout, mininterval=10) as bar:
            for i in range(0, len(self.prompts), step):
                t0 = time.time()
                b = sample(
                    self.gen, self.prompts[i : i + step], self.seeds[i : i + step], self.cfg.sampler, guidance=guidance
                )
                seconds += time.time() - t0
                scores.append(as_matrix(OracleJudge()(b.videos, b.prompts)))
                bar.update(len(b.seeds))
        row = {
            "name": name,
            "weights": weights.as_list() if weights else None,
            "scale": scale,
            "prompts": self.prompts,
            "seeds": self.seeds,
            "seconds": seconds,
            "oracle": np.concatenate(scores).tolist(),
        }
        path.write_text(json.dumps(row))
        return row


def compare(row: dict, base: dict, weights) -> dict:
    import numpy as np

    from rlhf.eval.judges import TIE_MARGINS
    from rlhf.eval.winrate import win_rates

    wr = win_rates(np.array(row["oracle"]), np.array(base["oracle"]), weights or RewardWeights(), TIE_MARGINS["oracle"])
    return {
        "win": {k: round(100 * v, 1) for k, v in wr.items()},
        "oracle_mean": dict(zip(DIMS, np.round(np.mean(row["oracle"], 0), 4).tolist())),
        "seconds_per_clip": round(row["seconds"] / len(row["seeds"]), 3),
        "cost_vs_unguided": round(row["seconds"] / base["seconds"], 2),
    }


def run(cfg: NRGTableConfig) -> dict:
    import numpy as np
    import torch

    from rlhf.align.offline import read_prompts
    from rlhf.eval.winrate import steering
    from rlhf.generator.model import load_generator
    from rlhf.reward.latent import LatentReward

    cfg.validate()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if (out / "rows").exists() and not cfg.resume:
        raise FileExistsError(f"{out} already holds rows; pass --resume to keep them or use a fresh --out")
    save_config(cfg, out)
    gen = load_generator(cfg.generator)
    noise_model = LatentReward.load(cfg.noise_model)
    rows6 = cfg.weight_rows()
    report: dict = {"config": repo_relative(asdict(cfg))}

    scale = cfg.scale
    if cfg.tune_scales:
        grammar = cfg.prompts.partition(":")[2]  # tune on the training prompts of the table's grammar
        train = read_prompts(f"train:{grammar}" if grammar else "train")
        pick = sorted(np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.tune_prompts])
        tp = [train[i] for i in pick for _ in range(cfg.per_prompt)]
        tune = Rows(cfg, gen, tp, [cfg.seed + 5_000_000 + i for i in range(len(tp))], out / "rows" / "tune")
        base = tune.get("unguided")
        report["tuning"] = {}
        best = None
        tune_rows = (
            [cfg._weights(r) for r in cfg.tune_rows.split(",") if r.strip()]
            if cfg.tune_rows
            else rows6 + cfg.table7_weights()
        )
        ends = [float(x) for x in cfg.tune_ends.split(",")] if cfg.tune_ends else [cfg.end]
        for s in (float(x) for x in cfg.tune_scales.split(",")):
            for e in ends:
                wins = {
                    w.label: compare(tune.get(row_name("noise", w, f"_s{s:g}_e{e:g}"), noise_model, w, s, e), base, w)[
                        "win"
                    ]["weighted"]
                    for w in tune_rows
                }
                mean = float(np.mean(list(wins.values())))
                report["tuning"][f"scale {s:g}, end {e:g}"] = {"weighted_win_per_row": wins, "mean": round(mean, 1)}
                print(
                    f"tuning scale {s:g}, end {e:g}: mean weighted win {mean:.1f}% over {len(wins)} rows on "
                    "training prompts",
                    flush=True,
                )
                if best is None or mean > best[2]:
                    best = (s, e, mean)
        scale, cfg.end = best[0], best[1]
        print(f"chosen scale {scale:g}, end {cfg.end:g}", flush=True)
    report["scale"], report["end"] = scale, cfg.end

    prompts = read_prompts(cfg.prompts)[: cfg.n_prompts or None]
    texts = [p for p in prompts for _ in range(cfg.per_prompt)]
    rows = Rows(cfg, gen, texts, [cfg.seed + i for i in range(len(texts))], out / "rows" / "table")
    base = rows.get("unguided")
    report["unguided"] = {
        "oracle_mean": dict(zip(DIMS, np.round(np.mean(base["oracle"], 0), 4).tolist())),
        "seconds_per_clip": round(base["seconds"] / len(texts), 3),
        "clips": len(texts),
    }
    report["table6"] = {w.label: compare(rows.get(row_name("noise", w), noise_model, w, scale), base, w) for w in rows6}
    report["table7"] = {}
    for w in cfg.table7_weights():
        report["table7"][f"{w.label} w/ noise"] = compare(
            rows.get(row_name("noise", w), noise_model, w, scale), base, w
        )
    guided = [(w, report["table6"][w.label]["win"]) for w in rows6]
    guided += [
        (w, report["table7"][f"{w.label} w/ noise"]["win"])
        for w in cfg.table7_weights()
        if w.label not in report["table6"]
    ]
    report["steering"] = steering(guided)
    if cfg.clean_model:  # loaded last: the table can start while the "w/o noise" model still trains
        clean = LatentReward.load(cfg.clean_model)
        for w in cfg.table7_weights():
            report["table7"][f"{w.label} w/o noise"] = compare(rows.get(row_name("clean", w), clean, w, scale), base, w)
    if cfg.control:  # what guidance does with the same architecture before any training
        untrained = LatentReward.from_generator(cfg.generator, noise_model.config)
        for w in RewardWeights.parse_list(cfg.control_rows) if cfg.control_rows else cfg.table7_weights():
            report["table7"][f"{w.label} untrained (control)"] = compare(
                rows.get(row_name("untrained", w), untrained, w, scale), base, w
            )
    if cfg.cost_reps:
        report["cost"] = guidance_cost(cfg, gen, texts[: cfg.cost_clips], noise_model, rows6[0], scale)
    (out / "table.json").write_text(json.dumps(report, indent=2))
    (out / "table.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    return report


def guidance_cost(cfg: NRGTableConfig, gen, prompts: list[str], model, weights, scale: float) -> dict:
    """Seconds per clip of unguided and guided sampling timed in alternation (same clips), and their
    median ratio: rows' own timings can drift with machine load, interleaved rounds share it."""
    import numpy as np

    from rlhf.generator.sampler import sample

    g = guidance_config(cfg, weights, scale)
    seeds = list(range(len(prompts)))
    times = {"unguided": [], "guided": []}
    for _ in range(cfg.cost_reps):
        for name, guidance in (("unguided", None), ("guided", (model, g))):
            t0 = time.perf_counter()
            sample(gen, prompts, seeds, cfg.sampler, guidance=guidance)
            times[name].append((time.perf_counter() - t0) / len(prompts))
    ratio = float(np.median(np.array(times["guided"]) / np.array(times["unguided"])))
    return {
        "seconds_per_clip": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "guided_over_unguided": round(ratio, 2),
        "weights": weights.label,
        "guided_fraction_of_steps": round(cfg.end - cfg.start, 2),
    }


def markdown(r: dict) -> str:
    n = r["unguided"]["clips"]
    lines = [
        f"Flow-NRG, guidance scale {r['scale']:g} on steps [{r['config']['start']:g}, {r['end']:g}) of the "
        f"sampler: oracle win rate (%) of guided against unguided sampling, {n} held-out clips (same prompts "
        "and seeds; tie = 0.5).",
        "",
        'Table 6 ("w/ noise" latent reward)',
        "",
        "| weights VQ:MQ:TA | VQ | MQ | TA | weighted | cost vs unguided |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in r["table6"].items():
        w = v["win"]
        lines.append(f"| {k} | {w['VQ']} | {w['MQ']} | {w['TA']} | {w['weighted']} | {v['cost_vs_unguided']}x |")
    lines += [
        "",
        "Table 7 (latent reward trained w/ and w/o noise)",
        "",
        "| weights VQ:MQ:TA, latent reward | VQ | MQ | TA | cost vs unguided |",
        "|---|---|---|---|---|",
    ]
    for k, v in r["table7"].items():
        w = v["win"]
        lines.append(f"| {k} | {w['VQ']} | {w['MQ']} | {w['TA']} | {v['cost_vs_unguided']}x |")
    if "steering" in r:
        lines += ["", "Steering (w/ noise rows): mean win rate at each weight of that dimension, rising = monotone", ""]
        for d, v in r["steering"].items():
            curve = ", ".join(f"{w:g} -> {win:.1f}" for w, win in v["curve"])
            lines.append(f"- {d}: {curve} ({'monotone' if v['monotone'] else 'not monotone'})")
    u = r["unguided"]
    lines += [
        "",
        f"Unguided: {u['seconds_per_clip']} s/clip sampling; oracle means "
        + ", ".join(f"{d} {u['oracle_mean'][d]}" for d in DIMS)
        + ".",
    ]
    if "cost" in r:
        c = r["cost"]
        lines += [
            f"Cost: guided sampling takes {c['guided_over_unguided']}x the time of unguided sampling "
            f"(median of {len(c['seconds_per_clip']['guided'])} interleaved rounds, weights {c['weights']}, "
            f"guidance on {c['guided_fraction_of_steps']:.0%} of the steps); the per-row cost column is each "
            "row's own wall time against the unguided row's and drifts with machine load."
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(
        NRGTableConfig,
        argv,
        __doc__.split("\n")[0],
        flags={
            "--out": ("out", str, "run directory"),
            "--noise-model": ("noise_model", str, "latent reward trained w/ noise"),
            "--clean-model": ("clean_model", str, "latent reward trained w/o noise"),
        },
        bool_flags={"--resume": ("resume", "keep rows already drawn")},
    )
    return run_job(run, cfg)


if __name__ == "__main__":
    sys.exit(main())
