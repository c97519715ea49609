# Long on purpose: report.html is one self-contained page: its plots, clips, tables and the self-check script the
# tests read are written together so that the page and its check cannot disagree.
"""``report.html`` for a run directory: one self-contained file that opens from disk, with no server.

    python -m rlhf.eval.report runs/online_dpo            # writes runs/online_dpo/report.html

What it shows, from what the run wrote (``config.yaml``, ``metrics.jsonl``, ``evaluation.json``,
``summary.json``, ``eval_clips/``):

* side-by-side videos: the pretrained and the aligned policy on the same prompt and seed, the final
  evaluation's own clips as the job kept them (``eval_clips/clips.json``: a few varied prompts, paths
  relative to the run directory); nothing is sampled here. The mp4 bytes are embedded as data URIs, with
  each clip's oracle scores when the job wrote them (moving-shapes world only);
* reward and oracle curves over iterations, one chart per dimension (VQ, MQ, TA, weighted), inline SVG.
  The served reward is normalised (about -2..2) and the oracle scores lie in 0..1, so each chart has
  two y axes (reward on the left, oracle on the right, dashed) and both curves use the chart's height;
* loss, Flow-DPO implicit accuracy and, with reward refresh, its on-policy accuracy and labels spent;
* the win-rate tables of the final evaluation (oracle, and the learned reward with its hacking flag);
* time per phase (seconds per iteration, and each phase's share of the loop);
* the config.

The page checks itself on load (every video decodable, every plot drawn) and writes the result into
``#report-status`` as JSON (videos_total, videos_loaded, videos_failed, plots_total, plots_drawn): tests
read it from headless Chromium; a person sees it at the bottom of the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import itertools
import json
import math
import sys
from pathlib import Path

from rlhf.dims import DIMS

COLOURS = {"VQ": "#1f77b4", "MQ": "#ff7f0e", "TA": "#2ca02c", "weighted": "#444444"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")  # series not named in COLOURS
CLIPS = "eval_clips/clips.json"  # written by the online job's final evaluation (actors/online_eval.py)


class ReportError(ValueError):
    """The run directory lacks what a report needs."""


def _records(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    if not p.is_file():
        raise ReportError(f"{run} has no metrics.jsonl: is it the directory of an online run (jobs/online_dpo.py)?")
    recs = []
    for i, ln in enumerate(p.read_text().splitlines(), 1):
        if ln.strip():
            try:
                recs.append(json.loads(ln))
            except json.JSONDecodeError as e:
                raise ReportError(f"{p} line {i} is not JSON ({e}); the run may have been cut mid-write") from None
    return recs


def _json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not JSON ({e}); the run may have been cut mid-write") from None


def _config_text(run: Path) -> str:
    p = run / "config.yaml"
    return p.read_text() if p.is_file() else "(no config.yaml)"


# ----------------------------------------------------------------------------------------------- axes
def nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], int]:
    """Round tick values covering ``[lo, hi]`` and the decimals to print them with.

    The step is 1, 2 or 5 times a power of ten, the one nearest ``(hi - lo) / (target - 1)`` (Heckbert,
    "Nice numbers for graph labels", Graphics Gems 1990); the ticks run from the multiple of the step at
    or below ``lo`` to the one at or above ``hi``, so there are about ``target`` of them (4 to 7)."""
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):  # a constant series: a unit-wide band around it
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / (target - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    f = raw / mag
    step = (1 if f < 1.5 else 2 if f < 3 else 5 if f < 7 else 10) * mag
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [round(k * step, decimals + 3) for k in range(first, last + 1)], decimals


def iteration_ticks(x0: int, x1: int, most: int = 10) -> list[int]:
    """Integer ticks in ``[x0, x1]``: multiples of the smallest of 1, 2, 5, 10, 20, ... giving ``most`` or fewer."""
    steps = (m * 10**k for k in itertools.count() for m in (1, 2, 5))
    step = next(s for s in steps if math.floor(x1 / s) - math.ceil(x0 / s) + 1 <= most)
    return [k * step for k in range(math.ceil(x0 / step), math.floor(x1 / step) + 1)]


def _fmt(v: float, decimals: int) -> str:
    return f"{0.0 if abs(v) < 10.0**-decimals / 2 else v:.{decimals}f}"  # no "-0.0"


def _legend(entries: list[tuple[str, str, str]], x: float, y: float, width: float) -> tuple[list[str], float]:
    """A boxed legend from ``(label, colour, mark)`` entries (mark: line, dashed or box), flowing into rows
    ``width`` wide; returns its SVG and its height."""
    row_h, pad, char_w = 15, 5, 6.2  # char_w: an 11px system-ui character, generously
    rows: list[list[tuple[float, str, str, str]]] = [[]]
    cx, box_w = pad, 0.0
    for label, colour, mark in entries:
        w = 20 + char_w * len(label)
        if rows[-1] and cx + w > width - pad:
            rows.append([])
            cx = pad
        rows[-1].append((cx, label, colour, mark))
        box_w = max(box_w, cx + w + pad)
        cx += w + 14
    height = len(rows) * row_h + 2 * pad - 2
    parts = [f'<rect class="legend" x="{x}" y="{y}" width="{box_w:.0f}" height="{height}" fill="#fff" stroke="#ccc"/>']
    for i, row in enumerate(rows):
        ty = y + pad + i * row_h + 10
        for cx, label, colour, mark in row:
            if mark == "box":
                parts.append(f'<rect x="{x + cx:.1f}" y="{ty - 8}" width="14" height="9" fill="{colour}"/>')
            else:
                dash = ' stroke-dasharray="5 3"' if mark == "dashed" else ""
                parts.append(
                    f'<line x1="{x + cx:.1f}" y1="{ty - 4}" x2="{x + cx + 16:.1f}" y2="{ty - 4}" stroke="{colour}" '
                    f'stroke-width="2"{dash}/>'
                )
            parts.append(f'<text class="legend" x="{x + cx + 20:.1f}" y="{ty}">{html.escape(label)}</text>')
    return parts, height


def _y_label(text: str, x: float, y: float, angle: int) -> str:
    return (
        f'<text class="ylabel" x="{x}" y="{y}" transform="rotate({angle} {x} {y})" text-anchor="middle">'
        f"{html.escape(text)}</text>"
    )


# ----------------------------------------------------------------------------------------------- plots
def line_plot(
    title: str,
    xs: list[float],
    series: dict[str, list[float | None]],
    width: int = 440,
    height: int = 250,
    y_label: str = "",
    right: dict[str, list[float | None]] | None = None,
    right_label: str = "",
) -> str:
    """An inline SVG line chart over iterations ``xs``: one polyline per series, round y ticks with grid
    lines, integer iteration ticks, axis labels with units and a legend box above the plot area.

    ``right``: series drawn against a second y axis on the right (dashed, own ticks, ``right_label``), for
    quantities on another scale (the oracle's 0..1 next to the normalised reward); the legend then says
    which axis each series belongs to."""
    left_vals = [v for ys in series.values() for v in ys if v is not None]
    right_vals = [v for ys in (right or {}).values() for v in ys if v is not None]
    if not xs or not (left_vals or right_vals):
        return (
            f'<svg class="plot" width="{width}" height="{height}"><text x="10" y="20">'
            f"{html.escape(title)}: no data</text></svg>"
        )
    axes = {
        side: (s, vals) for side, s, vals in (("left", series, left_vals), ("right", right or {}, right_vals)) if vals
    }
    two = len(axes) == 2
    named = [(side, name, ys) for side, (s, _) in axes.items() for name, ys in s.items()]
    drawn = [(side, name, ys, COLOURS.get(name, PALETTE[i % len(PALETTE)])) for i, (side, name, ys) in enumerate(named)]
    entries = [
        (f"{name} ({side} axis)" if two else name, colour, "dashed" if side == "right" else "line")
        for side, name, _, colour in drawn
    ]
    pad_l, pad_r, pad_b = 64, 64 if two else 16, 38
    legend, legend_h = _legend(entries, pad_l, 24, width - pad_l - 8)
    pad_t = 24 + legend_h + 10
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:  # one iteration: centred
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    left_edge, right_edge, top, bottom = pad_l, width - pad_r, pad_t, height - pad_b
    sx = lambda x: left_edge + (x - x_lo) / (x_hi - x_lo) * (right_edge - left_edge)  # noqa: E731
    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
        f'<rect class="plot-area" x="{left_edge}" y="{top}" width="{right_edge - left_edge}" '
        f'height="{bottom - top}" fill="#fff"/>',
    ]
    scales = {}
    for side, (_, vals) in axes.items():
        ticks, dec = nice_ticks(min(vals), max(vals))
        y0, y1 = ticks[0], ticks[-1]
        sy = scales[side] = lambda y, y0=y0, y1=y1: bottom - (y - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
        ax = left_edge if side == "left" else right_edge
        out = -1 if side == "left" else 1
        for t in ticks:
            y = sy(t)
            if side == "left":
                parts.append(
                    f'<line class="grid" x1="{left_edge}" y1="{y:.1f}" x2="{right_edge}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                )
            parts.append(f'<line x1="{ax}" y1="{y:.1f}" x2="{ax + 4 * out}" y2="{y:.1f}" stroke="#888"/>')
            parts.append(
                f'<text class="ytick" data-axis="{side}" x="{ax + 7 * out}" y="{y + 4:.1f}" '
                f'text-anchor="{"end" if side == "left" else "start"}">{_fmt(t, dec)}</text>'
            )
        parts.append(f'<line x1="{ax}" y1="{top}" x2="{ax}" y2="{bottom}" stroke="#888"/>')
        label = y_label if side == "left" else right_label
        if label:
            parts.append(
                _y_label(label, 12 if side == "left" else width - 10, (top + bottom) / 2, -90 if side == "left" else 90)
            )
    parts.append(f'<line x1="{left_edge}" y1="{bottom}" x2="{right_edge}" y2="{bottom}" stroke="#888"/>')
    for t in iteration_ticks(math.ceil(x_lo), math.floor(x_hi)):
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#888"/>')
        parts.append(f'<text class="xtick" x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{t}</text>')
    parts.append(
        f'<text class="xlabel" x="{(left_edge + right_edge) / 2}" y="{height - 5}" text-anchor="middle">iteration</text>'
    )
    for side, name, ys, colour in drawn:
        sy = scales[side]
        pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        dash = ' stroke-dasharray="5 3"' if side == "right" else ""
        parts.append(
            f'<polyline class="series" data-name="{html.escape(name)}" data-axis="{side}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dash} points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
    parts += legend
    parts.append("</svg>")
    return "".join(parts)


def phase_bars(recs: list[dict], width: int = 860, height: int = 260) -> str:
    """Stacked bars: seconds of each phase per iteration (driver-side phases; actor-side ones overlap)."""
    phases = ["rollout_wait", "data", "train", "checkpoint"]
    colours = ["#1f77b4", "#9467bd", "#d62728", "#8c564b"]
    stacks = [[float(r["phases"].get(ph, 0.0)) for ph in phases] for r in recs]
    top_s = max([r["phases"].get("iteration", 0.0) for r in recs] + [sum(s) for s in stacks] + [0.0]) or 1.0
    ticks, dec = nice_ticks(0.0, top_s)
    legend, legend_h = _legend([(ph, c, "box") for ph, c in zip(phases, colours)], 60, 24, width - 68)
    pad_l, pad_r, pad_t, pad_b = 60, 12, 24 + legend_h + 10, 38
    bottom, top = height - pad_b, pad_t
    sy = lambda v: bottom - v / ticks[-1] * (bottom - top)  # noqa: E731
    bw = (width - pad_l - pad_r) / max(len(recs), 1)
    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        '<text x="10" y="16" font-weight="bold">seconds per iteration, by phase</text>',
    ]
    for t in ticks:
        y = sy(t)
        parts.append(
            f'<line class="grid" x1="{pad_l}" y1="{y:.1f}" x2="{width - pad_r}" y2="{y:.1f}" stroke="#e6e6e6"/>'
        )
        parts.append(
            f'<text class="ytick" data-axis="left" x="{pad_l - 7}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t, dec)}</text>'
        )
    parts.append(f'<line x1="{pad_l}" y1="{top}" x2="{pad_l}" y2="{bottom}" stroke="#888"/>')
    parts.append(f'<line x1="{pad_l}" y1="{bottom}" x2="{width - pad_r}" y2="{bottom}" stroke="#888"/>')
    parts.append(_y_label("time (s)", 12, (top + bottom) / 2, -90))
    labelled = set(iteration_ticks(0, len(recs) - 1)) if recs else set()  # at most ~10 bar labels
    for i, (r, stack) in enumerate(zip(recs, stacks)):
        y = bottom
        for ph, c, v in zip(phases, colours, stack):
            h = bottom - sy(v)
            y -= h
            parts.append(
                f'<rect x="{pad_l + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{c}"><title>iteration {r["iteration"]} {ph} {v:.2f}s</title></rect>'
            )
        if i in labelled:
            parts.append(
                f'<text class="xtick" x="{pad_l + (i + 0.5) * bw:.1f}" y="{bottom + 15}" text-anchor="middle">'
                f"{r['iteration']}</text>"
            )
    parts.append(
        f'<text class="xlabel" x="{(pad_l + width - pad_r) / 2}" y="{height - 5}" text-anchor="middle">iteration</text>'
    )
    parts += legend
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------- clips
def read_clips(run: Path) -> list[dict] | None:
    """The final evaluation's side-by-side clips listed in ``eval_clips/clips.json``, each with its mp4
    bytes under ``pretrained_mp4`` / ``aligned_mp4``; None when the run kept no clips."""
    listing = run / CLIPS
    entries = _json(listing)
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise ReportError(f"{listing} holds a {type(entries).__name__}; expected a list of clip entries")
    out = []
    for i, e in enumerate(entries):
        missing = [k for k in ("prompt", "seed", "pretrained", "aligned") if not isinstance(e, dict) or k not in e]
        if missing:
            raise ReportError(
                f"{listing} entry {i} lacks {missing}: each entry needs prompt, seed, pretrained and aligned "
                "(paths relative to the run directory)"
            )
        clip = dict(e)
        for name in ("pretrained", "aligned"):
            path = run / e[name]
            try:
                mp4 = path.read_bytes()
            except OSError as err:
                raise ReportError(
                    f"clip {path} (the {name} clip of {e['prompt']!r}, listed in {listing}) cannot be read: "
                    f"{err.strerror or err}; rerun the evaluation or delete the entry"
                ) from None
            if not mp4:
                raise ReportError(f"clip {path} (the {name} clip of {e['prompt']!r}, listed in {listing}) is empty")
            clip[f"{name}_mp4"] = mp4
        out.append(clip)
    return out


def _video(mp4: bytes, label: str) -> str:
    return (
        f'<figure><video class="clip" src="data:video/mp4;base64,{base64.b64encode(mp4).decode()}" '
        f"autoplay loop muted playsinline></video><figcaption>{html.escape(label)}</figcaption></figure>"
    )


def _scores(o: dict | None) -> str:
    return "" if not o else " ".join(f"{d} {o[d]:.3f}" for d in DIMS if d in o)


# ----------------------------------------------------------------------------------------------- page
def _finite(v: float | None) -> float | None:
    return None if v is None or v != v else v


def _win_table(name: str, w: dict) -> str:
    cells = "".join(f"<td>{100 * w[d]:.1f}%</td>" for d in (*DIMS, "weighted") if d in w)
    return f"<tr><th>{html.escape(name)}</th>{cells}</tr>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } .pair { display: flex; gap: 12px; align-items: flex-start; margin: 10px 0; }
.pair .prompt { width: 260px; font-size: 13px; } figure { margin: 0; text-align: center; font-size: 12px; }
video.clip { width: 160px; height: 160px; image-rendering: pixelated; background: #000; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; } svg.plot { background: #fafafa; border: 1px solid #eee; font-size: 11px; }
pre { background: #f6f6f6; padding: 10px; overflow: auto; font-size: 12px; } #report-status { color: #777; font-size: 12px; }
"""

SELF_CHECK = """
(function () {
  const videos = Array.from(document.querySelectorAll('video.clip'));
  const plots = Array.from(document.querySelectorAll('svg.plot'));
  const st = {videos_total: videos.length, videos_loaded: 0, videos_failed: 0, plots_total: plots.length,
              plots_drawn: plots.filter(p => p.getBBox().width > 0 && p.querySelectorAll('polyline,rect').length > 0).length};
  const show = () => { document.getElementById('report-status').textContent = JSON.stringify(st); };
  for (const v of videos) {
    if (v.readyState >= 2) { st.videos_loaded++; continue; }
    v.addEventListener('loadeddata', () => { st.videos_loaded++; show(); }, {once: true});
    v.addEventListener('error', () => { st.videos_failed++; show(); }, {once: true});
  }
  show();
})();
"""


def render_html(
    run: Path, cfg_text: str, recs: list[dict], evaluation: dict | None, summary: dict | None, clips: list[dict] | None
) -> str:
    its = [r["iteration"] for r in recs]
    title = f"VideoAlign online run: {run.name}"
    h = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        h.append(
            f"<p>{summary.get('iterations')} iterations, policy version {summary.get('policy_version')}, mode "
            f"{html.escape(str(summary.get('mode')))}, algorithm {html.escape(str(summary.get('algo')))}, reward "
            f"{html.escape(str(summary.get('reward')))}, weights {html.escape(str(summary.get('weights')))}; "
            f"{summary.get('videos')} clips in {summary.get('loop_seconds')} s of loop.</p>"
        )
    h.append("<h2>Pretrained vs aligned (same prompt, same seed)</h2>")
    if clips:
        h.append("<p>Clips of the final evaluation, on prompts it chose to differ from one another.</p>")
        for c in clips:
            h.append(
                f"<div class='pair'><div class='prompt'>{html.escape(c['prompt'])}<br>seed {c['seed']}</div>"
                + _video(c["pretrained_mp4"], "pretrained " + _scores(c.get("pretrained_oracle")))
                + _video(c["aligned_mp4"], "aligned " + _scores(c.get("aligned_oracle")))
                + "</div>"
            )
    else:
        h.append(
            f"<p>(no evaluation clips in this run: {CLIPS} is missing or empty, eval_n_prompts=0 or report_clips=0)</p>"
        )
    h.append("<h2>Reward and oracle over iterations</h2><div class='plots'>")
    for d in (*DIMS, "weighted"):
        h.append(
            line_plot(
                f"{d}: served reward and oracle",
                its,
                {f"reward {d}": [r["reward"].get(d) for r in recs]},
                y_label="reward (normalised)",
                right={f"oracle {d}": [(r.get("oracle") or {}).get(d) for r in recs]},
                right_label="oracle score (0-1)" if d in DIMS else "oracle score (weighted sum)",
            )
        )
    h.append(line_plot("training loss", its, {"loss": [r.get("loss") for r in recs]}, y_label="loss"))
    if any(r.get("implicit_accuracy") is not None for r in recs):
        h.append(
            line_plot(
                "implicit accuracy (Flow-DPO)",
                its,
                {"accuracy": [r.get("implicit_accuracy") for r in recs]},
                y_label="fraction",
            )
        )
    refreshed = [r for r in recs if r.get("refresh")]
    if (
        refreshed
    ):  # online reward refresh: the reward's accuracy on the policy's newly labelled pairs, before it learned them
        h.append(
            line_plot(
                "served reward's on-policy accuracy w/o ties (before each refresh)",
                [r["iteration"] for r in refreshed],
                {d: [_finite(r["refresh"]["onpolicy_before"][d]["without_ties"]) for r in refreshed] for d in DIMS},
                y_label="fraction",
            )
        )
        h.append(
            line_plot(
                "labels spent on reward refresh",
                its,
                {"pairs labelled": [r.get("labels_spent") for r in recs]},
                y_label="pairs",
            )
        )
    h.append("</div>")
    h.append("<h2>Win rates of the final policy against the pretrained one</h2>")
    if evaluation:
        h.append(
            f"<p>{evaluation.get('n')} clips of the {html.escape(str(evaluation.get('prompts')))} prompts, same seeds "
            "for both policies; ties count half.</p><table><tr><th>judge</th>"
            + "".join(f"<th>{d}</th>" for d in (*DIMS, "weighted"))
            + "</tr>"
        )
        if "oracle_win_rate" in evaluation:
            h.append(_win_table("oracle", evaluation["oracle_win_rate"]))
        if "learned_win_rate" in evaluation:
            h.append(_win_table("served reward", evaluation["learned_win_rate"]))
        h.append("</table>")
        if "oracle_win_rate" not in evaluation:
            h.append(
                f"<p>Judge: the {html.escape(str(evaluation.get('judge', 'served reward')))}, the same model that "
                "trained the policy (no oracle outside the moving-shapes world: world=false), so these win rates "
                "cannot reveal reward hacking; judge with people or another model before trusting them.</p>"
            )
        op = evaluation.get("reward_onpolicy")
        if op:
            h.append(
                f"<p>On-policy accuracy of the served reward: {op['pairs']} within-prompt pairs of each policy's "
                "evaluation clips, labelled by the simulated raters; the ceiling is the oracle's own accuracy on the "
                "same labels.</p><table><tr><th>policy</th>"
                + "".join(f"<th>{d} w/o ties</th><th>{d} ceiling</th><th>{d} tie share</th>" for d in DIMS)
                + "</tr>"
            )
            for when, name in (("start", "pretrained (start)"), ("end", "final (end)")):
                h.append(
                    f"<tr><th>{name}</th>"
                    + "".join(
                        f"<td>{100 * op[when][d]['without_ties']:.1f}%</td><td>{100 * op[when][d]['ceiling_without_ties']:.1f}%"
                        f"</td><td>{100 * op[when][d]['tie_share']:.1f}%</td>"
                        for d in DIMS
                    )
                    + "</tr>"
                )
            h.append("</table>")
        if evaluation.get("reward_hacking"):
            h.append(
                f"<p><b>Reward hacking flagged on {html.escape(', '.join(evaluation['reward_hacking']))}</b>: the "
                "learned reward prefers the policy where the oracle does not.</p>"
            )
    else:
        h.append("<p>(no final evaluation in this run: eval_n_prompts=0)</p>")
    h.append("<h2>Time per phase</h2>")
    if recs:
        h.append(phase_bars(recs))
        phases = sorted({k for r in recs for k in r["phases"]} - {"iteration"})
        wall = sum(r["phases"]["iteration"] for r in recs) or 1.0
        h.append("<table><tr><th>phase</th><th>seconds (sum)</th><th>share of the loop</th></tr>")
        for p in phases:
            s = sum(r["phases"].get(p, 0.0) for r in recs)
            h.append(f"<tr><th>{html.escape(p)}</th><td>{s:.1f}</td><td>{100 * s / wall:.1f}%</td></tr>")
        h.append(f"<tr><th>iteration (wall)</th><td>{wall:.1f}</td><td>100%</td></tr></table>")
        h.append(
            "<p>generate and reward_wait run in the generator actors (overlapping training in one-step-off "
            "mode); rollout_wait, data, train and checkpoint are the driver's.</p>"
        )
    if summary and (summary.get("trainer_restarts") or summary.get("restarted_actors")):
        h.append(
            f"<p>Recovered from failures: trainer restarts {len(summary.get('trainer_restarts') or [])}, restarted "
            f"generator actors {summary.get('restarted_actors')}.</p>"
        )
    h.append(f"<h2>Config</h2><pre>{html.escape(cfg_text)}</pre>")
    h.append(f"<p id='report-status'>checking</p><script>{SELF_CHECK}</script></body></html>")
    return "\n".join(h)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (or ``out``); returns its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"run directory {run} does not exist")
    page = render_html(
        run,
        _config_text(run),
        _records(run),
        _json(run / "evaluation.json"),
        _json(run / "summary.json"),
        read_clips(run),
    )
    path = Path(out) if out else run / "report.html"
    tmp = path.with_suffix(".part")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write report.html for an online run directory.")
    ap.add_argument("run", help="run directory (jobs/online_dpo.py --out)")
    ap.add_argument("--out", default=None, help="output file (default RUN/report.html)")
    a = ap.parse_args(argv)
    try:
        path = build_report(a.run, a.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} (open it in a browser; no server needed)")
    return 0


__all__ = ["ReportError", "build_report", "line_plot", "phase_bars"]

if __name__ == "__main__":
    sys.exit(main())
