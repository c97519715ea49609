"""report.html of a run directory written here by hand (no Ray, no sampling): the evaluation's clips are
embedded byte for byte, a missing clip is named, and the plots carry round ticks, units and legends, with
the oracle drawn against its own axis so that it does not flatten next to the normalised reward."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from rlhf.eval.report import ReportError, build_report, line_plot, phase_bars
from rlhf.video import encode_video

PROMPTS = ["a red circle moves left", "two blue squares move up"]
PHASES = {
    "generate": 3.0,
    "reward_wait": 1.0,
    "rollout_wait": 4.0,
    "data": 0.5,
    "train": 3.0,
    "checkpoint": 0.5,
    "iteration": 9.0,
}


def record(it: int) -> dict:
    return {
        "iteration": it,
        "reward": {"VQ": -1.0 + it, "MQ": 0.5, "TA": 0.2 * it, "weighted": -0.5 + it},
        "oracle": {"VQ": 0.4 + 0.1 * it, "MQ": 0.5, "TA": 0.6, "weighted": 1.5 + 0.1 * it},
        "loss": 0.69 - 0.01 * it,
        "implicit_accuracy": 0.5 + 0.1 * it,
        "phases": PHASES,
        "videos": 8,
        "labels_spent": 0,
        "refresh": None,
    }


def fake_run(tmp_path, with_clips: bool = True) -> tuple:
    """A run directory as jobs/online_dpo.py leaves it; returns it and the mp4 bytes of each clip."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"iterations": 3, "mode": "sync", "eval_n_prompts": 2}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(record(i)) + "\n" for i in range(3)))
    win = {"VQ": 0.75, "MQ": 0.5, "TA": 0.625, "weighted": 0.6}
    (run / "evaluation.json").write_text(json.dumps({"n": 4, "prompts": "heldout", "oracle_win_rate": win}))
    summary = {"iterations": 3, "policy_version": 3, "mode": "sync", "algo": "dpo", "videos": 24, "loop_seconds": 27}
    (run / "summary.json").write_text(json.dumps(summary))
    mp4s = []
    if with_clips:
        (run / "eval_clips").mkdir()
        entries = []
        for i, prompt in enumerate(PROMPTS):
            entry = {"prompt": prompt, "seed": 10_000 + i}
            for j, name in enumerate(("pretrained", "aligned")):
                frames = np.full((8, 32, 32, 3), 40 + 60 * (2 * i + j), np.uint8)
                frames[:, :, : 4 * (j + 1)] = 255  # a bar whose width tells the clips apart too
                mp4 = encode_video(frames)
                rel = f"eval_clips/{i:04d}_{name}.mp4"
                (run / rel).write_bytes(mp4)
                entry[name] = rel
                entry[f"{name}_oracle"] = {"VQ": 0.25, "MQ": 0.5, "TA": 0.75 + 0.125 * j}
                mp4s.append(mp4)
            entries.append(entry)
        (run / "eval_clips" / "clips.json").write_text(json.dumps(entries))
    return run, mp4s


def svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def texts(root: ET.Element, cls: str, **attrs) -> list[str]:
    return [
        t.text
        for t in root.iter("text")
        if t.get("class") == cls and all(t.get(k.replace("_", "-")) == v for k, v in attrs.items())
    ]


def y_extent(polyline: ET.Element) -> float:
    ys = [float(p.split(",")[1]) for p in polyline.get("points").split()]
    return max(ys) - min(ys)


# ----------------------------------------------------------------------------------------------- the page
def test_page_embeds_the_evaluation_clips_byte_for_byte(tmp_path):
    run, mp4s = fake_run(tmp_path)
    page = build_report(run).read_text()
    embedded = re.findall(r'<video class="clip" src="data:video/mp4;base64,([^"]+)"', page)
    assert embedded == [base64.b64encode(m).decode() for m in mp4s]  # pretrained, aligned of each prompt in order
    for prompt in PROMPTS:
        assert prompt in page
    assert "seed 10000" in page and "seed 10001" in page
    # the oracle scores from clips.json under each clip: aligned TA is 0.75 + 0.125
    assert "pretrained VQ 0.250 MQ 0.500 TA 0.750" in page
    assert "aligned VQ 0.250 MQ 0.500 TA 0.875" in page


def test_page_keeps_the_self_check_contract(tmp_path):
    """Every svg.plot has a polyline or rect (what #report-status counts as drawn): 4 reward/oracle charts,
    loss, implicit accuracy and the phase bars."""
    run, _ = fake_run(tmp_path)
    page = build_report(run).read_text()
    plots = re.findall(r'<svg class="plot".*?</svg>', page, re.S)
    assert len(plots) == 7
    assert all("<polyline" in p or "<rect" in p for p in plots)
    assert "<p id='report-status'>" in page
    for key in ("videos_total", "videos_loaded", "videos_failed", "plots_total", "plots_drawn"):
        assert key in page


def test_run_without_clips_says_so(tmp_path):
    run, _ = fake_run(tmp_path, with_clips=False)
    page = build_report(run).read_text()
    assert "no evaluation clips in this run" in page and "eval_n_prompts=0" in page
    assert "<video" not in page


def test_missing_clip_file_is_named(tmp_path):
    run, _ = fake_run(tmp_path)
    gone = run / "eval_clips" / "0001_aligned.mp4"
    gone.unlink()
    with pytest.raises(ReportError, match=re.escape(str(gone))):
        build_report(run)
    assert not (run / "report.html").exists()


# ----------------------------------------------------------------------------------------------- plots
def test_line_plot_round_ticks_units_and_legend():
    root = svg(line_plot("t", [0, 1, 2], {"up": [0.0, 0.5, 1.0], "down": [1.0, 0.25, 0.0]}, y_label="fraction"))
    # data 0..1, about 5 ticks: (1 - 0) / 4 = 0.25 rounds to the step 0.2
    assert texts(root, "ytick", data_axis="left") == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert texts(root, "ytick", data_axis="right") == []
    assert texts(root, "xtick") == ["0", "1", "2"]
    assert texts(root, "xlabel") == ["iteration"] and texts(root, "ylabel") == ["fraction"]
    assert texts(root, "legend") == ["up", "down"]
    assert len([g for g in root.iter("line") if g.get("class") == "grid"]) == 6


def test_line_plot_labels_at_most_ten_iterations():
    root = svg(line_plot("t", list(range(30)), {"loss": [1.0 / (i + 1) for i in range(30)]}))
    # 0..29: a step of 1 labels 30, 2 labels 15, 5 labels 6
    assert texts(root, "xtick") == ["0", "5", "10", "15", "20", "25"]


def test_reward_and_oracle_on_two_axes_both_fill_the_plot():
    root = svg(
        line_plot(
            "VQ",
            [0, 1, 2],
            {"reward VQ": [-1.0, 0.25, 1.0]},
            y_label="reward (normalised)",
            right={"oracle VQ": [0.4, 0.55, 0.6]},
            right_label="oracle score (0-1)",
        )
    )
    # left: (1 - -1) / 4 = 0.5 is a nice step; right: (0.6 - 0.4) / 4 = 0.05 is one too
    assert texts(root, "ytick", data_axis="left") == ["-1.0", "-0.5", "0.0", "0.5", "1.0"]
    assert texts(root, "ytick", data_axis="right") == ["0.40", "0.45", "0.50", "0.55", "0.60"]
    assert texts(root, "ylabel") == ["reward (normalised)", "oracle score (0-1)"]
    assert texts(root, "legend") == ["reward VQ (left axis)", "oracle VQ (right axis)"]
    area = next(r for r in root.iter("rect") if r.get("class") == "plot-area")
    lines = {p.get("data-name"): p for p in root.iter("polyline")}
    # on the reward's axis the oracle would span 0.2 / 2 = 10% of the height; on its own, all of it
    assert y_extent(lines["oracle VQ"]) > 0.5 * float(area.get("height"))
    assert y_extent(lines["reward VQ"]) > 0.5 * float(area.get("height"))


def test_world_false_reward_plot_has_one_axis():
    """No oracle outside the world: the right axis and the legend's axis names go."""
    root = svg(line_plot("VQ", [0, 1], {"reward VQ": [0.0, 1.0]}, right={"oracle VQ": [None, None]}))
    assert texts(root, "ytick", data_axis="right") == []
    assert texts(root, "legend") == ["reward VQ"]


def test_phase_bars_ticks_in_seconds_and_legend():
    recs = [{"iteration": i, "phases": PHASES} for i in range(3)]
    root = svg(phase_bars(recs))
    # the tallest bar is the 9 s iteration: (9 - 0) / 4 = 2.25 rounds to the step 2, up to 10
    assert texts(root, "ytick", data_axis="left") == ["0", "2", "4", "6", "8", "10"]
    assert texts(root, "ylabel") == ["time (s)"] and texts(root, "xlabel") == ["iteration"]
    assert texts(root, "xtick") == ["0", "1", "2"]
    assert texts(root, "legend") == ["rollout_wait", "data", "train", "checkpoint"]
