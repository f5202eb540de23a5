"""Mixed-version clusters (issue 18): each VM's backup mechanism by its host's Windows version, the
functional level and its configuration version; the scenario rules; moves between versions; the
version events (upgrade_node, raise_functional_level, upgrade_vm_config). Small scenarios whose
numbers are worked out by hand in each test."""

from __future__ import annotations

import copy

import pytest
from backup_helpers import changed

import cluster_sim
from cluster_sim.backup.mixed import CONFIG_REASON, LEVEL_REASON, NODE_REASON, mechanism
from cluster_sim.scenario import ScenarioError, scenario_from_dict

BASE = {
    "name": "mixed",
    "seed": 3,
    "cluster": {"nodes": 4, "node_versions": {"ws2012r2": ["node-1", "node-2"], "ws2016": ["node-3", "node-4"]}},
    "storage": {"csvs": 4},
    "fleet": [
        {"template": "old", "count": 4, "config_version": "5.0", "disks": [{"size_gib": 40}]},
        {"template": "new", "count": 4, "config_version": "8.0", "disks": [{"size_gib": 40}]},
    ],
    "backup": {"generations": ["ws2016"]},
    "run": {"until_s": 86400},
}


def scenario(**changes: object) -> cluster_sim.Scenario:
    return changed(BASE, **changes)


def run(sc: cluster_sim.Scenario, gen: str = "ws2016"):  # type: ignore[no-untyped-def]
    return cluster_sim.run(sc, backend="local", generations=[gen]).generations[0]


class _Cluster:
    """What `mechanism` asks of the cluster: one VM on one node."""

    def __init__(self, node: str, level: str, config: str):
        self.node, self.level, self.config = node, level, config

    def host_of(self, vm: str) -> str:
        return "n"

    def node_version(self, node: str) -> str:
        return self.node

    def functional_level(self) -> str:
        return self.level

    def vm_config_version(self, vm: str) -> str:
        return self.config


@pytest.mark.parametrize(("named", "node", "level", "config", "expected"), [
    ("ws2016", "ws2016", "ws2016", "8.0", ("ws2016", "")),
    ("ws2016", "ws2016", "ws2016", "5.0", ("ws2012r2", CONFIG_REASON)),
    ("ws2016", "ws2016", "ws2012r2", "8.0", ("ws2012r2", LEVEL_REASON)),
    ("ws2016", "ws2016", "ws2012r2", "5.0", ("ws2012r2", LEVEL_REASON)),
    ("ws2016", "ws2012r2", "ws2012r2", "5.0", ("ws2012r2", NODE_REASON)),
    ("ws2012r2", "ws2016", "ws2016", "8.0", ("ws2012r2", "")),
    ("ws2012", "ws2016", "ws2016", "8.0", ("ws2012", "")),
    ("ws2008r2", "ws2012r2", "ws2012r2", "5.0", ("ws2008r2", "")),
])
def test_each_vm_gets_the_oldest_of_named_generation_host_version_level_and_configuration(
        named: str, node: str, level: str, config: str, expected: tuple[str, str]) -> None:
    assert mechanism(_Cluster(node, level, config), "vm", named) == expected  # type: ignore[arg-type]


def test_at_level_2012r2_every_vm_takes_the_per_vm_path_with_a_reason_per_vm_in_vms_csv() -> None:
    # old-0001/2 on the 2012 R2 nodes 1, 2; old-0003/4 and the four 8.0 VMs on the 2016 nodes 3, 4
    # (a VM above 5.0 is placed on 2016 nodes only): 8 per-VM snapshots, no set of the 2016 kind
    g = run(scenario(cluster__functional_level="ws2012r2"))
    rows = {r.vm: (r.node, r.mechanism, r.mechanism_reason) for r in g.vms}
    assert rows["old-0001"] == ("node-1", "ws2012r2", NODE_REASON)
    assert rows["old-0003"] == ("node-3", "ws2012r2", LEVEL_REASON)
    assert {rows[f"new-000{i}"][0] for i in range(1, 5)} == {"node-3", "node-4"}
    assert {rows[f"new-000{i}"][1:] for i in range(1, 5)} == {("ws2012r2", LEVEL_REASON)}
    s = g.summary
    assert s.mixed is not None
    assert s.mixed.mechanisms == {"ws2012r2": 8}
    assert s.mixed.mechanism_reasons == {NODE_REASON: 2, LEVEL_REASON: 6}
    assert (s.hw_snapshots_created, s.snapshot_sets, s.outcomes.app_consistent) == (8, 8, 8)
    assert s.mixed.nights[0].rct_share == 0.0
    assert s.audit.ok


def test_at_level_2016_the_8_0_vms_share_one_set_and_the_5_0_vms_keep_one_snapshot_each() -> None:
    sc = scenario(cluster__node_versions={"ws2016": ["node-1", "node-2", "node-3", "node-4"]},
                  cluster__functional_level="ws2016")
    g = run(sc)
    s = g.summary
    assert s.mixed is not None
    assert s.mixed.mechanisms == {"ws2012r2": 4, "ws2016": 4}
    assert s.mixed.mechanism_reasons == {CONFIG_REASON: 4}
    # 4 per-VM snapshots (one LUN each) + one ws2016 set over the 4 CSVs of the 8.0 VMs = 8 LUN snapshots, 5 sets
    night = s.mixed.nights[0]
    assert (night.storage_snapshots, night.snapshot_sets) == (8, 5)
    assert (night.vms_ws2016_path, night.vms_on_rct, night.rct_share) == (4, 4, 0.5)
    assert s.outcomes.app_consistent == 8 and s.audit.ok


def test_a_named_generation_older_than_2016_backs_up_every_vm_as_before() -> None:
    sc = scenario(cluster__node_versions={"ws2016": ["node-1", "node-2", "node-3", "node-4"]})
    g = run(sc, "ws2012r2")
    assert g.summary.mixed is not None and g.summary.mixed.mechanisms == {"ws2012r2": 8}
    assert g.summary.mixed.mechanism_reasons == {}
    assert g.summary.hw_snapshots_created == 8


def test_an_8_0_vm_cannot_live_migrate_to_a_2012r2_node_but_a_5_0_vm_can() -> None:
    sc = scenario(events=[{"at_s": 10, "kind": "migrate_vm", "vm": "new-0001", "to": "node-1"},
                          {"at_s": 10, "kind": "migrate_vm", "vm": "old-0003", "to": "node-1"}],
                  backup__start_s=600)
    g = run(sc)
    nodes = {r.vm: r.node for r in g.vms}
    assert nodes["new-0001"] == "node-3"  # refused: it stays
    assert nodes["old-0003"] == "node-1"  # moved
    s = g.summary
    assert (s.migrations.requested, s.migrations.completed, s.migrations.failed) == (2, 1, 1)
    assert s.mixed is not None and s.mixed.migrations_refused_config_version == 1


def test_draining_a_2016_node_moves_8_0_vms_only_to_the_other_2016_node() -> None:
    # node-3 hosts old-0003, new-0001, new-0003; the 8.0 VMs may go to node-4 only; the 5.0 VM goes to
    # the least loaded node (node-1 and node-2 have one VM each: node-1 first)
    sc = scenario(events=[{"at_s": 10, "kind": "drain_node", "node": "node-3"}], backup__start_s=3600)
    g = run(sc)
    nodes = {r.vm: r.node for r in g.vms}
    assert nodes["new-0001"] == nodes["new-0003"] == "node-4"
    assert nodes["old-0003"] == "node-1"
    assert g.summary.migrations.failed == 0


def test_failover_places_an_8_0_vm_only_on_a_2016_node() -> None:
    sc = scenario(events=[{"at_s": 10, "kind": "crash_node", "node": "node-3"}], backup__start_s=3600)
    g = run(sc)
    nodes = {r.vm: r.node for r in g.vms}
    assert nodes["new-0001"] == nodes["new-0003"] == "node-4"
    assert g.summary.vms_without_host == 0


def test_raising_the_level_and_upgrading_configurations_turns_the_next_backup_into_an_rct_full_then_incrementals() -> None:
    # 8 VMs of 5.0 on four 2016 nodes at level 2012 R2: night 0 per-VM path (8 snapshots, 8 sets).
    # Day 1: level raised, configurations upgraded (120 s down each: 960 s). Night 1: one set over the
    # 4 CSVs, every VM on RCT but its filter map is no RCT reference: 8 full copies of 20 GiB used each
    # (163840 MiB). Night 2: RCT incrementals, no full.
    sc = scenario(cluster__node_versions={"ws2016": ["node-1", "node-2", "node-3", "node-4"]},
                  cluster__functional_level="ws2012r2",
                  fleet=[{"template": "vm", "count": 8, "config_version": "5.0", "disks": [{"size_gib": 40}]}],
                  backup__schedule=[{"at_s": 0, "mode": "full"}, {"at_s": 86400}, {"at_s": 172800}],
                  events=[{"at_s": 40000, "kind": "raise_functional_level"},
                          {"at_s": 50000, "kind": "upgrade_vm_config"}],
                  run__until_s=259200)
    s = run(sc).summary
    assert s.mixed is not None
    n0, n1, n2 = s.mixed.nights
    assert (n0.functional_level, n0.storage_snapshots, n0.snapshot_sets, n0.rct_share) == ("ws2012r2", 8, 8, 0.0)
    assert (n1.functional_level, n1.storage_snapshots, n1.snapshot_sets, n1.rct_share) == ("ws2016", 4, 1, 1.0)
    assert s.jobs[1].full_copy_reasons == {"rct_first_backup_after_upgrade": 8}
    assert n1.bytes_copied_mib == 8 * 20 * 1024
    assert n2.full_copies == 0 and n2.bytes_copied_mib < n1.bytes_copied_mib / 10
    assert s.mixed.vm_config_upgrades == 8
    assert s.vm_downtime_s_total == pytest.approx(8 * 120.0)
    assert s.audit.ok and s.verification.claim_mismatches == 0


def test_upgrade_node_drains_reinstalls_and_rejoins_as_2016() -> None:
    sc = scenario(cluster__node_versions={"ws2012r2": ["node-1", "node-2", "node-3", "node-4"]},
                  fleet=[{"template": "vm", "count": 8, "config_version": "5.0", "disks": [{"size_gib": 40}]}],
                  backup__schedule=[{"at_s": 0, "mode": "full"}, {"at_s": 86400}],
                  events=[{"at_s": 40000, "kind": "upgrade_node", "node": "node-1", "reinstall_s": 7200}],
                  run__until_s=172800)
    g = run(sc)
    s = g.summary
    assert s.mixed is not None
    assert s.mixed.node_versions == {"ws2012r2": 3, "ws2016": 1} and s.mixed.nodes_upgraded == 1
    assert (s.mixed.nights[1].nodes_ws2016, s.mixed.nights[1].nodes_ws2012r2) == (1, 3)
    assert not [r for r in g.vms if r.node == "node-1"]  # drained, back empty
    # its two VMs moved to a 2012 R2 node: their filter maps are lost, their next copy is a full
    assert s.jobs[1].full_copy_reasons == {"change_tracking_lost_vm_moved": 2}
    assert s.migrations.completed == 2 and s.audit.ok


def test_a_node_back_from_its_upgrade_takes_the_csvs_of_a_node_that_failed_meanwhile() -> None:
    # two nodes: node-2 is drained and reinstalled from 1,000 s to 8,200 s; node-1 crashes at 2,000 s,
    # so no node can take csv-1 and csv-2 (both on node-1 by then); node-2 rejoins and takes both
    sc = scenario(cluster__nodes=2, cluster__node_versions={"ws2012r2": ["node-1", "node-2"]}, storage__csvs=2,
                  fleet=[{"template": "vm", "count": 2, "config_version": "5.0", "disks": [{"size_gib": 4}]}],
                  backup=None,
                  events=[{"at_s": 1000, "kind": "upgrade_node", "node": "node-2", "reinstall_s": 7200},
                          {"at_s": 2000, "kind": "crash_node", "node": "node-1"}],
                  run__until_s=20000, run__steady_duration_s=12000)
    g = run(sc, None)
    assert {r.csv: r.coordinator for r in g.csvs} == {"csv-1": "node-2", "csv-2": "node-2"}
    (done,) = [(t, ids["node"]) for t, ev, ids in g.trace.events if ev == "node_upgrade_done"]
    assert done[1] == "node-2" and 8200.0 < done[0] < 8300.0  # 1,000 s + the drain (its VM's move) + 7,200 s


@pytest.mark.parametrize(("changes", "path", "words"), [
    ({"cluster__node_versions": {"ws2012r2": ["node-1", "node-9"], "ws2016": ["node-3", "node-4"]}},
     "cluster.node_versions.ws2012r2[1]", "unknown node 'node-9'"),
    ({"cluster__node_versions": {"ws2012r2": ["node-1"], "ws2016": ["node-3", "node-4"]}},
     "cluster.node_versions", "node-2 not listed"),
    ({"cluster__node_versions": {"ws2012r2": ["node-1", "node-2"], "ws2016": ["node-2", "node-3", "node-4"]}},
     "cluster.node_versions.ws2016[0]", "node-2 is listed twice"),
    ({"cluster__functional_level": "ws2016"}, "cluster.functional_level", "node-1, node-2 run ws2012r2"),
    ({"cluster__node_versions": {"ws2012r2": ["node-1", "node-2", "node-3", "node-4"]}},
     "fleet[1].config_version", "8.0 runs on ws2016 nodes only"),
    ({"events": [{"at_s": 100, "kind": "upgrade_node", "node": "node-3"}]}, "events[0].node",
     "node-3 already runs ws2016"),
    ({"events": [{"at_s": 100, "kind": "upgrade_node", "node": "node-1"},
                 {"at_s": 100, "kind": "upgrade_node", "node": "node-2"},
                 {"at_s": 5000, "kind": "raise_functional_level"}]}, "events[2].at_s", "node-1, node-2 do not run ws2016 yet"),
    ({"events": [{"at_s": 100, "kind": "upgrade_vm_config"}]}, "events[0].at_s", "needs functional level ws2016"),
    ({"events": [{"at_s": 100, "kind": "upgrade_vm_config", "version": "8.7"}]}, "events[0].version",
     "unknown VM configuration version"),
])
def test_mixed_version_mistakes_are_refused_with_the_field_path_and_reason(changes: dict, path: str, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError) as err:
        scenario(**changes)
    problems = err.value.problems
    assert problems[0][0] == path, problems
    assert words in problems[0][1], problems


def test_version_fields_and_events_need_node_versions() -> None:
    d = copy.deepcopy(BASE)
    del d["cluster"]["node_versions"]
    d["cluster"]["functional_level"] = "ws2016"
    with pytest.raises(ScenarioError, match="cluster.functional_level: needs cluster.node_versions"):
        scenario_from_dict(d)
    del d["cluster"]["functional_level"]
    d["events"] = [{"at_s": 5, "kind": "raise_functional_level"}]
    with pytest.raises(ScenarioError, match=r"events\[0\]: raise_functional_level needs cluster.node_versions"):
        scenario_from_dict(d)


def test_a_scenario_without_versions_has_no_mixed_section_and_no_mechanism_column_values() -> None:
    d = copy.deepcopy(BASE)
    del d["cluster"]["node_versions"]
    g = run(scenario_from_dict(d))
    assert g.summary.mixed is None
    assert "\"mixed\":" not in cluster_sim.results.summary_json(g.summary)
    assert {(r.mechanism, r.mechanism_reason) for r in g.vms} == {("", "")}


# ---- scenarios/rolling-upgrade.yaml: the claims of README "Mixed-version clusters" ---------------------
def test_rolling_upgrade_per_night_table_shows_the_rct_benefit_only_after_level_and_configurations() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scenarios" / "rolling-upgrade.yaml"
    res = cluster_sim.run(cluster_sim.load_scenario(path), backend="local")
    by = res.by_generation()
    new, old = by["ws2016"].summary.mixed, by["ws2012r2"].summary.mixed
    assert new is not None and old is not None
    # one node a day (two on day 7): nodes on 2016 when each night begins
    assert [n.nodes_ws2016 for n in new.nights] == [0, 1, 2, 3, 4, 5, 6, 8, 8, 8]
    # nights 0-7: every VM on the 2012 R2 path (2012 R2 node, or 2016 node at level 2012 R2): no RCT,
    # one storage snapshot per batch of 4 VMs of a CSV on a node, as with -g ws2012r2
    for a, b in zip(new.nights[:8], old.nights[:8], strict=True):
        assert a.rct_share == 0.0 and a == b
    # every drain moves VMs, whose filter maps are lost: the nights after an upgrade copy those in full
    assert all(n.full_copies > 0 for n in new.nights[1:8])
    # night 8: level raised and configurations 8.0: one set over the 8 CSVs, every VM on RCT, but the
    # first RCT copy of each VM is a full (160 of 160); night 9: the full benefit (RCT incrementals)
    n8, n9 = new.nights[8], new.nights[9]
    assert (n8.storage_snapshots, n8.snapshot_sets, n8.rct_share, n8.full_copies) == (8, 1, 1.0, 160)
    assert (n9.storage_snapshots, n9.snapshot_sets, n9.rct_share, n9.full_copies) == (8, 1, 1.0, 0)
    assert n9.bytes_copied_mib < n8.bytes_copied_mib / 10
    # the old design keeps its 56 snapshots a night
    assert (old.nights[9].storage_snapshots, old.nights[9].snapshot_sets) == (56, 56)
    assert new.vm_config_upgrades == 160 and new.nodes_upgraded == 8 and new.functional_level == "ws2016"
    assert by["ws2016"].summary.audit.ok and by["ws2016"].summary.verification.claim_mismatches == 0


def test_nights_command_prints_the_per_night_table_and_refuses_a_run_without_versions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cluster_sim.cli import app
    from cluster_sim.results import write_generation

    g = run(scenario(cluster__functional_level="ws2012r2"))
    write_generation(g, tmp_path / "mixed" / "ws2016")
    runner = CliRunner()
    res = runner.invoke(app, ["nights", str(tmp_path / "mixed"), "--markdown"])
    assert res.exit_code == 0, res.output
    assert "| 0 | full | 2012R2 | 2/2 |" in res.output
    d = copy.deepcopy(BASE)
    del d["cluster"]["node_versions"]
    write_generation(run(scenario_from_dict(d)), tmp_path / "plain" / "ws2016")
    res = runner.invoke(app, ["nights", str(tmp_path / "plain")])
    assert res.exit_code == 2


def test_a_ws2016_run_of_a_mixed_cluster_reads_the_batch_size_so_studies_do_not_copy_it() -> None:
    # on one version ws2016 never reads backup.vms_per_snapshot (a study copies such runs); on a mixed
    # cluster its 2012 R2-path VMs are batched: two batch sizes are two different runs
    from cluster_sim.backup.ignored import effective_key, ignored_paths

    sc = scenario(cluster__functional_level="ws2012r2")
    other = sc.model_copy(update={"backup": sc.backup.model_copy(update={"vms_per_snapshot": 4})})
    assert effective_key(sc, "ws2016") != effective_key(other, "ws2016")
    assert "backup.vms_per_snapshot" not in ignored_paths("ws2016", sc)
    assert "backup.vms_per_snapshot" in ignored_paths("ws2016")
    a, b = run(sc).summary, run(other).summary
    # round_robin: each node's VMs (1, 1, 3, 3) on its own CSV: one batch of up to 4 per node = 4 snapshots
    assert (a.hw_snapshots_created, b.hw_snapshots_created) == (8, 4)


def test_tracking_that_changes_kind_makes_the_next_copy_a_full_with_its_reason() -> None:
    # an RCT map on a node whose mechanism cannot use it (and a filter map under RCT) is no reference
    from cluster_sim.backup.tracking import ChangeTracker

    sc = scenario(cluster__node_versions={"ws2016": ["node-1", "node-2", "node-3", "node-4"]},
                  cluster__functional_level="ws2016")
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.cluster.nodes import LocalBackend
    from cluster_sim.kernel.rng import Streams
    from cluster_sim.scenario import place_fleet

    be = LocalBackend([f"node-{i}" for i in range(1, 5)])
    try:
        cm = ClusterModel(sc, place_fleet(sc), be, Streams(1))
        t = ChangeTracker(cm, "ws2016", sc.backup)
        t.previous_backup("new-0001", -86400.0)
        assert t.plan("new-0001", "incremental").kind == "incremental"
        t.switch("new-0001", "filter", "rct_lost_node_without_rct")
        assert (t.plan("new-0001", "incremental").kind, t.plan("new-0001", "incremental").reason) == (
            "full", "rct_lost_node_without_rct")
        t.commit("new-0001", 3, 10.0)  # the full succeeded: tracked again, with the new kind
        assert t.plan("new-0001", "incremental").kind == "incremental"
        t.switch("new-0002", "filter", "x")  # never backed up: no reference to lose, no special reason
        assert t.plan("new-0002", "incremental").reason == "no_previous_backup"
    finally:
        be.close()
