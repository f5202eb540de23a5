"""Generations run side by side in forked processes (local backend) give exactly the serial results."""

from __future__ import annotations

import pytest

import cluster_sim
from cluster_sim import simulation
from cluster_sim.results import summary_json
from cluster_sim.scenario import scenario_from_dict
from cluster_sim.simulation import executors

GENS = ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]


def scenario(vms: int = 12, **run) -> cluster_sim.Scenario:
    return scenario_from_dict({
        "name": "parallel",
        "seed": 5,
        "cluster": {"nodes": 3, "node_memory_gib": 4096},
        "storage": {"csvs": 3},
        "fleet": [{"template": "win", "count": vms, "disks": [{"size_gib": 4}]},
                  {"template": "old", "count": 2, "scsi_controller": False, "disks": [{"size_gib": 2}]}],
        "backup": {"generations": GENS, "retry_wait_s": 60},
        "events": [{"kind": "crash_node", "at_s": 40.0, "node": "node-2"}],
        "run": {"until_s": 20000, **run},
    })


def test_side_by_side_generations_give_byte_identical_results_in_the_requested_order() -> None:
    sc = scenario()
    serial = cluster_sim.run(sc, backend="local", workers=1)
    seen: list[tuple[str, str]] = []
    side = cluster_sim.run(sc, backend="local", workers=3, progress=lambda g, what: seen.append((g, what)))
    assert [g.summary.generation for g in side.generations] == GENS
    for a, b in zip(serial.generations, side.generations, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]
        assert list(a.trace.lines()) == list(b.trace.lines())
    # every generation reported started and done, wherever it ran
    assert sorted(seen) == sorted([(g, "start") for g in GENS] + [(g, "done") for g in GENS])


def test_worker_count_follows_the_scenario_size_and_the_request() -> None:
    small, big = scenario(vms=12), scenario(vms=300)
    assert simulation.local_workers(small, 4) == 1  # under run.parallel_min_vms: one process
    assert simulation.local_workers(big, 1) == 1  # one generation: nothing to share
    assert simulation.local_workers(big, 4, workers=1) == 1
    assert simulation.local_workers(small, 4, workers=3) == 3  # asked for explicitly
    assert simulation.local_workers(small, 2, workers=8) == 2  # never more than generations
    assert simulation.local_workers(scenario(vms=12, workers=2), 4) == 2
    assert simulation.local_workers(scenario(vms=12, parallel_min_vms=10), 4) >= 1


def test_the_longest_generation_at_the_scenarios_size_is_handed_out_first() -> None:
    # registry.cost_of: VMs x (ms per VM + ms per VM and node x nodes). The headline, 800 VMs on 8
    # nodes: ws2008r2 800 x (1.54 + 0.045 x 8) = 1,520 ms, ws2012 800 x (2.43 + 0.021 x 8) = 2,078.4,
    # ws2012r2 800 x (2.97 + 0.004 x 8) = 2,401.6, ws2016 960: ws2012r2 first. Scaled to 8,000 on
    # 64 nodes: 35,360, 30,192, 25,808 and 9,600 ms: ws2008r2 first, and with two workers ws2016
    # after it, beside ws2012 then ws2012r2 (the one split of the four in two that ends soonest).
    from cluster_sim.backup.registry import cost_of

    assert [round(cost_of(g, 800, 8), 1) for g in GENS] == [1520.0, 2078.4, 2401.6, 960.0]
    assert [round(cost_of(g, 8000, 64), 1) for g in GENS] == [35360.0, 30192.0, 25808.0, 9600.0]
    assert cost_of(None, 800, 8) == 0.0

    def sized(vms: int, nodes: int) -> cluster_sim.Scenario:
        return scenario_from_dict({"name": "sized", "cluster": {"nodes": nodes}, "storage": {"csvs": nodes},
                                   "fleet": [{"template": "win", "count": vms, "memory_gib": 1,
                                              "disks": [{"size_gib": 4}]}],
                                   "backup": {"generations": GENS}})

    small, big = sized(800, 8), sized(8000, 64)
    assert small.vm_count() == 800 and big.vm_count() == 8000
    assert [GENS[i] for i in simulation.longest_first(small, GENS)] == ["ws2012r2", "ws2012", "ws2008r2", "ws2016"]
    assert [GENS[i] for i in simulation.longest_first(big, GENS)] == ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]


def test_a_generation_that_raises_in_a_worker_raises_in_the_caller(monkeypatch) -> None:
    real = executors.run_generation

    def broken(sc, generation, backend, **kw):  # type: ignore[no-untyped-def]
        if generation == "ws2012":
            raise ValueError("model bug in ws2012")
        return real(sc, generation, backend, **kw)

    monkeypatch.setattr(executors, "run_generation", broken)  # forked workers inherit it
    with pytest.raises(ValueError, match="model bug in ws2012"):
        cluster_sim.run(scenario(), backend="local", workers=2)
