"""The moving-shapes renderer: geometry checked against closed-form areas and paths."""

import numpy as np
import pytest

from rlhf.synthetic.prompts import COLOURS, Prompt
from rlhf.synthetic.render import DEFECTS, OBJECT_RADIUS, RenderSpec, blend_hue, hue_of, render

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
    for d in DEFECTS:
        assert not np.array_equal(render(P, {d: 1.0}, seed=2), render(P, None, seed=2)), d


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
