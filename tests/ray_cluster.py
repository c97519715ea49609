"""A real Ray head (`ray start --head`) on 127.0.0.1 for tests that need cluster processes: job
submission through the dashboard, the fake-multinode autoscaler. Tests that only need Ray in-process
use `ray.init(address="local")` instead (2.5 s against ~10 s here).

    with LocalRayHead(num_cpus=2) as head:
        subprocess.run(["ray", "job", "submit", "--address", head.dashboard_url, ...], env=head.env)

or the module-scoped `ray_head` fixture (`from tests.ray_cluster import ray_head`).

Why it looks the way it does (Ray 2.60, see ../shared/PLATFORM.md):
- Each head gets its own short --temp-dir (unix socket paths are limited to ~107 characters) and free
  ports: gcs, dashboard, dashboard agent, ray client server (their defaults 6379, 8265, 52365, 10001
  would collide with a second head on the machine), and a worker port block in 20000-32767 (the
  default 10002-19999 is off limits; 32768+ is the kernel's ephemeral range, used for random ports).
- Auth: token mode with a fresh token in the temp dir (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH), so
  the test never depends on ~/.ray/auth_token. Every client (`ray job submit`, `ray.init`) needs the
  same two variables: `.env` carries them. `auth_mode="disabled"` starts an open head instead.
- `ray job submit` runs its entrypoint through a shell with the raylet's PATH, so `python` there is
  whatever PATH finds first; the head is started with this interpreter's bin directory first on
  PATH so that `python` is the venv's.
- `stop()` never runs `ray stop` (that kills every Ray process on the machine, other people's too).
  It kills exactly what this head started: the processes of the `ray start` process group, those
  whose command line names the temp dir, those whose environment carries this head's marker
  (job drivers run in a session of their own; fake autoscaler nodes), and their descendants.
"""

import atexit
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

MARKER = "VIDEOALIGN_RAY_HEAD"  # set to the temp dir in every process of one head
WORKER_PORT_BLOCK = 100


def free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel just handed out on 127.0.0.1 (its ephemeral range, 32768+, which
    lies outside 10002-19999). All are held open together so that none comes back twice."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int = WORKER_PORT_BLOCK, low: int = 20000, high: int = 32767) -> int:
    """First port of `size` consecutive free ports in [low, high]; random so two heads rarely meet."""
    starts = list(range(low, high - size + 2, size))
    random.shuffle(starts)
    for start in starts:
        if all(_port_is_free(p) for p in range(start, start + size)):
            return start
    raise RuntimeError(f"no block of {size} free ports in {low}-{high}")


class LocalRayHead:
    """One `ray start --head` on 127.0.0.1; ports are chosen at construction so that configs which
    must name the gcs address (the fake autoscaler's) can be written before `start()`."""

    def __init__(
        self, num_cpus: int = 1, *, auth_mode: str = "token", object_store_mb: int = 300, start_timeout_s: float = 120.0
    ):
        if auth_mode not in ("token", "disabled"):
            raise ValueError(f"auth_mode={auth_mode!r}: expected 'token' or 'disabled'")
        self.num_cpus = num_cpus
        self.auth_mode = auth_mode
        # Ray's default is 30% of RAM (7 GB here): a reservation that a second head on the machine pays too.
        self.object_store_mb = object_store_mb
        self.start_timeout_s = start_timeout_s
        self.temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: socket paths live under it
        self.gcs_port, self.dashboard_port, self.dashboard_agent_port, self.client_port = free_ports(4)
        self.min_worker_port = free_port_block()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self._pgid = None

        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS")
        }
        base.update(
            {
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": auth_mode,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                MARKER: self.temp_dir,
            }
        )
        if auth_mode == "token":
            token_path = Path(self.temp_dir) / "auth_token"
            token_path.write_text(secrets.token_hex(32))
            token_path.chmod(0o600)
            base["RAY_AUTH_TOKEN_PATH"] = str(token_path)
        self._start_env = base
        # Clients: the same auth, and RAY_ADDRESS so a bare `ray.init()` joins this head.
        self.env = {**base, "RAY_ADDRESS": self.address}

    @property
    def ray_bin(self) -> str:
        return str(Path(sys.executable).parent / "ray")

    def start(self, autoscaling_config: Path | None = None, extra_env: dict | None = None) -> "LocalRayHead":
        """`ray start --head`; with `autoscaling_config` the head also runs the autoscaler
        (`extra_env={"RAY_FAKE_CLUSTER": "1"}` for the fake_multinode provider)."""
        cmd = [
            self.ray_bin,
            "start",
            "--head",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--min-worker-port={self.min_worker_port}",
            f"--max-worker-port={self.min_worker_port + WORKER_PORT_BLOCK - 1}",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
        ]
        if autoscaling_config is not None:
            cmd.append(f"--autoscaling-config={autoscaling_config}")
        env = {**self._start_env, **(extra_env or {})}
        atexit.register(self.stop)
        # A session of its own: every daemon `ray start` spawns keeps this process group.
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self._pgid = proc.pid
        try:
            out, _ = proc.communicate(timeout=self.start_timeout_s)
        except subprocess.TimeoutExpired as err:
            self.stop()
            raise RuntimeError(f"`ray start --head` did not return within {self.start_timeout_s:.0f} s") from err
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`ray start --head` failed (exit {proc.returncode}):\n{out[-4000:]}")
        self._wait_for_job_api()
        return self

    def _wait_for_job_api(self) -> None:
        # `ray start` returns once gcs and raylet are up; the dashboard's job module comes later.
        headers = {}
        if self.auth_mode == "token":
            headers["Authorization"] = f"Bearer {Path(self.env['RAY_AUTH_TOKEN_PATH']).read_text()}"
        deadline = time.monotonic() + self.start_timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"{self.dashboard_url}/api/jobs/", headers=headers)
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = e
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"dashboard job API at {self.dashboard_url} not up after {self.start_timeout_s:.0f} s (last error: {last})"
        )

    def processes(self) -> list[psutil.Process]:
        """Every live process this head started (see the module docstring for how they are found)."""
        me = os.getpid()
        ours = {}
        for p in psutil.process_iter(["pid", "cmdline", "username"]):
            if p.pid == me:
                continue
            try:
                if (
                    (self._pgid is not None and os.getpgid(p.pid) == self._pgid)
                    or self.temp_dir in " ".join(p.info["cmdline"] or [])
                    or p.environ().get(MARKER) == self.temp_dir
                ):
                    ours[p.pid] = p
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        for p in list(ours.values()):
            try:
                for child in p.children(recursive=True):
                    ours.setdefault(child.pid, child)
            except psutil.Error:
                continue
        ours.pop(me, None)
        return list(ours.values())

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM everything this head started, SIGKILL what is left after `grace_s`, wait for all of
        it, and delete the temp dir. Repeats while new processes appear (a raylet restarting workers,
        the autoscaler launching a node during shutdown). Safe to call twice."""
        for _ in range(5):
            procs = self.processes()
            if not procs:
                break
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
                for p in procs:
                    try:
                        p.send_signal(sig)
                    except psutil.Error:
                        pass
                _, procs = psutil.wait_procs(procs, timeout=wait_s)
                if not procs:
                    break
        left = self.processes()
        atexit.unregister(self.stop)
        if left:
            raise RuntimeError(f"Ray processes of {self.temp_dir} survived SIGKILL: {[p.pid for p in left]}")
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayHead":
        return self.start() if self._pgid is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def ray_head():
    """A head with token auth, shared by one test module; torn down by PID afterwards. 8 logical CPUs:
    room for every role of a tiny online job (generators, trainer workers, reward replica), which
    oversubscribe the machine's cores the way a local `jobs/online_dpo.py` run does."""
    with LocalRayHead(num_cpus=8) as head:
        yield head
