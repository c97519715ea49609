"""The code's layout rules (issue 20): jobs are entry points, not a library; long files say why."""

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG = 400  # lines; a longer file outside tests/ starts with "# Long on purpose: <why>"


def tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split()]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_job_and_no_test_imports_a_job():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m == "jobs" or m.startswith("jobs."))
        for p in tracked("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_online_job_is_a_thin_entry_point():
    assert len((ROOT / "jobs" / "online_dpo.py").read_text().splitlines()) < 300


def test_every_long_file_outside_tests_says_why_at_its_top():
    long = [
        p
        for p in tracked("*.py")
        if not p.relative_to(ROOT).parts[0] == "tests" and len(p.read_text().splitlines()) > LONG
    ]
    unexplained = [str(p.relative_to(ROOT)) for p in long if not p.read_text().startswith("# Long on purpose: ")]
    assert not unexplained
