"""Shipped artefacts: a directory plus ``MANIFEST.json`` (size and sha256 of every file, and how it was made)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = REPO / "artefacts"


class ArtefactError(ValueError):
    """An artefact whose files are missing or differ from its manifest."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# The repository root where it stands as a path of its own: not inside a longer name or path (``/x/work/main``,
# ``/work/main2``). Followed by ``/`` and a name it is dropped (``/work/main/runs/x`` -> ``runs/x``); standing
# alone it becomes ``.``.
_ROOT_IN_TEXT = re.compile(rf"(?<![\w.~/-]){re.escape(str(REPO))}(?:(?P<sep>/)(?=[\w.~-])|(?![\w.~-]))")


def repo_relative(value):
    """``value`` as a committed record should hold it: every absolute path inside the repository written
    relative to the repository root, whether the string is the path itself or holds it (a command line, a
    comma-separated list, a markdown sentence), recursively through dict keys and values, lists and tuples.
    Paths outside the repository, and everything else, stay as given; a ``Path`` is recorded as a string."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return _ROOT_IN_TEXT.sub(lambda m: "" if m.group("sep") else ".", value)
    if isinstance(value, dict):
        return {repo_relative(k): repo_relative(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(repo_relative(v) for v in value)
    return value


def table_files(out: str | Path) -> tuple[Path, Path]:
    """``(out.md, out.json)`` for a table job's ``out`` stem. The suffixes are appended, not swapped, so a stem
    with a dot in it (``runs/table_lr1.5e-5``) keeps its whole name; a stem given as ``x.md`` or ``x.json``
    means ``x``."""
    out = Path(out)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    return out.parent / f"{out.name}.md", out.parent / f"{out.name}.json"


def write_manifest(root: str | Path, meta: dict) -> dict:
    """Write ``root/MANIFEST.json``: ``meta`` (paths inside the repository made relative) plus every
    file's size and sha256."""
    root = Path(root)
    files = {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "MANIFEST.json"
    }
    manifest = {**repo_relative(meta), "files": files}
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_directory(src: str | Path, dest: str | Path, meta: dict) -> dict:
    """Copy ``src`` to ``dest`` atomically (via ``dest.part``) and write its manifest."""
    src, dest = Path(src), Path(dest)
    tmp = dest.with_name(dest.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    manifest = write_manifest(tmp, meta)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


def verify_manifest(path: str | Path, error: type[Exception] = ArtefactError) -> dict:
    """Check every file listed in ``path/MANIFEST.json`` (sha256); raises ``error`` naming what differs."""
    root = Path(path)
    try:
        manifest = json.loads((root / "MANIFEST.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"{root}/MANIFEST.json is missing or unreadable ({e})") from None
    bad = [
        name
        for name in manifest["files"]
        if not (root / name).is_file() or sha256(root / name) != manifest["files"][name]["sha256"]
    ]
    if bad:
        raise error(f"{root}: file(s) missing or changed since export: {', '.join(bad)}")
    return manifest
