"""Committed results and manifests name paths relative to the repository, never one machine's directories
(issue 20 item 8), and ``repo_relative`` is what the writers record them with."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rlhf.artefacts import REPO, repo_relative

# an absolute path under a machine's directories, not a piece of a relative one (runs/tmp/x, http://host/home/)
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|tmp|root|home)/")
TEXT = {".json", ".jsonl", ".md", ".yaml", ".yml", ".txt", ".csv"}


def committed_text_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "docs/results", "artefacts"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / p for p in listed.split("\0") if p and Path(p).suffix in TEXT and (REPO / p).is_file()]


def test_committed_results_and_manifests_hold_no_machine_paths():
    files = committed_text_files()
    assert any(p.name == "MANIFEST.json" for p in files) and any(p.parent.name == "results" for p in files)
    found = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()[:120]}"
        for p in files
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert not found, "absolute paths in committed records:\n" + "\n".join(found)


def test_machine_path_pattern():
    assert MACHINE_PATH.search('"out": "/work/main/runs/x"')
    assert MACHINE_PATH.search("pairs of /tmp/pytest-1/data")
    assert MACHINE_PATH.search("--out=/home/me/x") and MACHINE_PATH.search("(/root/x)")
    assert not MACHINE_PATH.search("runs/tmp/x") and not MACHINE_PATH.search("https://host/home/x")
    assert not MACHINE_PATH.search('"route_prefix": "/reward"')


def test_repo_relative_maps_paths_under_the_repository():
    root = str(REPO)
    assert repo_relative(f"{root}/runs/x") == "runs/x"
    assert repo_relative(REPO / "artefacts" / "reward_default") == "artefacts/reward_default"
    assert repo_relative(f"{root}/.venv/bin/python") == ".venv/bin/python"
    assert repo_relative(root) == "."
    assert repo_relative(f"{root}/") == "./"
    # inside a command line, a comma-separated list, a sentence
    assert (
        repo_relative(f"python jobs/align_table.py out={root}/docs/results/t --data {root}/runs/d")
        == "python jobs/align_table.py out=docs/results/t --data runs/d"
    )
    assert repo_relative(f"{root}/runs/a,{root}/runs/b") == "runs/a,runs/b"
    assert repo_relative(f"500 pairs of {root}/runs/eval_heldout\n\n| `{root}/runs/r` |") == (
        "500 pairs of runs/eval_heldout\n\n| `runs/r` |"
    )
    # through dict keys and values, lists and tuples; other values untouched
    record = {f"{root}/runs/c": {"path": f"{root}/runs/c", "step": 3}, "dirs": [root, 1.5, None], "t": (f"{root}/a",)}
    assert repo_relative(record) == {"runs/c": {"path": "runs/c", "step": 3}, "dirs": [".", 1.5, None], "t": ("a",)}


def test_repo_relative_leaves_other_paths_alone():
    root = str(REPO)
    for value in (
        "/tmp/pytest-of-me/x",
        "/reward",
        "runs/x",
        "artefacts/reward_default",
        f"{root}2/runs/x",  # a sibling whose name starts with the repository's
        f"{root}.bak/x",
        f"/srv{root}/runs/x",  # the repository's path inside another one
        "",
    ):
        assert repo_relative(value) == value
    assert repo_relative(Path("/tmp/x")) == "/tmp/x"
    assert repo_relative({"n": 2, "ok": True, "v": None}) == {"n": 2, "ok": True, "v": None}
