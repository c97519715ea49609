"""The Ray cluster a job runs on: join the one it is submitted to, or start a local one on 127.0.0.1; check
that the job's roles fit before starting any of them; stop exactly what was started. Public Ray APIs only.

    cluster = connect(address="", num_cpus=6)        # RAY_ADDRESS (ray job submit) or a local cluster
    check_fit([Role("generator actors", 2, {"CPU": 1}, "generators, generator_cpus"), ...],
              autoscaling=False, wait_s=600)          # stops at once (FitError) or waits for the autoscaler
    ...
    cluster.stop()                                    # only a cluster this process started

Loopback: Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is first imported; unless it is
"0" a local cluster binds the machine's routable address. ``connect`` sets it before importing Ray for a
local cluster, and refuses to start one when Ray was already imported without it (the error names the fix).
A joined cluster keeps its own addresses: there the variable must stay unset, or the driver would claim
127.0.0.1 as its node address.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PREEMPTION_WATCHER_VAR = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
WORKER_POOL_PER_CPU = 2  # a local cluster's num_workers_soft_limit: 2 per logical CPU + 2


class FitError(RuntimeError):
    """The job's roles cannot be placed on the cluster; the message lists each role's demand and the fix."""


@dataclass
class Role:
    """``count`` Ray actors (or tasks) that each reserve ``bundle`` (Ray resources: CPU, GPU, memory in bytes,
    custom ones); ``knobs`` names the settings that shrink it."""

    name: str
    count: int
    bundle: dict[str, float]
    knobs: str = ""

    def total(self) -> dict[str, float]:
        return {k: v * self.count for k, v in self.bundle.items() if v}


def _fmt(res: dict[str, float]) -> str:
    def one(k, v):
        return f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}"

    return ", ".join(one(k, v) for k, v in sorted(res.items()) if v and not k.startswith("node:")) or "nothing"


@dataclass
class Cluster:
    started: bool  # this process started it (and stops it)
    address: str = ""
    connected: bool = True  # this call connected (False: a Ray session the process already held, left as it is)
    dashboard_url: str = ""
    processes: list = field(default_factory=list)  # psutil.Process of a started cluster

    def metrics_urls(self) -> list[str]:
        """Each node's Prometheus endpoint (``ray.nodes()``' MetricsExportPort)."""
        import ray

        return [
            f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes()
            if n.get("Alive") and n.get("MetricsExportPort")
        ]

    def stop(self, grace_s: float = 10.0) -> None:
        """``ray.shutdown()`` (nothing for a session this process held before ``connect``); for a cluster this
        process started, also the processes it started that outlive it (the dashboard and runtime-env agents
        do, for minutes), by PID."""
        import psutil
        import ray

        if not self.connected:
            return
        ray.shutdown()
        if not self.started:
            return
        _, alive = psutil.wait_procs(self.processes, timeout=grace_s)
        for p in alive:
            try:
                p.terminate()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)


def hub_env(cache: str = "") -> dict[str, str]:
    """Environment variables every worker of the job needs to find hub checkpoints as the driver does: the
    Hugging Face cache (``cache``, e.g. a shared mount) and the offline switch when the driver has it."""
    env = {
        k: os.environ[k]
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME")
        if os.environ.get(k)
    }
    if cache:
        env["HF_HUB_CACHE"] = str(cache)
    return env


def connect(
    address: str = "",
    num_cpus: int = 0,
    dashboard: bool = True,
    log_to_driver: bool = True,
    env_vars: dict[str, str] | None = None,
) -> Cluster:
    """Join ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) or start a local cluster with
    ``num_cpus`` logical CPUs on 127.0.0.1. A Ray session this process already holds is used as it is.
    ``env_vars`` go to every task and actor of the job (the job-level runtime environment, merged with what
    ``ray job submit`` gave)."""
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    address = address or os.environ.get("RAY_ADDRESS", "")
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return Cluster(started=False, address=ray.get_runtime_context().gcs_address, connected=False)
    if address:
        import ray

        ctx = ray.init(address=address, log_to_driver=log_to_driver, runtime_env=runtime_env)
        return Cluster(
            started=False, address=ctx.address_info.get("gcs_address", address), dashboard_url=_url(ctx.dashboard_url)
        )
    if "ray" in sys.modules and os.environ.get(LOOPBACK_VAR) != "0":
        raise RuntimeError(
            f"Ray was imported before {LOOPBACK_VAR}=0 was set, so a local cluster would bind this "
            f"machine's routable address: export {LOOPBACK_VAR}=0 before starting Python (or before "
            "importing ray), or join a running cluster with ray_address=..."
        )
    os.environ[LOOPBACK_VAR] = "0"  # read by `import ray` below and by every process the cluster starts
    # One node that this process owns cannot be preempted: Ray Train's preemption watcher (an actor of ~200 MB
    # that polls the node's drain state) has nothing to watch here. A joined cluster keeps Ray's default.
    os.environ.setdefault(PREEMPTION_WATCHER_VAR, "0")
    import psutil
    import ray

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cpus = num_cpus or os.cpu_count() or 2
    ctx = ray.init(
        address="local",
        num_cpus=num_cpus or None,
        # Idle workers Ray keeps for tasks: its default (one per CPU) is below what a job's actors already hold, so
        # the worker of every Ray Data task was killed a second after its task and started again the next
        # iteration (1.3 s of the data phase, 1.6 s of each trainer worker's shard read on 2 cores; 0.2 s kept).
        _system_config={"num_workers_soft_limit": WORKER_POOL_PER_CPU * cpus + 2},
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=log_to_driver,
        runtime_env=runtime_env,
    )
    procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    return Cluster(
        started=True,
        address=ctx.address_info.get("gcs_address", ""),
        dashboard_url=_url(ctx.dashboard_url),
        processes=procs,
    )


def _url(u: str | None) -> str:
    return (u if u.startswith("http") else f"http://{u}") if u else ""


def local_cpus(roles: list[Role], spare: int = 0) -> int:
    """Logical CPUs for a local cluster that holds ``roles`` (at least the machine's cores): a 2-core laptop
    runs every role, time-shared."""
    need = sum(r.total().get("CPU", 0.0) for r in roles) + spare
    return max(math.ceil(need - 1e-9), os.cpu_count() or 2)


def _alive_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def placement_problem(roles: list[Role], nodes: list[dict[str, float]]) -> dict[str, float]:
    """What is missing to place every bundle of ``roles`` on ``nodes`` (first fit, largest bundles first);
    an empty dict when everything fits."""
    free = [dict(n) for n in nodes]
    bundles = sorted((b for r in roles for b in [r.bundle] * r.count), key=lambda b: -sum(b.values()))
    short: dict[str, float] = {}
    for b in bundles:
        need = {k: v for k, v in b.items() if v > 0}
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items()):
                for k, v in need.items():
                    node[k] -= v
                break
        else:
            for k, v in need.items():
                best = max((n.get(k, 0.0) for n in free), default=0.0)
                if best + 1e-9 < v:
                    short[k] = short.get(k, 0.0) + v - max(best, 0.0)
            if not short:  # each resource exists somewhere, but no single node holds the whole bundle
                short["(one node with " + _fmt(need) + ")"] = 1
    return short


def fit_message(roles: list[Role], nodes: list[dict[str, float]], short: dict[str, float]) -> str:
    width = max(len(r.name) for r in roles)
    offered: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            offered[k] = offered.get(k, 0.0) + v
    total: dict[str, float] = {}
    for r in roles:
        for k, v in r.total().items():
            total[k] = total.get(k, 0.0) + v
    lines = ["the cluster cannot hold this job's roles:"]
    lines += [
        f"  {r.name:<{width}}  {r.count} x {{{_fmt(r.bundle)}}}" + (f"   (shrink: {r.knobs})" if r.knobs else "")
        for r in roles
        if r.count
    ]
    has = ", ".join(
        f"{k} {offered.get(k, 0.0) / (2**30 if k == 'memory' else 1):g}{' GiB' if k == 'memory' else ''}"
        for k in sorted(total)
    )  # of what the roles ask for, zeros included
    lines.append(
        f"  needed in all: {_fmt(total)}; the cluster offers {has} on {len(nodes)} node(s); "
        f"short: {', '.join(f'{k} {v:g}' for k, v in short.items())}"
    )
    lines.append(
        "Give the cluster more (a local head may declare more logical CPUs than it has cores: "
        "ray start --head --num-cpus N), or shrink the roles with the settings named above."
    )
    return "\n".join(lines)


def check_fit(
    roles: list[Role], autoscaling: bool = False, wait_s: float = 600.0, poll_s: float = 5.0, log=print
) -> None:
    """Return when every role fits on the cluster's alive nodes. Otherwise: without an autoscaler raise
    :class:`FitError` at once; with one, ask it for the bundles (``ray.autoscaler.sdk.request_resources``),
    say so, and raise after ``wait_s`` seconds."""
    nodes = _alive_nodes()
    short = placement_problem(roles, nodes)
    if not short:
        return
    if not autoscaling:
        raise FitError(fit_message(roles, nodes, short))
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{k: v for k, v in r.bundle.items() if v} for r in roles for _ in range(r.count)])
    log(
        f"waiting up to {wait_s:.0f} s for the autoscaler to add nodes; short of "
        f"{', '.join(f'{k} {v:g}' for k, v in short.items())}"
    )
    deadline = time.time() + wait_s
    while time.time() < deadline:
        time.sleep(poll_s)
        nodes = _alive_nodes()
        short = placement_problem(roles, nodes)
        if not short:
            log(f"the cluster now holds every role ({len(nodes)} node(s))")
            return
    raise FitError(f"gave up after {wait_s:.0f} s waiting for the autoscaler; " + fit_message(roles, nodes, short))


__all__ = [
    "Cluster",
    "FitError",
    "Role",
    "check_fit",
    "connect",
    "fit_message",
    "hub_env",
    "local_cpus",
    "placement_problem",
]
