"""The benchmark's per-role memory accounting: process titles as Ray sets them, mapped to the loop's roles."""

from __future__ import annotations

import pytest

from actors.bench import MemorySampler


@pytest.mark.parametrize(
    "title, role",
    [
        ("ray::GeneratorActor.rollout [sampling iteration 3, v2]", "generator actors"),
        ("ray::RayTrainWorker [rank 1 train iteration 2]", "trainer workers"),
        ("ray::TrainerCoordinator.next_task", "trainer system"),
        ("ray::TrainController.run", "trainer system"),
        ("ray::SynchronizationActor", "trainer system"),
        ("ray::ServeReplica:reward:RewardDeployment", "reward replica"),
        ("ray::ServeController", "serve system"),
        ("ray::ProxyActor", "serve system"),
        ("ray::WeightStore.fetch", "weight store"),
        ("ray::MapBatches(block_rows)", "Ray Data"),
        ("ray::get_table_block_metadata_schema", "Ray Data"),
        ("ray::execute._set_torch_distributed_env_vars", "trainer workers"),
        ("ray::_StatsActor", "Ray Data"),
        ("ray::IDLE", "idle Ray workers"),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp", "ray system"),
        ("ray-dashboard-NodeHead-0 (/venv/bin/python -B -c from multiprocessing.forkserver import", "ray system"),
        ("ray::SomethingNew", "other Ray workers"),
        ("/usr/bin/prometheus --config.file=x", "other processes"),
    ],
)
def test_process_titles_map_to_roles(title, role):
    assert MemorySampler.role(title) == role


def test_recorded_titles_hold_no_machine_paths():
    from actors.bench import process_title

    cmd = "/work/main/.venv/bin/python -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"
    assert process_title(cmd) == "python -B -c from multiprocessing.spawn import spawn_main; s"
    assert process_title("ray::TrainController.run") == "ray::TrainController.run"
    assert process_title("/usr/lib/prometheus/prometheus --config.file=/tmp/p.yml") == "prometheus --config.file=p.yml"
