"""Fault injection for the tests: find a process of this test's Ray cluster by its title, SIGKILL it by PID.

Ray names its worker processes after what they run ("ray::GeneratorActor.rollout" while an actor runs
``rollout``), so a kill can be aimed at a role and a moment. Only descendants of the test process are
searched (a local cluster started by ``ray.init(address="local")`` or ``ray.cluster_utils.Cluster`` is one),
never other processes of the machine; nothing is killed by name.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil


def processes(needle: str, root: psutil.Process | None = None) -> list[psutil.Process]:
    """Descendants of ``root`` (this process) whose command line / title contains ``needle``."""
    out = []
    for p in (root or psutil.Process()).children(recursive=True):
        try:
            if needle in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def n_records(out: Path) -> int:
    p = out / "metrics.jsonl"
    return sum(1 for ln in p.read_text().splitlines() if ln.strip()) if p.is_file() else 0


class Chaos:
    """Runs ``steps`` on a thread: each step waits for its moment and kills one process; ``log`` says what
    was killed and when (the iteration records on disk at that moment)."""

    def __init__(self, out: Path, timeout_s: float = 300):
        self.out, self.timeout_s = Path(out), timeout_s
        self.log: list[dict] = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def wait_for(self, what: str, cond, poll_s: float = 0.02):
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(poll_s)
        raise TimeoutError(f"chaos: gave up waiting for {what}")

    def kill(self, p: psutil.Process, what: str) -> None:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            cmd = "?"
        os.kill(p.pid, signal.SIGKILL)
        self.log.append(
            {
                "killed": what,
                "pid": p.pid,
                "title": cmd[:120],
                "records_on_disk": n_records(self.out),
                "time": time.time(),
            }
        )

    def start(self, *steps) -> Chaos:
        def body():
            try:
                for step in steps:
                    step(self)
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                self.error = e

        self._thread = threading.Thread(target=body, daemon=True, name="chaos")
        self._thread.start()
        return self

    def join(self) -> list[dict]:
        self._thread.join(self.timeout_s)
        if self.error is not None:
            raise self.error
        return self.log


def add_node(resources: dict[str, float], num_cpus: int = 0):
    """Join one more node (a raylet and its agents, on 127.0.0.1) to the cluster this process is connected
    to, as ``ray.cluster_utils.Cluster.add_node`` does for a worker node; returns Ray's ``Node``."""
    import ray
    from ray._private.node import Node
    from ray._private.parameter import RayParams
    from ray._private.services import wait_for_node

    params = RayParams(
        num_cpus=num_cpus,
        num_gpus=0,
        resources=resources,
        object_store_memory=150 * 2**20,
        min_worker_port=0,
        max_worker_port=0,
        node_ip_address="127.0.0.1",
        gcs_address=ray.get_runtime_context().gcs_address,
        include_log_monitor=False,
        node_manager_port=0,
    )
    params.dashboard_agent_listen_port = None
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    wait_for_node(node.gcs_address, node.plasma_store_socket_name, 60)
    return node


def remove_node(node) -> None:
    """Lose a node: kill its raylet and every process on it at once (``Cluster.remove_node``'s way)."""
    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
