"""Informative preference pairs of the moving-shapes world, written as mp4s plus a parquet file.

Each pair shows two videos of one prompt (of ``sampling.grammar``) that differ in their defects. A video
gets 0-2 defects drawn from the kinds that apply to its prompt (ten; twelve for pair prompts) (so wrong colour, shape, direction or speed supply the TA signal) with
strengths in [0.15, 1]; with probability ``same_kind_prob`` B repeats A's defect kinds at other
strengths, which makes fine-grained pairs. Pair ``i`` depends only on ``(seed, i)``, so a dataset
is identical whatever the number of worker processes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .annotator import LABEL_DIMS, AnnotatorConfig, annotate, expected_ceiling
from .oracle import score
from .prompts import PairPrompt, Prompt, check_grammar, draw_prompt
from .render import DEFECTS, RenderSpec, defects_for, render


@dataclass(frozen=True)
class PairSampling:
    """How pairs are drawn."""

    heldout_fraction: float = 0.2  # share of pairs drawn from held-out prompts
    clean_prob: float = 0.2  # chance that a video has no defect
    max_defects: int = 2  # defects per video: 1..max_defects when not clean
    min_strength: float = 0.15  # defect strengths are drawn uniformly in [min_strength, max_strength]
    max_strength: float = 1.0  # upper end of the defect strengths (<= 1)
    same_kind_prob: float = 0.3  # B gets A's defect kinds at other strengths
    grammar: str = "single"  # prompts drawn: single | pair | mixed (see rlhf.synthetic.prompts)
    pair_share: float = 0.5  # with grammar "mixed": share of pairs drawn from pair prompts
    # chance that a pair is a contrast pair: both sides are one clip (same seed, same defects) and one side
    # has one more text-alignment defect of its prompt's kind, so the pair differs in that defect alone
    contrast_prob: float = 0.0

    def validate(self) -> None:
        check_grammar(self.grammar)
        for name in ("heldout_fraction", "clean_prob", "same_kind_prob", "pair_share", "contrast_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if not 0.0 < self.min_strength <= self.max_strength <= 1.0:
            raise ValueError(
                f"need 0 < min_strength <= max_strength <= 1, got {self.min_strength}, {self.max_strength}"
            )
        if self.max_defects < 1:
            raise ValueError(f"max_defects must be >= 1, got {self.max_defects}")


@dataclass(frozen=True)
class PairSpec:
    index: int
    prompt: Prompt | PairPrompt
    defects_a: dict
    defects_b: dict
    seed_a: int
    seed_b: int


def _defects(
    rng: np.random.Generator, cfg: PairSampling, applicable: tuple[str, ...], kinds: list[str] | None = None
) -> dict[str, float]:
    if kinds is None:
        if rng.random() < cfg.clean_prob:
            return {}
        n = int(rng.integers(1, cfg.max_defects + 1))
        kinds = list(rng.choice(list(applicable), size=n, replace=False))
    return {str(k): round(float(rng.uniform(cfg.min_strength, cfg.max_strength)), 3) for k in kinds}


def pair_spec(seed: int, index: int, cfg: PairSampling = PairSampling()) -> PairSpec:
    """The ``index``-th pair of the stream ``seed`` (independent of every other index)."""
    rng = np.random.default_rng([seed, index])
    split = "heldout" if rng.random() < cfg.heldout_fraction else "train"
    prompt = draw_prompt(rng, split, cfg.grammar, cfg.pair_share)
    applicable = defects_for(prompt)
    a = _defects(rng, cfg, applicable)
    if cfg.contrast_prob > 0.0 and rng.random() < cfg.contrast_prob:  # drawn only when asked: streams stay put
        return _contrast(rng, cfg, index, prompt, a, applicable)
    if a and rng.random() < cfg.same_kind_prob:
        b = _defects(rng, cfg, applicable, list(a))
    else:
        b = _defects(rng, cfg, applicable)
        if b == a:  # two clean videos carry no preference signal
            b = _defects(rng, cfg, applicable, [str(rng.choice(list(applicable)))])
    seeds = rng.integers(0, 2**31 - 1, size=2)
    return PairSpec(index, prompt, a, b, int(seeds[0]), int(seeds[1]))


def _contrast(
    rng: np.random.Generator, cfg: PairSampling, index: int, prompt, a: dict, applicable: tuple[str, ...]
) -> PairSpec:
    """A pair that differs in one text-alignment defect only, that side drawn at random."""
    extra = [k for k in applicable if DEFECTS[k] == "TA" and k not in a]
    worse = {**a, **_defects(rng, cfg, applicable, [str(rng.choice(extra))])}
    seed = int(rng.integers(0, 2**31 - 1))
    if rng.random() < 0.5:
        return PairSpec(index, prompt, a, worse, seed, seed)
    return PairSpec(index, prompt, worse, a, seed, seed)


def score_pair(spec: PairSpec, render_spec: RenderSpec = RenderSpec()) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Render both videos of a pair and score the frames as they are (no codec)."""
    va = render(spec.prompt, spec.defects_a, spec.seed_a, render_spec)
    vb = render(spec.prompt, spec.defects_b, spec.seed_b, render_spec)
    return va, vb, score(va, spec.prompt), score(vb, spec.prompt)


def labelled_pair(
    spec: PairSpec, seed: int, render_spec: RenderSpec, annotator: AnnotatorConfig, crf: int
) -> tuple[dict, dict[str, bytes], dict[str, np.ndarray]]:
    """Render, encode and score one pair in memory -> (record, mp4 bytes per side, decoded frames per side).

    The oracle scores the *decoded* mp4, so labels describe exactly what a reward model will read
    (H.264 4:2:0 softens colour edges and moves VQ/MQ by about 0.05 on average).
    """
    from rlhf.video import encode_video, read_video

    data, frames, scores = {}, {}, {}
    for side, defects, vseed in (("a", spec.defects_a, spec.seed_a), ("b", spec.defects_b, spec.seed_b)):
        data[side] = encode_video(render(spec.prompt, defects, vseed, render_spec), fps=render_spec.fps, crf=crf)
        frames[side] = read_video(data[side])
        scores[side] = score(frames[side], spec.prompt)
    labels = annotate(scores["a"], scores["b"], np.random.default_rng([seed, spec.index, 1]), annotator)
    record = {
        "id": f"{seed}-{spec.index:07d}",
        "prompt": spec.prompt.text,
        "video_a": f"videos/{spec.index:07d}_a.mp4",
        "video_b": f"videos/{spec.index:07d}_b.mp4",
        **labels,
        "score_a": scores["a"],
        "score_b": scores["b"],
        "split": spec.prompt.split,
        "defects_a": json.dumps(spec.defects_a, sort_keys=True),
        "defects_b": json.dumps(spec.defects_b, sort_keys=True),
        "seed_a": spec.seed_a,
        "seed_b": spec.seed_b,
    }
    return record, data, frames


def make_record(
    spec: PairSpec, out_dir: Path, seed: int, render_spec: RenderSpec, annotator: AnnotatorConfig, crf: int
) -> dict:
    """Label one pair and write its two mp4s under ``out_dir``; returns its preference record."""
    from rlhf.video import write_encoded

    record, data, _ = labelled_pair(spec, seed, render_spec, annotator, crf)
    write_encoded(out_dir / record["video_a"], data["a"])
    write_encoded(out_dir / record["video_b"], data["b"])
    return record


def _worker(args) -> list[dict]:
    indices, out_dir, seed, sampling, render_spec, annotator, crf = args
    return [make_record(pair_spec(seed, i, sampling), out_dir, seed, render_spec, annotator, crf) for i in indices]


def dataset_stats(records: list[dict], annotator: AnnotatorConfig) -> dict:
    """Tie rate, label balance and ceilings (expected, and realised on the sampled labels)."""
    from rlhf.data.schema import label_value
    from rlhf.reward.metrics import accuracy_with_ties, accuracy_without_ties

    out = {}
    for dim in LABEL_DIMS:
        diff = np.array([r["score_a"][dim] - r["score_b"][dim] for r in records])
        human = np.array([label_value(r[dim]) for r in records], dtype=np.float64)
        exp = expected_ceiling(diff, annotator)
        realised_wt = accuracy_with_ties(human, diff)[0]
        realised_wo = accuracy_without_ties(human, diff) if np.any(human != 0) else float("nan")
        out[dim] = {
            "tie_rate": float(np.mean(human == 0)),
            "A_rate": float(np.mean(human == 1)),
            "expected_tie_rate": exp["tie_rate"],
            "ceiling_with_ties": exp["with_ties"],
            "ceiling_without_ties": exp["without_ties"],
            "realised_with_ties": realised_wt,
            "realised_without_ties": realised_wo,
        }
    return out


@dataclass
class BuildResult:
    records: list[dict]
    seconds: float
    stats: dict = field(default_factory=dict)


def build_dataset(
    out_dir: str | Path,
    pairs: int,
    seed: int = 0,
    sampling: PairSampling = PairSampling(),
    render_spec: RenderSpec = RenderSpec(),
    annotator: AnnotatorConfig = AnnotatorConfig(),
    crf: int = 12,
    workers: int = 2,
    progress: bool = True,
    generated=None,
) -> BuildResult:
    """Write ``pairs`` rendered pairs, then the generated pairs of ``generated`` (a
    :class:`rlhf.synthetic.generated.GeneratedSampling`, optional) under ``out_dir`` (videos/ and
    prefs.parquet, plus manifest.json with statistics per source)."""
    from tqdm import tqdm

    from rlhf.data.schema import write_preferences

    n_generated = generated.prompts if generated is not None else 0
    if pairs < 0 or pairs + n_generated < 1:
        raise ValueError(f"need pairs >= 1 or generated.prompts >= 1, got pairs={pairs}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunk = 25
    jobs = [
        (range(s, min(s + chunk, pairs)), out_dir, seed, sampling, render_spec, annotator, crf)
        for s in range(0, pairs, chunk)
    ]
    records: list[dict] = []
    bar = tqdm(total=pairs, desc="pairs", unit="pair", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for recs in pool.imap(_worker, jobs):
                records.extend(recs)
                bar.update(len(recs))
    else:
        for job in jobs:
            recs = _worker(job)
            records.extend(recs)
            bar.update(len(recs))
    bar.close()
    for r in records:
        r["source"] = "rendered"
    sources = {"rendered": dataset_stats(records, annotator)} if records else {}
    if n_generated:
        from .generated import build_generated

        made = build_generated(out_dir, seed, generated, annotator, crf, render_spec.fps, progress)
        sources["generated"] = dataset_stats(made, annotator)
        records += made
    write_preferences(records, out_dir / "prefs.parquet")
    seconds = time.perf_counter() - t0
    stats = dataset_stats(records, annotator)
    manifest = {
        "pairs": len(records),
        "rendered_pairs": pairs,
        "seed": seed,
        "seconds": round(seconds, 2),
        "workers": workers,
        "splits": {s: sum(r["split"] == s for r in records) for s in ("train", "heldout")},
        "sampling": asdict(sampling),
        "render": asdict(render_spec),
        "annotator": asdict(annotator),
        "generated": asdict(generated) if n_generated else None,
        "stats": stats,
        "stats_by_source": sources,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return BuildResult(records, seconds, stats)
