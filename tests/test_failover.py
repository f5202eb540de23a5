"""Node crashes, failover and recovery, crashes at every backup phase of every generation, and
injected snapshot faults (DOMAIN.md "Failures", "VSS limits").

A crash is detected heartbeat_threshold x heartbeat_interval_s later; the crashed node's VMs boot
on survivors after failover_boot_s; CSVs it coordinated move; its in-flight backup steps fail and
the VMs are retried. Crash times are taken from a first run's trace (same seed, so the second
run is identical up to the crash).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
from backup_helpers import ALL_GENS, PRE_2016, run_gens, scenario_dict, template

import cluster_sim
from cluster_sim.results import GenerationResult, NodeFailureOut, summary_json
from cluster_sim.scenario import scenario_from_dict

NO_LEAKS = {"snapshots": 0, "checkpoints": 0, "mounts": 0, "redirected_holds": 0, "hot_adds": 0}


# ---- helpers ---------------------------------------------------------------------------------------
def events_of(g: GenerationResult, name: str, **match: Any) -> list[tuple[float, dict]]:
    return [(t, ids) for t, ev, ids in g.trace.events
            if ev == name and all(ids.get(k) == v for k, v in match.items())]


def first_time(g: GenerationResult, name: str, after: float = -1.0, **match: Any) -> float:
    hits = [t for t, _ids in events_of(g, name, **match) if t >= after]
    assert hits, (name, match, after)
    return hits[0]


def row(g: GenerationResult, vm: str):  # type: ignore[no-untyped-def]
    return next(r for r in g.vms if r.vm == vm)


def csv_row(g: GenerationResult, csv: str):  # type: ignore[no-untyped-def]
    return next(c for c in g.csvs if c.csv == csv)


def set_window(g: GenerationResult, vm: str) -> tuple[float, float]:
    """Start and end of the shadow-copy set that holds `vm`'s storage snapshot."""
    sid = row(g, vm).snapshot_id
    assert sid, vm
    (_t, created), = events_of(g, "snapshot_created", snapshot=sid)
    return first_time(g, "snapshot_set_start", set=created["set"]), first_time(g, "snapshot_set_done", set=created["set"])


def snapshots_alive_for(g: GenerationResult, node: str, t: float) -> int:
    """Storage snapshots of sets started by `node` that were pending or existing at time t."""
    n = 0
    for t0, ids in events_of(g, "snapshot_set_start", node=node):
        if t0 > t:
            continue
        for _tc, c in events_of(g, "snapshot_created", set=ids["set"]):
            # gone once its requester has asked for its removal (the array then deletes it)
            released = [tr for tr, _ in events_of(g, "snapshot_released", snapshot=c["snapshot"])] + \
                       [tr for tr, e in events_of(g, "snapshots_removing") if c["snapshot"] in e["snapshots"]]
            if not released or min(released) > t:
                n += 1
    return n


def sets_while_coordinator_down(g: GenerationResult, vm: str, csv: str, crash_s: float) -> int:
    """Sets holding `vm` that ran, at least partly, while `csv`'s coordinator was dead and not yet
    replaced (from its crash to the CSV's move at detection): the CSV fails over under them."""
    moved = first_time(g, "csv_owner_moved", csv=csv)
    n = 0
    for t0, ids in events_of(g, "snapshot_set_start"):
        if vm not in ids["members"] or t0 >= moved:
            continue
        ends = [t for t, _ in events_of(g, "snapshot_set_done", set=ids["set"])] + \
               [t for t, _ in events_of(g, "snapshot_set_failed", set=ids["set"])]
        if min(ends) >= crash_s:
            n += 1
    return n


def assert_survived_crash(g: GenerationResult, node: str, crash_s: float, detect_s: float = 10.0) -> None:
    """Every VM has exactly one outcome (the auditor checks none is missing or doubled), none failed
    (retries are available), one failover at crash + detection delay."""
    s = g.summary
    assert s.audit.ok, s.audit.violations
    assert all(r.outcome for r in g.vms)
    assert s.outcomes.failed == 0, s.failures_by_reason
    assert s.failovers == 1
    assert [(f.node, f.how) for f in s.node_failures] == [(node, "crash")]
    assert s.node_failures[0].detected_s == pytest.approx(crash_s + detect_s, abs=1e-6)


# ---- crash without a backup ----------------------------------------------------------------------------
# 6 VMs on 3 nodes (win-0002 and win-0005 on node-2; csv-2 coordinated by node-2).
# heartbeat 1.5 s x 4 -> node-2 crashing at t=100 is declared failed at 106; its VMs boot on the
# least loaded survivors (node-1 then node-3, 2 VMs each before) at 106 + 45 = 151: downtime 51 s.
# csv-2 moves to the survivor coordinating fewest CSVs (node-1 and node-3 own one each: node-1).
# node-2 is back at 300; load balancing (every 200 s from 200) cannot use it at 200 (counts 3, -, 3)
# but at 400 moves one VM from node-1 to it (3, 0, 3 -> 2, 1, 3).
def _crash_steady() -> GenerationResult:
    d = scenario_dict(fleet=[template("win", count=6)], nodes=3)
    d.pop("backup")
    d["cluster"].update(heartbeat_interval_s=1.5, heartbeat_threshold=4, failover_boot_s=45)
    d["events"] = [
        {"kind": "crash_node", "at_s": 100, "node": "node-2"},
        {"kind": "load_balance", "at_s": 200, "every_s": 200},
        {"kind": "recover_node", "at_s": 300, "node": "node-2"},
    ]
    return cluster_sim.run(scenario_from_dict(d), backend="local").generations[0]


def test_crashed_node_is_declared_failed_after_the_heartbeat_threshold() -> None:
    g = _crash_steady()
    assert g.summary.node_failures == [NodeFailureOut(node="node-2", detected_s=106.0, how="crash", vms_down=2)]
    assert first_time(g, "node_crashed", node="node-2") == 100.0
    assert g.summary.failovers == 1


def test_vms_of_a_crashed_node_restart_on_survivors_after_detection_plus_boot_time() -> None:
    g = _crash_steady()
    assert g.summary.vms_restarted == 2
    assert row(g, "win-0002").nodes_visited == "node-2|node-1"
    assert row(g, "win-0005").nodes_visited == "node-2|node-3"
    for vm in ("win-0002", "win-0005"):
        assert first_time(g, "vm_restarted", vm=vm) == 151.0
        assert row(g, vm).downtime_s == 51.0  # detection 6 s + boot 45 s
        assert row(g, vm).outcome == "running"
    assert all(row(g, v).downtime_s == 0.0 for v in ("win-0003", "win-0004", "win-0006"))


def test_csvs_coordinated_by_the_crashed_node_get_a_surviving_coordinator() -> None:
    g = _crash_steady()
    assert {c.csv: c.coordinator for c in g.csvs} == {"csv-1": "node-1", "csv-2": "node-1", "csv-3": "node-3"}
    (t, ids), = events_of(g, "csv_owner_moved", csv="csv-2")
    assert (t, ids["previous"], ids["node"]) == (106.0, "node-2", "node-1")


def test_recovered_node_rejoins_and_load_balancing_uses_it_again() -> None:
    g = _crash_steady()
    assert first_time(g, "node_recovered", node="node-2") == 300.0
    lb = [(t, ids["node"], ids["to"]) for t, ids in events_of(g, "migration_start", why="load_balance")]
    assert lb == [(400.0, "node-1", "node-2")]  # nothing at t=200 while node-2 is down
    assert sorted(sum(1 for r in g.vms if r.node == n) for n in ("node-1", "node-2", "node-3")) == [1, 2, 3]


# ---- the crash matrix ----------------------------------------------------------------------------------------
# 3 nodes, one "win" VM each (win-0002 on node-2, csv-2 coordinated by node-2), plus a "tail" VM on
# node-1 with 8 x 8 GiB disks whose long copy keeps the job running past detection and boot, so
# that every crash is detected and the failed-over VM restarts within the run. merge_mib_s = 1 makes
# the AVHDX merge last seconds. Retries wait the default 600 s (after the failover boot).
MATRIX_FLEET = [template("win", count=3), template("tail", count=1, disks=8, size_gib=8)]
PHASES = {
    "ws2008r2": ["guest_freeze", "snapshot_set", "auto_recovery", "copy"],
    "ws2012": ["guest_freeze", "snapshot_set", "auto_recovery", "copy"],
    "ws2012r2": ["guest_freeze", "checkpoint", "snapshot_set", "auto_recovery", "copy", "merge"],
    "ws2016": ["guest_freeze", "checkpoint", "snapshot_set", "copy", "merge"],
}
MATRIX = [(gen, ph) for gen in ALL_GENS for ph in PHASES[gen]]


def matrix_dict(**backup: Any) -> dict:
    return scenario_dict(fleet=MATRIX_FLEET, nodes=3, backup={"merge_mib_s": 1.0, **backup})


@functools.cache
def matrix_first_run(gen: str) -> GenerationResult:
    return run_gens(matrix_dict(), [gen])[gen]


def phase_window(g: GenerationResult, gen: str, phase: str, vm: str = "win-0002") -> tuple[float, float]:
    if phase == "guest_freeze":  # from the VM's preparation (past the VSS lock and writer enumeration)
        return first_time(g, "vm_prepare", vm=vm), first_time(g, "guest_frozen", vm=vm)
    if phase == "checkpoint":  # AVHDX creation after the freeze (ws2016: the checkpoint round)
        return first_time(g, "guest_frozen", vm=vm), first_time(g, "checkpoint_created", vm=vm)
    if phase == "snapshot_set":
        return set_window(g, vm)
    if phase == "auto_recovery":
        t0 = set_window(g, vm)[1]
        if gen == "ws2012r2":  # the SCSI hot-add fix-up in the guest, then the copy starts
            return t0, first_time(g, "copy_start", vm=vm)
        return t0, first_time(g, "auto_recovery_done", after=t0, node=row(g, vm).node)
    if phase == "copy":
        return first_time(g, "copy_start", vm=vm), first_time(g, "copy_end", vm=vm)
    if phase == "merge":
        # ws2012r2 merges after the copy; ws2016 starts the merge together with the copy
        start = "copy_end" if gen == "ws2012r2" else "copy_start"
        return first_time(g, start, vm=vm), first_time(g, "checkpoint_merged", vm=vm)
    raise AssertionError(phase)


@pytest.mark.parametrize(("gen", "phase"), MATRIX)
def test_crash_of_the_node_backing_up_a_vm_in_each_phase_ends_clean(gen: str, phase: str) -> None:
    first = matrix_first_run(gen)
    t0, t1 = phase_window(first, gen, phase)
    assert t1 > t0, (gen, phase, t0, t1)
    at = (t0 + t1) / 2
    d = matrix_dict()
    d["events"] = [{"kind": "crash_node", "at_s": at, "node": "node-2"}]
    g = run_gens(d, [gen])[gen]

    assert_survived_crash(g, "node-2", at)
    assert g.summary.node_failures[0].vms_down == 1
    assert g.summary.vms_restarted == 1
    assert row(g, "win-0002").nodes_visited.startswith("node-2|")
    # KB2878635: ws2012 leaks the storage snapshot of a set the dead node had started
    leaked = snapshots_alive_for(first, "node-2", at) if gen == "ws2012" else 0
    if gen == "ws2012" and phase != "guest_freeze":
        assert leaked == 1
    assert g.summary.leaks.model_dump() == {**NO_LEAKS, "snapshots": leaked}
    if gen == "ws2008r2":
        # the dead backup left csv-2 marked "backup in progress": redirected for stale_backup_hold_s
        assert csv_row(g, "csv-2").redirected_s >= 1800.0


# ---- ws2008r2: the stale "backup in progress" mark -----------------------------------------------------------
# crash node-2 during win-0002's copy: the copy is interrupted at once, the pin is released and a
# "backup_in_progress" hold replaces it for stale_backup_hold_s (900 s here), unless cleared.
@pytest.mark.parametrize("clear", [False, True])
def test_ws2008r2_dead_backup_leaves_its_csv_redirected_for_stale_backup_hold_s(clear: bool) -> None:
    hold_s = 900.0
    first = matrix_first_run("ws2008r2")
    at = sum(phase_window(first, "ws2008r2", "copy")) / 2
    runs = {}
    for c in (False, True):
        d = matrix_dict(stale_backup_hold_s=hold_s, clear_stale_redirect=c)
        d["events"] = [{"kind": "crash_node", "at_s": at, "node": "node-2"}]
        runs[c] = run_gens(d, ["ws2008r2"])["ws2008r2"]
    g = runs[clear]
    stale = [(t, ids) for t, ids in events_of(g, "csv_redirect_hold", csv="csv-2") if ids["kind"] == "backup_in_progress"]
    if clear:
        assert stale == []
        assert csv_row(g, "csv-2").redirected_s < 60.0
    else:
        (t_hold, h), = stale
        assert t_hold == at  # the interrupted copy fails the attempt at the crash instant
        (t_rel, _), = [(t, ids) for t, ids in events_of(g, "csv_redirect_release", csv="csv-2") if ids["hold"] == h["hold"]]
        assert t_rel - t_hold == pytest.approx(hold_s)
        grown = csv_row(g, "csv-2").redirected_s - csv_row(runs[True], "csv-2").redirected_s
        assert hold_s - 60.0 < grown <= hold_s  # less the retry's own pin, which overlaps the mark
    assert g.summary.leaks.model_dump() == NO_LEAKS
    assert g.summary.audit.ok, g.summary.audit.violations


# ---- failover boot vs. retry ------------------------------------------------------------------------------
# retry_wait_s = 60 is shorter than detection (10 s) + boot (60 s): the retry must wait until the
# failed-over VM runs on its new host, not back up a VM that is still booting.
@pytest.mark.parametrize("gen", ALL_GENS)
def test_retry_after_failover_waits_until_the_vm_has_booted_on_its_new_host(gen: str) -> None:
    first = matrix_first_run(gen)
    at = sum(phase_window(first, gen, "copy")) / 2
    d = matrix_dict(retry_wait_s=60)
    d["events"] = [{"kind": "crash_node", "at_s": at, "node": "node-2"}]
    g = run_gens(d, [gen])[gen]
    restarted = first_time(g, "vm_restarted", vm="win-0002")
    assert restarted == pytest.approx(at + 10 + 60)
    attempts = [t for t, _ in events_of(g, "vm_attempt", vm="win-0002")]
    assert len(attempts) == 2
    assert attempts[1] >= restarted
    assert g.summary.audit.ok, g.summary.audit.violations


# ---- crash of a CSV coordinator while another node backs up a VM on that CSV -------------------------------
# placement spread, 3 nodes, 3 CSVs: win-0004 runs on node-1 with its disks on csv-2, coordinated by
# node-2. (win-0001..3 on node-1..3, win-0005 on node-2, tail on node-3.) Crash node-2 during
# win-0004's backup, in each of its phases. Software provider: the shadow copy lives on the coordinator.
SPREAD_FLEET = [template("win", count=5), template("tail", count=1, disks=8, size_gib=8)]


def spread_dict(provider: str) -> dict:
    return scenario_dict(fleet=SPREAD_FLEET, nodes=3, placement="spread", backup={"provider": provider})


@functools.cache
def spread_first_run(gen: str, provider: str) -> GenerationResult:
    return run_gens(spread_dict(provider), [gen])[gen]


@pytest.mark.parametrize("provider", ["hardware", "software"])
@pytest.mark.parametrize(("gen", "phase"), MATRIX)
def test_crash_of_the_csv_coordinator_during_another_nodes_backup_in_each_phase_ends_clean(
        gen: str, phase: str, provider: str) -> None:
    first = spread_first_run(gen, provider)
    r = row(first, "win-0004")
    assert (r.node, r.csv) == ("node-1", "csv-2")
    assert csv_row(first, "csv-2").coordinator in ("node-2", "node-1")  # node-1 if ws2008r2 pinned it
    t0, t1 = phase_window(first, gen, phase, vm="win-0004")
    at = (t0 + t1) / 2
    d = spread_dict(provider)
    d["events"] = [{"kind": "crash_node", "at_s": at, "node": "node-2"}]
    g = run_gens(d, [gen])[gen]
    assert_survived_crash(g, "node-2", at)
    assert csv_row(g, "csv-2").coordinator != "node-2"
    assert row(g, "win-0004").outcome == "app_consistent"
    # ws2012 (KB2878635): node-2's own snapshots are leaked by its crash, and so is the snapshot
    # node-1 was creating on csv-2 while csv-2's coordinator was dead (a failover during a CSV
    # snapshot): the set under way at the crash, or one started before the failure was detected
    leaked = 0
    if gen == "ws2012":
        during = sets_while_coordinator_down(g, "win-0004", "csv-2", at)
        assert during == (1 if phase in ("guest_freeze", "snapshot_set") else 0), during
        leaked = snapshots_alive_for(first, "node-2", at) + during
    assert g.summary.leaks.model_dump() == {**NO_LEAKS, "snapshots": leaked}


# ---- ws2016: crash of the node taking the snapshot set ---------------------------------------------------
# The set is taken by node-1 (ws2016_set_node: first), which also runs win-0001 and tail-0001.
# "during": node-1 crashes halfway through the set; "before": it crashes during win-0001's checkpoint,
# before the set starts (the cluster has not noticed yet when the set is started).
def _ws2016_set_node_crash(when: str) -> tuple[GenerationResult, GenerationResult, float]:
    first = matrix_first_run("ws2016")
    (t0, ids), = events_of(first, "snapshot_set_start")
    assert ids["node"] == "node-1"
    if when == "during":
        at = (t0 + first_time(first, "snapshot_set_done", set=ids["set"])) / 2
    else:
        at = sum(phase_window(first, "ws2016", "checkpoint", vm="win-0001")) / 2
    d = matrix_dict()
    d["events"] = [{"kind": "crash_node", "at_s": at, "node": "node-1"}]
    return first, run_gens(d, ["ws2016"])["ws2016"], at


@pytest.mark.parametrize("when", ["during", "before"])
def test_ws2016_crash_of_the_set_node_ends_clean(when: str) -> None:
    _first, g, at = _ws2016_set_node_crash(when)
    assert_survived_crash(g, "node-1", at)
    assert g.summary.node_failures[0].vms_down == 2  # win-0001 and tail-0001
    assert g.summary.leaks.model_dump() == NO_LEAKS


@pytest.mark.parametrize("when", ["during", "before"])
def test_ws2016_no_vm_is_backed_up_from_a_set_taken_by_a_crashed_node(when: str) -> None:
    # DOMAIN.md "Failures": a crashed node's in-flight backup steps fail; "VSS limits": a set fails
    # whole. The first set is requested by node-1, dead by then or dying during it: every VM of that
    # round must fail this attempt and be retried (on a live set node).
    first, g, at = _ws2016_set_node_crash(when)
    for vm in [r.vm for r in first.vms]:
        assert [t for t, _ in events_of(g, "vm_attempt_failed", vm=vm) if t >= at], vm
        assert row(g, vm).retries >= 1, vm
    first_set = events_of(g, "snapshot_set_start")[0][1]["set"]
    from_first_set = [r.vm for r in g.vms
                      if events_of(g, "snapshot_created", snapshot=r.snapshot_id)[0][1]["set"] == first_set]
    assert from_first_set == []


# ---- both backends agree on a crash scenario --------------------------------------------------------------
@pytest.mark.slow
def test_crash_scenario_gives_identical_summaries_on_local_and_ray_backends(ray_session) -> None:
    d = scenario_dict(fleet=[template("win", count=3), template("lnx", count=3, guest_os="linux")], nodes=3)
    d["events"] = [{"kind": "crash_node", "at_s": 6.0, "node": "node-2"},
                   {"kind": "recover_node", "at_s": 300.0, "node": "node-2"}]
    sc = scenario_from_dict(d)
    local = cluster_sim.run(sc, backend="local", generations=ALL_GENS)
    ray_ = cluster_sim.run(sc, backend="ray", generations=ALL_GENS)
    assert [g.summary.generation for g in ray_.generations] == ALL_GENS
    for a, b in zip(local.generations, ray_.generations, strict=True):
        assert a.summary.failovers == 1
        assert summary_json(a.summary) == summary_json(b.summary)
        assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]


# ---- snapshot faults ------------------------------------------------------------------------------------------
# 2 nodes, 2 CSVs, 4 VMs: win-0001 and win-0003 on node-1 / csv-1, win-0002 and win-0004 on node-2 /
# csv-2. A fault on csv-1 is injected at t=0 (before any commit); retries 0 makes the first failure final.
FAULT_REASON = {"provider_veto": "provider_veto", "out_of_space": "out_of_space", "timeout": "provider_timeout"}


def fault_dict(code: str, count: int, retries: int = 0, **backup: Any) -> dict:
    d = scenario_dict(fleet=[template("win", count=4)], nodes=2, backup={"retries": retries, "retry_wait_s": 600,
                                                                         **backup})
    d["events"] = [{"kind": "snapshot_fault", "at_s": 0, "csv": "csv-1", "code": code, "count": count}]
    return d


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("code", list(FAULT_REASON))
@pytest.mark.parametrize("gen", PRE_2016)
def test_snapshot_fault_fails_the_next_count_commits_on_that_csv(gen: str, code: str, count: int) -> None:
    g = run_gens(fault_dict(code, count), [gen])[gen]
    reason = FAULT_REASON[code]
    failed = sorted(r.vm for r in g.vms if r.outcome == "failed")
    assert g.summary.failures_by_reason == {reason: count}
    assert len(failed) == count and set(failed) <= {"win-0001", "win-0003"}  # only VMs on csv-1
    assert all(row(g, vm).reason == reason for vm in failed)
    assert all(row(g, vm).outcome == "app_consistent" for vm in ("win-0002", "win-0004"))
    assert len([1 for _t, ids in events_of(g, "snapshot_failed", csv="csv-1") if ids["code"] == code]) == count
    assert g.summary.leaks.model_dump() == NO_LEAKS
    assert g.summary.audit.ok, g.summary.audit.violations


@pytest.mark.parametrize("code", list(FAULT_REASON))
def test_ws2016_snapshot_fault_fails_the_whole_set_covering_that_lun(code: str) -> None:
    g = run_gens(fault_dict(code, 1), ["ws2016"])["ws2016"]
    reason = FAULT_REASON[code]
    # the one set covers csv-1 and csv-2: every VM fails, also those on csv-2
    assert g.summary.failures_by_reason == {reason: 4}
    assert [(r.vm, r.outcome, r.reason) for r in g.vms] == [(f"win-{i:04d}", "failed", reason) for i in range(1, 5)]
    (_t, ids), = events_of(g, "snapshot_set_failed")
    assert (ids["code"], ids["csv"]) == (code, "csv-1")
    created = events_of(g, "snapshot_created", csv="csv-2")
    assert created == []  # one consistency-group commit: the set fails whole, csv-2 gets no snapshot
    assert g.summary.leaks.model_dump() == NO_LEAKS
    assert g.summary.audit.ok, g.summary.audit.violations


def test_ws2016_with_one_lun_per_set_a_fault_fails_only_that_luns_set() -> None:
    g = run_gens(fault_dict("provider_veto", 1, max_luns_per_set=1), ["ws2016"])["ws2016"]
    assert [(r.vm, r.outcome) for r in g.vms] == [("win-0001", "failed"), ("win-0002", "app_consistent"),
                                                  ("win-0003", "failed"), ("win-0004", "app_consistent")]


@pytest.mark.parametrize("gen", ALL_GENS)
def test_snapshot_fault_is_retried_and_the_retry_succeeds(gen: str) -> None:
    g = run_gens(fault_dict("provider_veto", 1, retries=1), [gen])[gen]
    assert g.summary.outcomes.failed == 0
    assert g.summary.retried_vms == (4 if gen == "ws2016" else 1)
    retried = [r for r in g.vms if r.retries]
    assert all(r.retries == 1 for r in retried)
    assert g.summary.leaks.model_dump() == NO_LEAKS


def test_fault_scenarios_are_deterministic() -> None:
    a = run_gens(fault_dict("timeout", 1, retries=1), ["ws2012r2"])["ws2012r2"]
    b = run_gens(copy.deepcopy(fault_dict("timeout", 1, retries=1)), ["ws2012r2"])["ws2012r2"]
    assert summary_json(a.summary) == summary_json(b.summary)
