"""jobs/gpu_check.py runs where the GPU check machine has only torch, transformers, peft, safetensors and
diffusers: without Ray, DeepSpeed, PyAV or the project installed, and writes finite, positive figures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Ray, DeepSpeed and PyAV unimportable (None in sys.modules makes `import` raise ImportError), and the
# editable install's finder removed, so `rlhf` can only come from the path the script itself adds.
RUNNER = """
import runpy, sys
for name in ("ray", "deepspeed", "av"):
    sys.modules[name] = None
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def test_tiny_cpu_run_without_ray_deepspeed_pyav_writes_every_figure(tmp_path):
    out = tmp_path / "check.json"
    # One thread: at tiny shapes threads only add overhead, and on a busy 2-core machine they contend.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            str(ROOT / "jobs" / "gpu_check.py"),
            "--tiny",
            "--device",
            "cpu",
            "--reps",
            "1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())

    expected = {
        "wan_dpo_step.seconds",
        "wan_cfg_step.seconds",
        "wan_nrg_step.seconds",
        "reward_forward.seconds",
        "reward_btt_step.seconds",
    }  # no peak memory on CPU
    assert set(res["figures"]) == expected
    for name in ("wan_dpo_step.seconds", "wan_cfg_step.seconds", "reward_forward.seconds"):
        assert {"project", "plain", "ratio"} <= set(res["figures"][name]), name  # bench_gpu has these three
    numbers = [v for row in res["figures"].values() for k, v in row.items() if k != "unit"]
    assert numbers and all(math.isfinite(x) and x > 0 for x in numbers), res["figures"]
    for name, row in res["figures"].items():
        if "ratio" in row:
            assert math.isclose(row["ratio"], row["project"] / row["plain"]), name

    assert res["device"] == "cpu" and res["tiny"] is True
    assert all(res[lib] for lib in ("torch", "diffusers", "transformers", "peft"))
    # both sides saw the same sequence: the plain reward model got the project's token count around the video
    tokens = res["sections"]["reward"]["project"]["tokens"]
    assert res["sections"]["reward"]["plain"]["shape"]["text_tokens"] == tokens["around_video"]
    for name in expected:
        assert name in proc.stdout  # the printed table
