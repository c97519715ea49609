"""Checkpoints named by a local directory or a Hugging Face hub id, as diffusers and transformers accept.

``resolve("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")`` returns the local snapshot folder of that repository
(downloading it when the hub is reachable and offline mode is off); ``resolve("/data/ckpt")`` returns the
directory. The cache is huggingface_hub's: ``HF_HUB_CACHE`` / ``HF_HOME`` or the ``cache_dir`` argument
(the jobs' ``hub_cache`` setting). ``HF_HUB_OFFLINE=1`` is respected, read when ``resolve`` runs (not only
when huggingface_hub was imported): then only the cache is read, and an id that is not cached gives one
:class:`HubError` that names the id, the cache and the command that fetches it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name, as the hub spells repository ids (an optional "@revision" tail selects a branch, tag or commit)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_.\-/]+)?$")


class HubError(FileNotFoundError):
    """A checkpoint that is neither a local directory nor a reachable (or cached) hub repository."""


def offline() -> bool:
    """huggingface_hub's offline switch, read now (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    truthy = {"1", "on", "yes", "true"}
    return any(os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir_of(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def resolve(
    name_or_path: str | Path,
    what: str = "checkpoint",
    cache_dir: str | Path | None = None,
    allow_patterns: list[str] | None = None,
    local_only: bool = False,
) -> Path:
    """The local directory of ``name_or_path`` (a directory, or a hub id ``owner/name[@revision]``).

    ``what`` names the role in error messages ("generator", "reward model"). ``allow_patterns`` limits a
    download to the files a loader reads (a cached snapshot is returned as it is). ``local_only``: never
    download, as in offline mode."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise HubError(f"{what} {name} is a file; expected a checkpoint directory or a hub id (owner/name)")
    if not _HUB_ID.match(name):
        raise HubError(f"{what} {name}: no such directory, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = name.partition("@")
    cache = cache_dir_of(cache_dir)
    fetch = (
        f"fetch it where the hub is reachable with `hf download {repo_id}"
        + (f" --revision {revision}" if revision else "")
        + f" --cache-dir {cache}` and copy that cache here, "
        "or give a local directory instead"
    )
    local_only = local_only or offline()
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                cache_dir=str(cache),
                local_files_only=local_only,
                allow_patterns=allow_patterns,
            )
        )
    except RepositoryNotFoundError:
        raise HubError(
            f"{what} {name}: no such repository on the hub (or it is private: log in with `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if offline()
            else "only the cache was read"
            if local_only
            else "the hub is unreachable"
        )
        raise HubError(f"{what} {name} is not in the Hugging Face cache {cache} and {why}: {fetch}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HubError(
            f"{what} {name} could not be fetched ({type(e).__name__}: {str(e).splitlines()[0][:200]}): {fetch}"
        ) from None


def cached_or_path(name_or_path: str | Path) -> Path:
    """The local directory of ``name_or_path`` when it is one or is a hub id already in the cache; else the
    name as a path (which may not exist). Never downloads: for estimates that fall back to built-in sizes."""
    try:
        return resolve(name_or_path, local_only=True)
    except HubError:
        return Path(name_or_path)


__all__ = ["HubError", "cache_dir_of", "cached_or_path", "offline", "resolve"]
