"""The oracle judges pixels: each defect lowers its own dimension monotonically and little else."""

import numpy as np
import pytest

from rlhf.synthetic.calibration import defect_table, reference_scores
from rlhf.synthetic.oracle import score
from rlhf.synthetic.prompts import COLOURS, Prompt
from rlhf.synthetic.render import render


@pytest.fixture(scope="module")
def table():
    return defect_table(n_prompts=8, levels=(0.0, 0.33, 0.67, 1.0), seed=1)


def test_pair_defects_lower_their_dimension_monotonically_and_substantially():
    # Strong blur also hides a small object's shape (TA falls 0.19 at strength 1, see render), so cross-talk
    # is not asserted for pairs; and it lowers VQ less (0.45) than on a single large object: the oracle
    # normalises opacity by the blurred object's own peak, which a small object loses most.
    for row in defect_table(n_prompts=4, levels=(0.0, 0.5, 1.0), seed=2, grammar="pair"):
        assert row.monotone, (row.defect, row.means.round(3).tolist())
        assert row.drop >= (0.4 if row.harms in ("VQ", "MQ") else 0.09), (row.defect, row.drop)  # TA: weight 0.10


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
    for wrong in (
        Prompt("blue", "square", "down", "quickly", "gray"),
        Prompt("green", "triangle", "down", "quickly", "gray"),
        Prompt("green", "square", "up", "quickly", "gray"),
        Prompt("green", "square", "down", "slowly", "gray"),
        Prompt("green", "square", "down", "quickly", "black"),
    ):
        assert score(v, wrong)["TA"] < right - 0.08, wrong
    assert score(v, truth)["VQ"] == score(v, Prompt("red", "circle", "up", "slowly", "black"))["VQ"]


def test_scores_lie_in_unit_interval_for_any_pixels():
    rng = np.random.default_rng(0)
    for v in (
        rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        np.zeros((2, 16, 16, 3), np.uint8),
        np.full((8, 40, 24, 3), 255, np.uint8),
    ):
        s = score(v, "a red circle moving left slowly on a black background")
        assert all(0.0 <= s[k] <= 1.0 for k in ("VQ", "MQ", "TA", "Overall"))


def test_works_at_other_resolutions():
    from rlhf.synthetic.render import RenderSpec

    p = Prompt("yellow", "triangle", "left", "slowly", "black")
    clean = score(render(p, spec=RenderSpec(frames=8, height=64, width=64)), p)
    noisy = score(render(p, {"jitter": 1.0}, spec=RenderSpec(frames=8, height=64, width=64)), p)
    assert clean["TA"] > 0.9 and clean["MQ"] > 0.85 and noisy["MQ"] < 0.4


# ----------------------------------------------------------------------------- pair prompts, on clips drawn by hand
def _interval(lo, hi, n):
    """Coverage of pixels [i, i + 1) by the interval [lo, hi)."""
    edges = np.arange(n)
    return np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0.0, 1.0)


def _squares_clip(objects, moved=(9.6, 0.0), frames=8, size=32, bg=0.08):
    """Axis-aligned squares with exact area coverage: ``objects`` = [(rgb, x0, y0, side)], each moving
    by ``moved`` px over the clip."""
    video = np.full((frames, size, size, 3), bg)
    for t in range(frames):
        f = t / (frames - 1)
        for rgb, x0, y0, side in objects:
            x, y = x0 + f * moved[0], y0 + f * moved[1]
            cov = np.outer(_interval(y, y + side, size), _interval(x, x + side, size))[..., None]
            video[t] = video[t] * (1 - cov) + np.array(rgb) * cov
    return (video * 255 + 0.5).astype(np.uint8)


RED, GREEN = COLOURS["red"], COLOURS["green"]
# A red square above a green one (centres 10 px apart), both moving right by 0.3 x 32 = 9.6 px: the pair's
# quick path. Each 5.8 px square covers 33.6 px, a pair object's area (pi x 3.2^2 = 32.2) and more.
PAIR_CLIP = [(RED, 6.0, 5.0, 5.8), (GREEN, 6.0, 15.0, 5.8)]


def test_pair_oracle_reads_each_object_its_relation_and_motion():
    clip = _squares_clip(PAIR_CLIP)
    truth = "a red square above a green square moving right quickly on a black background"
    s = score(clip, truth)
    assert s["TA"] > 0.97 and s["VQ"] > 0.95 and s["MQ"] > 0.95
    # Each statement the clip contradicts costs that part's weight (0.15 per object attribute and relation,
    # 0.10 direction or speed), and nothing else.
    for wrong, cost in (
        ("a green square above a red square moving right quickly on a black background", 0.15),
        ("a red square below a green square moving right quickly on a black background", 0.15),
        ("a red square to the left of a green square moving right quickly on a black background", 0.075),
        ("a blue square above a green square moving right quickly on a black background", 0.15),
        ("a red square above a green triangle moving right quickly on a black background", 0.15),
        ("a red square above a green square moving left quickly on a black background", 0.10),
        ("a red square above a green square moving right slowly on a black background", 0.08),
    ):
        assert score(clip, wrong)["TA"] == pytest.approx(s["TA"] - cost, abs=0.03), wrong
        assert score(clip, wrong)["VQ"] == s["VQ"]


def test_pair_oracle_colours_bound_to_the_wrong_shapes_lose_half_the_object_parts():
    # A red square above a green circle judged against "a green square above a red circle": the best
    # assignment keeps the shapes (and the relation) or the colours (and loses the relation): either way
    # two of the four object parts (0.30) are lost.
    circle = np.zeros((32, 32))
    clip = _squares_clip([(RED, 6.0, 5.0, 5.8)])
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    for t in range(8):
        cx, cy = 8.9 + 9.6 * t / 7, 18.0
        sub = np.zeros((32 * 8, 32 * 8))
        yy, xx = (np.mgrid[0:256, 0:256] + 0.5) / 8
        sub = ((xx - cx) ** 2 + (yy - cy) ** 2 < 3.3**2).astype(float)
        circle = sub.reshape(32, 8, 32, 8).mean(axis=(1, 3))[..., None]
        frame = clip[t].astype(float) / 255 * (1 - circle) + np.array(GREEN) * circle
        clip[t] = (frame * 255 + 0.5).astype(np.uint8)
    right = score(clip, "a red square above a green circle moving right quickly on a black background")["TA"]
    swapped = score(clip, "a green square above a red circle moving right quickly on a black background")["TA"]
    assert right > 0.95
    assert swapped == pytest.approx(right - 0.30, abs=0.04)


def test_pair_wholeness_drawing_less_never_wins():
    truth = "a red square above a green square moving right quickly on a black background"
    full = score(_squares_clip(PAIR_CLIP), truth)
    one = score(_squares_clip(PAIR_CLIP[:1]), truth)  # the green square left out
    small = score(_squares_clip([(RED, 7.0, 6.0, 4.0), (GREEN, 7.0, 16.0, 4.0)]), truth)  # 16 px each
    for part in (one, small):
        for dim in ("VQ", "TA", "Overall"):
            assert part[dim] < full[dim] - 0.2, (dim, part, full)
    # By hand for the shrunken pair: wholeness w = (16 / (0.8 x 32.17))^2 = 0.387 scales presence, so VQ = w;
    # TA = background 0.05 + w x (four object parts 0.6 + direction and speed 0.2) + relation 0.15 x w^2.
    w = (16 / (0.8 * np.pi * 3.2**2)) ** 2
    assert small["VQ"] == pytest.approx(w, abs=0.02)
    assert small["TA"] == pytest.approx(0.05 + 0.8 * w + 0.15 * w**2, abs=0.03)
