"""A Hugging Face hub cache written by a test: ``cache_repo(cache, "owner/name", folder)`` lays ``folder``
out as huggingface_hub's cache does (``models--owner--name/snapshots/<commit>/`` and ``refs/main``), so
loaders given the hub id find it offline, exactly as they would after ``hf download``."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def cache_repo(cache: str | Path, repo_id: str, folder: str | Path) -> Path:
    """Copy ``folder`` into ``cache`` as the ``main`` snapshot of ``repo_id``; returns the snapshot path."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap
