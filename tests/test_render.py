"""The moving-shapes renderer: geometry checked against closed-form areas and paths."""

import numpy as np
import pytest

from rlhf.synthetic.prompts import COLOURS, PairPrompt, Prompt
from rlhf.synthetic.render import (
    DEFECTS,
    OBJECT_RADIUS,
    PAIR_PATH,
    PAIR_RADIUS,
    PAIR_SEPARATION,
    RenderSpec,
    blend_hue,
    defects_for,
    hue_of,
    render,
)

P = Prompt("red", "circle", "right", "quickly", "black")


def coverage(video, bg):
    """Per-frame object coverage from the red channel: (value - bg) / (red - bg)."""
    red = video[..., 0].astype(np.float64) / 255.0
    return np.clip((red - bg) / (COLOURS["red"][0] - bg), 0, 1)


def test_shape_dtype_and_determinism():
    spec = RenderSpec(frames=6, height=32, width=48)
    v = render(P, {"noise": 0.5, "jitter": 0.3}, seed=3, spec=spec)
    assert v.shape == (6, 32, 48, 3) and v.dtype == np.uint8
    assert np.array_equal(v, render(P.text, {"noise": 0.5, "jitter": 0.3}, seed=3, spec=spec))
    assert not np.array_equal(v, render(P, {"noise": 0.5, "jitter": 0.3}, seed=4, spec=spec))


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_area_is_that_of_the_circle_of_radius_r(shape):
    # Every shape has the area pi r^2 with r = 0.17 x 64 px; anti-aliased coverage sums to it.
    spec = RenderSpec(frames=2, height=64, width=64)
    v = render(Prompt("red", shape, "right", "slowly", "black"), seed=0, spec=spec)
    area = coverage(v, 0.08).sum(axis=(1, 2))
    expected = np.pi * (OBJECT_RADIUS * 64) ** 2
    assert np.allclose(area, expected, rtol=0.02)


def test_anti_aliased_edges_have_partial_pixels():
    cov = coverage(render(P, seed=0), 0.08)
    partial = (cov > 0.05) & (cov < 0.95)
    assert partial.sum(axis=(1, 2)).min() >= 10


@pytest.mark.parametrize("direction,axis,sign", [("right", 1, 1), ("left", 1, -1), ("down", 0, 1), ("up", 0, -1)])
@pytest.mark.parametrize("speed,path", [("quickly", 0.5), ("slowly", 0.25)])
def test_centroid_moves_by_the_prompt_path(direction, axis, sign, speed, path):
    spec = RenderSpec(frames=8, height=64, width=64)
    v = render(Prompt("red", "circle", direction, speed, "black"), seed=1, spec=spec)
    cov = coverage(v, 0.08)
    grid = np.mgrid[0:64, 0:64] + 0.5
    c = (cov[:, None] * grid[None]).sum(axis=(2, 3)) / cov.sum(axis=(1, 2))[:, None]  # (T, [y, x])
    moved = c[-1] - c[0]
    assert moved[axis] == pytest.approx(sign * path * 64, abs=0.3)
    assert abs(moved[1 - axis]) < 0.3


def test_clean_background_is_the_prompt_grey():
    v = render(Prompt("blue", "square", "up", "slowly", "gray"), seed=0)
    assert np.all(v[:, 0, 0] == round(0.5 * 255))


def test_defect_changes_only_when_strength_is_positive():
    assert np.array_equal(render(P, {d: 0.0 for d in DEFECTS}, seed=2), render(P, None, seed=2))
    for d in defects_for(P):
        assert not np.array_equal(render(P, {d: 1.0}, seed=2), render(P, None, seed=2)), d
    pair = PairPrompt("red", "square", "above", "blue", "circle", "left", "quickly", "black")
    assert set(DEFECTS) - set(defects_for(P)) == {"swap", "wrong_relation"} and set(defects_for(pair)) == set(DEFECTS)
    for d in DEFECTS:
        assert not np.array_equal(render(pair, {d: 1.0}, seed=2), render(pair, None, seed=2)), d
    with pytest.raises(ValueError, match="defect 'swap' applies to pair prompts only"):
        render(P, {"swap": 0.5})


def test_bad_defects_are_named():
    with pytest.raises(ValueError, match="unknown defect 'smear'"):
        render(P, {"smear": 0.5})
    with pytest.raises(ValueError, match="strength must be in \\[0, 1\\], got 1.5"):
        render(P, {"noise": 1.5})
    with pytest.raises(ValueError, match="even"):
        render(P, spec=RenderSpec(height=33))


def test_hue_blend_keeps_saturation_through_opposite_hues():
    red, cyan = np.array(COLOURS["red"]), np.array(COLOURS["cyan"])
    mid = blend_hue(red, cyan, 0.5)
    assert hue_of(mid)[1] > 0.8 * min(hue_of(red)[1], hue_of(cyan)[1])  # a straight blend would be grey
    assert np.allclose(blend_hue(red, cyan, 0.0), red) and np.allclose(blend_hue(red, cyan, 1.0), cyan, atol=1e-9)


def _centroid_and_area(cov):
    grid = np.mgrid[0 : cov.shape[1], 0 : cov.shape[2]] + 0.5
    area = cov.sum(axis=(1, 2))
    return (cov[:, None] * grid[None]).sum(axis=(2, 3)) / area[:, None], area  # (T, [y, x]), (T,)


@pytest.mark.parametrize(
    "relation,offset", [("to the left of", (0, -1)), ("to the right of", (0, 1)), ("above", (-1, 0)), ("below", (1, 0))]
)
def test_pair_layout_area_and_path_by_hand(relation, offset):
    # Red first object, blue second, on black: the red and blue channels separate them exactly.
    spec = RenderSpec(frames=8, height=64, width=64)
    p = PairPrompt("red", "square", relation, "blue", "triangle", "down", "quickly", "black")
    v = render(p, seed=4, spec=spec).astype(np.float64) / 255.0
    # Each pixel is bg + a1 (red - bg) + a2 (blue - bg): solve for the two coverages.
    basis = np.stack([np.array(COLOURS["red"]) - 0.08, np.array(COLOURS["blue"]) - 0.08], axis=1)  # (3, 2)
    cov = (v - 0.08) @ np.linalg.pinv(basis).T
    first, second = np.clip(cov[..., 0], 0, 1), np.clip(cov[..., 1], 0, 1)
    c1, a1 = _centroid_and_area(first)
    c2, a2 = _centroid_and_area(second)
    whole = np.pi * (PAIR_RADIUS * 64) ** 2
    assert np.allclose(a1, whole, rtol=0.01) and np.allclose(a2, whole, rtol=0.01)  # supersampled coverage
    assert np.allclose(c1 - c2, np.array(offset) * PAIR_SEPARATION * 64, atol=0.3)  # each frame
    moved = c1[-1] - c1[0]  # both move down by the pair's quick path
    assert moved[0] == pytest.approx(PAIR_PATH * 0.5 * 64, abs=0.3) and abs(moved[1]) < 0.3
    assert np.allclose(c2[-1] - c2[0], moved, atol=0.3)
    inside = (first + second)[:, [0, -1]].sum() + (first + second)[:, :, [0, -1]].sum()
    assert inside == 0.0  # the pair never touches the frame's edge


def test_pair_defects_swap_colours_and_turn_the_layout():
    spec = RenderSpec(frames=2, height=64, width=64)
    p = PairPrompt("red", "circle", "to the left of", "blue", "circle", "up", "slowly", "black")
    swapped = render(p, {"swap": 1.0}, seed=1, spec=spec).astype(np.float64) / 255.0
    c_red, _ = _centroid_and_area(np.clip(swapped[..., 0] - 0.3, 0, 1))
    c_blue, _ = _centroid_and_area(np.clip(swapped[..., 2] - 0.3, 0, 1))
    assert c_red[0, 1] > c_blue[0, 1] + 10  # the red object now stands right of the blue one
    turned = render(p, {"wrong_relation": 1.0}, seed=1, spec=spec).astype(np.float64) / 255.0
    c_red, _ = _centroid_and_area(np.clip(turned[..., 0] - 0.3, 0, 1))
    c_blue, _ = _centroid_and_area(np.clip(turned[..., 2] - 0.3, 0, 1))
    assert np.allclose(c_red[0] - c_blue[0], (0, PAIR_SEPARATION * 64), atol=0.3)  # rotated by 180 degrees
