"""DOMAIN.md "Who gets what (eligibility)": one single-template scenario per table row, run on
every generation, checked on outcome counts, reason codes, downtime and retries; plus the
same table against `cluster_sim.backup.eligibility.plan` directly."""

from __future__ import annotations

import csv
import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from backup_helpers import ALL_GENS, assert_clean, build, run_gens, template

from cluster_sim.backup.eligibility import Plan, plan
from cluster_sim.results import GenerationResult, write_generation
from cluster_sim.scenario.placement import VmSpec, place_fleet

VMS = 4  # 2 nodes x 2 VMs
SAVED_STATE_DOWNTIME_S = 20.0  # Backup.saved_state_downtime_s default [V/P]

# row -> (template fields, {generation: (outcome, reason)})
APP = ("app_consistent", "")
ROWS: dict[str, tuple[dict, dict[str, tuple[str, str]]]] = {
    "windows_backup_is_ntfs_basic": ({}, dict.fromkeys(ALL_GENS, APP)),
    "dynamic_disks": (
        {"dynamic_disks": True},
        {"ws2008r2": ("saved_state", "dynamic_disks"), "ws2012": ("saved_state", "dynamic_disks"),
         "ws2012r2": APP, "ws2016": APP},
    ),
    "refs_volume": (
        {"filesystem": "refs"},
        {"ws2008r2": ("saved_state", "non_ntfs_volume"), "ws2012": ("saved_state", "non_ntfs_volume"),
         "ws2012r2": APP, "ws2016": APP},
    ),
    "backup_is_off": (
        {"integration_services_backup": False},
        {"ws2008r2": ("saved_state", "integration_services_backup_off"),
         "ws2012": ("saved_state", "integration_services_backup_off"),
         "ws2012r2": ("crash_consistent", "integration_services_backup_off"),
         "ws2016": ("crash_consistent", "standard_checkpoint_fallback")},
    ),
    "linux_with_is": (
        {"guest_os": "linux", "filesystem": "ext4"},
        {"ws2008r2": ("saved_state", "linux_guest"), "ws2012": ("saved_state", "linux_guest"),
         "ws2012r2": ("crash_consistent", "linux_frozen"), "ws2016": ("crash_consistent", "linux_frozen")},
    ),
    "no_scsi_controller": (
        {"scsi_controller": False},
        {"ws2008r2": APP, "ws2012": APP, "ws2012r2": ("failed", "event_10103_no_scsi"), "ws2016": APP},
    ),
    "vm_not_running": ({"running": False}, dict.fromkeys(ALL_GENS, ("offline", "vm_not_running"))),
}

CASES = [(row, gen) for row in ROWS for gen in ALL_GENS]


@cache
def _run_row(row: str) -> dict[str, GenerationResult]:
    fields, _ = ROWS[row]
    sc = build(fleet=[template("vm", count=VMS, disks=2, size_gib=2, **fields)], nodes=2)
    return run_gens(sc, ALL_GENS)


@pytest.mark.parametrize(("row", "gen"), CASES, ids=[f"{r}-{g}" for r, g in CASES])
def test_each_eligibility_row_gets_the_outcome_and_reason_of_the_domain_table(row: str, gen: str) -> None:
    outcome, reason = ROWS[row][1][gen]
    g = _run_row(row)[gen]
    s = g.summary
    assert {k: v for k, v in s.outcomes.model_dump().items() if v} == {outcome: VMS}
    assert [(r.outcome, r.reason) for r in g.vms] == [(outcome, reason)] * VMS
    assert s.failures_by_reason == ({reason: VMS} if outcome == "failed" else {})
    assert_clean(g)


@pytest.mark.parametrize(("row", "gen"), CASES, ids=[f"{r}-{g}" for r, g in CASES])
def test_only_saved_state_vms_have_downtime_and_it_is_several_seconds_to_under_a_minute(row: str, gen: str) -> None:
    outcome, _ = ROWS[row][1][gen]
    g = _run_row(row)[gen]
    downs = [r.downtime_s for r in g.vms]
    if outcome == "saved_state":
        for d in downs:
            assert SAVED_STATE_DOWNTIME_S <= d < 60.0
    else:
        assert downs == [0.0] * VMS
    assert g.summary.vm_downtime_s_total == pytest.approx(sum(downs))


def test_ws2016_and_ws2012r2_never_use_saved_state() -> None:
    for row in ROWS:
        for gen in ("ws2012r2", "ws2016"):
            s = _run_row(row)[gen].summary
            assert s.outcomes.saved_state == 0, (row, gen)
            assert s.vm_downtime_s_total == 0.0, (row, gen)


def test_ws2012r2_no_scsi_controller_fails_with_event_10103_without_retries() -> None:
    g = _run_row("no_scsi_controller")["ws2012r2"]
    assert [r.retries for r in g.vms] == [0] * VMS
    assert g.summary.scsi_hot_adds == 0
    assert g.summary.failures_by_reason == {"event_10103_no_scsi": VMS}


def test_ws2012r2_no_scsi_rows_in_vms_csv_show_event_10103_and_zero_retries(tmp_path: Path) -> None:
    write_generation(_run_row("no_scsi_controller")["ws2012r2"], tmp_path)
    with open(tmp_path / "vms.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["outcome"], r["reason"], r["retries"]) for r in rows] == [("failed", "event_10103_no_scsi", "0")] * VMS


def test_no_scsi_controller_is_not_needed_outside_ws2012r2() -> None:
    for gen in ("ws2008r2", "ws2012", "ws2016"):
        g = _run_row("no_scsi_controller")[gen]
        assert g.summary.outcomes.app_consistent == VMS
        assert g.summary.scsi_hot_adds == 0
        assert [r.retries for r in g.vms] == [0] * VMS


def test_vm_not_running_is_copied_offline_without_any_snapshot() -> None:
    for gen, g in _run_row("vm_not_running").items():
        s = g.summary
        assert s.hw_snapshots_created == 0, gen
        assert s.snapshot_sets == 0, gen
        assert s.host_mounts == 0 and s.scsi_hot_adds == 0, gen
        assert all(r.snapshot_id == "" for r in g.vms), gen


def test_ws2016_without_fallback_fails_vms_with_backup_is_off_as_production_checkpoint_failed() -> None:
    sc = build(
        fleet=[template("vm", count=VMS, disks=2, integration_services_backup=False)],
        nodes=2,
        backup={"allow_standard_checkpoint_fallback": False},
    )
    g = run_gens(sc, ["ws2016"])["ws2016"]
    assert g.summary.outcomes.failed == VMS
    assert g.summary.failures_by_reason == {"production_checkpoint_failed": VMS}
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [("failed", "production_checkpoint_failed", 0)] * VMS
    assert_clean(g)


def test_fallback_setting_does_not_change_eligible_windows_vms_on_ws2016() -> None:
    sc = build(fleet=[template("vm", count=VMS)], nodes=2, backup={"allow_standard_checkpoint_fallback": False})
    g = run_gens(sc, ["ws2016"])["ws2016"]
    assert g.summary.outcomes.app_consistent == VMS


# ------------------------------------------------------------------------------------------
# plan() directly
# ------------------------------------------------------------------------------------------
_MODE = {"app_consistent": "app", "crash_consistent": "crash", "saved_state": "saved_state",
         "offline": "offline", "failed": "fail"}


def _spec(**fields: Any) -> VmSpec:
    base = place_fleet(build(fleet=[template("vm", count=1)], nodes=1))[0]
    return dataclasses.replace(base, **fields)


def _expected_plan(row: str, gen: str) -> Plan:
    outcome, reason = ROWS[row][1][gen]
    if row == "no_scsi_controller":
        return Plan("app")  # the missing controller fails later, at the ws2012r2 hot-add step
    return Plan(_MODE[outcome], reason)


@pytest.mark.parametrize(("row", "gen"), CASES, ids=[f"{r}-{g}" for r, g in CASES])
def test_plan_follows_the_eligibility_table(row: str, gen: str) -> None:
    fields, _ = ROWS[row]
    assert plan(_spec(**fields), gen) == _expected_plan(row, gen)


@pytest.mark.parametrize("gen", ALL_GENS)
def test_plan_windows_without_any_integration_services_is_treated_like_backup_is_off(gen: str) -> None:
    assert plan(_spec(integration_services=False), gen) == _expected_plan("backup_is_off", gen)


@pytest.mark.parametrize("fs", ["refs", "fat32"])
def test_plan_any_non_ntfs_volume_forces_saved_state_only_on_legacy(fs: str) -> None:
    vm = _spec(filesystem=fs)
    assert plan(vm, "ws2008r2") == Plan("saved_state", "non_ntfs_volume")
    assert plan(vm, "ws2012") == Plan("saved_state", "non_ntfs_volume")
    assert plan(vm, "ws2012r2") == Plan("app")
    assert plan(vm, "ws2016") == Plan("app")


def test_plan_ws2016_fallback_flag_decides_between_standard_checkpoint_and_failure() -> None:
    vm = _spec(integration_services_backup=False)
    assert plan(vm, "ws2016", allow_fallback=True) == Plan("crash", "standard_checkpoint_fallback")
    assert plan(vm, "ws2016", allow_fallback=False) == Plan("fail", "production_checkpoint_failed")
    # eligible guests are unaffected by the flag
    assert plan(_spec(), "ws2016", allow_fallback=False) == Plan("app")
    assert plan(_spec(guest_os="linux", filesystem="ext4"), "ws2016", allow_fallback=False) == Plan(
        "crash", "linux_frozen")


def test_plan_not_running_is_offline_whatever_else_is_wrong() -> None:
    vm = _spec(running=False, guest_os="linux", scsi_controller=False, integration_services_backup=False)
    for gen in ALL_GENS:
        for fb in (True, False):
            assert plan(vm, gen, allow_fallback=fb) == Plan("offline", "vm_not_running")


def test_plan_rejects_an_unknown_generation() -> None:
    with pytest.raises(ValueError):
        plan(_spec(), "ws2019")
