"""Generated preference pairs: clips of one prompt from a family of generators, judged as stored."""

import json

import numpy as np
import pytest

from rlhf.data.schema import read_preferences
from rlhf.synthetic.generated import GeneratedSampling, Member, plan
from rlhf.synthetic.oracle import score
from rlhf.video import read_video

FAMILY = [Member("a", steps=2, guidance=1.0), Member("b", steps=3, guidance=3.0, weight=2.0)]


def test_plan_pairs_clips_of_one_prompt_and_is_independent_of_the_slot_count():
    cfg = GeneratedSampling(prompts=5, clips_per_prompt=4, pairs_per_prompt=3, members=FAMILY)
    clips, pairs = plan(11, cfg)
    assert len(clips) == 20 and len(pairs) == 15
    for slot, i, j in pairs:
        assert clips[i].slot == clips[j].slot == slot and clips[i].prompt == clips[j].prompt and i < j
    assert len({c.prompt for c in clips}) == 5  # every prompt before a repeat
    fewer, fewer_pairs = plan(11, GeneratedSampling(prompts=2, clips_per_prompt=4, pairs_per_prompt=3, members=FAMILY))
    assert fewer == clips[:8] and fewer_pairs == pairs[:6]
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        GeneratedSampling(prompts=1, clips_per_prompt=3, pairs_per_prompt=4).validate()
    with pytest.raises(ValueError, match="repeated"):
        GeneratedSampling(prompts=1, members=[Member("a"), Member("a")]).validate()


def test_mixed_plan_alternates_single_and_pair_prompts_of_the_split():
    from rlhf.synthetic.prompts import parse_prompt

    clips, _ = plan(3, GeneratedSampling(prompts=8, grammar="mixed"))
    firsts = [parse_prompt(c.prompt) for c in clips if c.k == 0]
    assert [p.kind for p in firsts] == ["single", "pair"] * 4
    assert all(p.split == "train" for p in firsts) and len({p.text for p in firsts}) == 8
    single, _ = plan(3, GeneratedSampling(prompts=8))  # the single grammar's plan is the one it always was
    assert all(parse_prompt(c.prompt).kind == "single" for c in single)


def test_make_dataset_writes_generated_pairs_judged_on_the_stored_clips(tmp_path):
    from rlhf.synthetic.dataset_job import main

    out = tmp_path / "ds"
    assert (
        main(
            [
                "--pairs",
                "3",
                "--out",
                str(out),
                "--workers",
                "1",
                "generated.prompts=2",
                "generated.clips_per_prompt=3",
                "generated.pairs_per_prompt=2",
                "generated.members=[{name: a, steps: 2, guidance: 1.0}, {name: b, steps: 3, weight: 2.0}]",
            ]
        )
        == 0
    )
    recs = read_preferences(out / "prefs.parquet").to_pylist()
    rendered = [r for r in recs if r["source"] == "rendered"]
    gen = [r for r in recs if r["source"] == "generated"]
    assert len(rendered) == 3 and len(gen) == 4
    for r in gen:
        assert {r["generator_a"], r["generator_b"]} <= {"a", "b"}
        for side in ("a", "b"):  # labels describe the decoded file, judged by the oracle independently
            frames = read_video(out / r[f"video_{side}"])
            assert frames.shape == (8, 32, 32, 3)
            assert score(frames, r["prompt"])["VQ"] == pytest.approx(r[f"score_{side}"]["VQ"], abs=1e-9)
        assert r["VQ"] in ("A", "B", "same")
    assert all(r["generator_a"] is None for r in rendered)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stats_by_source"]) == {"rendered", "generated"} and manifest["pairs"] == 7
    # two clips of one member with different seeds differ: the pairs are not copies
    r = gen[0]
    assert not np.array_equal(read_video(out / r["video_a"]), read_video(out / r["video_b"]))
