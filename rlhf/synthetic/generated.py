"""Preference pairs of *generated* videos, as the paper collected them: clips of one prompt sampled by a
family of generators, labelled by the simulated raters.

VideoAlign's raters compared videos of one prompt made by many text-to-video models. In the embedded
world the family stands in for those models: members are the shipped generator under several sampler
settings (guidance, step count) and, when given, aligned policies (a LoRA on it) or other generator
checkpoints. Both clips of a pair come from one prompt; each clip's member is drawn by weight, so a
dataset holds pairs of one member with itself (two seeds: what an online loop compares) and of two
members. A reward model trained on rendered pairs with injected defects has never seen such clips;
these pairs are what it must rank inside a loop.

Clip ``k`` of prompt slot ``i`` depends only on ``(seed, i, k)`` (prompt, member, noise seed), so a
dataset is identical whatever the batch size. Clips are stored once (H.264, as every dataset) and
judged by the oracle on the decoded file; a pair's labels come from the raters seeded by
``(seed, i, pair)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .annotator import AnnotatorConfig, annotate


@dataclass(frozen=True)
class Member:
    """One generator of the family: a checkpoint, an optional LoRA and sampler settings."""

    name: str = "pretrained"
    generator: str = ""  # generator dir or hub id; "" = the shipped generator
    adapter: str = ""  # LoRA dir or hub id on it; "" = none
    steps: int = 20  # Euler steps
    guidance: float = 3.0  # classifier-free guidance scale
    weight: float = 1.0  # relative chance that a clip comes from this member

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"member name must be a non-empty name without '/', got {self.name!r}")
        if self.steps < 1 or self.weight <= 0:
            raise ValueError(f"member {self.name}: steps must be >= 1 and weight > 0")


def default_family() -> list[Member]:
    """The shipped generator as the online loop samples it (10 Euler steps, guidance 3: its within-prompt pairs
    are what a loop's reward must rank), and three other settings that make visibly different clips: the
    generator's own 20-step sampler, weaker and stronger guidance."""
    return [
        Member("loop", steps=10, weight=2.0),
        Member("20steps", steps=20),
        Member("cfg1.5", steps=10, guidance=1.5),
        Member("cfg6", steps=10, guidance=6.0),
    ]


@dataclass
class GeneratedSampling:
    """How generated pairs are drawn (make_dataset's ``generated`` section)."""

    prompts: int = 0  # prompt slots (0 = no generated pairs); each gets clips_per_prompt clips
    clips_per_prompt: int = 4  # clips sampled per prompt slot (>= 2)
    pairs_per_prompt: int = 6  # within-prompt pairs kept per slot (at most clips * (clips - 1) / 2)
    split: str = "train"  # prompts of this split ("heldout" for an evaluation set)
    grammar: str = "single"  # single | pair | mixed (slots alternate single and pair prompts)
    generator: str = ""  # generator dir of every member that names none ("" = the shipped generator)
    # the generator family (name, generator, adapter, steps, guidance, weight each); a clip's member is drawn by weight
    members: list[Member] = field(default_factory=default_family)
    batch_size: int = 64  # clips per sampling call

    def validate(self) -> None:
        from .prompts import check_grammar

        check_grammar(self.grammar)
        if self.prompts < 0 or self.clips_per_prompt < 2:
            raise ValueError("generated.prompts must be >= 0 and generated.clips_per_prompt >= 2")
        most = self.clips_per_prompt * (self.clips_per_prompt - 1) // 2
        if not 1 <= self.pairs_per_prompt <= most:
            raise ValueError(f"generated.pairs_per_prompt must be in 1..{most} for {self.clips_per_prompt} clips")
        if not self.members:
            raise ValueError("generated.members is empty: name at least one generator")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"generated.members has repeated names: {names}")
        for m in self.members:
            m.validate()


@dataclass(frozen=True)
class ClipSpec:
    slot: int
    k: int
    prompt: str
    member: str
    seed: int


def plan(seed: int, cfg: GeneratedSampling) -> tuple[list[ClipSpec], list[tuple[int, int, int]]]:
    """Every clip to sample and every pair to label: (clips, pairs as (slot, clip index, clip index))."""
    from .prompts import split_prompts

    weights = np.array([m.weight for m in cfg.members], dtype=np.float64)
    weights /= weights.sum()
    clips, pairs = [], []
    # Every prompt before repeats; "mixed" alternates the kinds, each in its own order.
    kinds = ("single", "pair") if cfg.grammar == "mixed" else (cfg.grammar,)
    pools = [split_prompts(cfg.split, kind) for kind in kinds]
    orders = [
        np.random.default_rng([seed, 0xC0FFEE] + ([i] if i else [])).permutation(len(pool))
        for i, pool in enumerate(pools)
    ]
    for slot in range(cfg.prompts):
        pool, order, at = pools[slot % len(pools)], orders[slot % len(pools)], slot // len(pools)
        prompt = pool[order[at % len(pool)]].text
        first = len(clips)
        for k in range(cfg.clips_per_prompt):
            rng = np.random.default_rng([seed, slot, k])
            member = cfg.members[int(rng.choice(len(cfg.members), p=weights))].name
            clips.append(ClipSpec(slot, k, prompt, member, int(rng.integers(0, 2**31 - 1))))
        every = [(a, b) for a in range(cfg.clips_per_prompt) for b in range(a + 1, cfg.clips_per_prompt)]
        chosen = np.random.default_rng([seed, slot, 0xBEEF]).permutation(len(every))[: cfg.pairs_per_prompt]
        pairs += [(slot, first + every[c][0], first + every[c][1]) for c in sorted(chosen)]
    return clips, pairs


def _sample_member(
    member: Member, clips: list[ClipSpec], batch_size: int, bar, generator: str = ""
) -> dict[int, np.ndarray]:
    """Frames of ``clips`` (indices into the plan) sampled by ``member`` (``generator`` where it names none)."""
    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator
    from rlhf.generator.sampler import SamplerConfig, sample

    gen = load_generator(member.generator or generator or DEFAULT_GENERATOR)
    if member.adapter:
        gen.load_lora(member.adapter)
    sampler = SamplerConfig(steps=member.steps, guidance=member.guidance, batch_size=batch_size)
    out = {}
    for s in range(0, len(clips), batch_size):
        chunk = clips[s : s + batch_size]
        batch = sample(gen, [c.prompt for c in chunk], [c.seed for c in chunk], sampler)
        for c, v in zip(chunk, batch.videos):
            out[(c.slot, c.k)] = v
        bar.update(len(chunk))
    return out


def build_generated(
    out_dir: str | Path,
    seed: int,
    cfg: GeneratedSampling,
    annotator: AnnotatorConfig = AnnotatorConfig(),
    crf: int = 12,
    fps: float = 8.0,
    progress: bool = True,
) -> list[dict]:
    """Sample, store and judge every clip of the plan, and label its pairs -> preference records (videos
    under ``out_dir/videos``). Records carry ``generator_a`` / ``generator_b`` (the member names),
    ``seed_a`` / ``seed_b`` and ``source = "generated"``."""
    from tqdm import tqdm

    from rlhf.synthetic.oracle import score
    from rlhf.video import encode_video, read_video, write_encoded

    cfg.validate()
    clips, pairs = plan(seed, cfg)
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    by_member: dict[str, list[ClipSpec]] = {}
    for c in clips:
        by_member.setdefault(c.member, []).append(c)
    scores, names = {}, {}
    bar = tqdm(total=len(clips), desc="generated clips", unit="clip", disable=not progress)
    for member in cfg.members:
        todo = by_member.get(member.name, [])
        if not todo:
            continue
        frames = _sample_member(member, todo, cfg.batch_size, bar, cfg.generator)
        for c in todo:
            data = encode_video(frames[(c.slot, c.k)], fps=fps, crf=crf)
            name = f"videos/g{seed}_{c.slot:05d}_{c.k}.mp4"
            write_encoded(out_dir / name, data)
            scores[(c.slot, c.k)] = score(read_video(data), c.prompt)
            names[(c.slot, c.k)] = name
    bar.close()
    from .prompts import parse_prompt

    records = []
    for n, (slot, ia, ib) in enumerate(pairs):
        a, b = clips[ia], clips[ib]
        labels = annotate(
            scores[(a.slot, a.k)], scores[(b.slot, b.k)], np.random.default_rng([seed, slot, n, 1]), annotator
        )
        records.append(
            {
                "id": f"g{seed}-{n:07d}",
                "prompt": a.prompt,
                "video_a": names[(a.slot, a.k)],
                "video_b": names[(b.slot, b.k)],
                **labels,
                "score_a": scores[(a.slot, a.k)],
                "score_b": scores[(b.slot, b.k)],
                "split": parse_prompt(a.prompt).split,
                "source": "generated",
                "generator_a": a.member,
                "generator_b": b.member,
                "seed_a": a.seed,
                "seed_b": b.seed,
            }
        )
    return records
