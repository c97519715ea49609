# Long on purpose: the oracle's measurements and its per-dimension scores for single and pair prompts must agree
# with each other; every claim of the world is measured against this one file.
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

Pair prompts (two objects; see ``render``). Each frame is split in two by the perpendicular bisector of
the centres found by 2-means on the pixel coordinates of the frame's object pixels (distance to the background
over 0.35 of the frame's largest, weighted by it); the centres are tracked across frames by nearest match.
Each object is then measured as above on the clip with the other side painted over with the background, against
a pair object's size. So a missing object leaves 2-means two halves of the one drawn: two fragments,
which wholeness penalises, and drawing less never wins.
  * VQ = mean over the two objects of presence, times the same noise, softness and cast factors;
  * MQ = mean over the two objects of found x exp(-(jerk/0.06 + size_cv/0.15)), times exp(-flicker/0.3);
  * TA, weighted mean: each object's colour and shape 0.15 each (0.6 in all), under the assignment of the
    measured objects to the prompt's that matches best (so colours bound to the wrong shapes lose half of
    it); relation 0.15: (1 + cos) / 2 of the first object's mean offset from the second against the
    relation's direction, faded toward 0.5 below an offset of 0.15 S and scaled by both objects' found x
    wholeness; direction 0.10 and speed 0.10 (the pair's path, 0.6 of a single object's): the mean of the
    two objects' matches; background 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prompts import BACKGROUNDS, COLOURS, DIRECTIONS, RELATIONS, SPEEDS, PairPrompt, Prompt, as_prompt

_LUMA = np.array([0.299, 0.587, 0.114])
MAX_NOISE = 0.2  # above this noise level no object is detected at all
CRISP_EDGE = 0.8  # edge width (px) the measurement reports for a crisp anti-aliased edge
SOFT_OK = 1.5  # edge width (px at 32 px) judged sharp: H.264 4:2:0 chroma widens crisp edges to ~1.4
WHOLE_FRACTION = 0.8  # objects covering less than this share of the world's object area lose VQ and TA
TA_WEIGHTS = {"colour": 0.25, "shape": 0.25, "direction": 0.25, "speed": 0.15, "background": 0.10}
PAIR_TA_WEIGHTS = {
    "colour": 0.15,
    "shape": 0.15,
    "colour2": 0.15,
    "shape2": 0.15,
    "relation": 0.15,
    "direction": 0.10,
    "speed": 0.10,
    "background": 0.05,
}
RELATION_FADE = 0.15  # offsets between the objects below this (fraction of the frame) read as no relation


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
    position: np.ndarray | None = None  # mean centroid of the found frames, fraction of the frame (x, y)
    object_area: float = 0.0  # coverage of one whole object of the prompt's kind (0: the single-object world's)


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


def noise_level(f: np.ndarray, den: np.ndarray) -> float:
    """Robust noise level 1.4826 x MAD of the frames ``f`` less their 3x3 median ``den`` (both in [0, 1])."""
    resid = f - den
    return float(1.4826 * np.median(np.abs(resid - np.median(resid))))


def measure(
    frames: np.ndarray, object_area: float = 0.0, raw_shape: bool = False, noise: float | None = None
) -> Measurements:
    """What the oracle measures on a clip of one object of coverage ``object_area`` (0: the single-object
    world's, ``render.OBJECT_AREA``). ``raw_shape``: place, size, colour and shape-match the object by the
    opacity of the unfiltered frames (on its blob grown by a pixel): a pair's objects are small enough that
    the 3x3 median rounds a square's corners into a circle's (the single-object world's scores are kept as
    they were measured).
    ``noise``: the clip's noise level when measured elsewhere (a pair's objects are measured on copies half
    painted over, which would halve it)."""
    from .render import OBJECT_AREA, SHAPES, _sdf, hue_of

    object_area = object_area or OBJECT_AREA
    f = frames.astype(np.float32) / 255.0
    T, H, W, _ = f.shape
    S = float(min(H, W))
    den = _median3(frames).astype(np.float32) / 255.0
    if noise is None:
        noise = noise_level(f, den)
    bg = np.median(f.reshape(T, -1, 3), axis=1)  # (T, 3)
    cast_t = bg - bg.mean(axis=1, keepdims=True)
    cast = float(np.mean(np.linalg.norm(cast_t, axis=1)))
    luma = np.median(f.reshape(T, -1, 3) @ _LUMA, axis=1)
    flicker = float(np.mean(np.abs(np.diff(luma, 2)))) if T > 2 else 0.0
    background = float(np.median(luma))

    diff = den - bg[:, None, None, :]
    dist = np.linalg.norm(diff, axis=-1).reshape(T, -1)
    k = max(1, int(0.04 * H * W * object_area / OBJECT_AREA))
    top = np.argpartition(-dist, k - 1, axis=1)[:, :k]
    obj = np.median(np.take_along_axis(diff.reshape(T, -1, 3), top[..., None], axis=1), axis=1)  # (T, 3)
    contrast_t = np.linalg.norm(obj, axis=1)
    # No object can be told apart from noise this strong (the noise defect stops at 0.1).
    found = (contrast_t > 0.15) & (noise < MAX_NOISE)
    u = obj / np.maximum(contrast_t, 1e-6)[:, None]
    alpha = np.clip(np.einsum("thwc,tc->thw", diff, u) / np.maximum(contrast_t, 1e-6)[:, None, None], 0.0, 1.0)
    blob = _blobs(alpha > 0.5) & found[:, None, None]
    alpha *= blob
    area = alpha.sum(axis=(1, 2))
    found &= area > 2.0
    contrast = float(np.median(contrast_t))
    empty = Measurements(
        noise,
        0.0,
        cast,
        contrast,
        float(found.mean()),
        0.0,
        flicker,
        0.0,
        0.0,
        0.0,
        {s: 1.0 for s in SHAPES},
        np.zeros(2),
        background,
        object_area=object_area,
    )
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
    if raw_shape:
        # The unfiltered frames' opacity on the blob grown by a pixel, which places and sizes the object by its exact
        # coverage: the median rounds a small square's corners and steepening drops its partly covered edge
        # pixels, each a large share of its area.
        raw = np.einsum("thwc,tc->thw", f[idx] - bg[idx, None, None, :], u[idx]) / contrast_t[idx, None, None]
        from scipy.ndimage import binary_dilation

        near = binary_dilation(blob[idx], structure=np.ones((1, 3, 3), dtype=bool))  # every partly covered pixel
        a = np.clip(raw, 0.0, 1.0) * near
        g, A = a, np.maximum(a.sum(axis=(1, 2)), 1e-6)
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
    position = c.mean(axis=0) / np.array([W, H])
    return Measurements(
        noise,
        softness,
        cast,
        contrast,
        float(found.mean()),
        jerk,
        flicker,
        size_cv,
        hue,
        chroma,
        shape_err,
        displacement,
        background,
        float(np.mean(size)) / (H * W),
        position,
        object_area,
    )


def ta_parts(m: Measurements, prompt: Prompt, path_scale: float = 1.0) -> dict[str, float]:
    """Per-attribute matches in [0, 1] of the measured clip against ``prompt`` (a path ``path_scale`` times
    the single-object world's is the right speed)."""
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
        target = SPEEDS[prompt.speed] * path_scale
        parts["speed"] = float(np.exp(-(np.log((norm + 0.05) / (target + 0.05)) ** 2) / (2 * 0.3**2)))
        # Present and whole: an object seen in few frames, or only a fragment of it, shows less of the prompt.
        seen = m.found * wholeness(m)
        for k in ("colour", "shape", "direction", "speed"):
            parts[k] *= seen
    parts["background"] = float(np.exp(-(((m.background - BACKGROUNDS[prompt.background]) / 0.12) ** 2)))
    return parts


def wholeness(m: Measurements) -> float:
    """1 for an object of the world's size, falling as (area / (0.8 x full area))^2 below 80% of it."""
    from .render import OBJECT_AREA

    return float(min(1.0, m.area / (WHOLE_FRACTION * (m.object_area or OBJECT_AREA))) ** 2)


def _presence(m: Measurements) -> float:
    return min(1.0, m.contrast / 0.3) * wholeness(m)


def _quality(m: Measurements) -> float:
    """The noise, softness and cast factors of VQ."""
    return float(np.exp(-(m.noise / 0.035 + max(0.0, m.softness - SOFT_OK) / 1.0 + m.cast / 0.1)))


def _steadiness(m: Measurements) -> float:
    """The per-object factors of MQ (found, jerk, size)."""
    return float(m.found * np.exp(-(m.jerk / 0.06 + m.size_cv / 0.15)))


def _with_overall(vq: float, mq: float, ta: float) -> dict[str, float]:
    out = {"VQ": float(vq), "MQ": float(mq), "TA": float(ta)}
    out["Overall"] = (out["VQ"] + out["MQ"] + out["TA"]) / 3.0
    return out


def scores_from(m: Measurements, prompt: Prompt) -> dict[str, float]:
    vq = _presence(m) * _quality(m)
    mq = _steadiness(m) * np.exp(-m.flicker / 0.3)
    parts = ta_parts(m, prompt)
    return _with_overall(vq, mq, sum(TA_WEIGHTS[k] * v for k, v in parts.items()))


# ----------------------------------------------------------------------------- pair prompts
def split_pair(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clip twice, each time with one of its two objects painted over with the background.

    Per frame: object pixels (distance to the background median over 0.35 of the frame's largest, and over
    0.1) are split by 2-means on their coordinates, weighted by the distance; each copy keeps the pixels on
    its side of the perpendicular bisector of the two centres. Centres are tracked across frames by the
    nearest match, so each copy follows one object."""
    T, H, W, _ = frames.shape
    den = _median3(frames).astype(np.float32) / 255.0
    bg = np.median(den.reshape(T, -1, 3), axis=1)
    dist = np.linalg.norm(den - bg[:, None, None, :], axis=-1)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    bg_u8 = np.median(frames.reshape(T, -1, 3), axis=1).astype(np.uint8)
    copies = (frames.copy(), frames.copy())
    previous = None
    for t in range(T):
        thr = max(0.1, 0.35 * float(dist[t].max()))
        sel = dist[t] > thr
        if sel.sum() < 2:
            continue
        pts = np.stack([xs[sel], ys[sel]], axis=1)
        w = dist[t][sel].astype(np.float64)
        centres = _two_means(pts, w)
        if previous is not None:
            keep = np.linalg.norm(centres - previous, axis=1).sum()
            swap = np.linalg.norm(centres[::-1] - previous, axis=1).sum()
            if swap < keep:
                centres = centres[::-1]
        previous = centres
        # Side of each pixel: closer to centre 0 or to centre 1.
        d0 = (xs - centres[0, 0]) ** 2 + (ys - centres[0, 1]) ** 2
        d1 = (xs - centres[1, 0]) ** 2 + (ys - centres[1, 1]) ** 2
        copies[0][t][d1 < d0] = bg_u8[t]
        copies[1][t][d0 <= d1] = bg_u8[t]
    return copies


def _two_means(pts: np.ndarray, w: np.ndarray, iters: int = 8) -> np.ndarray:
    """Weighted 2-means of 2-D points, started at the extremes of their principal axis."""
    mean = (pts * w[:, None]).sum(0) / w.sum()
    cov = np.cov((pts - mean).T, aweights=w) if len(pts) > 1 else np.eye(2)
    axis = np.linalg.eigh(np.atleast_2d(cov))[1][:, -1]
    proj = (pts - mean) @ axis
    centres = np.stack([pts[np.argmin(proj)], pts[np.argmax(proj)]])
    for _ in range(iters):
        near = np.linalg.norm(pts[:, None, :] - centres[None], axis=-1).argmin(1)
        for k in range(2):
            if np.any(near == k):
                centres[k] = (pts[near == k] * w[near == k, None]).sum(0) / w[near == k].sum()
    return centres


def measure_pair(frames: np.ndarray) -> tuple[Measurements, Measurements]:
    """:func:`measure` of each object of a pair clip (see :func:`split_pair`), against a pair object's size."""
    from .render import PAIR_AREA

    noise = noise_level(frames.astype(np.float32) / 255.0, _median3(frames).astype(np.float32) / 255.0)
    a, b = split_pair(frames)
    return measure(a, PAIR_AREA, True, noise), measure(b, PAIR_AREA, True, noise)


def pair_ta_parts(ms: tuple[Measurements, Measurements], prompt: PairPrompt) -> dict[str, float]:
    """Per-attribute matches in [0, 1] of a measured pair clip against ``prompt``, under the assignment of
    measured objects to named ones that matches best (weighted TA)."""
    from .render import PAIR_PATH

    singles = [Prompt(c, s, prompt.direction, prompt.speed, prompt.background) for c, s in prompt.objects]
    best = None
    for order in ((0, 1), (1, 0)):
        first, second = (ta_parts(ms[i], single, PAIR_PATH) for i, single in zip(order, singles))
        out = {
            "colour": first["colour"],
            "shape": first["shape"],
            "colour2": second["colour"],
            "shape2": second["shape"],
            "relation": _relation(ms[order[0]], ms[order[1]], prompt.relation),
            "direction": 0.5 * (first["direction"] + second["direction"]),
            "speed": 0.5 * (first["speed"] + second["speed"]),
            "background": first["background"],
        }
        total = sum(PAIR_TA_WEIGHTS[k] * v for k, v in out.items())
        if best is None or total > best[0]:
            best = (total, out)
    return best[1]


def _relation(m1: Measurements, m2: Measurements, relation: str) -> float:
    """(1 + cos) / 2 of the first object's mean offset from the second against ``relation``, faded toward
    0.5 below an offset of RELATION_FADE, scaled by both objects' found x wholeness."""
    seen = m1.found * wholeness(m1) * m2.found * wholeness(m2)
    if seen <= 0.0 or m1.position is None or m2.position is None:
        return 0.0
    offset = m1.position - m2.position
    norm = float(np.linalg.norm(offset))
    cos = float(np.dot(offset, RELATIONS[relation]) / norm) if norm > 1e-9 else 0.0
    return (0.5 + 0.5 * cos * min(1.0, norm / RELATION_FADE)) * seen


def pair_scores_from(ms: tuple[Measurements, Measurements], prompt: PairPrompt) -> dict[str, float]:
    vq = float(np.mean([_presence(m) for m in ms])) * float(np.mean([_quality(m) for m in ms]))
    mq = float(np.mean([_steadiness(m) for m in ms])) * np.exp(-np.mean([m.flicker for m in ms]) / 0.3)
    parts = pair_ta_parts(ms, prompt)
    return _with_overall(vq, mq, sum(PAIR_TA_WEIGHTS[k] * v for k, v in parts.items()))


def score(frames: np.ndarray, prompt: Prompt | PairPrompt | str) -> dict[str, float]:
    """Oracle ``{"VQ", "MQ", "TA", "Overall"}`` in [0, 1] for ``uint8 (T, H, W, 3)`` frames and a prompt
    of either grammar."""
    from rlhf.video import check_frames

    p = as_prompt(prompt)
    frames = check_frames(frames, require_even=False)
    if p.kind == "pair":
        return pair_scores_from(measure_pair(frames), p)
    return scores_from(measure(frames), p)
