"""The scaling model of the online loop (actors/scaling.py): every expected number worked out by hand from the
formulas in the module's docstring. No Ray, no torch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.scaling import (
    RoleCosts,
    calibrate,
    check_table,
    costs_from_gpu_check,
    costs_from_records,
    gpu_table,
    measured_iteration_s,
    rows_per_clip,
    run_name,
    steady_records,
    throughput,
    weak_scaling,
)

ROOT = Path(__file__).resolve().parents[1]


def loop_costs(**kw) -> RoleCosts:
    """B = 64 clips in groups of 4, K = 8 steps; 0.5 s per clip, 0.01 s per reward, 1 s per step."""
    base = dict(
        clips=64,
        group=4,
        steps=8,
        micro_batch=4,
        gen_s_per_clip=0.5,
        reward_s_per_clip=0.01,
        train_s_per_step=1.0,
        data_s=2.0,
        sync_s=0.5,
        overhead_s=1.0,
        lora_bytes=1e9,
    )
    return RoleCosts(**{**base, **kw})


def test_ring_allreduce_at_1_2_8_and_across_nodes():
    c = loop_costs(
        allreduce_latency_s=1e-3, allreduce_bandwidth=1e10, allreduce_bandwidth_across=1e9, devices_per_node=8
    )
    assert c.allreduce_s(1) == 0.0
    assert c.allreduce_s(2) == pytest.approx(1e-3 + 2 * 1 / 2 * 0.1)  # 0.101
    assert c.allreduce_s(8) == pytest.approx(7e-3 + 2 * 7 / 8 * 0.1)  # 0.182
    assert c.allreduce_s(16) == pytest.approx(15e-3 + 2 * 15 / 16 * 1.0)  # 1.89: the slow link bounds the ring
    assert loop_costs(allreduce_latency_s=1e-3).allreduce_s(4) == pytest.approx(3e-3)  # no bandwidth term


def test_sync_iteration_is_the_sum_of_phases():
    # generate 64 / 2 actors x 0.5 = 16; reward 64 x 0.01 = 0.64; train 8 x 1 = 8; data 2, sync 0.5, overhead 1
    t = throughput(loop_costs(), n_gen=2, m_train=1, mode="sync")
    assert t["phases"]["generate"] == pytest.approx(16.0)
    assert t["phases"]["train"] == pytest.approx(8.0)
    assert t["iteration_s"] == pytest.approx(16 + 0.64 + 2 + 8 + 0.5 + 1)  # 28.14
    assert t["clips_per_s"] == pytest.approx(64 / 28.14)
    assert t["rows_trained"] == 8 * 1 * 4


def test_one_step_off_takes_the_longer_side():
    # sampling 16 + 0.64 = 16.64 against learning 2 + 8 + 0.5 = 10.5, plus the overhead 1
    t = throughput(loop_costs(), n_gen=2, m_train=1, mode="one_step_off")
    assert t["iteration_s"] == pytest.approx(17.64) and t["bound"] == "sampling"
    slow_trainer = throughput(loop_costs(train_s_per_step=3.0), 2, 1, "one_step_off")  # 2 + 24 + 0.5 = 26.5
    assert slow_trainer["iteration_s"] == pytest.approx(27.5) and slow_trainer["bound"] == "training"


def test_actors_get_whole_prompt_groups():
    # 16 groups of 4 over 3 actors: 6, 5, 5 groups; the slowest samples 24 clips (not ceil(64 / 3) = 22)
    assert throughput(loop_costs(), 3, 1, "sync")["phases"]["generate"] == pytest.approx(24 * 0.5)
    # more actors than groups: one group each, the rest idle
    assert throughput(loop_costs(), 32, 1, "sync")["phases"]["generate"] == pytest.approx(4 * 0.5)


def test_cpu_cores_bound_each_phase_and_the_overlapped_iteration():
    c = loop_costs()
    # 4 single-thread actors on 2 cores: 64 x 0.5 / 2 = 16 s, not 16 clips x 0.5 = 8 s
    assert throughput(c, 4, 1, "sync", cores=2)["phases"]["generate"] == pytest.approx(16.0)
    # 4 workers on 2 cores: each step takes twice as long
    assert throughput(c, 1, 4, "sync", cores=2)["phases"]["train"] == pytest.approx(8 * 2.0)
    # one-step-off on 2 cores: all CPU-seconds 64 x 0.51 + 2 + 8 x 1 + 0.5 + 1 = 44.14, / 2 = 22.07 > 17.64
    t = throughput(c, 2, 1, "one_step_off", cores=2)
    assert t["iteration_s"] == pytest.approx(22.07) and t["bound"] == "2 cores"
    # with cores to spare the bound does not bind: 44.14 / 8 < 17.64
    assert throughput(c, 2, 1, "one_step_off", cores=8)["iteration_s"] == pytest.approx(17.64)


def test_more_trainer_workers_never_shorten_an_iteration():
    c = loop_costs(allreduce_latency_s=50e-6, allreduce_bandwidth=150e9, allreduce_bandwidth_across=25e9)
    rows = weak_scaling(c, n_gen=8, workers=(1, 2, 4, 8, 16, 32))
    seconds = [r["iteration_s"] for r in rows]
    assert seconds == sorted(seconds) and seconds[0] < seconds[-1]
    assert [r["rows_trained"] for r in rows] == [8 * m * 4 for m in (1, 2, 4, 8, 16, 32)]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        throughput(loop_costs(), 1, 1, "async")
    with pytest.raises(ValueError, match="n_gen must be >= 1"):
        throughput(loop_costs(), 0, 1, "sync")


def record(it, generate, reward_wait, rollout_wait, data, train, weight_sync, checkpoint, iteration, queue=0):
    phases = dict(
        generate=generate,
        reward_wait=reward_wait,
        rollout_wait=rollout_wait,
        data=data,
        train=train,
        weight_sync=weight_sync,
        checkpoint=checkpoint,
        iteration=iteration,
    )
    return {"iteration": it, "videos": 16, "queue_depth": queue, "phases": phases}


# iteration 0 carries the cold start and is left out; iteration 1: 16 clips, K = 4
RECORDS = [record(0, 30.0, 5.0, 40.0, 9.0, 20.0, 1.0, 0.0, 80.0), record(1, 8.0, 0.4, 9.0, 0.5, 6.0, 0.2, 0.3, 16.5)]


def test_costs_from_two_records_by_hand():
    c = costs_from_records(RECORDS, steps=4, micro_batch=4, group=4)
    assert c.clips == 16
    assert c.gen_s_per_clip == pytest.approx(8.0 / 16)
    assert c.reward_s_per_clip == pytest.approx(0.4 / 16)
    assert c.oracle_s_per_clip == pytest.approx((9.0 - 8.0 - 0.4 - 0.2) / 16)  # what rollout_wait leaves
    assert c.train_s_per_step == pytest.approx(6.0 / 4)
    assert (c.data_s, c.sync_s) == (0.5, 0.2)
    # 16.5 - 0.3 (checkpoint) - (0.2 + 8 + 0.4 + 0.4 + 0.5 + 6) = 0.7
    assert c.overhead_s == pytest.approx(0.7)
    # the model gives back the run it was read from
    assert throughput(c, 1, 1, "sync")["iteration_s"] == pytest.approx(measured_iteration_s(RECORDS))
    assert measured_iteration_s(RECORDS) == pytest.approx(16.2)


def test_costs_divide_by_the_slowest_actors_clips_and_refuse_one_step_off():
    two_actors = costs_from_records(RECORDS, steps=4, micro_batch=4, group=4, n_gen=2)
    assert two_actors.gen_s_per_clip == pytest.approx(8.0 / 8)
    with pytest.raises(ValueError, match="sync run"):
        costs_from_records([{**r, "queue_depth": 1} for r in RECORDS], steps=4, micro_batch=4)


def test_steady_state_of_one_step_off_leaves_out_first_and_last():
    recs = [record(i, 1, 0, 1, 0, 1, 0, 0, 10.0 + i, queue=q) for i, q in enumerate((1, 1, 1, 0))]
    assert [r["iteration"] for r in steady_records(recs)] == [1, 2]
    assert measured_iteration_s(recs) == pytest.approx(11.5)


def test_calibrate_reads_the_allreduce_from_the_two_worker_run():
    two = [RECORDS[0], record(1, 8.0, 0.4, 9.0, 0.5, 6.8, 0.2, 0.3, 17.3)]  # 0.8 s more over K = 4 steps
    runs = {
        run_name(1, 1, "sync"): {"n_gen": 1, "m_train": 1, "mode": "sync", "records": RECORDS},
        run_name(1, 2, "sync"): {"n_gen": 1, "m_train": 2, "mode": "sync", "records": two},
    }
    loop = {"steps": 4, "micro_batch": 4, "group": 4, "lora_bytes": 1e6, "cores": 2}
    res = calibrate(runs, loop)
    assert res["costs"]["allreduce_latency_s"] == pytest.approx(0.2)
    # two workers on two cores: 4 x (1.5 + 0.2) = 6.8 s of training, 0.8 s more than one worker
    assert res["predicted"][run_name(1, 2, "sync")] == pytest.approx(16.2 + 0.8)
    assert res["measured"][run_name(1, 2, "sync")] == pytest.approx(17.0)
    with pytest.raises(ValueError, match="gen1_train1_sync"):
        calibrate({run_name(1, 2, "sync"): runs[run_name(1, 2, "sync")]}, loop)


def test_check_table_rows_and_ratio():
    text = check_table(
        {run_name(1, 1, "sync"): 20.0, run_name(2, 1, "sync"): 15.0},
        {run_name(1, 1, "sync"): 20.0, run_name(2, 1, "sync"): 12.0},
    )
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[2] == "| 1 | 1 | sync | 20.0 | 20.0 | 1.00 |"
    assert lines[3] == "| 2 | 1 | sync | 15.0 | 12.0 | 0.80 |"


def test_gpu_costs_from_the_committed_gpu_check():
    gpu = json.loads((ROOT / "docs" / "results" / "bench_gpu_h100.json").read_text())
    online = SimpleNamespace(
        prompts_per_iter=8, group=2, steps_per_iter=2, sampler=SimpleNamespace(steps=50),
        trainer=SimpleNamespace(micro_batch=1),
    )  # fmt: skip
    c = costs_from_gpu_check(gpu, online)
    assert (c.clips, c.steps) == (16, 2)
    assert c.gen_s_per_clip == pytest.approx(1.4347 * 50)
    assert c.reward_s_per_clip == pytest.approx(1 / 26.59)
    assert c.train_s_per_step == pytest.approx(6.9837)
    assert c.lora_bytes == pytest.approx(47.19e6 * 4)
    assert c.allreduce_s(8) == pytest.approx(7 * 50e-6 + 2 * 7 / 8 * 188.76e6 / 150e9)  # NVLink within a node
    assert c.allreduce_s(16) == pytest.approx(15 * 50e-6 + 2 * 15 / 16 * 188.76e6 / 25e9)  # across nodes
    assert c.sync_s == pytest.approx(2 * 188.76e6 / 2e9)


def test_rows_per_clip_of_each_pair_rule():
    assert rows_per_clip("rwr", "margin", 4) == 1.0
    assert rows_per_clip("dpo", "margin", 4) == 1.5  # 6 pairs per 4 clips
    assert rows_per_clip("dpo", "best_worst", 4) == 0.25


def tiny_gpu_costs() -> RoleCosts:
    """10 s per clip, groups of 2, K = 1 step of 1 row at 1 s; nothing else costs."""
    return RoleCosts(
        clips=4, group=2, steps=1, micro_batch=1, gen_s_per_clip=10.0, reward_s_per_clip=0.0, train_s_per_step=1.0,
        data_s=0.0, sync_s=0.0, overhead_s=0.0, lora_bytes=0.0,
    )  # fmt: skip


def test_gpu_table_fixed_batch_saturates_at_one_group_per_generator():
    rows = gpu_table(tiny_gpu_costs(), totals=(4, 6, 32), rows_per_clip=0.5)
    sync = [r for r in rows if r["mode"] == "sync"]
    # 4 GPUs: 4 clips x 0.5 rows = 2 rows need M = 2, leaving N = 1, R = 1: 4 x 10 + 1 = 41 s
    assert (sync[0]["n_gen"], sync[0]["m_train"], sync[0]["reward_replicas"]) == (1, 2, 1)
    assert sync[0]["iteration_s"] == pytest.approx(41.0)
    # 6 GPUs: N = 2 samples one group each, 2 x 10 + 1 = 21 s, on 5 of the 6 GPUs (N = 3 is no faster)
    assert (sync[1]["n_gen"], sync[1]["gpus"], sync[1]["iteration_s"]) == (2, 5, pytest.approx(21.0))
    assert sync[1]["speedup"] == pytest.approx(41 / 21)
    # 32 GPUs: the 2 groups of the batch still bound it
    assert sync[2]["iteration_s"] == pytest.approx(21.0) and sync[2]["gpus"] == 5


def test_gpu_table_batch_grows_with_generators():
    rows = gpu_table(tiny_gpu_costs(), totals=(4, 6), rows_per_clip=0.5, clips_per_generator=2)
    grows = {(r["total"], r["mode"]): r for r in rows if r["scenario"] == "batch grows"}
    # 4 GPUs: B = 2 N clips need M = N trainers: N = 1, M = 1, R >= 1; 2 clips x 10 + 1 = 21 s
    r = grows[4, "sync"]
    assert (r["n_gen"], r["m_train"], r["clips"], r["gpus"], r["iteration_s"]) == (1, 1, 2, 3, pytest.approx(21.0))
    # 6 GPUs: N = 2, M = 2, B = 4: still 21 s, twice the clips
    r = grows[6, "sync"]
    assert (r["n_gen"], r["m_train"], r["clips"]) == (2, 2, 4) and r["speedup"] == pytest.approx(2.0)
    # one-step-off hides the 1 s of training: 4 clips in max(20, 1) = 20 s
    assert grows[6, "one_step_off"]["iteration_s"] == pytest.approx(20.0)
