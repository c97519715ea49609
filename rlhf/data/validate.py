"""Row-by-row validation of preference records.

Every row is checked; each bad row is reported with its number (1-based, header excluded) and the
reason. Nothing is dropped silently: the caller gets the good rows and a list of rejects, and
:func:`write_rejects` keeps the rejected rows, with their reasons, in a CSV file next to the output.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .schema import LABEL_DIMS, LABELS, DataError


@dataclass
class Reject:
    row: int  # 1-based data row number in the source (header excluded)
    reason: str
    record: dict


@dataclass
class ValidationReport:
    source: str
    total: int = 0
    good: list[dict] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def reasons(self) -> Counter:
        return Counter(r.reason.split(":")[0] for r in self.rejects)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.total} rows, {len(self.good)} good, {len(self.rejects)} rejected"]
        for reason, n in sorted(self.reasons().items()):
            lines.append(f"  {n:6d}  {reason}")
        return "\n".join(lines)

    def raise_if_bad(self, limit: int = 20) -> None:
        """``--strict``: fail listing the bad rows (the first ``limit`` of them)."""
        if self.rejects:
            shown = "\n".join(f"  row {r.row}: {r.reason}" for r in self.rejects[:limit])
            more = f"\n  ... and {len(self.rejects) - limit} more" if len(self.rejects) > limit else ""
            raise DataError(f"{self.source}: {len(self.rejects)} bad row(s) of {self.total}:\n{shown}{more}")


def _problems(rec: dict, root: Path | None, check_files: bool) -> list[str]:
    out = []
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        out.append("empty prompt")
    for side in ("video_a", "video_b"):
        p = rec.get(side)
        if not isinstance(p, str) or not p.strip():
            out.append(f"missing path: {side} is empty")
        elif check_files:
            full = Path(p) if root is None or Path(p).is_absolute() else root / p
            if not full.is_file():
                out.append(f"missing file: {side} {p} not found under {root if root else '.'}")
    if rec.get("video_a") and rec.get("video_a") == rec.get("video_b"):
        out.append("same video on both sides: video_a equals video_b")
    annotated = 0
    for dim in LABEL_DIMS:
        label = rec.get(dim)
        if label is None:
            continue
        if label not in LABELS:
            out.append(f"unknown label: {dim}={label!r} (expected A, B, same or empty)")
        else:
            annotated += 1
    if annotated == 0 and not any(p.startswith("unknown label") for p in out):
        out.append("no label: no dimension is annotated")
    split = rec.get("split")
    if not isinstance(split, str) or not split:
        out.append("missing split")
    return out


def validate_records(
    records: list[dict], root: str | Path | None = None, check_files: bool = True, source: str = "records"
) -> ValidationReport:
    """Check every record; duplicates (same prompt and the same two videos, in either order) are
    reported against the first occurrence."""
    root = Path(root) if root is not None else None
    report = ValidationReport(source=source, total=len(records))
    seen: dict[tuple, int] = {}
    seen_ids: dict[str, int] = {}
    for i, rec in enumerate(records, start=1):
        problems = _problems(rec, root, check_files)
        key = ((rec.get("prompt") or "").strip(), frozenset((rec.get("video_a"), rec.get("video_b"))))
        if not problems:
            if key in seen:
                problems.append(f"duplicate pair: same prompt and videos as row {seen[key]}")
            elif rec.get("id") in seen_ids:
                problems.append(f"duplicate id: {rec.get('id')!r} already used by row {seen_ids[rec.get('id')]}")
        if problems:
            report.rejects.append(Reject(i, "; ".join(problems), rec))
        else:
            seen[key] = i
            seen_ids[rec.get("id")] = i
            report.good.append(rec)
    return report


def write_rejects(rejects: list[Reject], path: str | Path) -> Path:
    """CSV of rejected rows: row number, reason, and the original record as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "reason", "record"])
        for r in rejects:
            w.writerow([r.row, r.reason, json.dumps(r.record, default=str)])
    return path
