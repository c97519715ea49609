"""Import of the VideoAlign CSV layout into preference records.

VideoAlign ships pairs as ``path_A,path_B,prompt,VQ,MQ,TA`` with labels ``A``, ``B`` or ``same``.
Labels are read case-insensitively (``tie`` is taken as ``same``; an empty cell means not
annotated); any other value is kept as written so that validation rejects the row and names it.
Columns beyond the layout are kept as string columns of the record.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from .schema import LABEL_DIMS, DataError

REQUIRED = ("path_A", "path_B", "prompt")
_LABEL_ALIASES = {"a": "A", "b": "B", "same": "same", "tie": "same"}


def normalise_label(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip()
    if v == "" or v.lower() in ("nan", "none", "null"):
        return None
    return _LABEL_ALIASES.get(v.lower(), v)


def _relative(path: str, root: Path | None) -> str:
    p = Path(path.strip())
    if root is not None and p.is_absolute():
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(p)
    return str(p)


def read_videoalign_csv(path: str | Path, root: str | Path | None = None, split: str = "train") -> list[dict]:
    """Parse a VideoAlign CSV into records (unvalidated: run :func:`validate_records` next)."""
    path = Path(path)
    root = Path(root) if root is not None else None
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise DataError(
                    f"CSV file {path} lacks column(s) {', '.join(missing)}; the VideoAlign layout is "
                    f"path_A,path_B,prompt,VQ,MQ,TA (found: {', '.join(header) or 'no header'})"
                )
            if not any(d in header for d in LABEL_DIMS):
                raise DataError(f"CSV file {path} has no label column; expected some of {', '.join(LABEL_DIMS)}")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file {path} is not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"CSV file {path} is malformed ({e})") from None

    out = []
    for i, row in enumerate(rows, start=1):
        a, b, prompt = (row.get(c) or "" for c in REQUIRED)
        rec = {
            "id": row.get("id") or hashlib.sha1(f"{i}\0{a}\0{b}\0{prompt}".encode()).hexdigest()[:16],
            "prompt": prompt.strip(),
            "video_a": _relative(a, root) if a.strip() else "",
            "video_b": _relative(b, root) if b.strip() else "",
            "split": (row.get("split") or split).strip(),
            "score_a": None,
            "score_b": None,
        }
        for dim in LABEL_DIMS:
            rec[dim] = normalise_label(row.get(dim))
        for k, v in row.items():
            if k is None:  # more cells than header columns
                rec["_overflow"] = ",".join(v)
            elif k not in REQUIRED and k not in LABEL_DIMS and k not in ("id", "split"):
                rec[k] = v
        out.append(rec)
    return out
