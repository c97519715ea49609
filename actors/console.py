"""A quiet console: the job's own lines on the terminal, everything else in the run's log file.

A Ray job's terminal fills with Ray's and Serve's INFO lines and with every worker's output (Ray forwards
worker stdout/stderr to the driver). ``quiet_console(log_path)`` points the process's file descriptors 1
and 2 at ``log_path`` (so Python, C++ and child-process output all land there) and keeps a duplicate of the
terminal for ``say``: the progress bar, one line per iteration and the result. ``verbose=True`` leaves the
terminal as it is. The terminal is given back before an exception leaves the block, so a failure's
traceback is seen where the user looks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TextIO


class _Console:
    stream: TextIO | None = None  # the terminal while quiet; None: sys.stdout

    def say(self, msg: str) -> None:
        """A line for the user: on the terminal, and in the log file when the console is quiet."""
        if self.stream is not None:
            print(msg, file=self.stream, flush=True)
        print(msg, flush=True)

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stdout


console = _Console()


@contextlib.contextmanager
def quiet_console(log_path: str | Path, verbose: bool = False):
    """Send fds 1 and 2 to ``log_path`` (appending) for the block; ``console.say`` still reaches the terminal."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s", stream=sys.stdout)
    if verbose:
        yield
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console.stream = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        console.stream.close()
        console.stream = None
