"""Prompt grammar and the compositional train / held-out split."""

import pytest

from rlhf.synthetic.prompts import (BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SPEEDS, Prompt, PromptError,
                                    all_prompts, split_prompts)


def test_grammar_size_and_uniqueness():
    prompts = all_prompts()
    assert len(prompts) == 6 * 3 * 4 * 2 * 2 == 288
    assert len({p.text for p in prompts}) == 288


def test_text_round_trip():
    for p in all_prompts():
        assert Prompt.parse(p.text) == p
    assert Prompt.parse("A Red circle moving left slowly on a black background") == Prompt(
        "red", "circle", "left", "slowly", "black")


@pytest.mark.parametrize("bad", ["", "a red circle", "a purple circle moving left slowly on a black background",
                                 "a red hexagon moving left slowly on a black background"])
def test_bad_prompts_are_named(bad):
    with pytest.raises(PromptError):
        Prompt.parse(bad)


def test_heldout_prompts_are_unseen_combinations_of_seen_attributes():
    train, held = split_prompts("train"), split_prompts("heldout")
    assert set(train).isdisjoint(held)
    assert len(train) + len(held) == 288
    assert 0.15 < len(held) / 288 < 0.25
    for attr, values in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS),
                         ("speed", SPEEDS), ("background", BACKGROUNDS)):
        for v in values:
            assert any(getattr(p, attr) == v for p in train), (attr, v)
            assert any(getattr(p, attr) == v for p in held), (attr, v)
    # Every colour-shape pair is seen in training, so held-out prompts are new combinations only.
    assert {(p.colour, p.shape) for p in train} == {(c, s) for c in COLOURS for s in SHAPES}
    assert split_prompts("heldout") == held  # deterministic
