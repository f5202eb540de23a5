"""Guest clusters on shared disks (issue 18): a shared VHDX is not taken by host-level backup (skipped
or failed, per backup.shared_vhdx_policy); a 2016 VHD Set is checkpointed once per guest cluster and
round and copied once; a restore of a guest cluster is consistent only when every member's view of
the shared disk is from the same instant. Numbers worked out by hand in each test."""

from __future__ import annotations

import copy

import pytest
from backup_helpers import changed

import cluster_sim
from cluster_sim.scenario import ScenarioError, scenario_from_dict

GIB = 1024.0
BASE = {
    "name": "guest",
    "seed": 5,
    "cluster": {"nodes": 2},
    "storage": {"csvs": 2},
    "fleet": [
        # two guest clusters of 2 (sql-gc-01: sql-0001 on node-1, sql-0002 on node-2; sql-gc-02 likewise),
        # each VM with its own 40 GiB disk (20 GiB used), sharing a 500 GiB disk (250 GiB used)
        {"template": "sql", "count": 4, "disks": [{"size_gib": 40}],
         "guest_cluster": {"size": 2, "shared_disks": [{"size_gib": 500, "format": "vhds"}]}},
        {"template": "app", "count": 2, "disks": [{"size_gib": 40}]},
    ],
    "backup": {"generations": ["ws2012r2", "ws2016"]},
    "run": {"until_s": 86400},
}


def build(**changes: object) -> cluster_sim.Scenario:
    return changed(BASE, **changes)


def run(sc: cluster_sim.Scenario, gen: str):  # type: ignore[no-untyped-def]
    return cluster_sim.run(sc, backend="local", generations=[gen]).generations[0]


def test_a_vhd_set_is_checkpointed_once_per_guest_cluster_and_copied_once_not_per_member() -> None:
    g = run(build(), "ws2016")
    s = g.summary
    gc = s.guest_clusters
    assert gc is not None
    assert (gc.guest_clusters, gc.members, gc.vhds_checkpoints) == (2, 4, 2)
    assert gc.shared_copied_mib == 2 * 250 * GIB
    # 6 own disks of 20 GiB used + 2 shared disks of 250 GiB used, each once
    assert s.bytes_copied_mib == 6 * 20 * GIB + 2 * 250 * GIB
    by_vm = {r.vm: r.bytes_copied_mib for r in g.vms}
    assert by_vm["sql-0001"] == by_vm["sql-0003"] == (20 + 250) * GIB  # the first member copies it
    assert by_vm["sql-0002"] == by_vm["sql-0004"] == 20 * GIB
    assert (gc.restores_consistent, gc.restores_inconsistent, gc.restores_incomplete) == (2, 0, 0)
    assert s.outcomes.app_consistent == 6 and s.audit.ok


def test_on_2012r2_members_are_backed_up_without_the_shared_disk_with_a_reason() -> None:
    g = run(build(fleet__0__guest_cluster={"size": 2, "shared_disks": [{"size_gib": 500, "format": "vhdx"}]}),
            "ws2012r2")
    gc = g.summary.guest_clusters
    assert gc is not None
    assert (gc.members_without_shared_disk, gc.members_failed, gc.vhds_checkpoints, gc.shared_copied_mib) == (4, 0, 0, 0)
    assert g.summary.bytes_copied_mib == 6 * 20 * GIB
    reasons = {r.vm: (r.outcome, r.reason) for r in g.vms}
    assert reasons["sql-0001"] == ("app_consistent", "shared_vhdx_not_supported")
    assert reasons["app-0001"] == ("app_consistent", "")


@pytest.mark.parametrize("gen", ["ws2012r2", "ws2016"])
def test_a_shared_vhdx_fails_its_members_when_the_policy_says_fail(gen: str) -> None:
    # a shared VHDX is not backed up at host level on 2016 either (a VHD Set is) [MS]
    sc = build(fleet__0__guest_cluster={"size": 2, "shared_disks": [{"size_gib": 500, "format": "vhdx"}]},
               backup__shared_vhdx_policy="fail")
    s = run(sc, gen).summary
    assert s.failures_by_reason == {"shared_vhdx_not_supported": 4}
    assert (s.outcomes.failed, s.outcomes.app_consistent) == (4, 2)
    assert s.guest_clusters is not None and s.guest_clusters.members_failed == 4


def test_a_member_retried_in_a_later_round_sees_another_instant_of_the_shared_disk() -> None:
    # one set per LUN; csv-2's set is vetoed once: sql-0002 (node-2, csv-2) is retried 600 s later, so
    # the VHD Set is checkpointed (and copied) again for it: its view is from another instant
    sc = build(fleet=[BASE["fleet"][0] | {"count": 2}], backup__max_luns_per_set=1,
               events=[{"at_s": 0, "kind": "snapshot_fault", "csv": "csv-2", "code": "provider_veto"}])
    s = run(sc, "ws2016").summary
    gc = s.guest_clusters
    assert gc is not None
    assert (gc.vhds_checkpoints, gc.shared_copied_mib) == (2, 2 * 250 * GIB)
    assert (gc.restores_consistent, gc.restores_inconsistent) == (0, 1)
    assert s.retries == 1 and s.outcomes.app_consistent == 2


def test_rct_applies_to_the_vhd_set_a_nightly_incremental_copies_its_daily_change_once() -> None:
    # night 1: the shared disk's change in a day: 5 % of 250 GiB = 12.5 GiB (analytic, once per guest cluster)
    sc = build(backup__generations=["ws2016"], backup__schedule=[{"at_s": 0, "mode": "full"}, {"at_s": 86400}],
               run__until_s=172800)
    s = run(sc, "ws2016").summary
    gc = s.guest_clusters
    assert gc is not None
    assert gc.vhds_checkpoints == 2 and gc.restores_consistent == 2
    # (the two capture points are a day and a few seconds apart)
    assert gc.shared_copied_mib == pytest.approx(2 * 0.05 * 250 * GIB, rel=1e-4)


def test_guest_cluster_mistakes_are_refused() -> None:
    with pytest.raises(ScenarioError, match=r"fleet\[0\]\.count: 3 VMs do not make whole guest clusters of 2"):
        build(fleet__0__count=3)
    with pytest.raises(ScenarioError, match=r"fleet\[0\]\.guest_cluster\.shared_disks\[0\]\.format"):
        build(fleet__0__guest_cluster={"size": 2, "shared_disks": [{"size_gib": 5, "format": "vhd"}]})


def test_a_scenario_without_guest_clusters_has_no_guest_section() -> None:
    d = copy.deepcopy(BASE)
    del d["fleet"][0]["guest_cluster"]
    s = run(scenario_from_dict(d), "ws2016").summary
    assert s.guest_clusters is None
    assert '"guest_clusters":' not in cluster_sim.results.summary_json(s)
