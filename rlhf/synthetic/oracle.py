"""Oracle annotator: VQ, MQ and TA of any moving-shapes video, from its pixels and its prompt alone.

It never reads render parameters, so it judges generated videos exactly as it judges renders.
Every score lies in [0, 1] (1 = perfect); VQ and MQ are products of factors ``exp(-x / scale)`` of
measured defects ``x``, TA is a weighted mean of attribute matches, so each measurement moves only
its own dimension. ``python jobs/world_report.py`` prints how each defect moves each score.

Measurement (per frame, on pixels ``f`` in [0, 1], ``S`` = frame size):
  * background ``b_t``: per-channel median of the frame (the object covers under 15% of it);
  * object colour ``o_t``: median of the 4% of (3x3 median-filtered) pixels farthest from ``b_t``;
  * opacity ``alpha`` = <median3x3(f) - b_t, u_t> / |o_t - b_t| with u_t the unit vector toward
    ``o_t`` (a projection, so zero-mean noise stays zero-mean), kept on the largest connected blob of
    alpha > 0.5 grown by one pixel, which rejects noise speckles; no object is found in frames of
    contrast under 0.15 or when the noise level exceeds 0.2 (pure noise has no object);
  * centroid ``c_t`` and area ``A_t`` of the object, weighted by clip(2 alpha - 0.5, 0, 1) so that
    noise and halo below alpha 0.25 weigh nothing.

VQ (visual quality: how each frame looks) = presence x exp(-(noise/0.035 + soft/1.2 + cast/0.1))
  * noise: robust noise level 1.4826 x MAD(f - median3x3(f));
  * soft: edge width in pixels beyond 0.9 px (at S = 32): pixels with 0.15 < alpha < 0.85 per unit of
    perimeter sqrt(4 pi A) (a crisp anti-aliased edge measures about 0.8);
  * cast: mean |b_t - grey(b_t)| (backgrounds are neutral, so any chroma there is a colour cast);
  * presence: min(1, contrast / 0.3) x wholeness, contrast = median |o_t - b_t|: no visible object, no
    quality; wholeness = min(1, area / (0.8 x the world's object area))^2: drawing less of the object
    (a fragment, a shrunken shape) is not a way to look cleaner (a measured reward-hacking pattern).
MQ (motion quality: how the clip moves) = found x exp(-(jerk/0.06 + flicker/0.3 + size_cv/0.15))
  * jerk: mean |c_{t+1} - 2 c_t + c_{t-1}| / S (constant velocity gives 0): jitter, stutter;
  * flicker: mean |second difference of the median frame luminance| (a smooth drift gives 0);
  * size_cv: std / mean of A_t (objects that swell, shrink or morph);
  * found: fraction of frames in which an object is found.
TA (text alignment: does the clip show the prompt), weighted mean of matches in [0, 1]
  * colour 0.25: hue of the object (white-balanced by the background cast) against the prompt
    colour's, Gaussian of the angle with width 0.35 rad (colours are 1.05 rad apart), scaled by
    min(1, chroma / 0.15) so a grey object matches nothing;
  * shape 0.25: each frame's alpha is compared (L1, normalised by area) with templates of the
    three shapes at the measured centroid, area and edge width; the match is the softmax weight of the prompt's
    shape, temperature 0.02, averaged over frames;
  * direction 0.25: (1 + cos) / 2 of the fitted displacement and the prompt direction, faded toward
    0.5 when the object moves less than 0.1 S;
  * speed 0.15: fitted path length L against the prompt's L*, exp(-ln((L+0.05)/(L*+0.05))^2 / 0.18);
  * background 0.10: median background luminance against the prompt's, Gaussian with width 0.12;
  the object parts (colour, shape, direction, speed) are scaled by found x wholeness: an object seen in
  few frames, or only a fragment of it, shows less of the prompt.
Overall = (VQ + MQ + TA) / 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prompts import BACKGROUNDS, COLOURS, DIRECTIONS, SPEEDS, Prompt

DIMENSIONS = ("VQ", "MQ", "TA")
_LUMA = np.array([0.299, 0.587, 0.114])
MAX_NOISE = 0.2  # above this noise level no object is detected at all
CRISP_EDGE = 0.8  # edge width (px) the measurement reports for a crisp anti-aliased edge
SOFT_OK = 1.5  # edge width (px at 32 px) judged sharp: H.264 4:2:0 chroma widens crisp edges to ~1.4
WHOLE_FRACTION = 0.8  # objects covering less than this share of the world's object area lose VQ and TA
TA_WEIGHTS = {"colour": 0.25, "shape": 0.25, "direction": 0.25, "speed": 0.15, "background": 0.10}


@dataclass
class Measurements:
    """What the oracle measured; the scores are functions of these numbers only."""

    noise: float
    softness: float
    cast: float
    contrast: float
    found: float
    jerk: float
    flicker: float
    size_cv: float
    hue: float  # radians, of the white-balanced object colour
    chroma: float
    shape_err: dict  # shape -> mean normalised L1 distance to its template
    displacement: np.ndarray  # fitted (dx, dy) over the clip, fraction of frame size
    background: float
    area: float = 0.0  # mean object coverage of the found frames, fraction of the frame


def _median3(f: np.ndarray) -> np.ndarray:
    """3x3 spatial median of (T, H, W, C), edges replicated (fastest on uint8)."""
    T, H, W = f.shape[:3]
    p = np.pad(f, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.stack([p[:, i : i + H, j : j + W] for i in range(3) for j in range(3)])
    return np.partition(windows, 4, axis=0)[4]


_SPATIAL = np.zeros((3, 3, 3), dtype=bool)
_SPATIAL[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # 4-connectivity within a frame, none across frames


def _blobs(mask: np.ndarray) -> np.ndarray:
    """Per frame of a (T, H, W) mask: its largest 4-connected component, grown by one pixel."""
    from scipy.ndimage import binary_dilation, label

    lab, n = label(mask, structure=_SPATIAL)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    frame_of = np.zeros(n + 1, dtype=np.int64)
    frame_of[lab.ravel()] = np.repeat(np.arange(mask.shape[0]), mask[0].size)
    best = np.zeros(mask.shape[0], dtype=np.int64)
    order = np.argsort(sizes, kind="stable")  # ascending: the largest label of each frame is written last
    best[frame_of[order]] = order
    keep = (lab == best[:, None, None]) & (lab > 0)
    return binary_dilation(keep, structure=_SPATIAL)


def measure(frames: np.ndarray) -> Measurements:
    from .render import SHAPES, _sdf, hue_of

    f = frames.astype(np.float32) / 255.0
    T, H, W, _ = f.shape
    S = float(min(H, W))
    den = _median3(frames).astype(np.float32) / 255.0
    resid = f - den
    noise = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    bg = np.median(f.reshape(T, -1, 3), axis=1)  # (T, 3)
    cast_t = bg - bg.mean(axis=1, keepdims=True)
    cast = float(np.mean(np.linalg.norm(cast_t, axis=1)))
    luma = np.median(f.reshape(T, -1, 3) @ _LUMA, axis=1)
    flicker = float(np.mean(np.abs(np.diff(luma, 2)))) if T > 2 else 0.0
    background = float(np.median(luma))

    diff = den - bg[:, None, None, :]
    dist = np.linalg.norm(diff, axis=-1).reshape(T, -1)
    k = max(1, int(0.04 * H * W))
    top = np.argpartition(-dist, k - 1, axis=1)[:, :k]
    obj = np.median(np.take_along_axis(diff.reshape(T, -1, 3), top[..., None], axis=1), axis=1)  # (T, 3)
    contrast_t = np.linalg.norm(obj, axis=1)
    # No object can be told apart from noise this strong (the noise defect stops at 0.1).
    found = (contrast_t > 0.15) & (noise < MAX_NOISE)
    u = obj / np.maximum(contrast_t, 1e-6)[:, None]
    alpha = np.clip(np.einsum("thwc,tc->thw", diff, u) / np.maximum(contrast_t, 1e-6)[:, None, None], 0.0, 1.0)
    alpha *= _blobs(alpha > 0.5) & found[:, None, None]
    area = alpha.sum(axis=(1, 2))
    found &= area > 2.0
    contrast = float(np.median(contrast_t))
    empty = Measurements(noise, 0.0, cast, contrast, float(found.mean()), 0.0, flicker, 0.0, 0.0, 0.0,
                         {s: 1.0 for s in SHAPES}, np.zeros(2), background)
    if found.sum() < 2:
        return empty

    idx = np.nonzero(found)[0]
    a = alpha[idx]
    # Geometry from a steepened opacity: pixels below alpha 0.25 (noise, halo) weigh nothing.
    g = np.clip(2.0 * a - 0.5, 0.0, 1.0)
    A = np.maximum(g.sum(axis=(1, 2)), 1e-6)
    edge = ((a > 0.15) & (a < 0.85)).sum(axis=(1, 2)) / np.sqrt(4 * np.pi * A)  # edge width, px
    softness = float(np.mean(edge) * 32.0 / S)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    c = np.stack([(g * xs).sum(axis=(1, 2)) / A, (g * ys).sum(axis=(1, 2)) / A], axis=1)
    consecutive = len(idx) > 2 and bool(np.all(np.diff(idx) == 1))
    jerk = float(np.mean(np.linalg.norm(np.diff(c, 2, axis=0), axis=1)) / S) if consecutive else 0.0
    size = a.sum(axis=(1, 2))  # exact coverage on clean frames, where the steepened weights quantise
    size_cv = float(np.std(size) / np.mean(size))
    slope = np.polyfit(idx.astype(np.float64), c.astype(np.float64), 1)[0]  # px per frame
    displacement = slope * (T - 1) / S

    pix = den[idx][a > 0.9] - np.repeat(cast_t[idx], (a > 0.9).sum(axis=(1, 2)), axis=0)
    colour = np.median(pix, axis=0) if len(pix) else obj[idx].mean(axis=0) + bg[idx].mean(axis=0)
    hue, chroma = hue_of(colour)

    px = xs[None] - c[:, 0, None, None]
    py = ys[None] - c[:, 1, None, None]
    r = np.sqrt(A / np.pi)[:, None, None]
    # Templates get the measured edge width, so a blurred square still matches a square best.
    ramp = np.maximum(edge / CRISP_EDGE, 1.0)[:, None, None]
    shape_err = {}
    for shape in SHAPES:
        tmpl = np.clip(0.5 - _sdf(shape, px, py, r) / ramp, 0.0, 1.0)
        shape_err[shape] = np.abs(a - tmpl).sum(axis=(1, 2)) / A
    return Measurements(noise, softness, cast, contrast, float(found.mean()), jerk, flicker, size_cv,
                        hue, chroma, shape_err, displacement, background, float(np.mean(size)) / (H * W))


def ta_parts(m: Measurements, prompt: Prompt) -> dict[str, float]:
    """Per-attribute matches in [0, 1] of the measured clip against ``prompt``."""
    from .render import SHAPES, hue_of

    parts = dict.fromkeys(TA_WEIGHTS, 0.0)
    if m.found > 0.0:
        target_hue = hue_of(np.array(COLOURS[prompt.colour]))[0]
        dh = (m.hue - target_hue + np.pi) % (2 * np.pi) - np.pi
        parts["colour"] = float(np.exp(-((dh / 0.35) ** 2)) * min(1.0, m.chroma / 0.15))
        errs = np.stack([m.shape_err[s] for s in SHAPES])  # (3, frames)
        w = np.exp(-(errs - errs.min(axis=0)) / 0.02)
        parts["shape"] = float(np.mean(w[SHAPES.index(prompt.shape)] / w.sum(axis=0)))
        norm = float(np.linalg.norm(m.displacement))
        cos = float(np.dot(m.displacement, DIRECTIONS[prompt.direction]) / norm) if norm > 1e-9 else 0.0
        parts["direction"] = 0.5 + 0.5 * cos * min(1.0, norm / 0.1)
        target = SPEEDS[prompt.speed]
        parts["speed"] = float(np.exp(-np.log((norm + 0.05) / (target + 0.05)) ** 2 / (2 * 0.3**2)))
        # Present and whole: an object seen in few frames, or only a fragment of it, shows less of the prompt.
        seen = m.found * wholeness(m)
        for k in ("colour", "shape", "direction", "speed"):
            parts[k] *= seen
    parts["background"] = float(np.exp(-((m.background - BACKGROUNDS[prompt.background]) / 0.12) ** 2))
    return parts


def wholeness(m: Measurements) -> float:
    """1 for an object of the world's size, falling as (area / (0.8 x full area))^2 below 80% of it."""
    from .render import OBJECT_AREA

    return float(min(1.0, m.area / (WHOLE_FRACTION * OBJECT_AREA)) ** 2)


def scores_from(m: Measurements, prompt: Prompt) -> dict[str, float]:
    presence = min(1.0, m.contrast / 0.3) * wholeness(m)
    vq = presence * np.exp(-(m.noise / 0.035 + max(0.0, m.softness - SOFT_OK) / 1.0 + m.cast / 0.1))
    mq = m.found * np.exp(-(m.jerk / 0.06 + m.flicker / 0.3 + m.size_cv / 0.15))
    parts = ta_parts(m, prompt)
    ta = sum(TA_WEIGHTS[k] * v for k, v in parts.items())
    out = {"VQ": float(vq), "MQ": float(mq), "TA": float(ta)}
    out["Overall"] = (out["VQ"] + out["MQ"] + out["TA"]) / 3.0
    return out


def score(frames: np.ndarray, prompt: Prompt | str) -> dict[str, float]:
    """Oracle ``{"VQ", "MQ", "TA", "Overall"}`` in [0, 1] for ``uint8 (T, H, W, 3)`` frames and a prompt."""
    from rlhf.video import check_frames

    p = Prompt.parse(prompt) if isinstance(prompt, str) else prompt
    frames = check_frames(frames, require_even=False)
    return scores_from(measure(frames), p)
