"""The oracle judges pixels: each defect lowers its own dimension monotonically and little else."""

import numpy as np
import pytest

from rlhf.synthetic.calibration import defect_table, reference_scores
from rlhf.synthetic.oracle import score
from rlhf.synthetic.prompts import Prompt
from rlhf.synthetic.render import render


@pytest.fixture(scope="module")
def table():
    return defect_table(n_prompts=8, levels=(0.0, 0.33, 0.67, 1.0), seed=1)


def test_each_defect_lowers_its_dimension_monotonically(table):
    for row in table:
        assert row.monotone, (row.defect, row.means.round(3).tolist())


def test_each_defect_harms_its_dimension_substantially(table):
    # VQ and MQ are products of per-defect factors; TA averages five attributes, so one wrong
    # attribute (weight 0.15-0.25) can only remove that share.
    for row in table:
        assert row.drop >= (0.5 if row.harms in ("VQ", "MQ") else 0.1), (row.defect, row.drop)


def test_other_dimensions_move_little(table):
    for row in table:
        assert row.crosstalk < 0.2, (row.defect, row.means.round(3).tolist())
        assert row.crosstalk < 0.35 * row.drop + 0.02, (row.defect, row.crosstalk, row.drop)


def test_clean_renders_beat_noise_and_blank_videos():
    refs = reference_scores(n=6)
    assert np.all(refs["clean render"] > 0.85)
    assert np.all(refs["pure noise"] < 0.4) and np.all(refs["blank frame"] < 0.2)


def test_text_alignment_reads_the_prompt_not_the_render():
    # The same pixels judged against prompts that differ in one attribute each.
    truth = Prompt("green", "square", "down", "quickly", "gray")
    v = render(truth, seed=5)
    right = score(v, truth)["TA"]
    for wrong in (Prompt("blue", "square", "down", "quickly", "gray"), Prompt("green", "triangle", "down", "quickly", "gray"),
                  Prompt("green", "square", "up", "quickly", "gray"), Prompt("green", "square", "down", "slowly", "gray"),
                  Prompt("green", "square", "down", "quickly", "black")):
        assert score(v, wrong)["TA"] < right - 0.08, wrong
    assert score(v, truth)["VQ"] == score(v, Prompt("red", "circle", "up", "slowly", "black"))["VQ"]


def test_scores_lie_in_unit_interval_for_any_pixels():
    rng = np.random.default_rng(0)
    for v in (rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.zeros((2, 16, 16, 3), np.uint8),
              np.full((8, 40, 24, 3), 255, np.uint8)):
        s = score(v, "a red circle moving left slowly on a black background")
        assert all(0.0 <= s[k] <= 1.0 for k in ("VQ", "MQ", "TA", "Overall"))


def test_works_at_other_resolutions():
    from rlhf.synthetic.render import RenderSpec

    p = Prompt("yellow", "triangle", "left", "slowly", "black")
    clean = score(render(p, spec=RenderSpec(frames=8, height=64, width=64)), p)
    noisy = score(render(p, {"jitter": 1.0}, spec=RenderSpec(frames=8, height=64, width=64)), p)
    assert clean["TA"] > 0.9 and clean["MQ"] > 0.85 and noisy["MQ"] < 0.4
