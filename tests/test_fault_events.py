"""The fault events of README "Fault events", per generation, with numbers worked out by hand.

Small clusters of 2-4 nodes with one VM per node (round-robin: win-000k on node-k, its disks on
csv-k, coordinated by node-k; csv-k's LUN first owned by array controller (k-1) % 2 + 1).
`guest_freeze_sigma: 0` makes every guest freeze take its median (3 s), so VMs of different nodes
reach the same step at the same instant. Detection: 10 missed 1 s heartbeats; failover boot 60 s;
retries wait 600 s unless said otherwise.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from backup_helpers import ALL_GENS, PRE_2016, run_gens, scenario_dict, template

import cluster_sim
from cluster_sim.results import GenerationResult, summary_json
from cluster_sim.scenario import scenario_from_dict

NO_LEAKS = {"snapshots": 0, "checkpoints": 0, "mounts": 0, "redirected_holds": 0, "hot_adds": 0}


def events_of(g: GenerationResult, name: str, **match: Any) -> list[tuple[float, dict]]:
    return [(t, ids) for t, ev, ids in g.trace.events
            if ev == name and all(ids.get(k) == v for k, v in match.items())]


def row(g: GenerationResult, vm: str):  # type: ignore[no-untyped-def]
    return next(r for r in g.vms if r.vm == vm)


def steady(d: dict) -> GenerationResult:
    """The scenario without its backup section (VM I/O only)."""
    d = dict(d)
    d.pop("backup", None)
    d["run"] = {**d["run"], "latency_series_step_s": 0.0}
    return cluster_sim.run(scenario_from_dict(d), backend="local").generations[0]


def p50_at(g: GenerationResult, t: float) -> float:
    """The median VM latency in force at instant t (the series holds every change)."""
    s = g.latency_series
    k = max(i for i, ti in enumerate(s["t_s"]) if ti <= t)
    return s["p50_ms"][k]


# ==============================================================================================
# partition and quorum
# ==============================================================================================
# 4 nodes, win-0001..4 one per node. The cluster network is cut between {node-3, node-4} and
# {node-1, node-2} at t=5 for 300 s; detected at 5 + 10 = 15.
def partition_dict(nodes: list[str], witness: bool = False, n: int = 4, **backup: Any) -> dict:
    d = scenario_dict(fleet=[template("win", count=n)], nodes=n, backup={"guest_freeze_sigma": 0.0, **backup})
    d["cluster"]["witness"] = witness
    d["events"] = [{"kind": "partition", "at_s": 5.0, "nodes": nodes, "duration_s": 300.0}]
    return d


@functools.cache
def split_2_2(witness: bool) -> dict[str, GenerationResult]:
    return run_gens(partition_dict(["node-3", "node-4"], witness))


def failed_nodes(g: GenerationResult) -> list[tuple[str, float, str]]:
    return [(f.node, f.detected_s, f.how) for f in g.summary.node_failures]


@pytest.mark.parametrize("gen", ["ws2008r2", "ws2012"])
def test_a_2_2_split_without_witness_stops_the_whole_cluster_until_it_heals_before_2012r2(gen: str) -> None:
    # node majority: 2 of 4 votes is not a majority on either side (no tie-breaker before 2012 R2)
    g = split_2_2(False)[gen]
    assert failed_nodes(g) == [(f"node-{i}", 15.0, "partition") for i in range(1, 5)]
    assert [ids["node"] for _t, ids in events_of(g, "quorum_lost")] == ["node-1", "node-2", "node-3", "node-4"]
    # every VM is down from 15 s until the cut heals at 305 s and it boots on its own node (60 s)
    for k in range(1, 5):
        r = row(g, f"win-{k:04d}")
        assert r.downtime_s == pytest.approx(305.0 + 60.0 - 15.0)
        assert r.nodes_visited == f"node-{k}|node-{k}"
        assert [t for t, _ in events_of(g, "vm_restarted", vm=r.vm)] == [pytest.approx(365.0)]
    assert [t for t, _ in events_of(g, "node_rejoined")] == [305.0] * 4
    # their backups failed (quorum_lost) and the retries 600 s later succeeded
    assert g.summary.outcomes.app_consistent == 4 and g.summary.retries == 4
    assert {ids["reason"] for _t, ids in events_of(g, "vm_attempt_failed")} == {"quorum_lost"}
    assert g.summary.audit.ok, g.summary.audit.violations


@pytest.mark.parametrize("gen", ["ws2012r2", "ws2016"])
def test_a_2_2_split_without_witness_is_won_by_the_side_the_tie_breaker_favours_from_2012r2(gen: str) -> None:
    # dynamic quorum's tie-breaker takes node-4's vote: 2 of 3 votes for {node-1, node-2}
    g = split_2_2(False)[gen]
    assert failed_nodes(g) == [("node-3", 15.0, "partition"), ("node-4", 15.0, "partition")]
    assert row(g, "win-0003").nodes_visited == "node-3|node-1"
    assert row(g, "win-0004").nodes_visited == "node-4|node-2"
    assert [row(g, f"win-{k:04d}").downtime_s for k in range(1, 5)] == [0.0, 0.0, 60.0, 60.0]
    assert {c.csv: c.coordinator for c in g.csvs} == {"csv-1": "node-1", "csv-2": "node-2", "csv-3": "node-1",
                                                      "csv-4": "node-2"}
    assert g.summary.outcomes.app_consistent == 4
    assert g.summary.audit.ok, g.summary.audit.violations


def test_ws2016s_one_set_fails_when_the_cut_separates_its_node_from_a_luns_coordinator() -> None:
    # the set node (node-1) cannot reach csv-3's and csv-4's coordinators over the cut: the whole set
    # fails with cluster_partition before anyone lost quorum; every VM is retried
    g = split_2_2(False)["ws2016"]
    (t, ids), = events_of(g, "snapshot_set_failed")
    assert ids["code"] == "cluster_partition" and 5.0 < t < 15.0
    assert sorted(ids["vm"] for _t, ids in events_of(g, "vm_attempt_failed")) == [f"win-{k:04d}" for k in range(1, 5)]


@pytest.mark.parametrize("gen", ALL_GENS)
def test_with_a_witness_the_side_holding_it_wins_a_2_2_split_on_every_generation(gen: str) -> None:
    g = split_2_2(True)[gen]
    assert failed_nodes(g) == [("node-3", 15.0, "partition"), ("node-4", 15.0, "partition")]
    assert [row(g, f"win-{k:04d}").downtime_s for k in range(1, 5)] == [0.0, 0.0, 60.0, 60.0]


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_3_1_split_stops_only_the_cut_off_node_and_it_rejoins_when_the_cut_heals(gen: str) -> None:
    g = run_gens(partition_dict(["node-4"]), [gen])[gen]
    assert failed_nodes(g) == [("node-4", 15.0, "partition")]
    assert [t for t, _ in events_of(g, "node_rejoined", node="node-4")] == [305.0]
    assert row(g, "win-0004").downtime_s == 60.0
    assert g.summary.failovers == 1 and g.summary.vms_restarted == 1
    assert g.summary.outcomes.app_consistent == 4
    assert g.summary.leaks.model_dump() == NO_LEAKS


@pytest.mark.parametrize(("gen", "stops"), [("ws2008r2", True), ("ws2012", True), ("ws2012r2", False),
                                            ("ws2016", False)])
def test_a_witness_held_by_a_lone_node_stops_a_3_node_cluster_unless_the_witness_is_dynamic(gen: str, stops: bool) -> None:
    # 3 nodes and a witness, cut {node-1} | {node-2, node-3}; node-1 (lowest-numbered) holds the
    # witness. Before 2012 R2 the witness always votes: 1 + 1 against 2 of 4 votes, no majority
    # anywhere. From 2012 R2 it votes only when the members are even: 2 of 3 for {node-2, node-3}.
    g = run_gens(partition_dict(["node-1"], witness=True, n=3), [gen])[gen]
    expected = [("node-1", 15.0), ("node-2", 15.0), ("node-3", 15.0)] if stops else [("node-1", 15.0)]
    assert [(n, t) for n, t, _how in failed_nodes(g)] == expected


@pytest.mark.parametrize(("gen", "stops"), [("ws2008r2", True), ("ws2012", False), ("ws2012r2", False),
                                            ("ws2016", False)])
def test_static_quorum_counts_a_crashed_node_dynamic_quorum_does_not(gen: str, stops: bool) -> None:
    # node-4 crashed at 0 (out of the membership at 10); the cut {node-3} | {node-1, node-2} at 20:
    # 2008 R2 counts 4 votes (2 is no majority: the cluster stops), 2012 and later 3 (2 of 3 wins)
    d = partition_dict(["node-3"])
    d["events"] = [{"kind": "crash_node", "at_s": 0.0, "node": "node-4"},
                   {"kind": "partition", "at_s": 20.0, "nodes": ["node-3"], "duration_s": 300.0}]
    g = run_gens(d, [gen])[gen]
    lost = [(n, t) for n, t, how in failed_nodes(g) if how == "partition"]
    assert lost == ([("node-1", 30.0), ("node-2", 30.0), ("node-3", 30.0)] if stops else [("node-3", 30.0)])


def test_a_cut_that_heals_before_the_heartbeat_threshold_stops_nothing() -> None:
    d = partition_dict(["node-3", "node-4"])
    d["events"][0]["duration_s"] = 9.0  # detection would be at 15; it heals at 14
    for gen, g in run_gens(d).items():
        assert g.summary.node_failures == [], gen
        assert events_of(g, "quorum_lost") == []


def test_live_migrations_across_the_cut_fail_and_one_within_a_side_goes_on() -> None:
    # steady state, 4 nodes with a witness ({node-1, node-2} win): win-0001 is asked to move to
    # node-3 during the cut (refused: cluster_partition), win-0003 to node-4 on its own side (moves
    # before the detection at 15), win-0002 to node-3 from before the cut (its pre-copy is cut: fails)
    d = partition_dict(["node-3", "node-4"], witness=True)
    d["fleet"][0]["memory_gib"] = 8  # 8 GiB at 1150 MiB/s: 7.1 s for the first round
    d["events"] += [{"kind": "migrate_vm", "at_s": 1.0, "vm": "win-0002", "to": "node-3"},
                    {"kind": "migrate_vm", "at_s": 6.0, "vm": "win-0001", "to": "node-3"},
                    {"kind": "migrate_vm", "at_s": 6.0, "vm": "win-0003", "to": "node-4"}]
    g = steady(d)
    fails = {ids["vm"]: ids["reason"] for _t, ids in events_of(g, "migration_failed")}
    assert fails == {"win-0001": "cluster_partition", "win-0002": "interrupted"}
    assert [ids["vm"] for _t, ids in events_of(g, "migration_done")] == ["win-0003"]
    assert g.summary.migrations.failed == 2 and g.summary.migrations.completed == 1


# ==============================================================================================
# array controller failure
# ==============================================================================================
# 2 nodes, 2 CSVs: csv-1's LUN on controller 1, csv-2's on controller 2. The freezes end together,
# so both nodes ask for their set at the same instant.
def controller_dict(events: list[dict], **backup: Any) -> dict:
    d = scenario_dict(fleet=[template("win", count=2)], nodes=2, backup={"guest_freeze_sigma": 0.0, **backup})
    d["events"] = events
    return d


def holds(g: GenerationResult) -> list[float]:
    return [ids["hold_s"] for _t, ids in events_of(g, "snapshot_set_done")]


@pytest.mark.parametrize("gen", PRE_2016)
def test_a_failed_controllers_luns_queue_at_the_survivor_and_their_sets_wait_for_each_other(gen: str) -> None:
    # alone at their controllers both sets commit in 0.5 s; with controller 1 down, csv-1's LUN is
    # on controller 2: the first set's commit costs 0.5 + 0.25 (one other request pending) = 0.75 s,
    # the second waits for it and then commits in 0.5 s: its writes are held 1.25 s
    quiet = run_gens(controller_dict([]), [gen])[gen]
    hit = run_gens(controller_dict([{"kind": "controller_fail", "at_s": 0.0, "controller": 1,
                                     "duration_s": 3000.0}]), [gen])[gen]
    assert holds(quiet) == [0.5, 0.5]
    assert holds(hit) == [0.75, 1.25]
    assert [(ids["csv"], ids["controller"], ids["to"]) for _t, ids in events_of(hit, "lun_failover")] == \
        [("csv-1", 1, 2)]
    assert hit.summary.outcomes.app_consistent == 2 and hit.summary.leaks.model_dump() == NO_LEAKS


def test_ws2016s_one_set_commits_once_whichever_controllers_hold_its_luns() -> None:
    # one consistency group over both LUNs: 0.5 + 0.05 (a second LUN) = 0.55 s either way
    quiet = run_gens(controller_dict([]), ["ws2016"])["ws2016"]
    hit = run_gens(controller_dict([{"kind": "controller_fail", "at_s": 0.0, "controller": 1,
                                     "duration_s": 3000.0}]), ["ws2016"])["ws2016"]
    assert holds(quiet) == holds(hit) == [0.55]


@pytest.mark.parametrize("gen", PRE_2016)
def test_a_set_committing_at_a_controller_that_fails_fails_and_is_retried(gen: str) -> None:
    quiet = run_gens(controller_dict([]), [gen])[gen]
    (t0, ids), = events_of(quiet, "snapshot_set_start", node="node-1")
    at = t0 + 0.25  # halfway through csv-1's 0.5 s commit at controller 1
    g = run_gens(controller_dict([{"kind": "controller_fail", "at_s": at, "controller": 1, "duration_s": 60.0}],
                                 retry_wait_s=60), [gen])[gen]
    (tf, f), = events_of(g, "snapshot_failed")
    assert (tf, f["code"], f["csv"], f["controller"]) == (at, "controller_failover", "csv-1", 1)
    (ta, a), = events_of(g, "vm_attempt_failed")
    assert (a["vm"], a["reason"]) == ("win-0001", "controller_failover")
    assert row(g, "win-0001").retries == 1 and row(g, "win-0002").retries == 0
    assert g.summary.outcomes.app_consistent == 2
    # its LUN came back to controller 1 at at + 60
    assert [(t, ids["csv"], ids["to"]) for t, ids in events_of(g, "lun_failback")] == [(at + 60.0, "csv-1", 1)]
    assert g.summary.leaks.model_dump() == NO_LEAKS and g.summary.audit.ok


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_deletion_at_a_controller_that_fails_leaves_the_snapshot_counted_against_the_fault(gen: str) -> None:
    quiet = run_gens(controller_dict([]), [gen])[gen]
    (t_rel, _), = events_of(quiet, "snapshot_released", csv="csv-1")
    at = t_rel - 1.0  # halfway through its 2 s deletion at controller 1
    g = run_gens(controller_dict([{"kind": "controller_fail", "at_s": at, "controller": 1, "duration_s": 60.0}]),
                 [gen])[gen]
    (t, ids), = events_of(g, "snapshot_delete_failed")
    assert (t, ids["csv"], ids["code"]) == (at, "csv-1", "controller_failover")
    assert g.summary.leaks.snapshots == 1
    assert g.summary.fault_leaks["controller_fail"].model_dump() == {**NO_LEAKS, "snapshots": 1}
    assert g.summary.audit.ok, g.summary.audit.violations  # counted, not a violation
    assert g.summary.outcomes.app_consistent == 2  # the backups themselves were done


def test_the_survivor_carries_the_failed_controllers_iops_and_latency_rises_accordingly() -> None:
    # steady state, one VM per LUN, 150 I/Os per second each (100 reads, 50 writes of 8 KiB); the
    # array has 3,000 IOPS, 1,500 per controller. Each VM's latency is its controller's
    # R = 0.5 / (1 - rho) plus its fabric's 0.05 / (1 - 1.171875 / 1600):
    # before: rho = 150 / 1500 = 0.1 -> 0.555556 + 0.050037 = 0.605592 ms
    # during: rho = 300 / 1500 = 0.2 -> 0.625 + 0.050037 = 0.675037 ms (array bandwidth halves too,
    #         but 1.17 MiB/s of 3,000 is nothing)
    d = controller_dict([{"kind": "controller_fail", "at_s": 100.0, "controller": 1, "duration_s": 200.0}])
    d["storage"]["array"]["iops"] = 3000.0
    g = steady(d)
    fabric = 0.05 / (1 - 1.171875 / 1600)
    assert p50_at(g, 50.0) == pytest.approx(0.5 / 0.9 + fabric, rel=1e-6)
    assert p50_at(g, 150.0) == pytest.approx(0.5 / 0.8 + fabric, rel=1e-6)
    assert p50_at(g, 350.0) == pytest.approx(0.5 / 0.9 + fabric, rel=1e-6)  # failed back at 300


# ==============================================================================================
# a node's storage path
# ==============================================================================================
def path_dict(events: list[dict], size_gib: float = 8.0, **backup: Any) -> dict:
    d = scenario_dict(fleet=[template("win", count=2, size_gib=size_gib)], nodes=2,
                      backup={"guest_freeze_sigma": 0.0, "retry_wait_s": 60, **backup})
    d["cluster"]["networks"] = {"backup_target_mib_s": 100.0}
    d["events"] = events
    return d


def test_a_node_without_its_fabric_reaches_its_csvs_over_smb_and_its_vms_feel_two_hops_more() -> None:
    # steady state: node-2 loses its fabric at 100 for 200 s; csv-2 (its own) moves to node-1 and
    # win-0002's I/O goes node-2 -> node-1 over SMB, then node-1's fabric [MS]. Latency: the array's
    # 0.5 / (1 - 150 / 100000), plus before: node-2's fabric 0.05 / (1 - 1.171875 / 1600);
    # during: two SMB hops 0.1 / (1 - 1.171875 / 1150) and node-1's fabric carrying both VMs,
    # 0.05 / (1 - 2.34375 / 1600). win-0001 is untouched.
    d = path_dict([{"kind": "storage_path_loss", "at_s": 100.0, "node": "node-2", "duration_s": 200.0}])
    g = steady(d)
    array = 0.5 / (1 - 150 / 100000)
    before = array + 0.05 / (1 - 1.171875 / 1600)
    during_2 = array + 2 * 0.1 / (1 - 1.171875 / 1150) + 0.05 / (1 - 2.34375 / 1600)
    during_1 = array + 0.05 / (1 - 2.34375 / 1600)
    s = g.latency_series
    k = max(i for i, t in enumerate(s["t_s"]) if t <= 150.0)
    assert s["p99_ms"][k] == pytest.approx(during_2, rel=1e-6)
    assert s["p50_ms"][k] == pytest.approx(during_1, rel=1e-6)
    assert p50_at(g, 50.0) == pytest.approx(before, rel=1e-6)
    (t, ids), = events_of(g, "csv_owner_moved")
    assert (t, ids["csv"], ids["node"], ids["previous"]) == (100.0, "csv-2", "node-1", "node-2")


@pytest.mark.parametrize("gen", ALL_GENS)
def test_backups_read_on_a_node_without_its_fabric_fail_and_succeed_once_it_is_back(gen: str) -> None:
    # node-2 loses its fabric at 1 s for 100 s; the hardware snapshot LUN of win-0002 cannot be
    # surfaced on (or read by) node-2: storage_path_lost, retried every 60 s until the fabric is back.
    g = run_gens(path_dict([{"kind": "storage_path_loss", "at_s": 1.0, "node": "node-2", "duration_s": 100.0}]),
                 [gen])[gen]
    reasons = [ids["reason"] for _t, ids in events_of(g, "vm_attempt_failed", vm="win-0002")]
    assert reasons and set(reasons) == {"storage_path_lost"}
    assert row(g, "win-0001").retries == 0
    assert row(g, "win-0002").outcome == "app_consistent"
    (t_copy, _), = events_of(g, "copy_start", vm="win-0002")
    assert t_copy > 101.0  # only once node-2 reaches the storage again
    assert g.summary.leaks.model_dump() == NO_LEAKS and g.summary.audit.ok


def test_ws2016_takes_its_set_on_a_node_that_still_reaches_the_storage() -> None:
    g = run_gens(path_dict([{"kind": "storage_path_loss", "at_s": 0.0, "node": "node-1", "duration_s": 1000.0}]),
                 ["ws2016"])["ws2016"]
    assert {ids["node"] for _t, ids in events_of(g, "snapshot_set_start")} == {"node-2"}


def test_a_software_shadow_copy_on_another_node_is_read_over_smb_by_a_node_without_its_fabric() -> None:
    # software provider: the shadow copy of csv-1 lives on its coordinator; win-0003 runs on node-1
    # but has its disks on csv-2 (spread), whose coordinator is node-2. node-1 loses its fabric
    # after the snapshot: its copy reads node-2's shadow copy over SMB and succeeds at once.
    d = path_dict([], size_gib=2.0, provider="software")
    d["fleet"] = [template("win", count=3, size_gib=2.0)]
    d["placement"] = "spread"
    quiet = run_gens(d, ["ws2012"])["ws2012"]
    assert (row(quiet, "win-0003").node, row(quiet, "win-0003").csv) == ("node-1", "csv-2")
    (t_copy, _), = events_of(quiet, "copy_start", vm="win-0003")
    d["events"] = [{"kind": "storage_path_loss", "at_s": t_copy - 0.5, "node": "node-1", "duration_s": 1000.0}]
    g = run_gens(d, ["ws2012"])["ws2012"]
    assert row(g, "win-0003").retries == 0 and row(g, "win-0003").outcome == "app_consistent"


# ==============================================================================================
# the backup target
# ==============================================================================================
# 2 VMs of 4 GiB used data each, a target of 100 MiB/s: the two copies share it (50 MiB/s each).
def test_a_target_slowdown_stretches_the_copies_by_what_it_withheld() -> None:
    # half the rate for 20 s withholds 20 x 50 = 1,000 MiB: both copies end 10 s later at 100 MiB/s
    for gen in ALL_GENS:
        quiet = run_gens(path_dict([]), [gen])[gen]
        (t_copy, _), = events_of(quiet, "copy_start", vm="win-0002")
        ev = {"kind": "target_slowdown", "at_s": t_copy + 1.0, "factor": 0.5, "duration_s": 20.0}
        g = run_gens(path_dict([ev]), [gen])[gen]
        ends = [t for t, _ in events_of(g, "copy_end")]
        assert ends == pytest.approx([t + 10.0 for t, _ in events_of(quiet, "copy_end")], abs=1e-6), gen
        assert g.summary.retries == 0


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_target_outage_fails_the_copies_in_flight_and_the_retries_after_it_succeed(gen: str) -> None:
    # the outage starts 5 s into the copies and lasts 100 s; copies started during it fail at once;
    # bytes copied count what reached the target before it went away (100 MiB/s throughout)
    quiet = run_gens(path_dict([]), [gen])[gen]
    first = min(t for t, _ in events_of(quiet, "copy_start"))
    at = first + 5.0
    g = run_gens(path_dict([{"kind": "target_outage", "at_s": at, "duration_s": 100.0}]), [gen])[gen]
    failed = events_of(g, "vm_attempt_failed")
    assert {ids["reason"] for _t, ids in failed} == {"target_unreachable"}
    assert [(t, ids["vm"]) for t, ids in failed if t == at] == [(at, "win-0001"), (at, "win-0002")]
    assert all(not (at < t < at + 100.0) for t, _ in events_of(g, "copy_end"))
    assert g.summary.outcomes.app_consistent == 2
    assert g.summary.bytes_copied_mib == pytest.approx(8192.0 + 100.0 * 5.0, abs=1e-6)
    assert g.summary.leaks.model_dump() == NO_LEAKS


# ==============================================================================================
# the backup application crashes
# ==============================================================================================
# 3 nodes, one VM each, and a tail VM on node-1 with 8 disks of 8 GiB; merges at 1 MiB/s last.
CRASH_FLEET = [template("win", count=3), template("tail", count=1, disks=8, size_gib=8)]


def crash_dict(events: list[dict], **backup: Any) -> dict:
    d = scenario_dict(fleet=CRASH_FLEET, nodes=3, backup={"merge_mib_s": 1.0, **backup})
    d["events"] = events
    return d


@functools.cache
def crash_quiet(gen: str) -> GenerationResult:
    return run_gens(crash_dict([]), [gen])[gen]


def held_at(g: GenerationResult, t: float) -> dict[str, int]:
    """From a clean run's trace, what the job held at instant t: hardware snapshots committed and
    not yet asked to be removed, checkpoints not yet merged, VHDs mounted by auto-recovery, VMs with
    the AutoRecovery disk hot-added."""
    removing = {s: tr for tr, ids in events_of(g, "snapshots_removing") for s in ids["snapshots"]}
    snaps = sum(1 for tc, ids in events_of(g, "snapshot_created")
                if tc <= t and removing.get(ids["snapshot"], float("inf")) > t)
    merged = {ids["checkpoint"]: tm for tm, ids in events_of(g, "checkpoint_merged")}
    cps = sum(1 for tc, ids in events_of(g, "checkpoint_created")
              if tc <= t and merged.get(ids["checkpoint"], float("inf")) > t)
    return {"snapshots": snaps, "checkpoints": cps}


def mounted_at(g: GenerationResult, t: float) -> int:
    """VHDs auto-recovery had mounted on the hosts at instant t (from a clean run's trace)."""
    disks = {"tail-0001": 8}
    n = 0
    for t0, ids in events_of(g, "auto_recovery_start"):
        t1 = min(tt for tt, _ in events_of(g, "auto_recovery_done", node=ids["node"]) if tt >= t0)
        if t0 <= t < t1:
            n += sum(disks.get(vm, 1) for vm in ids["members"])
    return n


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_crash_of_the_backup_application_without_restart_fails_the_rest_and_leaves_what_it_held(gen: str) -> None:
    quiet = crash_quiet(gen)
    (t0, _), = events_of(quiet, "copy_start", vm="win-0002")
    (t1, _), = events_of(quiet, "copy_end", vm="win-0002")
    at = (t0 + t1) / 2
    g = run_gens(crash_dict([{"kind": "backup_server_crash", "at_s": at}]), [gen])[gen]
    s = g.summary
    done_before = sum(1 for r in quiet.vms if r.end_s is not None and r.end_s < at)
    assert s.outcomes.failed == 4 - done_before
    assert s.failures_by_reason == {"backup_server_crashed": 4 - done_before}
    assert s.backup_window_s == pytest.approx(at)  # the job ended with it
    expected = held_at(quiet, at)
    assert s.leaks.snapshots == expected["snapshots"] > 0
    assert s.leaks.checkpoints == expected["checkpoints"]
    assert s.fault_leaks["backup_server_crash"].model_dump() == s.leaks.model_dump()
    assert s.audit.ok, s.audit.violations  # counted against the fault, not violations
    if gen in ("ws2008r2", "ws2012"):  # auto-recovery under way (the tail's 8 VHDs): left mounted
        assert s.leaks.mounts == mounted_at(quiet, at) == 8


def test_ws2016s_application_dying_during_its_set_leaves_every_checkpoint_and_no_snapshot() -> None:
    # the set is not committed (VSS aborts it): no storage snapshot; the four production
    # checkpoints made for it stay, AVHDX for someone to merge
    quiet = crash_quiet("ws2016")
    (t0, ids), = events_of(quiet, "snapshot_set_start")
    (t1, _), = events_of(quiet, "snapshot_set_done", set=ids["set"])
    g = run_gens(crash_dict([{"kind": "backup_server_crash", "at_s": (t0 + t1) / 2}]), ["ws2016"])["ws2016"]
    assert g.summary.leaks.model_dump() == {**NO_LEAKS, "checkpoints": 4}
    assert g.summary.fault_leaks["backup_server_crash"].checkpoints == 4
    assert g.summary.hw_snapshots_created == 0 and g.summary.outcomes.failed == 4


def test_a_dead_ws2008r2_backup_leaves_its_csv_marked_backup_in_progress_for_30_minutes() -> None:
    quiet = crash_quiet("ws2008r2")
    (t0, _), = events_of(quiet, "copy_start", vm="win-0002")
    g = run_gens(crash_dict([{"kind": "backup_server_crash", "at_s": t0 + 1.0}]), ["ws2008r2"])["ws2008r2"]
    stale = [(t, ids) for t, ids in events_of(g, "csv_redirect_hold") if ids["kind"] == "backup_in_progress"]
    assert {ids["csv"] for _t, ids in stale} >= {"csv-2"}
    for t, ids in stale:
        assert t == t0 + 1.0
        (t_rel, _), = [(tr, r) for tr, r in events_of(g, "csv_redirect_release") if r["hold"] == ids["hold"]]
        assert t_rel - t == pytest.approx(1800.0)  # stale_backup_hold_s [MS]
    assert g.summary.sim_end_s >= t0 + 1.0 + 1800.0 - 1e-6  # the run waits for the cluster's own timeout
    assert g.summary.leaks.redirected_holds == 0


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_restarted_backup_application_gives_the_vms_without_an_outcome_a_new_attempt(gen: str) -> None:
    quiet = crash_quiet(gen)
    (t0, _), = events_of(quiet, "copy_start", vm="win-0002")
    at = t0 + 1.0
    g = run_gens(crash_dict([{"kind": "backup_server_crash", "at_s": at, "restart_after_s": 600.0}]), [gen])[gen]
    s = g.summary
    assert s.failures_by_reason.get("backup_server_crashed", 0) == 0
    (t_restart, ids), = events_of(g, "job_restarted")
    assert t_restart == at + 600.0
    waiting = [r.vm for r in quiet.vms if r.end_s is None or r.end_s > at]
    assert ids["vms"] == len(waiting)
    for vm in waiting:  # each started again after the restart
        assert max(t for t, _ in events_of(g, "vm_attempt", vm=vm)) >= at + 600.0
    assert s.outcomes.failed == (1 if gen == "ws2012r2" and held_hot_add(quiet, at) else 0)
    assert s.audit.ok, s.audit.violations
    assert s.leaks.snapshots == held_at(quiet, at)["snapshots"]  # the restart does not clean up


def held_hot_add(g: GenerationResult, t: float) -> bool:
    return any(t0 <= t < t1 for t0, t1 in zip([t for t, _ in events_of(g, "scsi_fixup_start")],
                                              [t for t, _ in events_of(g, "scsi_fixup_done")], strict=False))


def test_ws2012r2_backup_dying_in_the_fix_up_leaves_the_autorecovery_disk_and_the_vm_then_fails_0x800423fb() -> None:
    quiet = crash_quiet("ws2012r2")
    (t0, ids), = events_of(quiet, "scsi_fixup_start", vm="win-0002")
    at = t0 + 3.0  # halfway through its 6 s fix-up
    fixing = sorted(vm for vm in ("win-0001", "win-0002", "win-0003", "tail-0001")
                    if events_of(quiet, "scsi_fixup_start", vm=vm)
                    and events_of(quiet, "scsi_fixup_start", vm=vm)[0][0] <= at
                    < events_of(quiet, "scsi_fixup_done", vm=vm)[0][0])
    assert "win-0002" in fixing
    g = run_gens(crash_dict([{"kind": "backup_server_crash", "at_s": at, "restart_after_s": 60.0}]),
                 ["ws2012r2"])["ws2012r2"]
    assert g.summary.leaks.hot_adds == len(fixing)
    assert g.summary.fault_leaks["backup_server_crash"].hot_adds == len(fixing)
    for vm in fixing:
        r = row(g, vm)
        assert (r.outcome, r.reason) == ("failed", "autorecovery_avhdx_leftover")
        assert r.retries == 1  # the restart's attempt fails at once, for good (no retry cures it)
    assert g.summary.outcomes.failed == len(fixing)
    assert g.summary.audit.ok


def test_a_scheduled_job_due_while_the_backup_application_is_down_waits_for_it() -> None:
    d = crash_dict([{"kind": "backup_server_crash", "at_s": 3000.0, "restart_after_s": 900.0}],
                   schedule=[{"at_s": 0.0, "mode": "full"}, {"at_s": 3600.0, "mode": "incremental"}])
    g = run_gens(d, ["ws2016"])["ws2016"]
    starts = [t for t, _ in events_of(g, "job_start")]
    assert starts[1] == 3900.0  # due at 3600, the application is back at 3900
    d["events"][0].pop("restart_after_s")
    g = run_gens(d, ["ws2016"])["ws2016"]
    assert g.summary.jobs[1].outcomes.failed == 4 and g.summary.failures_by_reason == {"backup_server_crashed": 4}


# ==============================================================================================
# determinism (both backends: tests/test_properties.py, generated fault scenarios)
# ==============================================================================================
ALL_FAULTS = [
    {"kind": "partition", "at_s": 5.0, "nodes": ["node-3"], "duration_s": 120.0},
    {"kind": "controller_fail", "at_s": 8.0, "controller": 2, "duration_s": 300.0},
    {"kind": "storage_path_loss", "at_s": 12.0, "node": "node-2", "duration_s": 90.0},
    {"kind": "target_slowdown", "at_s": 20.0, "factor": 0.25, "duration_s": 60.0},
    {"kind": "target_outage", "at_s": 40.0, "duration_s": 30.0},
    {"kind": "backup_server_crash", "at_s": 45.0, "restart_after_s": 120.0},
]


def all_faults_dict() -> dict:
    d = scenario_dict(fleet=[template("win", count=6, size_gib=4)], nodes=3, backup={"retry_wait_s": 60})
    d["cluster"]["witness"] = True
    d["events"] = ALL_FAULTS
    return d


def test_fault_scenarios_are_deterministic() -> None:
    a = run_gens(all_faults_dict())
    b = run_gens(all_faults_dict())
    for gen in ALL_GENS:
        assert summary_json(a[gen].summary) == summary_json(b[gen].summary)
        assert a[gen].summary.audit.ok, (gen, a[gen].summary.audit.violations)


# ==============================================================================================
# VM I/O paths under the faults (the cluster model itself)
# ==============================================================================================
def test_a_vm_without_its_fabric_goes_over_smb_and_stalls_when_the_cut_separates_it_from_the_coordinator() -> None:
    # 3 nodes (witness: {node-1, node-2} wins a cut of node-3), win-000k on node-k / csv-k, each
    # 0.78125 MiB/s of reads and 0.390625 of writes. node-3 loses its fabric at 10: csv-3 moves to
    # node-1 (fewest CSVs, lowest index) and win-0003's 1.171875 MiB/s cross cluster:node-3; the cut
    # at 20 stalls it (no flow, nothing on the links); at 30 node-3 loses quorum and the VM stops.
    from cluster_sim.cluster.events import schedule_events
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.cluster.nodes import LocalBackend
    from cluster_sim.kernel.rng import Streams
    from cluster_sim.scenario.placement import place_fleet

    d = scenario_dict(fleet=[template("win", count=3)], nodes=3)
    d.pop("backup")
    d["cluster"]["witness"] = True
    d["events"] = [{"kind": "storage_path_loss", "at_s": 10.0, "node": "node-3", "duration_s": 1000.0},
                   {"kind": "partition", "at_s": 20.0, "nodes": ["node-3"], "duration_s": 1000.0}]
    sc = scenario_from_dict(d)
    cm = ClusterModel(sc, place_fleet(sc), LocalBackend(["node-1", "node-2", "node-3"]), Streams(sc.seed))
    cm.start()
    schedule_events(cm)
    vm_mib_s = (100 + 50) * 8 / 1024
    cm.env.run(until=5.0)
    load = cm.net.link_load()
    assert load["fabric:node-3"] == pytest.approx(vm_mib_s) and load["cluster:node-3"] == 0.0
    cm.env.run(until=15.0)
    load = cm.net.link_load()
    assert cm.csvs["csv-3"].coordinator == "node-1"
    assert load["fabric:node-3"] == 0.0
    assert load["cluster:node-3"] == pytest.approx(vm_mib_s)
    assert load["fabric:node-1"] == pytest.approx(2 * vm_mib_s)  # its own VM and win-0003's
    assert load["array:read"] == pytest.approx(3 * 100 * 8 / 1024)
    cm.env.run(until=25.0)
    load = cm.net.link_load()
    assert load["cluster:node-3"] == 0.0 and load["fabric:node-1"] == pytest.approx(vm_mib_s)
    assert load["array:read"] == pytest.approx(2 * 100 * 8 / 1024)  # win-0003's I/O is stalled
    assert cm.host["win-0003"] == "node-3" and "node-3" in cm.up
    cm.env.run(until=35.0)
    assert "node-3" not in cm.up and "node-3" in cm.faults.quorum_lost
    assert cm.host["win-0003"] in ("node-1", "node-2") and "win-0003" in cm.booting
