"""What a Ray worker of the loop is doing, shown in its process title (``ps``, ``top``, py-spy, the
dashboard's worker view): ``ray::GeneratorActor.rollout [scoring iteration 3, v2]``.

Ray titles a worker after the method it runs; this appends the phase inside the method (with the
``setproctitle`` package, the library Ray itself vendors). Ray puts its own title back when the method
returns. The fault-tolerance tests aim their kills with it.
"""

from __future__ import annotations


def show(base: str, status: str) -> None:
    """Set the title to ``ray::<base> [<status>]`` (a no-op outside a Ray worker)."""
    import sys

    if "ray" not in sys.modules:
        return
    import ray
    import setproctitle

    if ray.is_initialized():
        setproctitle.setproctitle(f"ray::{base} [{status}]")
