"""The online loop on Ray, end to end, in the moving-shapes world (tiny batches, 4 Euler steps).

One Ray session for the module (with a Prometheus export port) runs three jobs in-process:

* ``full``: 3 iterations, uninterrupted — the end-to-end checks (2 generator actors, the Serve reward,
  a 2-worker Ray Train + DeepSpeed group): the policy version advanced once per iteration, every sample
  carries the version it came from, pairs were built, the loss moved away from ln 2 (a zero LoRA gives
  exactly ln 2: test_generator), the published adapter is the trained one, metrics reached metrics.jsonl
  and the Ray metrics endpoint;
* ``cut``: the same config stopped after iteration 2 (its checkpoint), then ``--resume`` to 3: the batch
  of iteration 3 and the final weights equal those of ``full``.
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

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "jobs" / "configs" / "online_tiny.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if ray.is_initialized():
        pytest.skip("needs its own Ray session (with a metrics export port)")
    port = free_port()
    ray.init(address="local", num_cpus=8, include_dashboard=False, _metrics_export_port=port)
    yield port
    from jobs.online_dpo import shutdown_local_cluster

    shutdown_local_cluster()


HTTP_PORT = free_port()  # Serve keeps the HTTP options of its first start in a session


def run_job(out: Path, *overrides: str) -> dict:
    from jobs.online_dpo import OnlineConfig, run
    from rlhf.config import load_config

    cfg = load_config(OnlineConfig, TINY, [f"out={out}", "progress=false", "eval_n_prompts=0",
                                           f"reward.http_port={HTTP_PORT}", *overrides])
    return run(cfg)


def records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def full(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("online") / "full"
    summary = run_job(out, "iterations=3")
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
    adapter = load_file(out / "adapter" / "adapter.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # trained, not zero
    assert summary["policy_version"] == 3 and summary["iterations"] == 3
    assert (out / "checkpoints" / "latest.json").is_file()
    # ray.util.metrics reach the node's Prometheus endpoint (exported every few seconds)
    deadline, text = time.time() + 40, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{ray_session}/metrics", timeout=5).read().decode()
        if "videoalign_policy_version" in text:
            break
        time.sleep(2)
    assert "videoalign_policy_version" in text and "videoalign_phase_seconds" in text


def test_resume_continues_exactly(full, tmp_path_factory):
    from safetensors.torch import load_file

    ref_out, _ = full
    out = tmp_path_factory.mktemp("online") / "cut"
    run_job(out, "iterations=2", "checkpoint_every=2")
    state = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert state["next_iteration"] == 2 and state["policy_version"] == 2
    run_job(out, "iterations=3", "resume=true")
    ref, got = records(ref_out), records(out)
    assert [r["iteration"] for r in got] == [0, 1, 2]
    assert got[2]["batch_digest"] == ref[2]["batch_digest"]  # the same pairs, in the same order
    assert got[2]["loss"] == pytest.approx(ref[2]["loss"], abs=1e-6)
    a = load_file(ref_out / "adapter" / "adapter.safetensors")
    b = load_file(out / "adapter" / "adapter.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_one_step_off_overlaps_with_staleness_one(ray_session, tmp_path):
    out = tmp_path / "off"
    run_job(out, "iterations=3", "mode=one_step_off", "checkpoint_every=0")
    recs = records(out)
    # batch i + 1 is sampled (with version i) while the trainer works on batch i
    assert [r["sample_version"] for r in recs] == [0, 0, 1]
    assert [r["policy_version"] for r in recs] == [1, 2, 3]
    assert [r["staleness"] for r in recs] == [0, 1, 1]
    assert [r["queue_depth"] for r in recs] == [1, 1, 0]  # a rollout in flight while training, but the last
