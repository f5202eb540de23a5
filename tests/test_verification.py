"""Whole-simulation restore verification: every backed-up VM is restored from its chain and
checked against the truth at its capture point (summary `verification`, per-job `jobs`, VmRow
`verified`).

Scenarios are small (2-3 nodes, a handful of VMs, 2-8 GiB disks). Blocks are 64 MiB: a 2 GiB
disk at 50 % used is 16 blocks, 5 of them (30 %) in the working set; an 8 GiB disk is 64 blocks,
19 hot. The VMs here change their whole working set every day (`daily_change_fraction` equal to
the working set), so their blocks change at their write rate (50 writes/s): writes show within
seconds, and a nightly incremental copies exactly the hot blocks.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import pytest
from backup_helpers import ALL_GENS, LEGACY, run_gens, scenario_dict
from backup_helpers import template as _template

from cluster_sim.data.plane import DataPlane
from cluster_sim.data.verify import EXPECTED
from cluster_sim.results import GenerationResult, summary_json
from cluster_sim.simulation import assemble

BLOCK = 64.0
DAY = 86400.0


def template(*args: Any, **kw: Any) -> dict:
    """A fleet template whose VMs change their whole working set daily (fast, visible writes)."""
    t = _template(*args, **kw)
    w = dict(t.get("workload") or {})
    w.setdefault("daily_change_fraction", w.get("working_set_fraction", 0.3))
    t["workload"] = w
    return t
SCHEDULE = [{"at_s": 0, "mode": "full"}, {"at_s": DAY}, {"at_s": 2 * DAY}, {"at_s": 3 * DAY}]


def blocks(size_gib: float, used: float = 0.5) -> int:
    return math.ceil(size_gib * 1024 * used / BLOCK)


def hot(size_gib: float, wsf: float = 0.3) -> int:
    return round(blocks(size_gib) * wsf)


FULL_2G = blocks(2) * BLOCK  # 1024 MiB
INCR_2G = hot(2) * BLOCK  # 5 blocks: 320 MiB


# ---- helpers ---------------------------------------------------------------------------------------
def with_events(d: dict, events: list[dict], until_s: float | None = None) -> dict:
    d = copy.deepcopy(d)
    d["events"] = events
    if until_s is not None:
        d["run"]["until_s"] = until_s
    return d


def run_one(d: dict, gen: str) -> GenerationResult:
    return run_gens(d, [gen])[gen]


def copies_by_job(g: GenerationResult) -> dict[int, dict[str, list[float]]]:
    """{job index: {vm: [MiB of each copy started]}} from the trace."""
    job = -1
    out: dict[int, dict[str, list[float]]] = {}
    for _t, ev, ids in g.trace.events:
        if ev == "job_start":
            job = ids["job"]
            out[job] = {}
        elif ev == "copy_start":
            out[job].setdefault(ids["vm"], []).append(ids["mib"])
    return out


def copy_window(g: GenerationResult, vm: str, after: float = 0.0) -> tuple[float, float, str]:
    """(start, end, node) of the VM's first complete copy starting at or after `after`."""
    start = node = None
    for t, ev, ids in g.trace.events:
        if ids.get("vm") != vm or t < after:
            continue
        if ev == "copy_start":
            start, node = t, ids["node"]
        elif ev == "copy_end" and start is not None:
            return start, t, node
    raise AssertionError(f"no complete copy of {vm} after {after}")


def assert_verifies_as_claimed(g: GenerationResult) -> None:
    """Every non-failed VM is restored and verifies as its outcome claims; nothing torn or lost."""
    s = g.summary
    live = [r for r in g.vms if r.outcome != "failed"]
    for r in g.vms:
        expected = EXPECTED.get(r.outcome, "")
        assert r.verified == expected, (r.vm, r.outcome, r.reason, r.verified)
    v = s.verification
    assert (v.torn, v.lost_writes, v.claim_mismatches) == (0, 0, 0), v
    if len(s.jobs) == 1:
        assert v.restored == len(live)
        assert v.app_consistent == sum(1 for r in live if EXPECTED[r.outcome] == "app_consistent")
        assert v.crash_consistent == sum(1 for r in live if EXPECTED[r.outcome] == "crash_consistent")


# =================================================================================================
# default settings: every claim verifies
# =================================================================================================
MIXED = [
    template("win", count=3, size_gib=4),
    template("lin", count=1, guest_os="linux", size_gib=4),
    template("noic", count=1, integration_services_backup=False, size_gib=2),
    template("off", count=1, running=False, size_gib=2),
]


@functools.cache
def mixed_runs() -> dict[str, GenerationResult]:
    return run_gens(scenario_dict(fleet=MIXED, nodes=2))


# (app_consistent, crash_consistent, saved_state, offline) claims per generation
MIXED_OUTCOMES = {
    "ws2008r2": (3, 0, 2, 1),
    "ws2012": (3, 0, 2, 1),
    "ws2012r2": (3, 2, 0, 1),
    "ws2016": (3, 2, 0, 1),
}


@pytest.mark.parametrize("gen", ALL_GENS)
def test_every_claim_verifies_as_claimed_with_default_settings(gen: str) -> None:
    g = mixed_runs()[gen]
    s = g.summary
    app, crash, saved, offline = MIXED_OUTCOMES[gen]
    assert (s.outcomes.app_consistent, s.outcomes.crash_consistent, s.outcomes.saved_state,
            s.outcomes.offline, s.outcomes.failed) == (app, crash, saved, offline, 0)
    assert s.verification.model_dump() == {
        "restored": 6, "app_consistent": app + saved + offline, "crash_consistent": crash,
        "torn": 0, "lost_writes": 0, "claim_mismatches": 0,
    }
    assert_verifies_as_claimed(g)
    assert s.jobs[0].verification == s.verification
    assert s.torn_undetected == 0


@pytest.mark.parametrize("gen", ALL_GENS)
def test_verify_false_runs_no_data_plane_and_restores_nothing(gen: str) -> None:
    d = scenario_dict(fleet=MIXED, nodes=2, backup={"verify": False})
    g = run_one(d, gen)
    assert g.summary.verification.restored == 0
    assert all(r.verified == "" for r in g.vms)
    # without the data plane the copy reads every used MiB
    assert g.summary.bytes_copied_mib == mixed_runs()[gen].summary.bytes_copied_mib


# =================================================================================================
# ws2008r2/ws2012: guest snapshot and host snapshot apart in time
# =================================================================================================
APART = [
    # write-through: every write between the guest freeze and the host snapshot reaches the disk
    template("win", count=3, size_gib=2, workload={"guest_flush_interval_s": 0}),
    template("lin", count=1, guest_os="linux", size_gib=2, workload={"guest_flush_interval_s": 0}),
]


def apart(auto_recovery: bool) -> dict:
    # 5 s of snapshot commit (under the 10 s hold-writes limit) between guest freeze and host snapshot
    return scenario_dict(fleet=APART, nodes=2, backup={"auto_recovery": auto_recovery},
                         array={"snapshot_commit_base_s": 5.0})


@pytest.mark.parametrize("gen", LEGACY)
def test_without_auto_recovery_the_host_snapshot_of_an_app_vm_verifies_torn(gen: str) -> None:
    g = run_one(apart(False), gen)
    s = g.summary
    assert s.host_mounts == 0
    assert (s.outcomes.app_consistent, s.outcomes.saved_state) == (3, 1)
    assert s.verification.model_dump() == {
        "restored": 4, "app_consistent": 1, "crash_consistent": 0, "torn": 3, "lost_writes": 0,
        "claim_mismatches": 3,
    }
    verdicts = {r.vm: (r.outcome, r.verified) for r in g.vms}
    assert verdicts == {
        "win-0001": ("app_consistent", "torn"), "win-0002": ("app_consistent", "torn"),
        "win-0003": ("app_consistent", "torn"), "lin-0001": ("saved_state", "app_consistent"),
    }
    assert s.torn_undetected == 0  # not the hold-writes overrun: the claim itself is wrong


@pytest.mark.parametrize("gen", LEGACY)
def test_with_auto_recovery_the_same_vms_verify_app_consistent(gen: str) -> None:
    g = run_one(apart(True), gen)
    s = g.summary
    assert s.host_mounts == 3  # one VHD per app VM
    assert s.verification.model_dump() == {
        "restored": 4, "app_consistent": 4, "crash_consistent": 0, "torn": 0, "lost_writes": 0,
        "claim_mismatches": 0,
    }
    assert_verifies_as_claimed(g)


# =================================================================================================
# hold-writes overrun: undetected on ws2008r2 (torn), detected on ws2012 (failed)
# =================================================================================================
OVERRUN = [
    # the whole disk is the working set: every VM writes many blocks during a 12 s commit
    template("win", count=3, size_gib=2, workload={"working_set_fraction": 1.0}),
    template("lin", count=1, guest_os="linux", size_gib=2),
    template("off", count=1, running=False, size_gib=2),
]


@functools.cache
def overrun_runs() -> dict[str, GenerationResult]:
    return run_gens(scenario_dict(fleet=OVERRUN, nodes=2, array={"snapshot_commit_base_s": 12.0}),
                    ["ws2008r2", "ws2012"])


def test_ws2008r2_undetected_hold_writes_overrun_verifies_torn() -> None:
    g = overrun_runs()["ws2008r2"]
    s = g.summary
    assert (s.outcomes.app_consistent, s.outcomes.saved_state, s.outcomes.offline, s.outcomes.failed) == (3, 1, 1, 0)
    assert s.torn_undetected == 3  # the app VMs, which wrote during the commit
    assert s.verification.torn == s.torn_undetected
    assert s.verification.model_dump() == {
        "restored": 5, "app_consistent": 2, "crash_consistent": 0, "torn": 3, "lost_writes": 0,
        "claim_mismatches": 3,
    }
    verdicts = {r.vm: r.verified for r in g.vms}
    assert verdicts == {"win-0001": "torn", "win-0002": "torn", "win-0003": "torn",
                        "lin-0001": "app_consistent", "off-0001": "app_consistent"}


def test_ws2012_detects_the_same_overrun_and_fails_the_vms_instead() -> None:
    g = overrun_runs()["ws2012"]
    s = g.summary
    assert (s.outcomes.failed, s.outcomes.offline) == (4, 1)
    assert s.failures_by_reason == {"vss_hold_writes_timeout": 4}
    assert s.torn_undetected == 0
    assert s.verification.model_dump() == {
        "restored": 1, "app_consistent": 1, "crash_consistent": 0, "torn": 0, "lost_writes": 0,
        "claim_mismatches": 0,
    }
    assert {r.vm: r.verified for r in g.vms if r.outcome == "failed"} == {
        "win-0001": "", "win-0002": "", "win-0003": "", "lin-0001": ""}


# =================================================================================================
# a crash mid-copy, then retries
# =================================================================================================
CRASH_FLEET = [template("win", count=4, size_gib=8), template("lin", count=2, guest_os="linux", size_gib=2)]


@pytest.mark.parametrize("gen", ALL_GENS)
def test_a_crash_mid_copy_followed_by_retries_still_verifies(gen: str) -> None:
    d = scenario_dict(fleet=CRASH_FLEET, nodes=2)
    start, end, node = copy_window(run_one(d, gen), "win-0002")
    g = run_one(with_events(d, [{"kind": "crash_node", "at_s": (start + end) / 2, "node": node}]), gen)
    s = g.summary
    assert [f.node for f in s.node_failures] == [node]
    victim = next(r for r in g.vms if r.vm == "win-0002")
    assert victim.retries >= 1 and victim.outcome == "app_consistent"
    assert s.outcomes.failed == 0
    assert_verifies_as_claimed(g)
    assert s.verification.restored == 6


# =================================================================================================
# incremental schedules (RCT)
# =================================================================================================
INCR_FLEET = [
    template("win", count=2, size_gib=2),  # VHDX, configuration 8.0: RCT
    template("lin", count=1, guest_os="linux", size_gib=2),  # VHDX: RCT
    template("vhd", count=1, size_gib=2, disk_format="vhd"),  # no RCT
    template("old", count=1, size_gib=2, config_version="5.0"),  # no RCT
]
RCT_VMS = {"win-0001", "win-0002", "lin-0001"}


@functools.cache
def schedule_runs() -> dict[str, GenerationResult]:
    d = scenario_dict(fleet=INCR_FLEET, nodes=2, backup={"schedule": SCHEDULE})
    d["run"]["until_s"] = 4 * DAY
    return run_gens(d, ["ws2016", "ws2012r2"])


@pytest.mark.parametrize("gen", ["ws2016", "ws2012r2"])
def test_a_schedule_lists_one_full_then_three_incremental_jobs(gen: str) -> None:
    jobs = schedule_runs()[gen].summary.jobs
    assert [(j.index, j.mode) for j in jobs] == [(0, "full"), (1, "incremental"), (2, "incremental"),
                                                 (3, "incremental")]
    assert [j.start_s for j in jobs] == [0.0, DAY, 2 * DAY, 3 * DAY]


def test_ws2016_incrementals_copy_only_the_rct_changed_blocks() -> None:
    g = schedule_runs()["ws2016"]
    per_job = copies_by_job(g)
    full = dict.fromkeys(RCT_VMS | {"vhd-0001", "old-0001"}, [FULL_2G])
    assert per_job[0] == full
    incr = {vm: [INCR_2G if vm in RCT_VMS else FULL_2G] for vm in full}
    for k in (1, 2, 3):
        assert per_job[k] == incr, k
    assert [j.bytes_copied_mib for j in g.summary.jobs] == [5 * FULL_2G] + [3 * INCR_2G + 2 * FULL_2G] * 3
    rows = {r.vm: r.bytes_copied_mib for r in g.vms}
    assert rows == {vm: FULL_2G + 3 * (INCR_2G if vm in RCT_VMS else FULL_2G) for vm in full}


def test_ws2012r2_incrementals_copy_the_changed_blocks_of_every_vm_through_the_vendor_filter() -> None:
    # the filter driver tracks writes on the host, .vhd or configuration 5.0 alike
    g = schedule_runs()["ws2012r2"]
    everyone = RCT_VMS | {"vhd-0001", "old-0001"}
    per_job = copies_by_job(g)
    assert per_job[0] == dict.fromkeys(everyone, [FULL_2G])
    for k in (1, 2, 3):
        assert per_job[k] == dict.fromkeys(everyone, [INCR_2G]), k
    assert [j.bytes_copied_mib for j in g.summary.jobs] == [5 * FULL_2G] + [5 * INCR_2G] * 3


def test_ws2012r2_without_change_tracking_copies_every_block_in_every_job() -> None:
    d = scenario_dict(fleet=INCR_FLEET, nodes=2, backup={"schedule": SCHEDULE, "change_tracking": "none"})
    d["run"]["until_s"] = 4 * DAY
    g = run_one(d, "ws2012r2")
    for k, vms in copies_by_job(g).items():
        assert vms == dict.fromkeys(RCT_VMS | {"vhd-0001", "old-0001"}, [FULL_2G]), k
    assert [j.bytes_copied_mib for j in g.summary.jobs] == [5 * FULL_2G] * 4
    assert [j.full_copy_reasons for j in g.summary.jobs] == [{}] + [{"change_tracking_off": 5}] * 3
    assert_verifies_as_claimed(g)


@pytest.mark.parametrize("gen", ["ws2016", "ws2012r2"])
def test_every_job_of_a_schedule_restores_its_chain_and_verifies(gen: str) -> None:
    g = schedule_runs()[gen]
    for j in g.summary.jobs:
        assert (j.outcomes.app_consistent, j.outcomes.crash_consistent, j.outcomes.failed) == (4, 1, 0)
        assert j.verification.model_dump() == {
            "restored": 5, "app_consistent": 4, "crash_consistent": 1, "torn": 0, "lost_writes": 0,
            "claim_mismatches": 0,
        }, j.index
    assert g.summary.verification.restored == 20
    assert_verifies_as_claimed(g)


def crash_between_jobs(survives: bool) -> GenerationResult:
    d = scenario_dict(fleet=[template("win", count=4, size_gib=2)], nodes=2,
                      backup={"schedule": SCHEDULE[:2], "rct_survives_crash": survives})
    return run_one(with_events(d, [{"kind": "crash_node", "at_s": 40000.0, "node": "node-2"}], 2 * DAY), "ws2016")


def test_rct_lost_in_a_crash_makes_the_next_incremental_a_full() -> None:
    g = crash_between_jobs(False)
    crashed = {r.vm for r in g.vms if r.nodes_visited.startswith("node-2")}
    assert crashed == {"win-0002", "win-0004"}
    assert copies_by_job(g)[1] == {vm: [FULL_2G if vm in crashed else INCR_2G]
                                   for vm in ("win-0001", "win-0002", "win-0003", "win-0004")}
    assert [j.verification.model_dump() for j in g.summary.jobs] == [
        {"restored": 4, "app_consistent": 4, "crash_consistent": 0, "torn": 0, "lost_writes": 0,
         "claim_mismatches": 0}] * 2
    assert_verifies_as_claimed(g)


def test_rct_that_survives_a_crash_copies_whole_regions_of_the_next_incremental_not_a_full() -> None:
    g = crash_between_jobs(True)
    assert [f.node for f in g.summary.node_failures] == ["node-2"]
    crashed = {r.vm for r in g.vms if r.nodes_visited.startswith("node-2")}
    copies = copies_by_job(g)[1]
    for vm in ("win-0001", "win-0003"):
        assert copies[vm] == [INCR_2G]
    for vm in crashed:  # the 5 changed blocks, widened to the 4-block regions holding them
        (mib,), = [copies[vm]]
        assert INCR_2G <= mib <= FULL_2G and mib % (4 * BLOCK) == 0, (vm, mib)
        assert next(r for r in g.vms if r.vm == vm).copy_kind == "incremental_regions"
    assert g.summary.jobs[1].verification.app_consistent == 4
    assert_verifies_as_claimed(g)


@functools.cache
def lone_incremental() -> dict[str, GenerationResult]:
    return run_gens(scenario_dict(fleet=INCR_FLEET, nodes=2, backup={"mode": "incremental"}),
                    ["ws2016", "ws2012r2"])


def test_a_lone_incremental_copies_the_changes_since_a_virtual_previous_backup() -> None:
    g = lone_incremental()["ws2016"]
    assert [(j.index, j.mode) for j in g.summary.jobs] == [(0, "incremental")]
    # the previous backup was incremental_interval_s (a day) earlier: every hot block changed since
    assert copies_by_job(g)[0] == {vm: [INCR_2G if vm in RCT_VMS else FULL_2G]
                                   for vm in RCT_VMS | {"vhd-0001", "old-0001"}}
    assert g.summary.verification.model_dump() == {
        "restored": 5, "app_consistent": 4, "crash_consistent": 1, "torn": 0, "lost_writes": 0,
        "claim_mismatches": 0,
    }
    assert_verifies_as_claimed(g)


def test_a_lone_incremental_through_the_vendor_filter_copies_the_changes_and_verifies() -> None:
    g = lone_incremental()["ws2012r2"]
    assert copies_by_job(g)[0] == dict.fromkeys(RCT_VMS | {"vhd-0001", "old-0001"}, [INCR_2G])
    assert_verifies_as_claimed(g)


# ---- a failed attempt must not move the RCT reference point ----------------------------------------
SLOW_WRITES = [template("win", count=4, size_gib=8, workload={"write_iops": 0.01})]  # ~860 writes a day


def _slow_schedule(**backup: Any) -> dict:
    d = scenario_dict(fleet=SLOW_WRITES, nodes=2, backup={"schedule": SCHEDULE[:2], **backup})
    d["run"]["until_s"] = 2 * DAY
    return d


def test_slow_writers_incremental_without_failures_verifies() -> None:
    g = run_one(_slow_schedule(), "ws2016")
    assert g.summary.retried_vms == 0
    assert g.summary.jobs[1].verification.lost_writes == 0
    assert_verifies_as_claimed(g)


def test_retry_after_a_failed_incremental_snapshot_set_still_restores_every_write() -> None:
    """The first incremental attempt fails at the snapshot set (provider veto), after its
    checkpoints were made; the retry must copy every block changed since the previous
    *successful* backup, or the restored chain misses writes."""
    d = with_events(_slow_schedule(), [{"kind": "snapshot_fault", "at_s": DAY, "csv": "csv-1",
                                        "code": "provider_veto"}])
    g = run_one(d, "ws2016")
    s = g.summary
    assert s.retried_vms == 4 and s.jobs[1].outcomes.app_consistent == 4
    assert s.jobs[1].verification.lost_writes == 0, s.jobs[1].verification
    assert_verifies_as_claimed(g)


def test_retry_after_a_crash_mid_incremental_copy_still_restores_every_write() -> None:
    d = _slow_schedule(rct_survives_crash=True)
    start, end, node = copy_window(run_one(d, "ws2016"), "win-0002", after=DAY)
    g = run_one(with_events(d, [{"kind": "crash_node", "at_s": (start + end) / 2, "node": node}]), "ws2016")
    s = g.summary
    assert [f.node for f in s.node_failures] == [node]
    assert next(r for r in g.vms if r.vm == "win-0002").retries == 1
    assert s.jobs[1].verification.lost_writes == 0, s.jobs[1].verification
    assert_verifies_as_claimed(g)


# =================================================================================================
# saved state and the data plane
# =================================================================================================
def test_a_saved_vm_whose_attempt_fails_writes_again_after_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """ws2008r2 saves the Linux VM, then the snapshot set is vetoed every time: the VM is put
    back to running (control plane) and must write again (data plane)."""
    made: list[DataPlane | None] = []
    real = assemble._data_plane

    def recording(*a: Any, **kw: Any) -> DataPlane | None:
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(assemble, "_data_plane", recording)
    d = scenario_dict(fleet=[template("lin", count=2, guest_os="linux", size_gib=2)], nodes=2,
                      backup={"retries": 0})
    d = with_events(d, [{"kind": "snapshot_fault", "at_s": 0, "csv": "csv-1", "code": "provider_veto"}])
    g = run_one(d, "ws2008r2")
    assert {r.vm: (r.outcome, r.reason) for r in g.vms} == {
        "lin-0001": ("failed", "provider_veto"), "lin-0002": ("saved_state", "linux_guest")}
    plane = made[-1]
    assert plane is not None
    for vm in ("lin-0001", "lin-0002"):
        down = plane.disks[vm].down
        assert all(end != math.inf for _start, end in down), (vm, down)


# =================================================================================================
# determinism
# =================================================================================================
@pytest.mark.parametrize("gen", ALL_GENS)
def test_same_seed_gives_identical_summaries_and_verdicts(gen: str) -> None:
    d = scenario_dict(fleet=INCR_FLEET + [template("noic", count=1, integration_services_backup=False)],
                      nodes=2, backup={"schedule": SCHEDULE[:2], "auto_recovery": False})
    d["run"]["until_s"] = 2 * DAY
    a, b = run_one(d, gen), run_one(d, gen)
    assert summary_json(a.summary) == summary_json(b.summary)
    assert [r.model_dump() for r in a.vms] == [r.model_dump() for r in b.vms]
    assert copies_by_job(a) == copies_by_job(b)
    assert a.summary.verification.restored == 12
