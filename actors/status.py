"""What a Ray worker of the loop is doing, shown in its process title (``ps``, ``top``, py-spy, the
dashboard's worker view): ``ray::GeneratorActor.rollout [scoring iteration 3, v2]``.

Ray titles a worker after the method it runs; this appends the phase inside the method. Ray puts its own
title back when the method returns. The fault-tolerance tests aim their kills with it.

The one private Ray API the project uses, deliberately: Ray has no public way to set a worker's title, and
the ``setproctitle`` package cannot (Ray's own copy of it has moved the process's argv area: measured, a
title set with the package never shows). Guarded: a Ray release without it loses the title, nothing else.
"""

from __future__ import annotations

WARM_UP = 2**31 - 1  # the iteration number of the online job's warm-up (its clips' seeds and rows): no run reaches it


def iteration_label(iteration: int) -> str:
    """``iteration 3``, or ``warm-up`` for the warm-up's calls (titles, logs)."""
    return "warm-up" if iteration == WARM_UP else f"iteration {iteration}"


def show(base: str, status: str) -> None:
    """Set the title to ``ray::<base> [<status>]`` (a no-op outside a Ray worker)."""
    import sys

    if "ray" not in sys.modules:
        return
    import ray

    setter = getattr(getattr(ray, "_raylet", None), "setproctitle", None)
    if setter is not None and ray.is_initialized():
        setter(f"ray::{base} [{status}]")
