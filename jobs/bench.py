"""Benchmarks: figures measured side by side in one run, written as JSON and printed as a table.

    python jobs/bench.py                        # every benchmark that exists so far
    python jobs/bench.py only=[dataset]         # one of them

Benchmarks so far:
  dataset  seconds to build N moving-shapes pairs (mp4 + parquet) with the configured workers, and
           the per-video cost of each stage (render, H.264 encode, decode, oracle) in one process.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from rlhf.config import parse_cli  # noqa: E402


@dataclass
class BenchConfig:
    out: str = "runs/bench/bench.json"  # JSON results (a Markdown table goes next to it)
    only: list[str] = field(default_factory=list)  # subset of: dataset (empty = all)
    pairs: int = 2000  # dataset benchmark: pairs to build
    workers: int = 2  # dataset benchmark: worker processes
    stage_videos: int = 100  # videos timed per stage


def bench_dataset(cfg: BenchConfig) -> dict:
    from rlhf.synthetic.dataset import build_dataset, pair_spec
    from rlhf.synthetic.oracle import score
    from rlhf.synthetic.render import render
    from rlhf.video import encode_video, read_video

    specs = [pair_spec(0, i) for i in range(cfg.stage_videos)]
    stages = {"render": [], "encode": [], "decode": [], "oracle": []}
    for s in specs:
        t0 = time.perf_counter()
        v = render(s.prompt, s.defects_a, s.seed_a)
        t1 = time.perf_counter()
        data = encode_video(v)
        t2 = time.perf_counter()
        d = read_video(data)
        t3 = time.perf_counter()
        score(d, s.prompt)
        t4 = time.perf_counter()
        for k, a, b in (("render", t0, t1), ("encode", t1, t2), ("decode", t2, t3), ("oracle", t3, t4)):
            stages[k].append(b - a)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ds_"))
    try:
        res = build_dataset(tmp, cfg.pairs, seed=0, workers=cfg.workers, progress=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "pairs": cfg.pairs,
        "workers": cfg.workers,
        "seconds": round(res.seconds, 2),
        "pairs_per_second": round(cfg.pairs / res.seconds, 1),
        "target_seconds_for_2000": 120,
        "ms_per_video": {k: round(1000 * float(np.median(v)), 2) for k, v in stages.items()},
    }


BENCHES = {"dataset": bench_dataset}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(BenchConfig, argv, __doc__.splitlines()[0])
    unknown = [b for b in cfg.only if b not in BENCHES]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; available: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    results = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}}
    for name in cfg.only or list(BENCHES):
        print(f"running {name} ...", flush=True)
        results[name] = BENCHES[name](cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    if "dataset" in results:
        r = results["dataset"]
        lines.append(f"| dataset | seconds for {r['pairs']} pairs ({r['workers']} workers) | {r['seconds']} |")
        lines.append(f"| dataset | pairs per second | {r['pairs_per_second']} |")
        for k, v in r["ms_per_video"].items():
            lines.append(f"| dataset | {k} ms per video (1 process) | {v} |")
    table = "\n".join(lines)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
