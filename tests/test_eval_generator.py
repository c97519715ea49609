"""The oracle's reading of attributes: right on clean renders, wrong on the wrong prompt, none on noise."""

import numpy as np

from rlhf.eval.generator import attribute_accuracy, read_attributes
from rlhf.synthetic.prompts import Prompt, split_prompts
from rlhf.synthetic.render import render


def test_clean_renders_read_back_every_attribute():
    prompts = split_prompts("heldout")
    videos = [render(p, None, seed=i) for i, p in enumerate(prompts)]
    assert attribute_accuracy(videos, prompts) == {"colour": 1.0, "shape": 1.0, "direction": 1.0, "speed": 1.0}


def test_a_render_of_another_prompt_reads_as_that_prompt():
    drawn = Prompt("blue", "triangle", "up", "quickly", "gray")
    asked = Prompt("red", "circle", "left", "slowly", "gray")
    acc = attribute_accuracy([render(drawn, None, seed=1)], [asked])
    assert acc == {"colour": 0.0, "shape": 0.0, "direction": 0.0, "speed": 0.0}
    assert read_attributes(render(drawn, None, seed=1)) == {
        "colour": "blue",
        "shape": "triangle",
        "direction": "up",
        "speed": "quickly",
    }


def test_pure_noise_has_no_object():
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    assert read_attributes(noise) == {"colour": None, "shape": None, "direction": None, "speed": None}


def test_summary_of_a_mixed_set_reads_attributes_of_singles_and_parts_of_pairs():
    from rlhf.eval.generator import oracle_summary
    from rlhf.synthetic.prompts import PairPrompt

    single = Prompt("green", "square", "down", "slowly", "black")
    pair = PairPrompt("red", "circle", "above", "blue", "triangle", "left", "quickly", "gray")
    swapped = PairPrompt("blue", "circle", "above", "red", "triangle", "left", "quickly", "gray")
    # The pair clip shows the colours bound to the wrong shapes: two of its four object parts are wrong.
    videos = np.stack([render(single, None, seed=0), render(swapped, None, seed=1)])
    out = oracle_summary(videos, [single, pair])
    assert out["acc_colour"] == out["acc_shape"] == 1.0  # over the single prompt only
    assert out["part_relation"] > 0.9 and out["part_background"] > 0.9
    wrong = sorted([out["part_colour"], out["part_shape"], out["part_colour2"], out["part_shape2"]])
    assert wrong[1] < 0.2 and wrong[2] > 0.8  # two wrong, two right
