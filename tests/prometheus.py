"""Helpers for the Grafana dashboard (docs/grafana/videoalign_dashboard.json): the metric names its panels
query, and a real Prometheus server (Debian's ``prometheus`` binary) scraping a metrics endpoint.

Not a test module. Callers skip when ``shutil.which("prometheus")`` is None (scripts/setup.sh installs the
Debian package when run as root)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

METRIC = re.compile(r"\bray_videoalign_\w+")


def panel_metrics(path: str | Path) -> set[str]:
    """Every ``ray_videoalign_*`` metric name referenced by a panel target's ``expr`` (rows' nested panels
    included)."""
    dash = json.loads(Path(path).read_text())
    names: set[str] = set()
    stack = list(dash.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            names.update(METRIC.findall(target.get("expr", "")))
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _target(metrics_url: str) -> tuple[str, str]:
    """``host:port`` and path of ``metrics_url`` (``http://host:port/metrics`` or ``host:port``)."""
    u = urllib.parse.urlsplit(metrics_url if "://" in metrics_url else f"http://{metrics_url}")
    return u.netloc, u.path or "/metrics"


def _query(api: str, name: str) -> list:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": name})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read().decode())
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def scrape_with_prometheus(
    metrics_url: str, names: set[str], tmp_dir: str | Path, timeout_s: float = 40
) -> dict[str, bool]:
    """Start ``prometheus`` on 127.0.0.1 (a free port, storage in ``tmp_dir``) scraping ``metrics_url`` every
    second; wait until an instant query of each name in ``names`` returns a sample, or ``timeout_s``; stop the
    server (by its PID: terminate, then kill). Returns name -> found."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("no 'prometheus' binary on PATH (Debian package 'prometheus')")
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    address, path = _target(metrics_url)
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: videoalign\n"
        f"    metrics_path: {json.dumps(path)}\n"
        "    static_configs:\n"
        f"      - targets: [{json.dumps(address)}]\n"
    )
    port = _free_port()
    api = f"http://127.0.0.1:{port}"
    found = dict.fromkeys(names, False)
    log = open(tmp / "prometheus.log", "wb")  # closed below, once the process is gone
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp / 'data'}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(found.values()):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {proc.returncode}: {(tmp / 'prometheus.log').read_text()[-2000:]}"
                )
            for name in [n for n, ok in found.items() if not ok]:
                try:
                    found[name] = bool(_query(api, name))
                except OSError:  # not listening yet
                    break
            if not all(found.values()):
                time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    return found
