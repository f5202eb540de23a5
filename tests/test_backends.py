"""The local and Ray node backends give the same results; a dead node actor is a failed node."""

from __future__ import annotations

import pytest
from chaos import run_killing

import cluster_sim
from cluster_sim.results import summary_json
from cluster_sim.scenario import scenario_from_dict


def small(backup: bool = True, **over) -> cluster_sim.Scenario:
    d = {
        "name": "backends",
        "seed": 11,
        "cluster": {"nodes": 3},
        "storage": {"csvs": 3},
        "fleet": [
            {"template": "win", "count": 9, "disks": [{"size_gib": 4}, {"size_gib": 6}]},
            {"template": "lnx", "count": 3, "guest_os": "linux", "disks": [{"size_gib": 4}]},
            {"template": "dyn", "count": 3, "dynamic_disks": True, "disks": [{"size_gib": 4}]},
        ],
        "run": {"until_s": 20000, "steady_duration_s": 1500, "ray_num_cpus": 2},
    }
    if backup:
        d["backup"] = {"generations": ["ws2008r2", "ws2012", "ws2012r2", "ws2016"], "retry_wait_s": 60}
    d.update(over)
    return scenario_from_dict(d)


@pytest.mark.slow
def test_local_and_ray_backends_write_byte_identical_summaries(ray_session):
    sc = small()
    local = cluster_sim.run(sc, backend="local")
    ray_ = cluster_sim.run(sc, backend="ray")
    assert [g.summary.generation for g in ray_.generations] == ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]
    for a, b in zip(local.generations, ray_.generations, strict=True):
        assert summary_json(a.summary) == summary_json(b.summary)
        assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]
        assert a.summary.audit.ok
    # the Ray backend kept its actors alive between generations and answered every poll
    assert all(not g.summary.node_failures for g in ray_.generations)


@pytest.mark.slow
def test_ray_actor_killed_mid_run_is_reported_as_that_node_failing(ray_session):
    sc = small(backup=False)
    poll = sc.cluster.node_poll_interval_s  # 600 s: the death is found by the second poll after it
    res = run_killing(sc, [("node-2", 400.0)], backend="ray")
    g = res.generations[0]
    fails = g.summary.node_failures
    assert [(f.node, f.how) for f in fails] == [("node-2", "actor_died")]
    assert fails[0].detected_s == pytest.approx(2 * poll)
    assert fails[0].vms_down == 5  # 15 VMs round-robin over 3 nodes
    # its VMs failed over to the survivors and booted there (failover_boot_s = 60 s)
    assert g.summary.failovers == 1 and g.summary.vms_restarted == 5
    moved = [r for r in g.vms if r.nodes_visited.startswith("node-2|")]
    assert len(moved) == 5 and {r.node for r in moved} <= {"node-1", "node-3"}
    assert all(r.outcome == "running" and r.downtime_s == pytest.approx(60.0) for r in moved)
    assert g.summary.sim_end_s == pytest.approx(1500)  # the run went on to its end
    # the local backend, with the same hook, gives the same summary
    loc = run_killing(sc, [("node-2", 400.0)], backend="local")
    assert summary_json(loc.generations[0].summary) == summary_json(g.summary)


def test_killed_local_node_is_found_by_the_second_poll_after_its_death_and_its_vms_fail_over():
    sc = small(backup=False)
    poll = sc.cluster.node_poll_interval_s  # 600 s
    g = run_killing(sc, [("node-3", 10.0)], backend="local").generations[0]
    # the poll at 600 s sends the dead node its batch; the poll at 1200 s reads that it did not answer
    assert [(f.node, f.detected_s) for f in g.summary.node_failures] == [("node-3", 2 * poll)]
    rows = {r.vm: r for r in g.vms}
    assert not any(r.node == "node-3" for r in rows.values())  # nothing runs on the dead node
    restarted = [r for r in rows.values() if r.nodes_visited.startswith("node-3|")]
    assert len(restarted) == 5 and all(r.outcome == "running" for r in restarted)
