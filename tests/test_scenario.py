"""Scenario model: example files, documented defaults, YAML typing, overrides and VM placement."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cluster_sim.scenario import GENERATIONS, ScenarioError, load_scenario
from cluster_sim.scenario.placement import initial_coordinator, place_fleet

SCENARIOS = Path(__file__).parent.parent / "scenarios"
SMALL = SCENARIOS / "small-4node.yaml"
BIG = SCENARIOS / "800vm-8node.yaml"

MINIMAL = """\
name: minimal
cluster:
  nodes: 2
storage:
  csvs: 2
fleet:
  - template: web
    count: 4
    disks: [{size_gib: 40}]
"""


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def csv_index(csv: str) -> int:
    """'csv-3' -> 2 (0-based, as initial_coordinator expects)."""
    return int(csv.rsplit("-", 1)[1]) - 1


def coordinates_own_csv(vm, nodes: int) -> bool:
    return initial_coordinator(csv_index(vm.csv), nodes) == vm.node


# ----------------------------------------------------------------------------------------------
# example scenarios
# ----------------------------------------------------------------------------------------------
def test_small_example_validates_with_its_shape():
    sc = load_scenario(SMALL)
    assert sc.name == "small-4node"
    assert sc.seed == 7
    assert (sc.cluster.nodes, sc.storage.csvs, sc.vm_count()) == (4, 4, 40)
    assert [t.template for t in sc.fleet] == ["win-app", "linux-web", "win-noscsi"]
    assert sc.backup is not None
    assert sc.backup.generations == list(GENERATIONS)
    assert sc.run.backend == "local"


def test_800vm_example_validates_with_its_shape():
    sc = load_scenario(BIG)
    assert sc.name == "800vm-8node"
    assert (sc.cluster.nodes, sc.storage.csvs, sc.vm_count()) == (8, 8, 800)
    assert sc.cluster.node_memory_gib == 1024
    assert sc.run.backend == "ray"
    assert sc.run.until_s == 259200
    legacy = next(t for t in sc.fleet if t.template == "win-legacy")
    assert legacy.config_version == "5.0"
    assert {d.format for d in legacy.disks} == {"vhd"}


# ----------------------------------------------------------------------------------------------
# defaults
# ----------------------------------------------------------------------------------------------
def test_defaults_are_the_documented_numbers(tmp_path):
    sc = load_scenario(write(tmp_path, MINIMAL + "backup: {}\n"))
    assert sc.seed == 42
    assert sc.placement == "round_robin"
    assert sc.cluster.heartbeat_interval_s == 1.0
    assert sc.cluster.heartbeat_threshold == 10
    assert sc.storage.array.max_snapshots_per_lun == 255
    assert sc.storage.array.snapshot_style == "cow"
    b = sc.backup
    assert b is not None
    assert b.generations == ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]
    assert b.concurrent_vms_per_node == 3
    assert b.retries == 3
    assert b.retry_wait_s == 600
    assert b.hold_writes_limit_s == 10
    assert b.writer_freeze_limit_s == 60
    assert b.saved_state_downtime_s == 20
    assert b.vms_per_snapshot == 1
    assert b.max_luns_per_set == 64
    assert sc.run.backend == "local"
    assert sc.run.until_s == 86400


def test_template_and_disk_defaults(tmp_path):
    sc = load_scenario(write(tmp_path, MINIMAL))
    t = sc.fleet[0]
    assert (t.guest_os, t.memory_gib, t.config_version, t.filesystem) == ("windows", 8.0, "8.0", "ntfs")
    assert t.scsi_controller and t.integration_services and t.integration_services_backup and t.running
    assert (t.disks[0].format, t.disks[0].used_fraction) == ("vhdx", 0.5)
    assert t.workload.working_set_fraction == 0.3


def test_scenario_without_backup_section_has_no_backup(tmp_path):
    sc = load_scenario(write(tmp_path, MINIMAL))
    assert sc.backup is None
    assert sc.run.steady_duration_s == 3600


# ----------------------------------------------------------------------------------------------
# YAML typing
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "kept"),
    [("8.0", "8.0"), ("5.0", "5.0"), ("10.0", "10.0"), ("9.1", "9.1"), ("8", "8.0"), ('"9.0"', "9.0")],
)
def test_config_version_written_unquoted_is_kept_as_text(tmp_path, written, kept):
    text = MINIMAL.replace("    count: 4\n", f"    count: 4\n    config_version: {written}\n")
    sc = load_scenario(write(tmp_path, text))
    assert sc.fleet[0].config_version == kept


def test_config_version_as_bool_is_refused(tmp_path):
    text = MINIMAL.replace("    count: 4\n", "    count: 4\n    config_version: true\n")
    with pytest.raises(ScenarioError, match=r"fleet\[0\]\.config_version: Input should be a valid string"):
        load_scenario(write(tmp_path, text))


def test_integer_written_for_a_float_field_is_accepted(tmp_path):
    text = MINIMAL.replace("  nodes: 2\n", "  nodes: 2\n  node_memory_gib: 512\n")
    sc = load_scenario(write(tmp_path, text))
    assert sc.cluster.node_memory_gib == 512.0


# ----------------------------------------------------------------------------------------------
# overrides
# ----------------------------------------------------------------------------------------------
def test_overrides_take_effect_with_yaml_typing():
    sc = load_scenario(SMALL, ["backup.vms_per_snapshot=5", "fleet.0.count=3"])
    assert sc.backup is not None
    assert sc.backup.vms_per_snapshot == 5
    assert sc.fleet[0].count == 3
    assert sc.vm_count() == 3 + 6 + 4


def test_overrides_parse_lists_bools_and_versions_as_yaml():
    sc = load_scenario(
        SMALL,
        [
            "backup.generations=[ws2016, ws2012]",
            "cluster.networks.shared_cluster_and_lm=true",
            "fleet.1.config_version=9.0",
            "storage.array.snapshot_style=row",
        ],
    )
    assert sc.backup is not None
    assert sc.backup.generations == ["ws2016", "ws2012"]
    assert sc.cluster.networks.shared_cluster_and_lm is True
    assert sc.fleet[1].config_version == "9.0"
    assert sc.storage.array.snapshot_style == "row"


def test_quoted_override_stays_a_string_and_is_refused_for_a_number():
    with pytest.raises(ScenarioError, match=r"cluster\.nodes: Input should be a valid integer"):
        load_scenario(SMALL, ['cluster.nodes="4"'])


def test_override_can_create_a_missing_section(tmp_path):
    sc = load_scenario(write(tmp_path, MINIMAL), ["backup.retries=0"])
    assert sc.backup is not None
    assert sc.backup.retries == 0
    assert sc.backup.concurrent_vms_per_node == 3


def test_override_does_not_change_the_file(tmp_path):
    f = write(tmp_path, MINIMAL)
    load_scenario(f, ["cluster.nodes=4", "storage.csvs=4"])
    assert f.read_text() == MINIMAL
    assert load_scenario(f).cluster.nodes == 2


def test_override_into_a_missing_list_index_names_the_path():
    with pytest.raises(ScenarioError) as info:
        load_scenario(SMALL, ["fleet.3.count=3"])
    assert str(info.value) == f"{SMALL}: fleet.3.count: '3' is not an index of a list of 3"


def test_override_through_a_scalar_names_the_path():
    with pytest.raises(ScenarioError) as info:
        load_scenario(SMALL, ["cluster.nodes.count=3"])
    assert str(info.value) == f"{SMALL}: cluster.nodes.count: cluster.nodes is a value, not a section"


def test_override_with_a_name_instead_of_a_list_index_names_the_path():
    with pytest.raises(ScenarioError, match=r"fleet\.count: 'count' is not an index of a list of 3"):
        load_scenario(SMALL, ["fleet.count=3"])


def test_override_with_unknown_field_is_refused_like_in_the_file():
    with pytest.raises(ScenarioError, match=r"backup\.vms_per_snapshto: unknown field"):
        load_scenario(SMALL, ["backup.vms_per_snapshto=5"])


def test_override_value_that_is_not_yaml_is_refused():
    with pytest.raises(ScenarioError) as info:
        load_scenario(SMALL, ["backup.generations=[ws2016"])
    assert str(info.value).startswith("--set: backup.generations: value '[ws2016' is not valid YAML")


def test_override_on_an_empty_file_reports_the_empty_file(tmp_path):
    f = write(tmp_path, "")
    with pytest.raises(ScenarioError) as info:
        load_scenario(f, ["cluster.nodes=2"])
    assert str(info.value) == f"{f}: a scenario is a YAML mapping of sections; this file is empty"


# ----------------------------------------------------------------------------------------------
# feasibility boundaries
# ----------------------------------------------------------------------------------------------
def test_round_robin_needs_csvs_only_for_nodes_that_host_vms(tmp_path):
    text = MINIMAL.replace("nodes: 2", "nodes: 4").replace("count: 4", "count: 2")
    sc = load_scenario(write(tmp_path, text))
    assert {vm.node for vm in place_fleet(sc)} == {"node-1", "node-2"}


def test_spread_placement_accepts_fewer_csvs_than_nodes(tmp_path):
    text = MINIMAL.replace("nodes: 2", "nodes: 4") + "placement: spread\n"
    sc = load_scenario(write(tmp_path, text))
    assert (sc.cluster.nodes, sc.storage.csvs) == (4, 2)


def test_vm_memory_exactly_filling_a_node_is_accepted(tmp_path):
    text = MINIMAL.replace("  nodes: 2\n", "  nodes: 2\n  node_memory_gib: 64\n").replace(
        "    count: 4\n", "    count: 4\n    memory_gib: 32\n"
    )
    sc = load_scenario(write(tmp_path, text))
    assert sc.vm_count() == 4
    with pytest.raises(ScenarioError, match="fleet: placement cannot work: node-1 would host 96 GiB"):
        load_scenario(write(tmp_path, text), ["fleet.0.count=5"])


# ----------------------------------------------------------------------------------------------
# placement
# ----------------------------------------------------------------------------------------------
def test_vm_names_are_template_and_four_digit_number_in_fleet_order():
    vms = place_fleet(load_scenario(SMALL))
    names = [vm.name for vm in vms]
    assert names[:3] == ["win-app-0001", "win-app-0002", "win-app-0003"]
    assert names == (
        [f"win-app-{k:04d}" for k in range(1, 31)]
        + [f"linux-web-{k:04d}" for k in range(1, 7)]
        + [f"win-noscsi-{k:04d}" for k in range(1, 5)]
    )
    assert [vm.index for vm in vms] == list(range(40))
    assert all(vm.name.startswith(vm.template + "-") for vm in vms)


def test_a_fleet_placed_again_is_the_placement_kept_and_a_changed_scenario_is_placed_anew():
    from cluster_sim.scenario import placement

    sc = load_scenario(SMALL)  # (validating it placed its fleet)
    first, again = place_fleet(sc), place_fleet(sc)
    assert first == again and first is not again  # a new list each time: a caller may change it
    assert all(a is b for a, b in zip(first, again, strict=True))  # of the same (frozen) VMs
    assert first == placement._place_fleet(sc)
    sc.placement = "spread"  # (what the placement reads changed: not the kept one)
    spread = place_fleet(sc)
    assert [vm.csv for vm in spread] == [vm.csv for vm in placement._place_fleet(sc)]
    assert [vm.csv for vm in spread] != [vm.csv for vm in first]
    sc.fleet[0].count = 29
    assert len(place_fleet(sc)) == 39
    for n in range(placement.PLACEMENTS_KEPT + 3):  # (no more than PLACEMENTS_KEPT kept)
        sc.fleet[0].count = 20 + n
        place_fleet(sc)
    assert len(placement._PLACED) == placement.PLACEMENTS_KEPT


def test_vms_go_round_robin_over_nodes_in_fleet_order():
    vms = place_fleet(load_scenario(SMALL))
    assert [vm.node for vm in vms[:6]] == ["node-1", "node-2", "node-3", "node-4", "node-1", "node-2"]
    assert Counter(vm.node for vm in vms) == {"node-1": 10, "node-2": 10, "node-3": 10, "node-4": 10}


def test_round_robin_puts_every_vm_on_a_csv_its_node_coordinates():
    sc = load_scenario(SMALL)
    vms = place_fleet(sc)
    assert all(coordinates_own_csv(vm, sc.cluster.nodes) for vm in vms)
    assert Counter(vm.csv for vm in vms) == {"csv-1": 10, "csv-2": 10, "csv-3": 10, "csv-4": 10}


def test_round_robin_with_more_csvs_than_nodes_uses_every_csv_of_each_node(tmp_path):
    text = MINIMAL.replace("csvs: 2", "csvs: 5").replace("count: 4", "count: 20")
    sc = load_scenario(write(tmp_path, text))
    vms = place_fleet(sc)
    assert all(coordinates_own_csv(vm, 2) for vm in vms)
    # node-1 coordinates csv-1, csv-3, csv-5; node-2 coordinates csv-2, csv-4
    assert {vm.csv for vm in vms if vm.node == "node-1"} == {"csv-1", "csv-3", "csv-5"}
    assert {vm.csv for vm in vms if vm.node == "node-2"} == {"csv-2", "csv-4"}


def test_round_robin_keeps_the_800vm_fleet_on_coordinating_nodes():
    sc = load_scenario(BIG, ["placement=round_robin"])
    vms = place_fleet(sc)
    assert len(vms) == 800
    assert all(coordinates_own_csv(vm, 8) for vm in vms)


def test_the_headline_spreads_vms_over_csvs_as_on_most_real_clusters():
    sc = load_scenario(BIG)
    assert sc.placement == "spread"
    vms = place_fleet(sc)
    # csv = (index // 8 + index) % 8: a node's 100 VMs sit on all 8 CSVs, 12 or 13 on each
    for node in {vm.node for vm in vms}:
        per_csv = [sum(1 for vm in vms if vm.node == node and vm.csv == f"csv-{c}") for c in range(1, 9)]
        assert sorted(set(per_csv)) == [12, 13], node
    # a VM is on a CSV its node coordinates when (index // 8) % 8 == 0: 13 blocks of 8 VMs, 104
    assert sum(not coordinates_own_csv(vm, 8) for vm in vms) == 800 - 104


def test_spread_puts_most_vms_on_csvs_their_node_does_not_coordinate():
    sc = load_scenario(SMALL, ["placement=spread"])
    vms = place_fleet(sc)
    own = sum(coordinates_own_csv(vm, 4) for vm in vms)
    assert own < len(vms) / 3
    # still balanced: every node and every CSV gets its share
    assert Counter(vm.node for vm in vms) == {f"node-{i}": 10 for i in range(1, 5)}
    assert Counter(vm.csv for vm in vms) == {f"csv-{i}": 10 for i in range(1, 5)}


def test_spread_on_the_800vm_fleet_leaves_most_vms_away_from_their_coordinator():
    sc = load_scenario(BIG, ["placement=spread"])
    vms = place_fleet(sc)
    own = sum(coordinates_own_csv(vm, 8) for vm in vms)
    assert own < len(vms) / 4
    assert set(Counter(vm.csv for vm in vms).values()) == {100}


def test_initial_coordinator_wraps_csvs_over_nodes():
    assert [initial_coordinator(i, 3) for i in range(7)] == [
        "node-1", "node-2", "node-3", "node-1", "node-2", "node-3", "node-1",
    ]


def test_vm_spec_carries_sizes_in_mib_from_the_template():
    vms = place_fleet(load_scenario(SMALL))
    first = vms[0]
    assert first.memory_mib == 8 * 1024
    assert [d.size_mib for d in first.disks] == [60 * 1024, 100 * 1024]
    assert [d.used_mib for d in first.disks] == [30 * 1024, 50 * 1024]
    linux = next(vm for vm in vms if vm.template == "linux-web")
    assert linux.guest_os == "linux"
    assert linux.memory_mib == 4 * 1024
