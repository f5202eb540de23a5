"""The shipped fault scenarios (scenarios/faults/): each runs on every generation with a clean
audit and shows, per generation, what its header comment says (README "Fault events"). Each is
also run without its fault event (`events: []`) for comparison."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from strategies import check_fault_invariants

import cluster_sim
from cluster_sim.results import GenerationResult

FAULTS = Path(__file__).resolve().parent.parent / "scenarios" / "faults"
FILES = sorted(FAULTS.glob("*.yaml"))
GENS = ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]


@functools.cache
def run(name: str, quiet: bool = False) -> dict[str, GenerationResult]:
    sc = cluster_sim.load_scenario(FAULTS / f"{name}.yaml", ["events=[]"] if quiet else None)
    return cluster_sim.run(sc, backend="local").by_generation()


def reasons(g: GenerationResult) -> set[str]:
    """Why attempts failed (but ws2012r2's VMs without a SCSI controller, which always fail)."""
    return {ids["reason"] for _t, ev, ids in g.trace.events if ev == "vm_attempt_failed"} - {"event_10103_no_scsi"}


def test_there_is_a_scenario_for_every_fault_event_and_each_says_what_it_shows() -> None:
    kinds = set()
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("#"), path.name
        sc = cluster_sim.load_scenario(path)
        kinds.update(ev.kind for ev in sc.events)
        assert sc.backup is not None and sc.backup.generations == GENS
    assert kinds == {"partition", "controller_fail", "storage_path_loss", "target_outage", "target_slowdown",
                     "backup_server_crash"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fault_scenario_keeps_every_invariant_on_every_generation(path: Path) -> None:
    sc = cluster_sim.load_scenario(path)
    for gen, g in run(path.stem).items():
        assert gen in GENS
        check_fault_invariants(sc, g)


def test_partition_scenario_stops_the_whole_cluster_before_2012r2_and_half_of_it_after() -> None:
    res = run("partition")
    for gen in ("ws2008r2", "ws2012"):
        s = res[gen].summary
        assert [(f.node, f.how, f.detected_s) for f in s.node_failures] == \
            [(f"node-{i}", "partition", 610.0) for i in range(1, 5)]
        # 40 VMs down from 610 s to the heal at 1,800 s plus a 60 s boot, and the 6 saved-state
        # backups' 125 s as without the fault
        assert s.vm_downtime_s_total == pytest.approx(40 * (1800 + 60 - 610) + 125.04, abs=0.01)
    for gen in ("ws2012r2", "ws2016"):
        s = res[gen].summary
        assert [(f.node, f.detected_s) for f in s.node_failures] == [("node-3", 610.0), ("node-4", 610.0)]
        assert s.vm_downtime_s_total == 20 * 60.0
        assert s.vms_restarted == 20
    for gen, g in res.items():
        assert reasons(g) == {"quorum_lost"}, gen
        assert g.summary.outcomes.failed == (4 if gen == "ws2012r2" else 0)  # only the VMs without SCSI


def test_controller_fail_scenario_doubles_the_vms_latency_while_one_controller_serves_every_lun() -> None:
    for gen, g in run("controller-fail").items():
        quiet = run("controller-fail", quiet=True)[gen]
        assert g.summary.io_latency_ms.backup_p50 > 1.9 * quiet.summary.io_latency_ms.backup_p50, gen
        assert g.summary.io_latency_ms.baseline_p50 == quiet.summary.io_latency_ms.baseline_p50
        moved = [(ids["csv"], ids["to"]) for _t, ev, ids in g.trace.events if ev == "lun_failover"]
        assert moved == [("csv-1", 2), ("csv-3", 2)]


def test_storage_path_loss_scenario_retries_node_2s_backups_until_its_fabric_is_back() -> None:
    for gen, g in run("storage-path-loss").items():
        assert reasons(g) == {"storage_path_lost"}, gen
        failed = {ids["vm"]: t for t, ev, ids in g.trace.events if ev == "vm_attempt_failed"
                  and ids["reason"] == "storage_path_lost"}
        assert failed and all(next(r.node for r in g.vms if r.vm == vm) == "node-2" for vm in failed)
        retried = [t for t, ev, ids in g.trace.events if ev == "copy_start" and failed.get(ids["vm"], 1e9) < t]
        assert min(retried) > 1500.0  # copied only once node-2's fabric is back
        assert g.summary.backup_window_s > run("storage-path-loss", quiet=True)[gen].summary.backup_window_s


def test_target_outage_scenario_fails_and_retries_the_copies_under_way() -> None:
    res = run("target-outage")
    for gen, g in res.items():
        assert reasons(g) == {"target_unreachable"}, gen
        copies_ending = [t for t, ev, _ids in g.trace.events if ev == "copy_end" and 600.0 < t < 1200.0]
        assert copies_ending == []
    assert res["ws2016"].summary.retries > res["ws2012r2"].summary.retries


def test_target_slowdown_scenario_lengthens_a_copy_bound_window_without_retries() -> None:
    for gen, g in run("target-slowdown").items():
        quiet = run("target-slowdown", quiet=True)[gen].summary
        assert g.summary.retries == 0
        assert g.summary.backup_window_s > 1.8 * quiet.backup_window_s, gen
        assert g.summary.window_lower_bound_s == quiet.window_lower_bound_s  # the nominal pipe


def test_backup_server_crash_scenario_leaves_snapshots_and_checkpoints_counted_against_the_fault() -> None:
    res = run("backup-server-crash")
    expected = {"ws2008r2": (12, 0), "ws2012": (12, 0), "ws2012r2": (12, 12), "ws2016": (4, 0)}
    for gen, g in res.items():
        s = g.summary
        assert (s.leaks.snapshots, s.leaks.checkpoints) == expected[gen], gen
        assert s.fault_leaks["backup_server_crash"] == s.leaks
        assert s.audit.ok
        restarted = [t for t, ev, _ids in g.trace.events if ev == "job_restarted"]
        assert restarted == [1600.0]
        assert "backup_server_crashed" not in s.failures_by_reason
    stale = [ids for _t, ev, ids in res["ws2008r2"].trace.events
             if ev == "csv_redirect_hold" and ids["kind"] == "backup_in_progress"]
    assert len(stale) == 12  # every pinned CSV of the dead ws2008r2 backup, released 30 minutes later
