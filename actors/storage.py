"""Run storage: where a run's checkpoints and run state live, so that a resume on any node finds them.

``storage`` is a directory every node mounts at the same path (NFS, EFS, Lustre: cluster.yaml mounts one at
``/mnt/shared``) or a URI that Ray Train accepts (``s3://bucket/run``, ``gs://...``, ``file:///abs/path``).
It is read and written with ``pyarrow.fs``, the library Ray Train itself persists through, so both kinds
work the same way: DeepSpeed writes its state to a local temporary directory on each worker, which then
uploads its files; a resuming worker downloads them first. Run state (``state.json``, ``latest.json``) is
written whole under a temporary name and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path


class StorageError(OSError):
    """Storage that cannot be reached or lacks what a resume needs; the message names the location."""


def _split(uri: str):
    import pyarrow.fs as pafs

    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(
            f"storage {uri!r} is not a path or a URI pyarrow can open ({e}); give a directory "
            "every node mounts (e.g. /mnt/shared/run) or s3://bucket/prefix"
        ) from None


class RunStorage:
    """One run's storage root; every ``rel`` below is a '/'-separated path under it."""

    def __init__(self, uri: str):
        self.uri = uri if "://" in uri else str(Path(uri).expanduser().resolve())
        self.fs, self.root = _split(uri)
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"RunStorage({self.uri!r})"

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def location(self, rel: str = "") -> str:
        """``rel`` as the user would name it (a path, or the URI)."""
        return f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Whole or not at all: written under a temporary name, then moved into place."""
        dest = self.path(rel)
        self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        tmp = f"{dest}.{uuid.uuid4().hex[:8]}.part"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, dest)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError:
            raise StorageError(f"{self.location(rel)} does not exist") from None

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def upload(self, local_dir: str | Path, rel: str) -> None:
        """Copy every file under ``local_dir`` to ``rel`` (merging with what is there: each worker adds its own)."""
        import pyarrow.fs as pafs

        dest = self.path(rel)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(
            str(Path(local_dir).resolve()),
            dest,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )

    def download(self, rel: str, local_dir: str | Path) -> Path:
        import pyarrow.fs as pafs

        if not self.exists(rel):
            raise StorageError(
                f"{self.location(rel)} does not exist: the checkpoint was not written to this storage "
                "(every node must see the same storage: a shared mount or a URI)"
            )
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            self.path(rel),
            str(Path(local_dir).resolve()),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return Path(local_dir)

    def delete(self, rel: str) -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))

    @contextmanager
    def staged(self, rel: str):
        """A local temporary directory whose files are uploaded to ``rel`` when the block ends without error."""
        tmp = Path(tempfile.mkdtemp(prefix="stage-"))
        try:
            yield tmp
            self.upload(tmp, rel)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def fetched(self, rel: str):
        """``rel`` downloaded into a local temporary directory for the block."""
        tmp = Path(tempfile.mkdtemp(prefix="fetch-"))
        try:
            yield self.download(rel, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["RunStorage", "StorageError"]
