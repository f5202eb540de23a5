"""What each generation does, counted on a small all-eligible cluster: storage snapshots and
snapshot sets, host mounts and SCSI hot-adds, redirected access, AVHDX time, bytes copied
(full and ws2016 RCT incremental), the window's lower bound, the audit and leaks."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import pytest
from backup_helpers import ALL_GENS, LEGACY, assert_clean, run_gens, scenario_dict, template, used_mib

from cluster_sim.results import GenerationResult

Results = dict[str, GenerationResult]

NODES, CSVS, VMS = 4, 4, 40
FLEET = [{
    "template": "win",
    "count": VMS,
    "memory_gib": 2,
    "disks": [{"size_gib": 2, "used_fraction": 0.5}, {"size_gib": 4, "used_fraction": 0.25}],
}]
DISKS_PER_VM = 2
USED_MIB_PER_VM = 2 * 1024 * 0.5 + 4 * 1024 * 0.25  # 2048 MiB
METADATA_REDIRECT_S = 2.0  # Backup.csv_metadata_redirect_s default


def _sc(**kw: Any) -> dict:
    kw.setdefault("fleet", FLEET)
    kw.setdefault("nodes", NODES)
    kw.setdefault("csvs", CSVS)
    return scenario_dict(**kw)


@pytest.fixture(scope="module")
def base() -> Results:
    return run_gens(_sc(), ALL_GENS)


def test_small_cluster_backs_up_every_vm_app_consistent_on_every_generation(base: Results) -> None:
    for gen, g in base.items():
        assert g.summary.outcomes.app_consistent == VMS, gen
        assert g.summary.failures_by_reason == {}, gen
        assert [r.retries for r in g.vms] == [0] * VMS, gen


# ---- storage snapshots --------------------------------------------------------------------------
def test_ws2012r2_batch_1_takes_one_storage_snapshot_per_backed_up_vm(base: Results) -> None:
    s = base["ws2012r2"].summary
    assert s.hw_snapshots_created == VMS
    assert s.snapshot_sets == VMS
    ids = [r.snapshot_id for r in base["ws2012r2"].vms]
    assert all(ids) and len(set(ids)) == VMS


def test_ws2012r2_hot_adds_the_auto_recovery_disk_once_per_app_consistent_vm(base: Results) -> None:
    assert base["ws2012r2"].summary.scsi_hot_adds == base["ws2012r2"].summary.outcomes.app_consistent == VMS
    for gen in ("ws2008r2", "ws2012", "ws2016"):
        assert base[gen].summary.scsi_hot_adds == 0, gen


@pytest.mark.parametrize(
    ("placement", "expected"),
    [
        # round_robin: each node coordinates one CSV and holds its 10 VMs there: 4 x ceil(10/5)
        ("round_robin", 8),
        # spread: node k's VMs land on CSVs (j + k) % 4, j = 0..9 -> 3, 3, 2, 2 VMs per CSV:
        # per node ceil(3/5) + ceil(3/5) + ceil(2/5) + ceil(2/5) = 4; 4 nodes -> 16
        ("spread", 16),
    ],
)
def test_ws2012r2_batch_5_takes_one_snapshot_per_five_vms_of_a_node_on_a_csv(placement: str, expected: int) -> None:
    g = run_gens(_sc(placement=placement, backup={"vms_per_snapshot": 5}), ["ws2012r2"])["ws2012r2"]
    s = g.summary
    groups = Counter((r.node, r.csv) for r in g.vms)
    assert sum(math.ceil(n / 5) for n in groups.values()) == expected
    assert s.hw_snapshots_created == expected
    assert s.snapshot_sets == expected
    assert s.outcomes.app_consistent == VMS
    # VMs sharing a storage snapshot share node and CSV, at most 5 of them
    members: dict[str, list] = defaultdict(list)
    for r in g.vms:
        members[r.snapshot_id].append((r.node, r.csv))
    assert len(members) == expected
    for sid, where in members.items():
        assert len(set(where)) == 1 and len(where) <= 5, sid
    assert s.scsi_hot_adds == VMS  # batching cuts snapshots, not per-VM fix-ups
    assert_clean(g)


def test_ws2016_takes_one_snapshot_set_covering_every_lun(base: Results) -> None:
    g = base["ws2016"]
    luns_with_vms = {r.csv for r in g.vms}
    assert len(luns_with_vms) == CSVS
    assert g.summary.snapshot_sets == 1
    assert g.summary.hw_snapshots_created == len(luns_with_vms)
    by_csv: dict[str, set[str]] = defaultdict(set)
    for r in g.vms:
        by_csv[r.csv].add(r.snapshot_id)
    assert all(len(ids) == 1 for ids in by_csv.values())
    assert len({next(iter(ids)) for ids in by_csv.values()}) == CSVS


def test_ws2016_splits_the_set_when_luns_exceed_max_luns_per_set() -> None:
    g = run_gens(_sc(csvs=6, backup={"max_luns_per_set": 4}), ["ws2016"])["ws2016"]
    assert len({r.csv for r in g.vms}) == 6
    assert g.summary.hw_snapshots_created == 6
    assert g.summary.snapshot_sets == 2  # ceil(6 / 4)
    assert g.summary.outcomes.app_consistent == VMS
    assert_clean(g)


def test_legacy_generations_take_one_snapshot_per_vm(base: Results) -> None:
    for gen in LEGACY:
        assert base[gen].summary.hw_snapshots_created == VMS, gen


# ---- auto-recovery ---------------------------------------------------------------------------------
def test_legacy_auto_recovery_mounts_every_vhd_of_every_app_vm_on_the_host(base: Results) -> None:
    for gen in LEGACY:
        s = base[gen].summary
        assert s.host_mounts == DISKS_PER_VM * s.outcomes.app_consistent == DISKS_PER_VM * VMS, gen


def test_ws2012r2_and_ws2016_never_mount_guest_disks_on_the_host(base: Results) -> None:
    for gen in ("ws2012r2", "ws2016"):
        assert base[gen].summary.host_mounts == 0, gen


# ---- redirected access ------------------------------------------------------------------------------
def test_ws2008r2_keeps_csvs_redirected_far_longer_than_ws2012(base: Results) -> None:
    r08 = base["ws2008r2"].summary.redirected_s_total
    r12 = base["ws2012"].summary.redirected_s_total
    assert r12 > 0
    assert r08 > 3 * r12


def test_ws2012_redirects_each_csv_only_for_the_snapshot_metadata_operation(base: Results) -> None:
    g = base["ws2012"]
    s = g.summary
    # one set at a time per node (VSS lock), each redirecting its CSV for csv_metadata_redirect_s,
    # or until its commit is done if the commit waited longer at the array (round_robin: each node
    # its own CSV, so no two holds overlap)
    start = {ids["set"]: t for t, ev, ids in g.trace.events if ev == "snapshot_set_start"}
    done = {ids["set"]: t for t, ev, ids in g.trace.events if ev == "snapshot_set_done"}
    assert len(done) == s.snapshot_sets == VMS
    expected = sum(max(METADATA_REDIRECT_S, done[k] - start[k]) for k in done)
    assert s.redirected_s_total == pytest.approx(expected)
    assert s.redirected_s_total >= s.snapshot_sets * METADATA_REDIRECT_S


def test_ws2008r2_pins_each_csv_for_most_of_the_backup_window(base: Results) -> None:
    s = base["ws2008r2"].summary
    assert s.redirected_s_max_csv > 0.5 * s.backup_window_s


# ---- AVHDX ------------------------------------------------------------------------------------------
def test_checkpoint_generations_run_vms_on_avhdx_and_legacy_do_not(base: Results) -> None:
    assert base["ws2012r2"].summary.avhdx_vm_s > 0
    assert base["ws2016"].summary.avhdx_vm_s > 0
    assert base["ws2008r2"].summary.avhdx_vm_s == 0
    assert base["ws2012"].summary.avhdx_vm_s == 0


# ---- window, audit, leaks ---------------------------------------------------------------------------
@pytest.mark.parametrize("gen", ALL_GENS)
def test_backup_window_is_at_least_its_lower_bound(base: Results, gen: str) -> None:
    s = base[gen].summary
    assert s.window_lower_bound_s > 0
    assert s.backup_window_s >= s.window_lower_bound_s


@pytest.mark.parametrize("gen", ALL_GENS)
def test_audit_is_ok_and_nothing_leaks(base: Results, gen: str) -> None:
    assert_clean(base[gen])


# ---- bytes copied -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gen", ALL_GENS)
def test_full_backup_copies_the_used_part_of_every_disk(base: Results, gen: str) -> None:
    g = base[gen]
    assert used_mib(FLEET) == VMS * USED_MIB_PER_VM
    assert g.summary.bytes_copied_mib == pytest.approx(used_mib(FLEET))
    assert [r.bytes_copied_mib for r in g.vms] == pytest.approx([USED_MIB_PER_VM] * VMS)


INC_FLEET = [
    template("rct", count=4, disks=2, size_gib=4),  # VHDX, config 8.0: RCT applies
    template("vhd", count=4, disks=2, size_gib=4, disk_format="vhd"),  # no RCT for .vhd
    template("mixed", count=2, disks=1, size_gib=4) | {
        "disks": [{"size_gib": 4}, {"size_gib": 4, "format": "vhd"}]},  # one .vhd is enough to lose RCT
    template("v5", count=4, disks=2, size_gib=4, config_version="5.0"),  # no RCT for config 5.0
]
FULL_PER_VM = {"rct": 4096.0, "vhd": 4096.0, "mixed": 4096.0, "v5": 4096.0}  # 2 x 4 GiB x 0.5


def _blocks_changed_in_a_day() -> float:
    """A VM of 4096 MiB used (64 blocks of 64 MiB) changes 5 % of them a day (daily_change_fraction)."""
    return 0.05 * FULL_PER_VM["rct"] / 64


@pytest.fixture(scope="module")
def incremental() -> Results:
    return run_gens(_sc(fleet=INC_FLEET, nodes=2, csvs=2, backup={"mode": "incremental"}), ["ws2012r2", "ws2016"])


def test_ws2016_incremental_copies_only_rct_changes_for_vhdx_config_8_vms(incremental: Results) -> None:
    rows = [r for r in incremental["ws2016"].vms if r.template == "rct"]
    assert len(rows) == 4
    for r in rows:
        assert r.outcome == "app_consistent"
        assert (r.copy_kind, r.copy_reason) == ("incremental", "")
        # RCT copies whole 64 MiB blocks: a day changes 3.2 of the 64 blocks on average (random)
        assert r.bytes_copied_mib % 64.0 == 0
        assert 0 < r.bytes_copied_mib <= 3 * _blocks_changed_in_a_day() * 64.0
    mean = sum(r.bytes_copied_mib for r in rows) / len(rows) / 64.0
    assert mean == pytest.approx(_blocks_changed_in_a_day(), abs=2.0)


@pytest.mark.parametrize("tpl", ["vhd", "mixed", "v5"])
def test_ws2016_incremental_copies_in_full_without_rct(incremental: Results, tpl: str) -> None:
    rows = [r for r in incremental["ws2016"].vms if r.template == tpl]
    assert rows
    for r in rows:
        assert r.outcome == "app_consistent"
        assert r.bytes_copied_mib == pytest.approx(FULL_PER_VM[tpl])


def test_before_ws2016_the_vendor_filter_shrinks_incrementals_of_every_vm_rct_or_not(incremental: Results) -> None:
    # the filter driver tracks writes on the host, whatever the disk format or configuration version
    g = incremental["ws2012r2"]
    for r in g.vms:
        assert (r.copy_kind, r.copy_reason) == ("incremental", ""), r.vm
        assert 0 < r.bytes_copied_mib < 0.5 * FULL_PER_VM[r.template], r.vm
    # ws2016 copies the .vhd and 5.0 VMs (10 of 14) in full: more bytes than ws2012r2 here
    assert incremental["ws2016"].summary.jobs[0].full_copies == 10
    assert incremental["ws2016"].summary.bytes_copied_mib > g.summary.bytes_copied_mib


def test_without_change_tracking_incrementals_before_ws2016_copy_every_block() -> None:
    g = run_gens(_sc(fleet=INC_FLEET, nodes=2, csvs=2, backup={"mode": "incremental", "change_tracking": "none"}),
                 ["ws2012r2"])["ws2012r2"]
    for r in g.vms:
        assert r.bytes_copied_mib == pytest.approx(FULL_PER_VM[r.template]), r.vm
        assert (r.copy_kind, r.copy_reason) == ("full", "change_tracking_off")
    assert g.summary.bytes_copied_mib == pytest.approx(used_mib(INC_FLEET))


def test_incremental_runs_are_clean(incremental: Results) -> None:
    for g in incremental.values():
        assert_clean(g)


# ---- mixed fleet: only app-consistent VMs get auto-recovery ------------------------------------------
MIXED = [
    template("app", count=4, disks=2),
    template("isoff", count=2, disks=2, integration_services_backup=False),
    template("lx", count=2, disks=2, guest_os="linux", filesystem="ext4"),
    template("noscsi", count=2, disks=2, scsi_controller=False),
    template("dyn", count=2, disks=2, dynamic_disks=True),
    template("off", count=2, disks=2, running=False),
]


@pytest.fixture(scope="module")
def mixed() -> Results:
    return run_gens(scenario_dict(fleet=MIXED, nodes=2), ALL_GENS)


def test_mixed_fleet_auto_recovery_counts_follow_app_consistent_vms(mixed: Results) -> None:
    for gen in LEGACY:
        s = mixed[gen].summary
        # app + noscsi are app-consistent; isoff, lx, dyn saved-state; off offline
        assert (s.outcomes.app_consistent, s.outcomes.saved_state, s.outcomes.offline) == (6, 6, 2), gen
        assert s.host_mounts == DISKS_PER_VM * s.outcomes.app_consistent, gen
        assert s.scsi_hot_adds == 0, gen
        assert s.hw_snapshots_created == 12, gen  # every running VM, batch 1
    s = mixed["ws2012r2"].summary
    # app + dyn app-consistent and hot-added; noscsi fails at the hot-add; isoff + lx crash
    assert (s.outcomes.app_consistent, s.outcomes.crash_consistent, s.outcomes.failed) == (6, 4, 2)
    assert s.scsi_hot_adds == s.outcomes.app_consistent
    assert s.host_mounts == 0
    s = mixed["ws2016"].summary
    assert (s.outcomes.app_consistent, s.outcomes.crash_consistent, s.outcomes.offline) == (8, 4, 2)
    assert (s.snapshot_sets, s.hw_snapshots_created) == (1, 2)
    for gen in ALL_GENS:
        assert_clean(mixed[gen])


# ---- ws2008r2 pinning hurts parallel backups from other nodes ------------------------------------------
def test_ws2008r2_pin_serialises_backups_from_other_nodes_on_a_shared_csv() -> None:
    # spread placement: every CSV holds VMs of every node
    r = run_gens(_sc(placement="spread"), ["ws2008r2", "ws2012"])
    w08, w12 = r["ws2008r2"].summary.backup_window_s, r["ws2012"].summary.backup_window_s
    assert w08 > 1.5 * w12
    # the pins of one CSV never overlap between nodes: a node's pin waits for the others' to end
    pins: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    opened: dict[int, tuple[float, str, str]] = {}
    for t, ev, ids in r["ws2008r2"].trace.events:
        if ev == "csv_redirect_hold" and ids["kind"] == "backup_pin":
            opened[ids["hold"]] = (t, ids["csv"], ids["node"])
        elif ev == "csv_redirect_release" and ids["kind"] == "backup_pin":
            t0, csv, node = opened.pop(ids["hold"])
            pins[csv].append((t0, t, node))
    assert len(pins) == CSVS
    for csv, spans in pins.items():
        for a0, a1, na in spans:
            for b0, b1, nb in spans:
                if na != nb:  # pins of two nodes never overlap in time
                    assert b0 >= a1 - 1e-9 or a0 >= b1 - 1e-9, (csv, na, nb, (a0, a1), (b0, b1))
    for g in r.values():
        assert_clean(g)


# ---- ws2016: the slower the set gets ready, the longer VMs run on AVHDX --------------------------------
def test_ws2016_avhdx_time_grows_with_the_time_the_set_takes_to_get_ready() -> None:
    def avhdx(median_s: float) -> float:
        sc = _sc(fleet=[template("win", count=8)], nodes=2, csvs=2,
                 backup={"guest_freeze_median_s": median_s, "guest_freeze_sigma": 0})
        return run_gens(sc, ["ws2016"])["ws2016"].summary.avhdx_vm_s

    fast, slow = avhdx(3.0), avhdx(30.0)
    assert slow > fast > 0
