"""What a generator draws, judged by the oracle: scores and attribute accuracy on held-out prompts.

An attribute counts as right when the oracle's measurement is nearest to the prompt's value among
all values of that attribute: hue for colour, the best-matching template for shape, the displacement
angle for direction (a clip whose object moves under 0.05 of the frame has no direction), the path
length for speed. A clip in which no object is found gets every object attribute wrong. Clips are judged after the
H.264 round trip that datasets store (see ``judges.as_stored``).
"""

from __future__ import annotations

import numpy as np

from rlhf.dims import DIMS
from rlhf.synthetic.oracle import PAIR_TA_WEIGHTS, measure, measure_pair, pair_ta_parts, score
from rlhf.synthetic.prompts import COLOURS, DIRECTIONS, SHAPES, SPEEDS, Prompt, split_prompts

ATTRIBUTES = ("colour", "shape", "direction", "speed")


def read_attributes(frames: np.ndarray) -> dict[str, str | None]:
    """The oracle's reading of each attribute of a clip (``None`` where it cannot tell)."""
    from rlhf.synthetic.render import hue_of

    m = measure(frames)
    if m.found == 0.0 or m.chroma == 0.0:
        return dict.fromkeys(ATTRIBUTES)
    out = {}
    hues = {c: hue_of(np.array(rgb))[0] for c, rgb in COLOURS.items()}
    out["colour"] = min(hues, key=lambda c: abs((m.hue - hues[c] + np.pi) % (2 * np.pi) - np.pi))
    out["shape"] = min(SHAPES, key=lambda s: float(np.mean(m.shape_err[s])))
    norm = float(np.linalg.norm(m.displacement))
    out["direction"] = (
        max(DIRECTIONS, key=lambda d: float(np.dot(m.displacement, DIRECTIONS[d]))) if norm >= 0.05 else None
    )
    out["speed"] = min(SPEEDS, key=lambda s: abs(norm - SPEEDS[s]))
    return out


def attribute_accuracy(videos, prompts: list[Prompt]) -> dict[str, float]:
    hits = {a: 0 for a in ATTRIBUTES}
    for v, p in zip(videos, prompts):
        seen = read_attributes(v)
        for a in ATTRIBUTES:
            hits[a] += seen[a] == getattr(p, a)
    return {a: hits[a] / len(prompts) for a in ATTRIBUTES}


def oracle_summary(videos, prompts: list) -> dict[str, float]:
    """Mean oracle VQ/MQ/TA/Overall of ``videos`` drawn for ``prompts``; attribute accuracies (``acc_*``) over
    the single-object prompts and mean TA parts (``part_*``: colour, shape, colour2, shape2, relation, ...)
    over the pair prompts, where there are any."""
    from .judges import as_stored

    videos = as_stored(videos)
    scores = [score(v, p) for v, p in zip(videos, prompts)]
    out = {d: float(np.mean([s[d] for s in scores])) for d in (*DIMS, "Overall")}
    singles = [(v, p) for v, p in zip(videos, prompts) if p.kind == "single"]
    if singles:
        out.update({f"acc_{a}": v for a, v in attribute_accuracy(*zip(*singles)).items()})
    pairs = [pair_ta_parts(measure_pair(v), p) for v, p in zip(videos, prompts) if p.kind == "pair"]
    if pairs:
        out.update({f"part_{k}": float(np.mean([q[k] for q in pairs])) for k in PAIR_TA_WEIGHTS})
    return out


def evaluate_generator(
    generator,
    n_prompts: int = 58,
    seeds: int = 2,
    sampler=None,
    split: str = "heldout",
    seed0: int = 10_000,
    grammar: str = "single",
) -> dict:
    """Sample ``seeds`` clips for each of the first ``n_prompts`` prompts of ``split`` (of ``grammar``) and
    judge them, next to clean renders and pure-noise clips of the same prompts; with "mixed", also per kind
    (``by_kind``)."""
    from rlhf.generator.model import load_generator
    from rlhf.generator.sampler import SamplerConfig, sample
    from rlhf.synthetic.render import RenderSpec, render

    gen = load_generator(generator) if not hasattr(generator, "velocity") else generator
    prompts = [p for p in split_prompts(split, grammar)[:n_prompts] for _ in range(seeds)]
    seed_list = [seed0 + i for i in range(len(prompts))]
    batch = sample(gen, [p.text for p in prompts], seed_list, sampler or SamplerConfig())
    T, H, W = gen.video_shape
    spec = RenderSpec(T, H, W)
    renders = np.stack([render(p, None, seed=s, spec=spec) for p, s in zip(prompts, seed_list)])
    rng = np.random.default_rng(seed0)
    noise = rng.integers(0, 256, size=renders.shape, dtype=np.uint8)
    sources = {"generator": np.asarray(batch.videos), "clean renders": renders, "pure noise": noise}
    out = {
        "prompts": len(prompts),
        "split": split,
        "grammar": grammar,
        "seeds": seed_list[:1] + seed_list[-1:],
        "summary": {name: oracle_summary(v, prompts) for name, v in sources.items()},
    }
    kinds = sorted({p.kind for p in prompts})
    if len(kinds) > 1:
        out["by_kind"] = {}
        for kind in kinds:
            keep = [i for i, p in enumerate(prompts) if p.kind == kind]
            out["by_kind"][kind] = {
                name: oracle_summary(v[keep], [prompts[i] for i in keep]) for name, v in sources.items()
            }
    return out
