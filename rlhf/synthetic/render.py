"""Numpy renderer of the moving-shapes world, with controllable defects.

A clip shows one large anti-aliased shape crossing a neutral background in a straight line. The
path is centred on the frame, so its start is fixed by the prompt's direction and speed (plus a small
seeded offset): a small generator can learn where objects begin. Anti-aliasing is exact area
coverage approximated by ``alpha = clip(0.5 - sdf, 0, 1)`` with ``sdf`` the signed distance in pixels.

Defects, each with a strength in [0, 1] (0 = none):

=================  =========  ======================================================================
defect             harms      what it does at strength s
=================  =========  ======================================================================
noise              VQ         Gaussian pixel noise, sigma = 0.1 s
blur               VQ         Gaussian blur, sigma = (0.015 + 0.05 s) x frame size (on a pair's small
                              objects strong blur also hides their shapes: TA falls by up to 0.19, and
                              VQ by 0.45 rather than 0.7)
colour_drift       VQ         colour cast ramping over the clip up to 0.3 s (chroma, not brightness)
flicker            MQ         brightness jumps of +-0.1..0.2 s between frames
jitter             MQ         random position offsets, sigma = 0.04 s x frame size
stutter            MQ         round(3.5 s) frames frozen (the object then jumps to catch up)
wrong_colour       TA         object hue turned toward another colour's by s (saturation kept)
wrong_shape        TA         signed distance blended toward another shape by s (a morph)
wrong_direction    TA         motion direction rotated by s x 180 degrees
wrong_speed        TA         path length moved toward a wrong one by s (slow -> 0.6, fast -> 0)
swap               TA         (pair prompts) the two objects' hues turned toward each other's by s:
                              at 1 the colours are bound to the wrong shapes
wrong_relation     TA         (pair prompts) the pair's layout rotated by s x 180 degrees: at 1 the
                              first object stands on the wrong side of the second
=================  =========  ======================================================================

A pair prompt's clip shows its two objects, smaller (radius 0.10 of the frame), their centres 0.32 of the
frame apart along the relation's axis, moving together along a centred path 0.6 times a single object's (so
that the pair never leaves the frame). ``wrong_colour`` and ``wrong_shape`` then apply to one of the two
objects, drawn by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prompts import BACKGROUNDS, COLOURS, DIRECTIONS, RELATIONS, SHAPES, SPEEDS, PairPrompt, Prompt, as_prompt

DEFECTS: dict[str, str] = {
    "noise": "VQ",
    "blur": "VQ",
    "colour_drift": "VQ",
    "flicker": "MQ",
    "jitter": "MQ",
    "stutter": "MQ",
    "wrong_colour": "TA",
    "wrong_shape": "TA",
    "wrong_direction": "TA",
    "wrong_speed": "TA",
    "swap": "TA",
    "wrong_relation": "TA",
}
PAIR_ONLY_DEFECTS = ("swap", "wrong_relation")

OBJECT_RADIUS = 0.17  # circle radius as a fraction of the frame size; other shapes have equal area
OBJECT_AREA = float(np.pi * OBJECT_RADIUS**2)  # object coverage as a fraction of a square frame
START_OFFSET = 0.05  # seeded offset of the path centre, fraction of the frame size
WRONG_PATH = {"slowly": 0.6, "quickly": 0.0}
PAIR_RADIUS = 0.10  # each object of a pair prompt, fraction of the frame size
PAIR_AREA = float(np.pi * PAIR_RADIUS**2)
PAIR_SEPARATION = 0.32  # distance between the two centres, fraction of the frame size
PAIR_PATH = 0.6  # a pair's path length relative to a single object's at the same speed
PAIR_START_OFFSET = 0.03


def defects_for(prompt) -> tuple[str, ...]:
    """The defect kinds that apply to ``prompt``'s kind, in a fixed order (single prompts: the original ten)."""
    if as_prompt(prompt).kind == "pair":
        return tuple(DEFECTS)
    return tuple(k for k in DEFECTS if k not in PAIR_ONLY_DEFECTS)


def object_area(prompt) -> float:
    """Coverage of one whole object of ``prompt``'s kind, as a fraction of a square frame."""
    return PAIR_AREA if as_prompt(prompt).kind == "pair" else OBJECT_AREA


def path_length(prompt, speed: str) -> float:
    """Path length over the clip at ``speed`` (fraction of the frame) for ``prompt``'s kind."""
    return SPEEDS[speed] * (PAIR_PATH if as_prompt(prompt).kind == "pair" else 1.0)


@dataclass(frozen=True)
class RenderSpec:
    """Clip geometry. 8 x 32 x 32 suits the generator on CPU; the reward model resizes as VideoAlign does."""

    frames: int = 8  # frames per clip
    height: int = 32  # pixels (even, >= 16)
    width: int = 32  # pixels (even, >= 16)
    fps: float = 8.0  # frame rate written into the mp4s (what the reward's frame sampling reads)

    def validate(self) -> None:
        if self.frames < 2 or self.height < 16 or self.width < 16:
            raise ValueError(f"clip must be at least 2 x 16 x 16, got {self.frames} x {self.height} x {self.width}")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even (H.264), got {self.height} x {self.width}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


def check_defects(defects: dict[str, float] | None) -> dict[str, float]:
    """``defects`` validated (known kinds, strengths in [0, 1]), zero strengths dropped."""
    out = {}
    for name, s in (defects or {}).items():
        if name not in DEFECTS:
            raise ValueError(f"unknown defect '{name}'; valid: {', '.join(DEFECTS)}")
        s = float(s)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"defect '{name}' strength must be in [0, 1], got {s}")
        if s > 0:
            out[name] = s
    return out


def _sdf(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of ``shape`` of circle-equivalent radius ``r`` at offsets px, py."""
    if shape == "circle":
        return np.sqrt(px * px + py * py) - r
    if shape == "square":
        b = 0.5 * np.sqrt(np.pi) * r  # half side of the square of area pi r^2
        qx, qy = np.abs(px) - b, np.abs(py) - b
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":
        # Equilateral, apex up, centroid at the centre (Inigo Quilez's exact sdf), area pi r^2.
        h = 0.5 * r * np.sqrt(4 * np.pi / np.sqrt(3))  # half side
        k = np.sqrt(3.0)
        x = np.abs(px) - h
        y = -py + h / k  # image y points down
        fold = x + k * y > 0
        x, y = np.where(fold, (x - k * y) / 2, x), np.where(fold, (-k * x - y) / 2, y)
        x = x - np.clip(x, -2 * h, 0)
        return -np.sqrt(x * x + y * y) * np.sign(y)
    raise ValueError(f"unknown shape '{shape}'")


# Orthonormal basis of the chroma plane (RGB minus its grey level).
CHROMA_BASIS = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.array([[np.sqrt(2.0)], [np.sqrt(6.0)]])


def hue_of(rgb: np.ndarray) -> tuple[float, float]:
    """(hue angle in radians, chroma magnitude) of an RGB colour."""
    u, v = CHROMA_BASIS @ (np.asarray(rgb, dtype=np.float64) - np.mean(rgb))
    return float(np.arctan2(v, u)), float(np.hypot(u, v))


def blend_hue(a: np.ndarray, b: np.ndarray, s: float) -> np.ndarray:
    """Colour a fraction ``s`` of the way from ``a`` to ``b`` around the hue circle (shorter arc).
    A straight RGB blend would pass through grey for opposite hues and make the object vanish."""
    ha, ma = hue_of(a)
    hb, mb = hue_of(b)
    dh = (hb - ha + np.pi) % (2 * np.pi) - np.pi
    h, m = ha + s * dh, (1 - s) * ma + s * mb
    grey = (1 - s) * np.mean(a) + s * np.mean(b)
    return np.clip(grey + m * (np.cos(h) * CHROMA_BASIS[0] + np.sin(h) * CHROMA_BASIS[1]), 0.0, 1.0)


def _other(rng: np.random.Generator, options, current):
    choices = [o for o in options if o != current]
    return choices[rng.integers(len(choices))]


def render(
    prompt: Prompt | PairPrompt | str,
    defects: dict[str, float] | None = None,
    seed: int = 0,
    spec: RenderSpec = RenderSpec(),
) -> np.ndarray:
    """Render ``prompt`` (either grammar) with ``defects`` as ``uint8 (T, H, W, 3)``; deterministic in ``seed``."""
    p = as_prompt(prompt)
    spec.validate()
    d = check_defects(defects)
    rng = np.random.default_rng(seed)
    if p.kind == "pair":
        return _render_pair(p, d, rng, spec)
    wrong = [k for k in PAIR_ONLY_DEFECTS if k in d]
    if wrong:
        raise ValueError(f"defect '{wrong[0]}' applies to pair prompts only, not to '{p.text}'")
    T, H, W = spec.frames, spec.height, spec.width
    S = float(min(H, W))
    # Draw every random quantity in a fixed order so that a defect's strength changes only its own effect.
    start = rng.uniform(-START_OFFSET, START_OFFSET, size=2) * S
    wrong_colour = _other(rng, list(COLOURS), p.colour)
    wrong_shape = _other(rng, SHAPES, p.shape)
    turn = rng.choice([-1.0, 1.0])
    jitter = rng.normal(size=(T, 2))
    frozen_order = rng.permutation(np.arange(1, T - 1))
    flicker = rng.uniform(0.5, 1.0, size=T) * np.where(np.arange(T) % 2 == rng.integers(2), 1.0, -1.0)
    hue = rng.uniform(0, 2 * np.pi)
    noise = rng.normal(size=(T, H, W, 3))

    # Geometry: centred straight path, optionally turned, rescaled and jittered.
    angle = turn * np.pi * d.get("wrong_direction", 0.0)
    dx, dy = DIRECTIONS[p.direction]
    ca, sa = np.cos(angle), np.sin(angle)
    direction = np.array([ca * dx - sa * dy, sa * dx + ca * dy])
    s_speed = d.get("wrong_speed", 0.0)
    path = (1 - s_speed) * SPEEDS[p.speed] + s_speed * WRONG_PATH[p.speed]
    frac = np.arange(T) / (T - 1) - 0.5
    centres = np.array([W / 2, H / 2]) + start + frac[:, None] * path * S * direction[None, :]
    centres = centres + jitter * 0.04 * d.get("jitter", 0.0) * S

    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    px = xs[None] - centres[:, 0, None, None]
    py = ys[None] - centres[:, 1, None, None]
    r = OBJECT_RADIUS * S
    sdf = _sdf(p.shape, px, py, r)
    if "wrong_shape" in d:
        s = d["wrong_shape"]
        sdf = (1 - s) * sdf + s * _sdf(wrong_shape, px, py, r)
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]

    colour = np.array(COLOURS[p.colour])
    if "wrong_colour" in d:
        colour = blend_hue(colour, np.array(COLOURS[wrong_colour]), d["wrong_colour"])
    bg = BACKGROUNDS[p.background]
    video = bg * (1 - alpha) + colour[None, None, None, :] * alpha
    return _finish(video, d, S, frozen_order, flicker, hue, noise)


def _finish(video, d, S, frozen_order, flicker, hue, noise) -> np.ndarray:
    """The whole-frame defects (blur, stutter, colour drift, flicker, noise), then uint8."""
    T = video.shape[0]
    if "blur" in d:
        from scipy.ndimage import gaussian_filter

        sigma = (0.015 + 0.05 * d["blur"]) * S
        video = gaussian_filter(video, sigma=(0, sigma, sigma, 0), mode="nearest")
    if "stutter" in d:
        k = int(round(3.5 * d["stutter"]))
        for i in sorted(frozen_order[: min(k, T - 2)]):
            video[i] = video[i - 1]
    if "colour_drift" in d:
        # A zero-mean chroma direction: shifts colour, leaves brightness (nearly) unchanged.
        cast = np.array([np.cos(hue), np.cos(hue - 2 * np.pi / 3), np.cos(hue + 2 * np.pi / 3)])
        ramp = np.arange(T) / (T - 1)
        video = video + 0.3 * d["colour_drift"] * ramp[:, None, None, None] * cast[None, None, None, :] / np.sqrt(1.5)
    if "flicker" in d:
        video = video + 0.2 * d["flicker"] * flicker[:, None, None, None]
    if "noise" in d:
        video = video + 0.1 * d["noise"] * noise
    return (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _coverage(shape: str, centres: np.ndarray, r: float, H: int, W: int, morph=None, ss: int = 4) -> np.ndarray:
    """(T, H, W) coverage of ``shape`` (circle-equivalent radius ``r`` px) centred at ``centres`` (T, 2), by
    ``ss`` x ``ss`` supersampling of a box around each centre: the pair's objects are small, and the
    single-object renderer's ramp clip(0.5 - sdf) is not exact at corners, which would make a square's area
    wobble as it moves. ``morph``: (strength, other shape) blended into the signed distance."""
    T = len(centres)
    out = np.zeros((T, H, W))
    half = int(np.ceil(1.5 * r)) + 2  # every shape of area pi r^2 lies within 1.2 r of its centre
    offsets = (np.arange(2 * half * ss) + 0.5) / ss
    for t, (cx, cy) in enumerate(centres):
        x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
        xs = x0 + offsets[None, :]
        ys = y0 + offsets[:, None]
        sdf = _sdf(shape, xs - cx, ys - cy, r)
        if morph is not None:
            sdf = (1 - morph[0]) * sdf + morph[0] * _sdf(morph[1], xs - cx, ys - cy, r)
        box = np.clip(0.5 - sdf * ss, 0.0, 1.0).reshape(2 * half, ss, 2 * half, ss).mean(axis=(1, 3))
        # Paste the box where it overlaps the frame.
        fy0, fx0 = max(y0, 0), max(x0, 0)
        fy1, fx1 = min(y0 + 2 * half, H), min(x0 + 2 * half, W)
        if fy1 > fy0 and fx1 > fx0:
            out[t, fy0:fy1, fx0:fx1] = box[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return out


def _render_pair(p: PairPrompt, d: dict[str, float], rng: np.random.Generator, spec: RenderSpec) -> np.ndarray:
    T, H, W = spec.frames, spec.height, spec.width
    S = float(min(H, W))
    start = rng.uniform(-PAIR_START_OFFSET, PAIR_START_OFFSET, size=2) * S
    which = int(rng.integers(2))  # the object wrong_colour and wrong_shape change
    colours, shapes = [p.colour, p.colour2], [p.shape, p.shape2]
    wrong_colour = _other(rng, list(COLOURS), colours[which])
    wrong_shape = _other(rng, SHAPES, shapes[which])
    turn, relation_turn = rng.choice([-1.0, 1.0], size=2)
    jitter = rng.normal(size=(2, T, 2))
    frozen_order = rng.permutation(np.arange(1, T - 1))
    flicker = rng.uniform(0.5, 1.0, size=T) * np.where(np.arange(T) % 2 == rng.integers(2), 1.0, -1.0)
    hue = rng.uniform(0, 2 * np.pi)
    noise = rng.normal(size=(T, H, W, 3))

    def rotate(v, angle):
        c, s_ = np.cos(angle), np.sin(angle)
        return np.array([c * v[0] - s_ * v[1], s_ * v[0] + c * v[1]])

    direction = rotate(DIRECTIONS[p.direction], turn * np.pi * d.get("wrong_direction", 0.0))
    layout = rotate(RELATIONS[p.relation], relation_turn * np.pi * d.get("wrong_relation", 0.0))
    s_speed = d.get("wrong_speed", 0.0)
    path = PAIR_PATH * ((1 - s_speed) * SPEEDS[p.speed] + s_speed * WRONG_PATH[p.speed])
    frac = np.arange(T) / (T - 1) - 0.5
    centre = np.array([W / 2, H / 2]) + start + frac[:, None] * path * S * direction[None, :]

    rgb = [np.array(COLOURS[c]) for c in colours]
    if "swap" in d:
        rgb = [blend_hue(rgb[0], rgb[1], d["swap"]), blend_hue(rgb[1], rgb[0], d["swap"])]
    if "wrong_colour" in d:
        rgb[which] = blend_hue(rgb[which], np.array(COLOURS[wrong_colour]), d["wrong_colour"])
    r = PAIR_RADIUS * S
    video = np.full((T, H, W, 3), BACKGROUNDS[p.background])
    for k in (1, 0):  # the first-named object is drawn last (on top, should they ever overlap)
        side = 0.5 if k == 0 else -0.5
        c = centre + side * PAIR_SEPARATION * S * layout[None, :] + jitter[k] * 0.04 * d.get("jitter", 0.0) * S
        morph = (d["wrong_shape"], wrong_shape) if "wrong_shape" in d and k == which else None
        alpha = _coverage(shapes[k], c, r, H, W, morph)[..., None]
        video = video * (1 - alpha) + rgb[k][None, None, None, :] * alpha
    return _finish(video, d, S, frozen_order, flicker, hue, noise)
