"""The online loop on Ray, end to end, in the moving-shapes world (tiny batches, 4 Euler steps).

One Ray session for the module (with a Prometheus export port) runs the jobs:

* ``full``: 3 iterations, uninterrupted — the end-to-end checks (2 generator actors, the Serve reward,
  a 2-worker Ray Train + DeepSpeed group): the policy version advanced once per iteration, every sample
  carries the version it came from, pairs were built, the loss moved away from ln 2 (a zero LoRA gives
  exactly ln 2: test_generator), the published adapter is the trained one, metrics reached metrics.jsonl
  and the Ray metrics endpoint;
* ``killed``: the same config, its driver killed after the checkpoint of iteration 2 and ``--resume`` d, with a
  trainer worker killed mid-training in the resumed run; compared with ``full``;
* ``off``: one-step-off mode (staleness 1) with its generator actors on two extra CPU-less nodes, with the
  reward replica killed while it holds requests, a generator actor killed mid-sampling and a generator
  node lost (tests/chaos.py finds a process by its Ray title and SIGKILLs it by PID; a node is joined and
  lost the way ``ray.cluster_utils.Cluster`` adds and removes one).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.chaos import remove_node

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "jobs" / "configs" / "online_tiny.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_session():
    import sys

    from actors.cluster import connect

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            pytest.skip("needs its own local Ray cluster")
    cluster = connect(num_cpus=8, dashboard=False)
    assert cluster.started
    yield cluster.metrics_urls()[0]
    for node in GENERATOR_NODES:
        remove_node(node)
    cluster.stop()


GENERATOR_NODES: list = []  # nodes joined for the node-loss run (tests/chaos.py add_node)


HTTP_PORT = free_port()  # Serve keeps the HTTP options of its first start in a session


def run_job(out: Path, *overrides: str) -> dict:
    from actors.online import OnlineConfig, run
    from rlhf.config import load_config

    cfg = load_config(
        OnlineConfig,
        TINY,
        [
            f"out={out}",
            "progress=false",
            "eval_n_prompts=0",
            "report_clips=-1",
            f"reward.http_port={HTTP_PORT}",
            *overrides,
        ],
    )
    return run(cfg)


def records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def full(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "full"
    summary = run_job(out, "iterations=3", "report_clips=2", "eval_n_prompts=2")
    return out, summary


def test_online_loop_end_to_end(full, ray_session):
    from safetensors.torch import load_file

    out, summary = full
    recs = records(out)
    assert [r["iteration"] for r in recs] == [0, 1, 2]
    assert [r["policy_version"] for r in recs] == [1, 2, 3]  # one published version per iteration
    assert [r["sample_version"] for r in recs] == [0, 1, 2]  # sync mode: strictly on-policy
    assert all(r["staleness"] == 0 for r in recs)
    assert all(r["videos"] == 8 and r["pairs"] >= 1 for r in recs)  # 4 prompts x G=2 -> a pair per non-tie group
    assert all(r["pairs"] == r["groups"] - r["tie_groups"] for r in recs)
    # the first step of a zero LoRA is exactly ln 2; training moves it
    assert abs(recs[0]["first_loss"] - math.log(2)) < 1e-4
    assert all(abs(r["loss"] - math.log(2)) > 1e-3 for r in recs[1:])
    for r in recs:
        assert set(r["phases"]) >= {"generate", "reward_wait", "data", "train", "weight_sync", "iteration"}
        assert r["oracle"]["VQ"] > 0 and r["reward"]["VQ"] == pytest.approx(r["oracle"]["VQ"])  # oracle reward
    adapter = load_file(out / "adapter" / "pytorch_lora_weights.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # trained, not zero
    assert summary["policy_version"] == 3 and summary["iterations"] == 3
    assert (out / "checkpoints" / "latest.json").is_file()
    # ray.util.metrics reach the node's Prometheus endpoint (exported every few seconds)
    deadline, text = time.time() + 40, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(ray_session, timeout=5).read().decode()
        if "videoalign_policy_version" in text:
            break
        time.sleep(2)
    assert "videoalign_policy_version" in text and "videoalign_phase_seconds" in text
    # every metric the Grafana dashboard (docs/grafana) queries is exported by this run, and a real Prometheus
    # scrape of the endpoint stores it. ray_videoalign_reward_onpolicy_accuracy is set only on an iteration
    # followed by a reward refresh, which this run has none of (a gauge never set is not exported).
    import re
    import shutil
    import tempfile

    from tests.prometheus import panel_metrics, scrape_with_prometheus

    wanted = panel_metrics(ROOT / "docs" / "grafana" / "videoalign_dashboard.json")
    wanted -= {"ray_videoalign_reward_onpolicy_accuracy"}
    assert "ray_videoalign_loss" in wanted and "ray_videoalign_videos_total" in wanted

    def missing(page: str) -> set[str]:
        return {n for n in wanted if not re.search(rf"^{n}[{{ ]", page, re.M)}

    deadline = time.time() + 20  # the gauges of one record() may reach the endpoint in two exports
    while missing(text) and time.time() < deadline:
        time.sleep(2)
        text = urllib.request.urlopen(ray_session, timeout=5).read().decode()
    assert not missing(text), f"not exported: {sorted(missing(text))}"
    if shutil.which("prometheus"):  # Debian's package (scripts/setup.sh installs it when run as root)
        with tempfile.TemporaryDirectory() as tmp:
            found = scrape_with_prometheus(ray_session, wanted, tmp, timeout_s=30)
        assert all(found.values()), f"not stored by Prometheus: {sorted(n for n, ok in found.items() if not ok)}"


def test_run_writes_tensorboard_events_that_tensorboard_reads(full):
    """TensorBoard's own reader finds, in ``full``'s run directory, each iteration's scalars equal to its
    metrics.jsonl record and the evaluation's clips (pretrained | aligned) as animated GIFs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = full
    recs = records(out)
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    for tag, value in (("reward/VQ", lambda r: r["reward"]["VQ"]), ("loss", lambda r: r["loss"]),
                       ("oracle/weighted", lambda r: r["oracle"]["weighted"]),
                       ("phase_seconds/train", lambda r: r["phases"]["train"])):  # fmt: skip
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["iteration"] for r in recs], tag
        assert [e.value for e in events] == pytest.approx([value(r) for r in recs], rel=1e-6), tag
    clips = json.loads((out / "eval_clips" / "clips.json").read_text())
    images = acc.Tags()["images"]
    assert len(images) == len(clips) == 2 and all(c["prompt"] in t for c, t in zip(clips, images))
    gif = acc.Images(images[0])[0]
    assert gif.encoded_image_string[:6] == b"GIF89a"
    assert gif.width == 2 * gif.height  # two square clips side by side


def test_report_renders_in_headless_chromium(full, tmp_path):
    """report.html of ``full`` (written by the job) opened from disk in headless Chromium: its own check finds
    the 4 videos (2 prompts, pretrained and aligned) decoded and every plot drawn; the page names the
    evaluation's win rates and the phases."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium: the set-up installs Debian's 'chromium' package when run as root")
    out, _ = full
    page = out / "report.html"
    assert page.is_file()
    text = page.read_text()
    assert "<th>oracle</th>" in text and "rollout_wait" in text and "pretrained" in text
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    import re

    m = re.search(r'<p id="report-status">(.*?)</p>', dom)
    assert m, dom[-2000:]
    status = json.loads(m.group(1).replace("&quot;", '"'))
    assert status["videos_total"] == 4 and status["videos_loaded"] == 4 and status["videos_failed"] == 0, status
    assert status["plots_total"] >= 6 and status["plots_drawn"] == status["plots_total"], status


def _same_weights(a_dir: Path, b_dir: Path) -> float:
    from safetensors.torch import load_file

    a = load_file(a_dir / "adapter" / "pytorch_lora_weights.safetensors")
    b = load_file(b_dir / "adapter" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _hand_seeds_digest(iteration: int, n: int = 8, seed: int = 0) -> str:
    """The clips of an iteration by the job's documented rule: seed * 1_000_000_007 + iteration * 100_000 + j."""
    import hashlib

    import numpy as np

    return hashlib.sha256(
        np.array([seed * 1_000_000_007 + iteration * 100_000 + j for j in range(n)], np.int64).tobytes()
    ).hexdigest()


# ------------------------------------------------------------------------------------- fault tolerance
# Kills are aimed by process title (actors/status.py: "ray::GeneratorActor.rollout [scoring iteration 1, v0]",
# "ray::RayTrainWorker [rank 0 train iteration 2]") and done by PID (tests/chaos.py).


def _kill_trainer_worker_in_training(chaos) -> None:
    """A trainer worker busy with iteration 2's training."""
    from tests.chaos import processes

    p = chaos.wait_for("a trainer worker training iteration 2", lambda: processes("train iteration 2]"))[0]
    chaos.kill(p, "trainer worker, mid-training of iteration 2")


def _loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4-mapped IPv6 loopback (::ffff:127.0.0.1, how gRPC's dual-stack sockets show)."""
    import ipaddress

    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


def _listening(procs) -> list[tuple]:
    """(pid, process title, address, port) of every listening TCP socket of ``procs``."""
    import psutil

    out = []
    for p in procs:
        try:
            title = " ".join(p.cmdline())[:60]
            out += [
                (p.pid, title, c.laddr.ip, c.laddr.port)
                for c in p.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.Error:
            continue
    return out


@pytest.fixture(scope="module")
def killed(full, ray_session, tmp_path_factory):
    """The ``full`` config run as a user launches it (``python jobs/online_dpo.py``, a local cluster of its own,
    no Ray variable in the environment), with ``storage`` away from the run directory; every listening socket
    of its processes is recorded while it runs; the driver is SIGKILLed (and its cluster, by PID) as soon as
    the checkpoint after iteration 2 of 3 is in storage; then ``--resume`` d on the test's cluster, whose
    trainer workers read that storage, during which a trainer worker is killed mid-training of iteration 2
    (the resumed run's first training)."""
    import subprocess
    import sys

    import psutil

    from tests.chaos import Chaos

    base = tmp_path_factory.mktemp("online")
    out, storage = base / "killed", base / "shared_storage"
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "online_dpo.py"),
        "--config",
        str(TINY),
        f"out={out}",
        f"storage={storage}",
        "progress=false",
        "eval_n_prompts=0",
        "report_clips=-1",
        "iterations=3",
        f"reward.http_port={free_port()}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = psutil.Process(proc.pid)
    latest = storage / "latest.json"
    deadline, tree, listening = time.time() + 300, {}, {}
    while time.time() < deadline and proc.poll() is None:
        try:
            tree.update({p.pid: p for p in driver.children(recursive=True)})
        except psutil.Error:
            pass
        listening.update({(pid, port): (name, ip) for pid, name, ip, port in _listening([driver, *tree.values()])})
        if latest.is_file() and json.loads(latest.read_text())["next_iteration"] == 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the driver ended before it could be killed (exit {proc.returncode})"
    proc.kill()
    proc.wait(30)
    for p in tree.values():  # its local cluster: by PID, nothing else
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(tree.values()), timeout=30)
    driver_log = {
        "killed": "driver",
        "pid": proc.pid,
        "latest": json.loads(latest.read_text()),
        "listening": sorted((n, ip, port) for (_, port), (n, ip) in listening.items()),
        "processes": len(tree),
    }
    chaos = Chaos(out).start(_kill_trainer_worker_in_training)
    summary = run_job(out, "iterations=3", "resume=true", f"storage={storage}")
    return out, summary, [driver_log, *chaos.join()], storage


def test_driver_killed_then_resumed(full, killed):
    """Killed: the driver process (SIGKILL), right after the checkpoint of iteration 2 of 3 was written.
    Checked: ``--resume`` finished the run; every iteration is recorded exactly once (records after the
    checkpoint are dropped and run again); iteration 2's batch and loss and the final adapter equal the
    uninterrupted run's."""
    out, summary, log, storage = killed
    assert log[0]["killed"] == "driver" and log[0]["latest"]["next_iteration"] == 2
    # launched as a user would, its local cluster listened on the loopback interface only
    assert log[0]["processes"] >= 5 and len(log[0]["listening"]) >= 5, log[0]
    # except two sockets the libraries bind to every interface with no setting to change it: the Serve
    # replica's inter-deployment gRPC server ("[::]:0" in ray/serve/_private/replica.py, ray-project/ray#64544)
    # and the torch.distributed TCPStore that Ray Train's rank 0 hosts (it ignores MASTER_ADDR=127.0.0.1 for
    # its bind, pytorch/pytorch#173909)
    wide = sorted(n.split()[0] for n, ip, _ in log[0]["listening"] if not _loopback(ip))
    assert wide in (
        [],
        ["ray::RayTrainWorker"],
        ["ray::RayTrainWorker", "ray::ServeReplica:reward:RewardDeployment"],
        ["ray::ServeReplica:reward:RewardDeployment"],
    ), wide
    # the checkpoints are in storage, not in the run directory: the resumed run's workers read them there
    assert (storage / "latest.json").is_file() and not (out / "checkpoints").exists()
    ref, got = records(full[0]), records(out)
    assert [r["iteration"] for r in got] == [0, 1, 2]
    assert [r["batch_digest"] for r in got] == [r["batch_digest"] for r in ref]  # the same pairs, same order
    assert got[2]["loss"] == pytest.approx(ref[2]["loss"], abs=1e-6)
    assert _same_weights(full[0], out) < 1e-6
    # TensorBoard holds each iteration once, as its record (the resumed run and the trainer restart purged
    # the events of the iterations they redid)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars("loss")] == [(r["iteration"], r["loss"]) for r in got]


def test_trainer_worker_killed_mid_training(full, killed):
    """Killed: one Ray Train worker while it trained iteration 2 (in the resumed run). Checked: the driver
    restarted the trainer group from the checkpoint after iteration 2 (one restart in the summary), the
    run finished with policy version 3, and iteration 2's loss and the final adapter equal the
    uninterrupted run's (the optimiser state came back from the checkpoint too)."""
    out, summary, log, _ = killed
    assert log[1]["killed"].startswith("trainer worker")
    assert len(summary["trainer_restarts"]) == 1
    assert summary["policy_version"] == 3
    ref, got = records(full[0]), records(out)
    assert got[2]["loss"] == pytest.approx(ref[2]["loss"], abs=1e-6)
    assert _same_weights(full[0], out) < 1e-6
    # TensorBoard holds each iteration once, as its record (the resumed run and the trainer restart purged
    # the events of the iterations they redid)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars("loss")] == [(r["iteration"], r["loss"]) for r in got]


def _kill_reward_replica_while_scoring(chaos) -> None:
    """Iteration 1: a generator has sampled and waits for its scores, which sit in the replica's batch
    queue (batches wait up to 1 s to fill); kill the replica."""
    from tests.chaos import processes

    chaos.wait_for("a generator scoring iteration 1", lambda: processes("[scoring iteration 1,"), poll_s=0.005)
    replica = chaos.wait_for("the reward replica", lambda: processes("ServeReplica:reward"))[0]
    chaos.kill(replica, "reward replica, with iteration 1's requests queued")


def _kill_generator_in_rollout(chaos) -> None:
    """Iteration 2 (sampled with version 1): a generator actor in the middle of sampling."""
    from tests.chaos import processes

    p = chaos.wait_for("a generator sampling iteration 2", lambda: processes("[sampling iteration 2,"))[0]
    chaos.kill(p, "generator actor, mid-sampling of iteration 2")


def _lose_a_generator_node(chaos) -> None:
    """Iteration 3 (sampled with version 2): the node of a generator actor that is sampling, removed with
    ``Cluster.remove_node`` (its raylet and every process on it killed)."""
    import psutil
    import ray

    from tests.chaos import n_records, processes

    p = chaos.wait_for("a generator sampling iteration 3", lambda: processes("[sampling iteration 3,"))[0]
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in GENERATOR_NODES}
    node = next(raylets[a.pid] for a in psutil.Process(p.pid).parents() if a.pid in raylets)
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    remove_node(node)
    GENERATOR_NODES.remove(node)
    chaos.log.append(
        {
            "killed": f"node {node.node_id[:12]} (raylet and all its processes)",
            "actor_pid": p.pid,
            "nodes_alive_before": alive,
            "records_on_disk": n_records(chaos.out),
            "time": time.time(),
        }
    )


@pytest.fixture(scope="module")
def off(ray_session, tmp_path_factory):
    """One-step-off mode, 4 iterations, generator actors pinned to the generator nodes, one trainer worker
    (the two-worker group is ``full``'s), with three faults:
    the reward replica killed while it holds iteration 1's requests, a generator actor killed while it
    samples iteration 2, and the node of a generator actor lost while it samples iteration 3. The reward
    batches wait up to 1 s to fill (max 16), so requests are queued on the replica when it dies; scores do
    not depend on batching."""
    from actors.online import OnlineConfig, run
    from rlhf.config import load_config
    from tests.chaos import Chaos, add_node

    out = tmp_path_factory.mktemp("online") / "off"
    GENERATOR_NODES.extend(add_node({"generator": 2}) for _ in range(2))  # CPU-less nodes for the generator actors
    chaos = Chaos(out).start(_kill_reward_replica_while_scoring, _kill_generator_in_rollout, _lose_a_generator_node)
    cfg = load_config(
        OnlineConfig,
        TINY,
        [
            f"out={out}",
            "progress=false",
            "eval_n_prompts=0",
            "report_clips=-1",
            f"reward.http_port={HTTP_PORT}",
            "iterations=4",
            "mode=one_step_off",
            "reward.max_batch_size=16",
            "reward.max_ongoing_requests=32",
            "reward.batch_wait_timeout_s=1.0",
            "reward.health_check_period_s=1",
            "generator_cpus=0",
            "trainer.num_workers=1",
        ],
        values={"generator_resources": {"generator": 1.0}},
    )
    summary = run(cfg)
    return out, summary, chaos.join()


def test_one_step_off_overlaps_with_staleness_one(off):
    out, _, _ = off
    recs = records(out)
    # batch i + 1 is sampled (with version i) while the trainer works on batch i; faults change nothing here
    assert [r["sample_version"] for r in recs] == [0, 0, 1, 2]
    assert [r["policy_version"] for r in recs] == [1, 2, 3, 4]
    assert [r["staleness"] for r in recs] == [0, 1, 1, 1]
    assert [r["queue_depth"] for r in recs] == [1, 1, 1, 0]  # a rollout in flight while training, but the last


def test_reward_replica_killed_mid_request(off):
    """Killed: the reward replica while iteration 1's requests were queued on it. Checked: the job finished;
    iteration 0 was scored by the killed replica and iteration 1 entirely by its replacement (the requests
    were sent again: by Serve's router, or by the client, which counts its own retries); every clip's
    reward is still its oracle score (computed independently in the actor)."""
    out, _, log = off
    assert log[0]["killed"].startswith("reward replica")
    recs = records(out)
    assert [r["iteration"] for r in recs] == [0, 1, 2, 3]
    assert recs[0]["reward_replica_pids"] == [log[0]["pid"]]
    assert recs[1]["reward_replica_pids"] and log[0]["pid"] not in recs[1]["reward_replica_pids"]
    assert all(log[0]["pid"] not in r["reward_replica_pids"] for r in recs[1:])  # the replacement served on
    for r in recs:
        assert r["reward"] == pytest.approx({**r["oracle"]}, abs=1e-12)


def test_generator_actor_killed_mid_rollout(off):
    """Killed: a generator actor while it sampled iteration 2. Checked: the job finished; iteration 2 lists
    the restarted actor; every iteration holds each of its 8 clips exactly once (the seeds of the job's
    rule); the restarted actor sampled with version 1, the weights the trainer published after iteration 0
    (same sha256)."""
    out, _, log = off
    assert log[1]["killed"].startswith("generator actor")
    recs = records(out)
    assert recs[2]["restarted_actors"]
    for r in recs:
        assert r["videos"] == r["samples_unique"] == 8
        assert r["seeds_sha256"] == _hand_seeds_digest(r["iteration"])
    assert recs[2]["sample_version"] == 1
    assert recs[2]["weights_sha256"] == [recs[0]["published_sha256"]]


def test_generator_node_lost_mid_rollout(off):
    """Lost: a whole generator node (its raylet and every process on it, killed at once as
    ``Cluster.remove_node`` does) while an actor on it sampled iteration 3. Checked: one node fewer is alive
    (once the GCS notices); the job finished all 4 iterations;
    iteration 3 was sampled by restarted actors on the node left, each clip exactly once, with version 2
    (the weights published after iteration 1)."""
    import ray

    out, summary, log = off
    assert log[2]["killed"].startswith("node")
    deadline = time.time() + 60
    while time.time() < deadline and sum(1 for n in ray.nodes() if n["Alive"]) != log[2]["nodes_alive_before"] - 1:
        time.sleep(1)
    assert sum(1 for n in ray.nodes() if n["Alive"]) == log[2]["nodes_alive_before"] - 1
    recs = records(out)
    assert summary["iterations"] == 4 and summary["policy_version"] == 4
    assert recs[3]["restarted_actors"] and recs[3]["videos"] == recs[3]["samples_unique"] == 8
    assert recs[3]["sample_version"] == 2
    assert recs[3]["weights_sha256"] == [recs[1]["published_sha256"]]


REFRESH = [
    "reward.model=default",
    "refresh.every=1",
    "refresh.pairs=3",
    "refresh.steps=2",
    "refresh.batch_size=2",
    "iterations=3",
]


@pytest.fixture(scope="module")
def refreshed(ray_session, tmp_path_factory):
    """The tiny config on the shipped VideoReward with a reward refresh after iterations 0 and 1 (3 labelled
    pairs, 2 fine-tuning steps each); then a copy of the run directory is resumed from the checkpoint after
    iteration 1, so iteration 1's refresh (reward version 2) and iteration 2 are done again."""
    import shutil

    from actors.run import RunDir

    base = tmp_path_factory.mktemp("online")
    out, copy = base / "refresh", base / "refresh_resumed"
    summary = run_job(out, *REFRESH)
    shutil.copytree(out, copy)
    storage = copy / "checkpoints"
    for redone in ("refresh/iter_00002", "reward/v002"):  # made again by the resumed run
        shutil.rmtree(storage / redone)
    RunDir(copy).write_state("iter_00001", json.loads((storage / "iter_00001" / "state.json").read_text()))
    resumed = run_job(copy, *REFRESH, "resume=true")
    return out, summary, copy, resumed


def test_reward_refresh_labels_fine_tunes_and_rolls_the_served_reward(refreshed):
    """Each iteration's clips are scored by one reward version (0, then 1, then 2): the refresh after iteration
    i fine-tuned a new checkpoint on 3 labelled pairs of iteration i's clips and the service rolled to it. The
    served scores a refresh dataset records for iteration 1's clips are those of reward version 1, recomputed
    here from the stored mp4s with VideoReward.from_checkpoint."""
    from rlhf.data.schema import read_preferences
    from rlhf.reward.inference import VideoReward
    from rlhf.synthetic.oracle import score
    from rlhf.video import read_video

    out, summary, _, _ = refreshed
    recs = records(out)
    assert [r["reward_versions"] for r in recs] == [[0], [1], [2]]
    assert [r["labels_spent"] for r in recs] == [3, 6, 6]
    assert [r["refresh"] is not None for r in recs] == [True, True, False]
    assert recs[0]["refresh"]["onpolicy_before"]["VQ"]["pairs"] == 3
    store = out / "checkpoints"
    v1 = store / "reward" / "v001"
    assert (v1 / "checkpoint-2" / "non_lora_state_dict.pth").is_file()
    assert json.loads((store / "latest.json").read_text())["reward"]["version"] == 2
    data = store / "refresh" / "iter_00002"
    # replay: the second refresh learned the first refresh's pairs again, the first one only its own
    learned = [
        [
            Path(d).name
            for d in yaml.safe_load((store / "reward" / v / "config.yaml").read_text())["generated_data"].split(",")
        ]
        for v in ("v001", "v002")
    ]
    assert learned == [["iter_00001"], ["iter_00001", "iter_00002"]]
    pairs = read_preferences(data / "prefs.parquet").to_pylist()
    assert len(pairs) == 3 and {r["source"] for r in pairs} == {"refresh"}
    model = VideoReward.from_checkpoint(v1)
    for r in pairs:
        assert r["reward_version_a"] == r["reward_version_b"] == 1
        for side in ("a", "b"):
            frames = read_video(data / r[f"video_{side}"])
            got = model.reward([frames], [r["prompt"]])[0]
            for d in ("VQ", "MQ", "TA"):
                assert got[d] == pytest.approx(r[f"served_{side}"][d], abs=1e-4)
                assert score(frames, r["prompt"])[d] == pytest.approx(r[f"score_{side}"][d], abs=1e-9)
            assert r["VQ"] in ("A", "B", "same")


def test_resume_with_reward_refresh_is_exact(refreshed):
    """Resumed after iteration 1's checkpoint (reward version 1 served again), the run redid iteration 1, its
    refresh and iteration 2: the same pairs, the same served rewards, the same refreshed checkpoint."""
    import torch

    out, _, copy, _ = refreshed
    ref, got = records(out), records(copy)
    assert [r["iteration"] for r in got] == [0, 1, 2]
    for a, b in zip(ref[1:], got[1:]):
        assert a["batch_digest"] == b["batch_digest"] and a["reward_versions"] == b["reward_versions"]
        for d in ("VQ", "MQ", "TA"):
            assert b["reward"][d] == pytest.approx(a["reward"][d], abs=1e-6)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
    sa = torch.load(out / "checkpoints/reward/v002/checkpoint-2/non_lora_state_dict.pth", weights_only=True)
    sb = torch.load(copy / "checkpoints/reward/v002/checkpoint-2/non_lora_state_dict.pth", weights_only=True)
    assert sa.keys() == sb.keys() and max(float((sa[k] - sb[k]).abs().max()) for k in sa) < 1e-6
    assert _same_weights(out, copy) < 1e-6
