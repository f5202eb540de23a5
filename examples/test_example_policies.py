"""The example policies (examples/backup_policies/), tested only with the pytest plugin of
cluster_sim: the `cluster_sim_run` and `cluster_sim_golden` fixtures, the assertions and the fault
matrix of `cluster_sim.testing`. Run them with `pytest examples/` (add `--cluster-sim-backend ray`
to run the same tests with Ray node actors)."""

from __future__ import annotations

import pytest

from cluster_sim.testing import (
    assert_every_backup_restores,
    assert_every_vm_has_one_outcome,
    assert_no_leaks,
    assert_window_below,
    fault_matrix,
    small_cluster,
)

OWNER = "backup_policies.owner_groups:GroupByCsvOwner"
THROTTLE = "backup_policies.throttle:LatencyThrottle"
KEEP = "backup_policies.keep_snapshot:KeepSnapshotForRetry"
LEAKY = "backup_policies.keep_snapshot:LeakyKeepSnapshot"

# 3 nodes, 3 CSVs (csv-1 owned by node-1, csv-2 by node-2, csv-3 by node-3), 9 VMs of 4 GiB
CLUSTER = small_cluster(nodes=3, vms=9)
# 12 VMs of 40 GiB: copies long enough for the snapshots' copy-on-write to raise the VMs' latency
BUSY = small_cluster(nodes=3, vms=12, disk_gib=40)
# the backup target is down from 60 s to 260 s: copies under way fail and are retried (60 s later)
OUTAGE = small_cluster(nodes=3, vms=9, disk_gib=40, retries=2, retry_wait_s=60,
                       events=[{"at_s": 60, "kind": "target_outage", "duration_s": 200}])


# ---- group VMs by CSV owner ----------------------------------------------------------------------
def test_owner_groups_take_one_ws2016_set_per_owner_on_that_owner(cluster_sim_run):
    builtin = cluster_sim_run(CLUSTER, generations=["ws2016"]).generations[0]
    grouped = cluster_sim_run(CLUSTER, policy=OWNER, generations=["ws2016"]).generations[0]
    assert builtin.summary.snapshot_sets == 1  # one set over csv-1..3, taken on node-1
    assert grouped.summary.snapshot_sets == 3  # one per owner node
    sets = [ids for _t, event, ids in grouped.trace.events if event == "snapshot_set_start"]
    assert sorted(s["node"] for s in sets) == ["node-1", "node-2", "node-3"]
    csv_of = {row.vm: row.csv for row in grouped.vms}
    for s in sets:  # every member's CSV is owned by the node taking the set: no owner coordination
        assert {csv_of[vm] for vm in s["members"]} == {f"csv-{s['node'].split('-')[1]}"}
    assert grouped.summary.outcomes.app_consistent == 9
    assert_every_vm_has_one_outcome(grouped)
    assert_every_backup_restores(grouped)


def test_owner_groups_rejects_a_set_larger_than_64_luns(cluster_sim_run):
    from cluster_sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"backup.policy_args.max_luns_per_set: Input should be less than or "
                                            r"equal to 64 \(got 65\)"):
        cluster_sim_run(CLUSTER, policy=OWNER, policy_args={"max_luns_per_set": 65})


@fault_matrix(generations=["ws2012r2", "ws2016"], phases=["snapshot", "copy"])
def test_owner_groups_keep_every_invariant_when_a_fault_hits(cluster_sim_run, fault_case):
    result = cluster_sim_run(CLUSTER, policy=OWNER, fault=fault_case)
    assert [g.summary.generation for g in result.generations] == [fault_case.generation]
    if fault_case.fault.startswith("crash_"):  # the node crashed in that phase, and the job got over it
        assert len(result.generations[0].summary.node_failures) == 1
        assert result.generations[0].summary.retried_vms >= 1
    assert_every_vm_has_one_outcome(result)
    assert_no_leaks(result)
    assert_every_backup_restores(result)


def test_owner_groups_results_match_the_golden_files(cluster_sim_run, cluster_sim_golden):
    cluster_sim_golden(cluster_sim_run(CLUSTER, policy=OWNER), "owner-groups")


# ---- latency-aware throttling --------------------------------------------------------------------
def test_a_throttle_that_never_triggers_changes_nothing(cluster_sim_run):
    builtin = cluster_sim_run(CLUSTER)
    relaxed = cluster_sim_run(CLUSTER, policy=THROTTLE, policy_args={"p99_limit_ms": 1000})
    assert [g.summary for g in relaxed.generations] == [g.summary for g in builtin.generations]


def test_throttling_lowers_the_backup_p99_and_lengthens_the_window(cluster_sim_run):
    gens = ["ws2008r2", "ws2012r2"]
    builtin = {g.summary.generation: g.summary for g in cluster_sim_run(BUSY, generations=gens).generations}
    throttled = cluster_sim_run(BUSY, policy=THROTTLE, generations=gens,
                                policy_args={"p99_limit_ms": 0.8, "recheck_s": 10})
    for g in throttled.generations:
        s, b = g.summary, builtin[g.summary.generation]
        assert s.io_latency_ms.backup_p99 < b.io_latency_ms.backup_p99
        assert s.backup_window_s > b.backup_window_s
    assert_window_below(throttled, hours=1)
    assert_every_vm_has_one_outcome(throttled)
    assert_no_leaks(throttled)


def test_a_throttled_group_starts_anyway_after_max_wait(cluster_sim_run):
    # a limit no run can meet: every group waits max_wait_s (120 s) once, in steps of recheck_s
    result = cluster_sim_run(CLUSTER, policy=THROTTLE, generations=["ws2012r2"],
                             policy_args={"p99_limit_ms": 0.001, "recheck_s": 50, "max_wait_s": 120})
    builtin = cluster_sim_run(CLUSTER, generations=["ws2012r2"])
    # 3 nodes work in parallel, 3 groups each (concurrent_vms_per_node 3, one VM per snapshot): every
    # node's groups start 120 s late, all at once
    assert result.generations[0].summary.backup_window_s == pytest.approx(
        builtin.generations[0].summary.backup_window_s + 120, abs=1.0)
    assert result.generations[0].summary.outcomes.app_consistent == 9


# ---- keep a failed attempt's snapshot until the retry ends, and its seeded bug -------------------
def test_keeping_a_snapshot_for_the_retry_releases_it_afterwards(cluster_sim_run):
    result = cluster_sim_run(OUTAGE, policy=KEEP)
    kept = [ids for g in result.generations for _t, ev, ids in g.trace.events if ev == "policy_snapshot_kept"]
    assert kept, "the outage must make some copy fail after its snapshot"
    assert_no_leaks(result)
    assert_every_vm_has_one_outcome(result)
    assert_every_backup_restores(result)


def test_a_policy_that_forgets_the_release_on_retry_fails_assert_no_leaks(cluster_sim_run):
    result = cluster_sim_run(OUTAGE, policy=LEAKY)
    with pytest.raises(AssertionError, match=r"leaks:\n  ws2008r2: leaked snapshots=\d+") as caught:
        assert_no_leaks(result)
    for g in result.generations:  # each snapshot kept for a VM whose retry worked is still on the array
        outcome = {row.vm: row.outcome for row in g.vms}
        kept = [ids for _t, ev, ids in g.trace.events if ev == "policy_snapshot_kept"]
        never_released = {ids["snapshot"] for ids in kept if outcome[ids["vm"]] != "failed"}
        assert never_released
        assert g.summary.leaks.snapshots == len(never_released)
        assert f"{g.summary.generation}: leaked snapshots={len(never_released)}" in str(caught.value)
