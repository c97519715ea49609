"""The cluster around the jobs: cluster.yaml passes Ray's own validation offline, the autoscaler adds
role nodes on demand (the fake_multinode provider, on this machine), and `ray job submit` runs an
uploaded working directory on a `ray start` head with token auth. Every Ray process is started with
its own temp dir and ports and stopped by PID (tests/ray_cluster.py), never with `ray stop`."""

import copy
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.ray_cluster import LocalRayHead, free_ports, ray_head  # noqa: F401  (ray_head is a fixture)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
FAKE_CLUSTER_YAML = ROOT / "jobs/configs/fake_cluster.yaml"
ROLES = ("generator", "trainer", "reward")
# `--working-dir <repo root>` already leaves out what .gitignore names (.venv/, runs/); git history too.
JOB_RUNTIME_ENV = {"excludes": ["/.git/"]}


def ray_check(config: dict) -> dict:
    """What `ray up` does to a config before it contacts the cloud: defaults merged, then validated."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def pinned(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith(f"{name}==")]
    return pin


def test_cluster_yaml_validates_offline():
    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    config = ray_check(raw)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0
    for role in ROLES:
        resources = types[role]["resources"]
        assert resources["GPU"] >= 1 and resources[role] == resources["GPU"], role  # one unit per GPU
        # Ray would default a missing max_workers to the cluster's; every role states its own.
        assert raw["available_node_types"][role]["max_workers"] >= types[role]["min_workers"], role
    assert sum(t["min_workers"] for t in types.values()) <= config["max_workers"]
    assert config["file_mounts"]["~/videoalign"] == "."

    # scripts/setup.sh's order: torch, then deepspeed built against it, then the project, editable.
    setup = config["setup_commands"]
    step = {
        key: next(i for i, c in enumerate(setup) if key in c)
        for key in (pinned("torch"), pinned("deepspeed"), "pip install -q -e .")
    }
    assert list(step.values()) == sorted(step.values()), setup
    deepspeed = setup[step[pinned("deepspeed")]]
    assert "DS_BUILD_OPS=0" in deepspeed and "--no-build-isolation" in deepspeed
    # vllm conflicts with the project's transformers pin: it comes in the replica's runtime_env, never here
    assert not any("vllm" in c or "[gpu]" in c for c in config["worker_setup_commands"])

    start = " ".join(config["head_start_ray_commands"])
    for flag in (
        "--head",
        "--port=6379",
        "--dashboard-host=127.0.0.1",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
        "RAY_AUTH_MODE=token",
    ):
        assert flag in start, flag
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    # one shared file system at /mnt/shared on every node (setup_commands run on the head and every worker),
    # mounted before anything else is set up; the GPU job keeps its storage and hub cache there
    for kind in ("head_setup_commands", "worker_setup_commands"):  # what `ray up` runs on each node
        first = config[kind][0]
        assert "mount -t nfs4" in first and "mountpoint -q /mnt/shared" in first, (kind, first)
    wan = yaml.safe_load((ROOT / "jobs/configs/wan21_t2v_1.3b.yaml").read_text())
    assert wan["storage"].startswith("/mnt/shared/") and wan["hub_cache"].startswith("/mnt/shared/")
    assert wan["autoscaling"] is True and wan["reward"]["resources"] == {"reward": 1}


BREAKAGES = {  # name: (how the copy is broken, what Ray's validation says)
    "typo in a node type key": (
        lambda c: c["available_node_types"]["generator"].update(max_worker=2),
        "'max_worker' was unexpected",
    ),
    "node type without resources": (
        lambda c: c["available_node_types"]["reward"].pop("resources"),
        "'resources' is a required property",
    ),
    "unknown top-level key": (lambda c: c.update(idle_timeout=5), "'idle_timeout' was unexpected"),
    "min_workers above the cluster's max_workers": (
        lambda c: c.update(max_workers=1),
        "smaller than the sum of `min_workers`",
    ),
    "head_node_type that is no node type": (
        lambda c: c.update(head_node_type="ray.head.default"),
        "must be one of `available_node_types`",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_cluster_yaml_fails_validation(breakage):
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    mutate, message = BREAKAGES[breakage]
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        ray_check(config)


# Runs in its own process: another test module may hold an in-process `ray.init(address="local")`.
AUTOSCALE_CLIENT = r"""
import json, time, ray

ray.init()
alive = lambda: [n for n in ray.nodes() if n["Alive"]]
before = [n["Resources"] for n in alive()]

@ray.remote(num_cpus=1, resources={"generator": 1})
class Generator:
    def node(self):
        return ray.get_runtime_context().get_node_id()

gens = [Generator.remote() for _ in range(2)]
placed = ray.get([g.node.remote() for g in gens], timeout=90)
grown = {n["NodeID"]: n["Resources"] for n in alive()}
for g in gens:
    ray.kill(g)
deadline = time.time() + 60
while len(alive()) > 1 and time.time() < deadline:
    time.sleep(1)
print(json.dumps({"before": before, "placed": placed, "grown": grown, "after": len(alive())}))
"""


def test_fake_multinode_autoscaler_adds_nodes(tmp_path):
    from ray.autoscaler._private.util import validate_config

    head = LocalRayHead(num_cpus=0)
    config = yaml.safe_load(FAKE_CLUSTER_YAML.read_text())
    config["provider"]["gcs_address"] = head.address
    validate_config(config)  # schema only: the wheel ships no defaults for this provider to prepare with
    (tmp_path / "fake_cluster.yaml").write_text(yaml.safe_dump(config))
    with head.start(autoscaling_config=tmp_path / "fake_cluster.yaml", extra_env={"RAY_FAKE_CLUSTER": "1"}):
        r = subprocess.run(
            [sys.executable, "-c", AUTOSCALE_CLIENT], env=head.env, capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    # the autoscaler's events reach the client's stdout too, before or after the report
    report = json.loads(next(ln for ln in reversed(r.stdout.splitlines()) if ln.startswith('{"before"')))
    assert len(report["before"]) == 1 and report["before"][0].get("CPU", 0) == 0  # the head alone, no CPUs
    assert len(set(report["placed"])) == 2  # two generator nodes were added, one actor on each
    for node in report["placed"]:
        assert report["grown"][node]["generator"] == 1 and report["grown"][node]["CPU"] == 1
    assert len(report["grown"]) == 3  # and nothing else: no trainer or reward node without demand
    assert not any("trainer" in res or "reward" in res for res in report["grown"].values())
    assert report["after"] == 1  # idle generator nodes stopped after idle_timeout_minutes


def submit(head: LocalRayHead, working_dir: Path, *entrypoint: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [
        head.ray_bin,
        "job",
        "submit",
        "--address",
        head.dashboard_url,
        "--working-dir",
        str(working_dir),
        "--runtime-env-json",
        json.dumps(JOB_RUNTIME_ENV),
        "--",
        *entrypoint,
    ]
    return subprocess.run(cmd, env=head.env, cwd=working_dir, capture_output=True, text=True, timeout=timeout)


def test_job_cli_without_auth_mode_token_is_refused(ray_head):
    # The token file is at hand (RAY_AUTH_TOKEN_PATH), but the job CLI reads it only in token mode.
    env = {k: v for k, v in ray_head.env.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    r = subprocess.run(
        [ray_head.ray_bin, "job", "list", "--address", ray_head.dashboard_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no authentication token was found" in out, out[-2000:]


def test_repo_working_dir_upload_leaves_out_large_dirs(tmp_path):
    # The package `--working-dir <repo root>` uploads, built by the function Ray itself uses.
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, _zip_files

    package = tmp_path / "pkg.zip"
    _zip_files(str(ROOT), JOB_RUNTIME_ENV["excludes"], str(package), include_gitignore=True)
    names = zipfile.ZipFile(package).namelist()
    assert not [n for n in names if n.split("/")[0] in (".venv", "runs", ".git")]
    assert "rlhf/__init__.py" in names and "jobs/README.md" in names
    assert any(n.startswith("artefacts/generator_default/") for n in names)  # the job's default generator
    assert package.stat().st_size < GCS_STORAGE_MAX_SIZE // 8  # 512 MiB is Ray's hard limit


FREE_TEXT = [
    "a paper boat drifting down a rainy street gutter",
    "an astronaut riding a horse on the moon",
    "clouds rolling over snowy mountains at dawn",
    "a cat playing the piano in a smoky jazz club",
]


def readme_recipe() -> tuple[str, str]:
    """The README's cluster recipe: (its `ray start` line, its `ray job submit` command up to the entrypoint)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(source \.venv/bin/activate.*?)```", text, re.S)
    assert block, "README.md lost its cluster recipe (a bash block starting with `source .venv/bin/activate`)"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    (start,) = [ln for ln in lines if ln.strip().startswith("ray start")]
    (job,) = [ln for ln in lines if "ray job submit" in ln]
    return start, job


def test_readme_recipe_declares_room_for_every_role():
    """The recipe's head offers enough logical CPUs for the default job's roles, binds 127.0.0.1, and the
    job runs the venv's python (the recipe activates it first)."""
    from actors.online import OnlineConfig

    start, job = readme_recipe()
    cpus = int(re.search(r"--num-cpus[= ](\d+)", start).group(1))
    need = sum(r.total().get("CPU", 0.0) for r in OnlineConfig().roles())
    assert cpus >= need, f"the recipe's head offers {cpus} CPUs, the default job needs {need}"
    assert "--node-ip-address=127.0.0.1" in start and "--dashboard-host=127.0.0.1" in start
    assert "-- python jobs/online_dpo.py" in job


def test_readme_recipe_trains_free_text_prompts_judged_by_the_served_reward(ray_head, tmp_path):
    """The README's recipe on this 2-core machine (a `ray start` head, the venv's python on its PATH, token
    auth, `ray job submit` of the repository): the job trains, here on free-text prompts with the world
    switched off, and its evaluation and report are judged by the served reward and say so."""
    _, job = readme_recipe()
    assert json.loads(re.search(r"--runtime-env-json '([^']*)'", job).group(1)) == JOB_RUNTIME_ENV
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# free text, outside the moving-shapes grammar\n" + "\n".join(FREE_TEXT) + "\n")
    out = tmp_path / "run"
    # the uploaded repository runs (its jobs/configs), with the venv's python (torch), one actor per role
    r = submit(
        ray_head,
        ROOT,
        "python",
        "jobs/online_dpo.py",
        "--config",
        "jobs/configs/online_tiny.yaml",
        "--out",
        str(out),
        "progress=false",
        "iterations=1",
        "generators=1",
        "trainer.num_workers=1",
        "world=false",
        f"prompts={prompts}",
        "reward.model=default",
        "eval_n_prompts=2",
        "report_clips=1",
        f"reward.http_port={free_ports(1)[0]}",
        timeout=600,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in log, log[-6000:]
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["iteration"] == 0 and rec["pairs"] >= 1 and rec["oracle"] == {}  # trained; no oracle scored
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["judge"] == "served reward (default)" and "oracle_win_rate" not in ev
    assert ev["n"] == 2 and 0.0 <= ev["learned_win_rate"]["weighted"] <= 1.0
    assert "judged by the served reward (default) (no oracle: world=false)" in log
    html = (out / "report.html").read_text()
    assert "Judge: the served reward (default)" in html
    assert f"class='prompt'>{FREE_TEXT[0]}" in html  # the clips shown are the run's own prompts


def test_a_job_that_cannot_fit_stops_at_once_naming_each_role(ray_head, tmp_path):
    """8 logical CPUs, no autoscaler: a job asking for 12 generator actors stops before starting any role."""
    import time

    t0 = time.time()
    r = submit(
        ray_head,
        ROOT,
        "python",
        "jobs/online_dpo.py",
        "--config",
        "jobs/configs/online_tiny.yaml",
        "--out",
        str(tmp_path / "run"),
        "generators=12",
        timeout=300,
    )
    log = r.stdout + r.stderr
    assert r.returncode != 0, log[-4000:]
    assert "the cluster cannot hold this job's roles" in log, log[-4000:]
    assert "generator actors  12 x {CPU 1}" in log and "trainer workers" in log and "reward replicas" in log
    assert "short: CPU 8" in log  # 12 generators + 2 trainer workers + 1 replica + 1 Ray Data task = 16, 8 offered
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert time.time() - t0 < 120


def test_train_reward_joins_the_cluster_it_is_submitted_to(ray_head, tmp_path):
    """Submitted to the 8-CPU head, train_reward joins it (started on its own it would make a local cluster
    with room for every worker): asked for 12 workers, it stops at once naming the head's 8 CPUs."""
    from rlhf.synthetic.dataset import build_dataset

    build_dataset(tmp_path / "ds", pairs=4, seed=1, workers=1, progress=False)
    r = submit(
        ray_head,
        ROOT,
        "python",
        "jobs/train_reward.py",
        "--data",
        "synthetic",
        f"eval_data={tmp_path / 'ds'}",
        "max_steps=1",
        "--out",
        str(tmp_path / "run"),
        "--workers",
        "12",
        timeout=300,
    )
    log = r.stdout + r.stderr
    assert r.returncode != 0 and "trainer workers  12 x {CPU 1}" in log, log[-4000:]
    assert "the cluster offers CPU 8" in log and "short: CPU 4" in log, log[-4000:]
