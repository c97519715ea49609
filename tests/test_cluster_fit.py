"""The fit check: each role's bundles placed on the cluster's nodes (first fit), by hand-worked cases; the
message names every role's demand, what the cluster offers, what is short and the settings that shrink it."""

import pytest

from actors.cluster import FitError, Role, check_fit, fit_message, local_cpus, placement_problem


def roles(gen_cpus=1.0, gen_gpus=0.0):
    return [
        Role("generator actors", 2, {"CPU": gen_cpus, "GPU": gen_gpus}, "generators, generator_cpus"),
        Role("trainer workers", 2, {"CPU": 1.0}, "trainer.num_workers"),
        Role("reward replicas", 1, {"CPU": 1.0}, "reward.num_cpus"),
        Role("Ray Data tasks", 1, {"CPU": 1.0}),
    ]


def test_a_two_cpu_head_is_short_of_four_cpus():
    # 2 x 1 + 2 x 1 + 1 + 1 = 6 CPUs wanted, 2 offered: four single-CPU bundles find no room
    assert placement_problem(roles(), [{"CPU": 2.0, "memory": 8e9}]) == {"CPU": 4.0}
    assert placement_problem(roles(), [{"CPU": 6.0}]) == {}
    # half-CPU generators: 1 + 2 + 1 + 1 = 5
    assert placement_problem(roles(gen_cpus=0.5), [{"CPU": 5.0}]) == {}
    assert placement_problem(roles(gen_cpus=0.5), [{"CPU": 4.0}]) == {"CPU": 1.0}


def test_bundles_must_fit_on_one_node():
    # 2 CPUs in all but split 1 + 1: a 2-CPU bundle has no node
    short = placement_problem([Role("big", 1, {"CPU": 2.0})], [{"CPU": 1.0}, {"CPU": 1.0}])
    assert short == {"CPU": 1.0}
    # GPUs on a CPU node: short of 2 GPUs; custom resources likewise
    assert placement_problem(roles(gen_gpus=1.0), [{"CPU": 8.0}]) == {"GPU": 2.0}
    assert placement_problem([Role("reward", 1, {"CPU": 1.0, "reward": 1.0})], [{"CPU": 8.0}]) == {"reward": 1.0}
    # enough of each resource but never together on one node
    short = placement_problem([Role("g", 1, {"CPU": 1.0, "GPU": 1.0})], [{"CPU": 4.0}, {"GPU": 1.0}])
    assert list(short) == ["(one node with CPU 1, GPU 1)"]


def test_message_names_each_role_and_the_fix():
    msg = fit_message(roles(), [{"CPU": 2.0}], {"CPU": 4.0})
    assert "generator actors  2 x {CPU 1}   (shrink: generators, generator_cpus)" in msg
    assert "trainer workers" in msg and "reward replicas" in msg and "Ray Data tasks" in msg
    assert "needed in all: CPU 6; the cluster offers CPU 2 on 1 node(s); short: CPU 4" in msg
    assert "ray start --head --num-cpus N" in msg


def test_local_cluster_holds_every_role():
    assert local_cpus(roles()) >= 6
    assert local_cpus([Role("x", 1, {"CPU": 0.5})]) >= 1


def test_check_fit_without_autoscaler_stops_at_once(monkeypatch):
    import actors.cluster as c

    monkeypatch.setattr(c, "_alive_nodes", lambda: [{"CPU": 2.0}])  # what ray.nodes() reports
    with pytest.raises(FitError, match="short: CPU 4"):
        check_fit(roles(), autoscaling=False)
    check_fit(roles()[2:], autoscaling=False)  # 2 CPUs hold the reward replica and the Ray Data task
