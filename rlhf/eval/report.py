"""``report.html`` for a run directory: one self-contained file that opens from disk, with no server.

    python -m rlhf.eval.report runs/online_dpo            # writes runs/online_dpo/report.html
    python -m rlhf.eval.report runs/online_dpo --clips 8

What it shows, from what the run wrote (``config.yaml``, ``metrics.jsonl``, ``evaluation.json``,
``summary.json``, ``adapter/``):

* side-by-side videos: the pretrained and the aligned policy on the same held-out prompts and seeds (the
  final evaluation's seeds), sampled here with the run's sampler settings, H.264 embedded as data URIs,
  with each clip's oracle scores where the prompt is a moving-shapes prompt;
* reward and oracle curves over iterations, one per dimension (VQ, MQ, TA, weighted), inline SVG;
* the win-rate tables of the final evaluation (oracle, and the learned reward with its hacking flag);
* time per phase (seconds per iteration, and each phase's share of the loop);
* the config.

The page checks itself on load (every video decodable, every plot drawn) and writes the result into
``#report-status``: tests read it from headless Chromium; a person sees it at the bottom of the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
from pathlib import Path

DIMS = ("VQ", "MQ", "TA")
COLOURS = {"VQ": "#1f77b4", "MQ": "#ff7f0e", "TA": "#2ca02c", "weighted": "#444444"}


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


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _config(run: Path) -> tuple[dict, str]:
    import yaml

    p = run / "config.yaml"
    if not p.is_file():
        return {}, "(no config.yaml)"
    text = p.read_text()
    return yaml.safe_load(text) or {}, text


# ----------------------------------------------------------------------------------------------- plots
def line_plot(
    title: str,
    xs: list[float],
    series: dict[str, list[float | None]],
    width: int = 420,
    height: int = 220,
    y_label: str = "",
) -> str:
    """An inline SVG line chart (one polyline per series, axes with min / max ticks, a legend)."""
    pad_l, pad_r, pad_t, pad_b = 52, 12, 26, 34
    vals = [v for ys in series.values() for v in ys if v is not None]
    if not xs or not vals:
        return f'<svg class="plot" width="{width}" height="{height}"><text x="10" y="20">{html.escape(title)}: no data</text></svg>'
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(vals), max(vals)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    sx = lambda x: pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)  # noqa: E731
    sy = lambda y: height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)  # noqa: E731
    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#888"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#888"/>',
        f'<text x="{pad_l - 4}" y="{sy(y1) + 4}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{sy(y0) + 4}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{sx(x0)}" y="{height - pad_b + 14}" text-anchor="middle">{x0:g}</text>',
        f'<text x="{sx(x1)}" y="{height - pad_b + 14}" text-anchor="middle">{x1:g}</text>',
        f'<text x="{(width + pad_l) / 2}" y="{height - 4}" text-anchor="middle">iteration</text>',
    ]
    if y_label:
        parts.append(
            f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle">'
            f"{html.escape(y_label)}</text>"
        )
    for i, (name, ys) in enumerate(series.items()):
        pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None]
        colour = COLOURS.get(name, "#777")
        if pts:
            parts.append(
                f'<polyline class="series" data-name="{html.escape(name)}" fill="none" stroke="{colour}" '
                f'stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>'
            )
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
        parts.append(f'<text x="{pad_l + 8 + 70 * i}" y="{pad_t + 10}" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def phase_bars(recs: list[dict], width: int = 860, height: int = 240) -> str:
    """Stacked bars: seconds of each phase per iteration (driver-side phases; actor-side ones overlap)."""
    phases = ["rollout_wait", "data", "train", "checkpoint"]
    colours = ["#1f77b4", "#9467bd", "#d62728", "#8c564b"]
    totals = [max(r["phases"].get("iteration", 0.0), 1e-9) for r in recs]
    top = max(totals) if totals else 1.0
    pad_l, pad_b, pad_t = 52, 30, 26
    bw = (width - pad_l - 10) / max(len(recs), 1)
    parts = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        '<text x="10" y="16" font-weight="bold">seconds per iteration, by phase</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{top:.3g}s</text>',
    ]
    for i, r in enumerate(recs):
        y = height - pad_b
        for ph, c in zip(phases, colours):
            v = float(r["phases"].get(ph, 0.0))
            h = v / top * (height - pad_t - pad_b)
            y -= h
            parts.append(
                f'<rect x="{pad_l + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{c}"><title>iteration {r["iteration"]} {ph} {v:.2f}s</title></rect>'
            )
        parts.append(
            f'<text x="{pad_l + (i + 0.5) * bw:.1f}" y="{height - pad_b + 14}" text-anchor="middle">{r["iteration"]}</text>'
        )
    for j, (ph, c) in enumerate(zip(phases, colours)):
        parts.append(f'<text x="{pad_l + 240 + 110 * j}" y="16" fill="{c}">{ph}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------- clips
def sample_clips(run: Path, cfg: dict, n: int) -> list[dict]:
    """``n`` held-out prompts, pretrained vs aligned, same seeds as the final evaluation."""
    import torch

    from rlhf.align.offline import read_prompts
    from rlhf.config import load_config
    from rlhf.generator.lora import is_adapter_dir
    from rlhf.generator.model import DEFAULT_GENERATOR, load_generator
    from rlhf.generator.sampler import SamplerConfig, sample
    from rlhf.video import encode_video

    if n <= 0 or not is_adapter_dir(run / "adapter"):
        return []
    torch.manual_seed(0)
    # the job's evaluation prompts: eval_prompts, else the world's held-out ones, or the run's prompts (world=false)
    spec = cfg.get("eval_prompts") or ("heldout" if cfg.get("world", True) else cfg.get("prompts"))
    prompts = read_prompts(spec)[:n]
    per = int(cfg.get("eval_seeds") or 1)  # the evaluation's first seed of each prompt
    seeds = [10_000 + i * per for i in range(len(prompts))]
    scfg = load_config(SamplerConfig, values=cfg.get("sampler") or {})
    gen = load_generator(cfg.get("generator") or DEFAULT_GENERATOR)
    before = sample(gen, prompts, seeds, scfg).videos
    gen.load_lora(run / "adapter")
    after = sample(gen, prompts, seeds, scfg).videos
    out = []
    for p, s, a, b in zip(prompts, seeds, before, after):
        clips = {"pretrained": encode_video(a, crf=12), "aligned": encode_video(b, crf=12)}
        out.append({"prompt": p, "seed": s, **clips, "oracle": {k: _oracle(m, p) for k, m in clips.items()}})
    return out


def _oracle(mp4: bytes, prompt: str) -> dict | None:
    """The oracle's scores of the clip as embedded (stored quality); None for a prompt outside the grammar."""
    from rlhf.synthetic.oracle import score
    from rlhf.synthetic.prompts import PromptError
    from rlhf.video import read_video

    try:
        return score(read_video(mp4), prompt)
    except PromptError:
        return None


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
    run: Path,
    cfg: dict,
    cfg_text: str,
    recs: list[dict],
    evaluation: dict | None,
    summary: dict | None,
    clips: list[dict],
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
        for c in clips:
            h.append(
                f"<div class='pair'><div class='prompt'>{html.escape(c['prompt'])}<br>seed {c['seed']}</div>"
                + _video(c["pretrained"], "pretrained " + _scores(c["oracle"]["pretrained"]))
                + _video(c["aligned"], "aligned " + _scores(c["oracle"]["aligned"]))
                + "</div>"
            )
    else:
        h.append("<p>(no adapter in this run directory, or clips turned off)</p>")
    h.append("<h2>Reward and oracle over iterations</h2><div class='plots'>")
    for d in (*DIMS, "weighted"):
        series = {"reward": [r["reward"].get(d) for r in recs], "oracle": [r.get("oracle", {}).get(d) for r in recs]}
        h.append(line_plot(f"{d}", its, {f"reward {d}": series["reward"], f"oracle {d}": series["oracle"]}))
    h.append(line_plot("training loss", its, {"loss": [r.get("loss") for r in recs]}))
    if any(r.get("implicit_accuracy") is not None for r in recs):
        h.append(
            line_plot("implicit accuracy (Flow-DPO)", its, {"accuracy": [r.get("implicit_accuracy") for r in recs]})
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
            )
        )
        h.append(
            line_plot("labels spent on reward refresh", its, {"pairs labelled": [r.get("labels_spent") for r in recs]})
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


def build_report(run_dir: str | Path, clips: int = 4, out: str | Path | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (or ``out``); returns its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"run directory {run} does not exist")
    recs = _records(run)
    cfg, cfg_text = _config(run)
    page = render_html(
        run,
        cfg,
        cfg_text,
        recs,
        _json(run / "evaluation.json"),
        _json(run / "summary.json"),
        sample_clips(run, cfg, clips),
    )
    path = Path(out) if out else run / "report.html"
    tmp = path.with_suffix(".part")
    tmp.write_text(page)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write report.html for an online run directory.")
    ap.add_argument("run", help="run directory (jobs/online_dpo.py --out)")
    ap.add_argument("--clips", type=int, default=4, help="held-out prompts shown pretrained vs aligned (0 = none)")
    ap.add_argument("--out", default=None, help="output file (default RUN/report.html)")
    a = ap.parse_args(argv)
    try:
        path = build_report(a.run, a.clips, a.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} (open it in a browser; no server needed)")
    return 0


__all__ = ["ReportError", "build_report", "line_plot", "phase_bars"]

if __name__ == "__main__":
    sys.exit(main())
