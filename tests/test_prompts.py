"""Prompt grammar and the compositional train / held-out split."""

import numpy as np
import pytest

from rlhf.synthetic.prompts import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    RELATIONS,
    SHAPES,
    SPEEDS,
    PairPrompt,
    Prompt,
    PromptError,
    all_prompts,
    draw_prompt,
    is_heldout,
    parse_prompt,
    split_prompts,
)


def test_grammar_size_and_uniqueness():
    prompts = all_prompts()
    assert len(prompts) == 6 * 3 * 4 * 2 * 2 == 288
    assert len({p.text for p in prompts}) == 288


def test_text_round_trip():
    for p in all_prompts():
        assert Prompt.parse(p.text) == p
    assert Prompt.parse("A Red circle moving left slowly on a black background") == Prompt(
        "red", "circle", "left", "slowly", "black"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a red circle",
        "a purple circle moving left slowly on a black background",
        "a red hexagon moving left slowly on a black background",
    ],
)
def test_bad_prompts_are_named(bad):
    with pytest.raises(PromptError):
        Prompt.parse(bad)


def test_heldout_prompts_are_unseen_combinations_of_seen_attributes():
    train, held = split_prompts("train"), split_prompts("heldout")
    assert set(train).isdisjoint(held)
    assert len(train) + len(held) == 288
    assert 0.15 < len(held) / 288 < 0.25
    for attr, values in (
        ("colour", COLOURS),
        ("shape", SHAPES),
        ("direction", DIRECTIONS),
        ("speed", SPEEDS),
        ("background", BACKGROUNDS),
    ):
        for v in values:
            assert any(getattr(p, attr) == v for p in train), (attr, v)
            assert any(getattr(p, attr) == v for p in held), (attr, v)
    # Every colour-shape pair is seen in training, so held-out prompts are new combinations only.
    assert {(p.colour, p.shape) for p in train} == {(c, s) for c in COLOURS for s in SHAPES}
    assert split_prompts("heldout") == held  # deterministic


def test_pair_grammar_size_round_trip_and_errors():
    pairs = all_prompts("pair")
    assert len(pairs) == (6 * 3) * (5 * 3) * 4 * 4 * 2 * 2 == 17280
    assert len({p.text for p in pairs}) == 17280
    for p in pairs[::97]:
        assert parse_prompt(p.text) == p and PairPrompt.parse(p.text) == p
    p = parse_prompt("A red circle to the left of a Blue square moving up slowly on a black background")
    assert p == PairPrompt("red", "circle", "to the left of", "blue", "square", "up", "slowly", "black")
    assert p.objects == (("red", "circle"), ("blue", "square"))
    assert parse_prompt("a red circle moving left slowly on a black background") == Prompt(
        "red", "circle", "left", "slowly", "black"
    )  # single prompts parse as before
    with pytest.raises(PromptError, match="different colours"):
        parse_prompt("a red circle above a red square moving up slowly on a black background")
    with pytest.raises(PromptError, match="unknown relation|is not a prompt"):
        parse_prompt("a red circle behind a blue square moving up slowly on a black background")
    with pytest.raises(PromptError, match="<relation>"):
        parse_prompt("a red circle")


def test_pair_heldout_prompts_are_unseen_combinations_of_seen_attributes():
    train, held = split_prompts("train", "pair"), split_prompts("heldout", "pair")
    assert set(train).isdisjoint(held) and len(train) + len(held) == 17280
    assert 0.15 < len(held) / 17280 < 0.25
    for attr, values in (
        ("colour", COLOURS),
        ("shape", SHAPES),
        ("relation", RELATIONS),
        ("colour2", COLOURS),
        ("shape2", SHAPES),
        ("direction", DIRECTIONS),
        ("speed", SPEEDS),
        ("background", BACKGROUNDS),
    ):
        for v in values:
            assert any(getattr(p, attr) == v for p in train) and any(getattr(p, attr) == v for p in held), (attr, v)
    # Every coloured shape is seen in training in either slot, and every ordered pair of coloured shapes:
    # held-out prompts differ from training ones in how the parts are combined (relation, motion, background).
    every = {(c, s) for c in COLOURS for s in SHAPES}
    assert {p.objects[0] for p in train} == every and {p.objects[1] for p in train} == every
    assert {p.objects for p in train} == {p.objects for p in all_prompts("pair")}
    # A fixed rule, not an accident of order: the split is what is_heldout says, every time.
    assert all(is_heldout(p) for p in held) and not any(is_heldout(p) for p in train)


def test_mixed_listing_alternates_and_draws_both_kinds():
    mixed = split_prompts("heldout", "mixed")
    singles, pairs = split_prompts("heldout", "single"), split_prompts("heldout", "pair")
    assert [p.kind for p in mixed[:6]] == ["single", "pair"] * 3
    assert mixed[0::2][: len(singles)] == singles and len(mixed) == len(singles) + len(pairs)
    rng = np.random.default_rng(0)
    kinds = [draw_prompt(rng, "train", "mixed", pair_share=0.25).kind for _ in range(2000)]
    assert kinds.count("pair") / 2000 == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="grammar must be one of"):
        split_prompts("train", "triples")
