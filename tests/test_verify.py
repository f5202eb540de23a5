"""The restore verifier on hand-made block-version vectors, and the data plane it checks
(cluster_sim/data/verify.py, cluster_sim/data/plane.py).

Verifier: each test builds a Capture whose right verdict is known by hand. Data plane: one or two
small VMs placed by `place_fleet` from a tiny scenario; times are chosen relative to each VM's
flush phase so that the last flush before an instant is known exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from backup_helpers import build, template

from cluster_sim.cluster.model import ClusterModel
from cluster_sim.cluster.nodes import LocalBackend
from cluster_sim.data.plane import DataPlane
from cluster_sim.data.verify import EXPECTED, VERDICTS, Capture, restore, verify
from cluster_sim.kernel.rng import Streams
from cluster_sim.scenario.placement import node_name, place_fleet
from cluster_sim.simulation.assemble import _data_plane


def vec(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


# =================================================================================================
# verify(): one verdict per hand-made case
# =================================================================================================
APP = vec(0, 3, 3, 1, 0, 2)  # the disk right after the guest flush at the freeze (t_meta = 10)
LATER = vec(0, 5, 3, 1, 4, 2)  # the same disk after two more writes reached it


def test_image_equal_to_the_guest_freeze_state_with_vss_metadata_is_app_consistent() -> None:
    cap = Capture(image=APP.copy(), claim_t=10.0, meta_t=10.0, truth_app=APP.copy(), truth_durable=[APP.copy()])
    assert verify(restore(None, cap), cap) == "app_consistent"


def test_image_without_metadata_equal_to_the_durable_state_is_crash_consistent() -> None:
    cap = Capture(image=LATER.copy(), claim_t=12.0, meta_t=None, truth_durable=[LATER.copy()])
    assert verify(restore(None, cap), cap) == "crash_consistent"


def test_image_without_metadata_equal_to_any_recorded_durable_state_is_crash_consistent() -> None:
    cap = Capture(image=LATER.copy(), claim_t=12.0, meta_t=None, truth_durable=[APP.copy(), LATER.copy()])
    assert verify(LATER.copy(), cap) == "crash_consistent"


def test_image_with_metadata_equal_to_a_later_durable_state_but_not_the_freeze_is_torn() -> None:
    # ws2008r2/ws2012 without auto-recovery: the guest's VSS metadata describes t_meta, the data
    # is the host snapshot's (newer blocks): nothing acknowledged is missing, but it is torn
    cap = Capture(image=LATER.copy(), claim_t=12.0, meta_t=10.0, truth_app=APP.copy(), truth_durable=[LATER.copy()])
    assert verify(LATER.copy(), cap) == "torn"


def test_image_without_metadata_newer_than_every_durable_state_is_torn() -> None:
    cap = Capture(image=LATER.copy(), claim_t=10.0, meta_t=None, truth_durable=[APP.copy()])
    assert verify(LATER.copy(), cap) == "torn"


@pytest.mark.parametrize("with_meta", [True, False], ids=["vss_metadata", "no_metadata"])
def test_one_block_older_than_the_truth_at_the_capture_point_is_lost_writes(with_meta: bool) -> None:
    image = APP.copy()
    image[1] = 2  # the write of version 3 to block 1 is missing
    cap = Capture(image=image, claim_t=10.0, meta_t=10.0 if with_meta else None,
                  truth_app=APP.copy() if with_meta else None, truth_durable=[APP.copy()])
    assert verify(image, cap) == "lost_writes"


@pytest.mark.parametrize("with_meta", [True, False], ids=["vss_metadata", "no_metadata"])
def test_a_mix_of_newer_and_older_blocks_is_lost_writes_not_torn(with_meta: bool) -> None:
    image = APP.copy()
    image[1] = 5  # newer than the capture point
    image[5] = 1  # older: an acknowledged write is missing (the worse finding)
    cap = Capture(image=image, claim_t=10.0, meta_t=10.0 if with_meta else None,
                  truth_app=APP.copy() if with_meta else None, truth_durable=[APP.copy()])
    assert verify(image, cap) == "lost_writes"


def test_verdicts_and_expected_claims_name_the_four_verdicts() -> None:
    assert set(VERDICTS) == {"app_consistent", "crash_consistent", "torn", "lost_writes"}
    assert EXPECTED == {"app_consistent": "app_consistent", "crash_consistent": "crash_consistent",
                        "saved_state": "app_consistent", "offline": "app_consistent"}


# =================================================================================================
# restore(): fulls and chains
# =================================================================================================
FULL = vec(1, 1, 1, 1, 1, 1, 1, 1)  # the previous backup (a full)
NEWER = vec(1, 4, 1, 5, 1, 1, 6, 1)  # the disk at the incremental's capture point: blocks 1, 3, 6 changed


def test_restore_of_a_full_is_a_copy_of_its_image() -> None:
    cap = Capture(image=NEWER.copy(), claim_t=5.0, meta_t=5.0, truth_app=NEWER.copy())
    out = restore(None, cap)
    assert np.array_equal(out, NEWER)
    out[0] = 99
    assert cap.image[0] == 1  # the restore does not alias the backup
    assert verify(restore(None, cap), cap) == "app_consistent"


def test_restore_of_a_full_ignores_the_previous_chain() -> None:
    cap = Capture(image=NEWER.copy(), claim_t=5.0, meta_t=None, truth_durable=[NEWER.copy()])
    assert np.array_equal(restore(FULL.copy(), cap), NEWER)


def test_incremental_without_a_previous_restore_restores_its_image() -> None:
    cap = Capture(image=NEWER.copy(), claim_t=5.0, meta_t=None, truth_durable=[NEWER.copy()],
                  changed=np.array([1, 3, 6]))
    assert np.array_equal(restore(None, cap), NEWER)


def test_full_plus_incremental_with_the_right_changed_set_restores_the_newer_image() -> None:
    # the incremental's image holds stale data outside the changed set: only changed blocks are read
    image = NEWER.copy()
    image[[0, 2, 4, 5, 7]] = 0
    cap = Capture(image=image, claim_t=5.0, meta_t=5.0, truth_app=NEWER.copy(), truth_durable=[NEWER.copy()],
                  changed=np.array([1, 3, 6]))
    out = restore(FULL.copy(), cap)
    assert np.array_equal(out, NEWER)
    assert verify(out, cap) == "app_consistent"


def test_full_plus_incremental_missing_one_changed_block_verifies_as_lost_writes() -> None:
    cap = Capture(image=NEWER.copy(), claim_t=5.0, meta_t=5.0, truth_app=NEWER.copy(), truth_durable=[NEWER.copy()],
                  changed=np.array([1, 6]))  # block 3 changed but RCT did not say so
    out = restore(FULL.copy(), cap)
    assert np.array_equal(out, vec(1, 4, 1, 1, 1, 1, 6, 1))
    assert verify(out, cap) == "lost_writes"


def test_a_chain_of_two_incrementals_restores_the_last_state() -> None:
    mid = vec(1, 4, 1, 1, 1, 1, 1, 1)
    first = Capture(image=mid.copy(), claim_t=5.0, meta_t=None, truth_durable=[mid.copy()], changed=np.array([1]))
    second = Capture(image=NEWER.copy(), claim_t=9.0, meta_t=None, truth_durable=[NEWER.copy()],
                     changed=np.array([3, 6]))
    r1 = restore(FULL.copy(), first)
    assert verify(r1, first) == "crash_consistent"
    r2 = restore(r1, second)
    assert np.array_equal(r2, NEWER)
    assert verify(r2, second) == "crash_consistent"


# =================================================================================================
# DataPlane
# =================================================================================================
def workload(**kw: Any) -> dict:
    return {"workload": kw}


def plane_for(fleet: list[dict], seed: int = 42) -> tuple[DataPlane, list]:
    sc = build(fleet=fleet, nodes=1, seed=seed)
    vms = place_fleet(sc)
    tpl = {t.template: t.workload for t in sc.fleet}
    plane = DataPlane(vms, Streams(seed), sc.storage.block_size_mib,
                      flush={v.name: tpl[v.template].guest_flush_interval_s for v in vms})
    return plane, vms


def one_vm(flush_s: float = 5.0, write_iops: float = 50.0, size_gib: float = 2.0, seed: int = 42,
           daily: float = 0.3) -> tuple[DataPlane, str]:
    """One VM; by default it changes its whole working set (30 %) a day, so its blocks change at
    its write rate (the change rate is capped at write_iops): writes show within seconds."""
    plane, vms = plane_for([template("a", count=1, size_gib=size_gib,
                                     **workload(guest_flush_interval_s=flush_s, write_iops=write_iops,
                                                daily_change_fraction=daily))], seed)
    return plane, vms[0].name


def newest_time(plane: DataPlane, v: np.ndarray) -> float:
    return max(plane.version_time[int(x)] for x in v)


def test_disk_geometry_follows_block_size_and_working_set() -> None:
    plane, vm = one_vm(size_gib=2.0)  # 2 GiB at 50 % used: 1024 MiB = 16 blocks of 64 MiB
    d = plane.disks[vm]
    assert plane.block_count(vm) == d.n == 16
    assert len(d.hot) == round(16 * 0.3) == 5
    assert len(set(d.hot.tolist())) == 5 and d.hot.min() >= 0 and d.hot.max() < 16
    assert math.isclose(d.rate.sum(), 50.0)
    assert 0.0 <= d.phase < 5.0
    assert not plane.disks[vm].versions.any()  # version 0: the disk as it was at t=0


def test_versions_never_decrease() -> None:
    plane, vm = one_vm(write_iops=3.0, size_gib=8.0)
    prev = plane.disks[vm].versions.copy()
    t = 0.0
    steps = [("durable", 3.3), ("flush", 1.1), ("durable", 7.9), ("stop", 2.0), ("durable", 30.0),
             ("resume", 0.5), ("durable", 12.0), ("flush", 0.01), ("durable", 0.02), ("durable", 40.0)]
    for op, dt in steps:
        t += dt
        if op == "durable":
            now = plane.durable(vm, t)
        elif op == "flush":
            now = plane.flush(vm, t)
        elif op == "stop":
            plane.stop_writes(vm, t, crashed=True)
            now = plane.disks[vm].versions.copy()
        else:
            plane.resume_writes(vm, t)
            now = plane.disks[vm].versions.copy()
        assert np.all(now >= prev), (op, t)
        prev = now
    assert prev.any()  # writes did happen


def test_durable_state_holds_writes_up_to_the_last_flush_only() -> None:
    plane, vm = one_vm(flush_s=5.0)
    d = plane.disks[vm]
    last = d.phase + 3 * 5.0  # a periodic flush instant
    t = last + 2.0  # mid-period
    assert d.last_flush(t) == pytest.approx(last)
    v1 = plane.durable(vm, t)
    assert d.t_mat == pytest.approx(last)
    assert v1.any()
    assert newest_time(plane, v1) == pytest.approx(last)  # nothing newer than the flush
    # later in the same flush period: nothing new reaches the disk
    v2 = plane.durable(vm, t + 0.1)
    assert np.array_equal(v1, v2)
    assert d.t_mat == pytest.approx(last)
    written = plane.blocks_written
    assert np.array_equal(plane.durable(vm, last + 4.99), v1)
    assert plane.blocks_written == written
    # the next periodic flush brings the writes of the period
    v3 = plane.durable(vm, last + 5.0 + 0.01)
    assert d.t_mat == pytest.approx(last + 5.0)
    assert np.any(v3 > v1)
    assert newest_time(plane, v3) == pytest.approx(last + 5.0)


def test_a_flush_at_t_puts_every_write_up_to_t_on_disk() -> None:
    plane, vm = one_vm(flush_s=5.0)
    d = plane.disks[vm]
    last = d.phase + 2 * 5.0
    t = last + 2.5
    before = plane.durable(vm, t)  # up to the periodic flush at `last`
    flushed = plane.flush(vm, t)  # VSS freeze at t
    assert d.t_mat == t
    assert np.any(flushed > before)
    assert newest_time(plane, flushed) == t
    # a later read in the same period includes the writes up to t, and no more
    assert d.last_flush(t + 0.1) == t
    assert np.array_equal(plane.durable(vm, t + 0.1), flushed)


def test_write_through_disk_holds_every_write_up_to_now() -> None:
    plane, vm = one_vm(flush_s=0.0)
    d = plane.disks[vm]
    assert d.phase == 0.0
    v = plane.durable(vm, 7.3)
    assert d.t_mat == 7.3
    assert newest_time(plane, v) == 7.3
    assert np.any(plane.durable(vm, 7.4) > v)


def test_a_crash_loses_the_unflushed_writes_and_nothing_is_written_while_down() -> None:
    plane, vm = one_vm(flush_s=5.0)
    twin, _ = one_vm(flush_s=5.0)  # same seed: the same VM, without the crash
    d = plane.disks[vm]
    last = d.phase + 4 * 5.0
    t = last + 3.0
    plane.stop_writes(vm, t, crashed=True)
    assert d.t_mat == pytest.approx(last)
    assert d.down == [[pytest.approx(last), math.inf]]
    crashed = d.versions.copy()
    assert newest_time(plane, crashed) == pytest.approx(last)
    # the twin had the same disk at the last flush, and more once it flushes at t
    assert np.array_equal(twin.durable(vm, t), crashed)
    assert np.any(twin.flush(vm, t) > crashed)  # those writes died in the crashed guest's cache
    # while down: nothing changes, even at a flush
    assert np.array_equal(plane.durable(vm, t + 500.0), crashed)
    assert np.array_equal(plane.flush(vm, t + 1000.0), crashed)
    # failover boot: writes resume
    plane.resume_writes(vm, t + 1000.0)
    assert d.down == [[pytest.approx(last), t + 1000.0]]
    after = plane.durable(vm, t + 1000.0 + 20.0)
    new = np.flatnonzero(after != crashed)
    assert len(new)
    assert all(plane.version_time[int(after[b])] > t + 1000.0 for b in new)


def test_running_time_excludes_down_intervals() -> None:
    plane, vm = one_vm()
    d = plane.disks[vm]
    plane.stop_writes(vm, 10.0, crashed=False)  # saved state: cache kept
    assert d.t_mat == 10.0 and d.down == [[10.0, math.inf]]
    plane.resume_writes(vm, 30.0)
    assert d.running_time(0.0, 50.0) == pytest.approx(30.0)
    assert d.running_time(12.0, 28.0) == 0.0
    plane.stop_writes(vm, 40.0, crashed=False)
    plane.stop_writes(vm, 45.0, crashed=True)  # already stopped: no change
    assert d.down == [[10.0, 30.0], [40.0, math.inf]]


def test_saved_state_keeps_the_writes_up_to_the_save() -> None:
    plane, vm = one_vm(flush_s=5.0)
    d = plane.disks[vm]
    t = d.phase + 5.0 + 2.0
    plane.stop_writes(vm, t, crashed=False)
    assert d.t_mat == t
    assert newest_time(plane, d.versions) == t


# ---- change tracking: blocks newer than a reference version -----------------------------------------
def test_changed_since_lists_exactly_the_blocks_written_after_the_reference_version() -> None:
    plane, vm = one_vm(write_iops=2.0, size_gib=8.0)  # 64 blocks, 19 hot, 2 writes/s
    d = plane.disks[vm]
    plane.durable(vm, 40.0)
    ref = plane.current_version()
    ref_vec = d.versions.copy()
    assert len(plane.changed_since(d.versions, ref)) == 0
    plane.durable(vm, 47.0)
    changed = plane.changed_since(d.versions, ref)
    assert changed.tolist() == np.flatnonzero(d.versions != ref_vec).tolist()
    assert 0 < len(changed) < len(d.hot)  # a proper, non-empty subset: the check means something
    plane.flush(vm, 61.0)
    assert plane.changed_since(d.versions, ref).tolist() == np.flatnonzero(d.versions != ref_vec).tolist()
    # a new reference starts over
    ref2 = plane.current_version()
    ref2_vec = d.versions.copy()
    assert len(plane.changed_since(d.versions, ref2)) == 0
    plane.durable(vm, 80.0)
    assert plane.changed_since(d.versions, ref2).tolist() == np.flatnonzero(d.versions != ref2_vec).tolist()


def test_the_change_rate_is_calibrated_to_the_daily_change_not_the_write_rate() -> None:
    # 64 blocks, 19 in the working set; 5 % a day is 3.2 blocks: far fewer changes than 2 writes/s
    plane, vm = one_vm(write_iops=2.0, size_gib=8.0, daily=0.05)
    d = plane.disks[vm]
    assert d.rate.sum() < 0.01
    assert float(-np.expm1(-d.rate * 86400.0).sum()) == pytest.approx(0.05 * 64)


def test_pre_age_writes_a_previous_interval_of_history_newer_than_version_0() -> None:
    plane, vm = one_vm(write_iops=0.001, size_gib=8.0)  # ~86 writes a day over 19 hot blocks
    d = plane.disks[vm]
    before = plane.pre_age(vm, 86400.0)
    assert not before.any()  # the previous backup saw the disk as it was
    changed = plane.changed_since(d.versions, 0)
    assert changed.tolist() == np.flatnonzero(d.versions != before).tolist()
    assert 0 < len(changed) <= len(d.hot)
    assert set(changed.tolist()) <= set(d.hot.tolist())
    assert all(plane.version_time[int(d.versions[b])] == 0.0 for b in changed)


def test_pre_age_of_zero_seconds_writes_nothing() -> None:
    plane, vm = one_vm()
    plane.pre_age(vm, 0.0)
    assert not plane.disks[vm].versions.any()
    assert len(plane.changed_since(plane.disks[vm].versions, 0)) == 0


# ---- named random streams ------------------------------------------------------------------------
def _drive(plane: DataPlane, vm: str) -> list[np.ndarray]:
    """A fixed sequence of reads; each disk state as the instant each block was last written
    (version ids are one counter over all VMs, so they are compared through their instants)."""
    times = [plane.durable(vm, 13.0), plane.flush(vm, 17.5)]
    ref = plane.current_version()
    times.append(plane.durable(vm, 44.0))
    out = [np.asarray(plane.version_time)[v] for v in times]
    out.append(plane.changed_since(times[-1], ref))
    return out


def test_same_seed_gives_identical_vectors() -> None:
    a, vm = one_vm(write_iops=2.0, size_gib=8.0)
    b, _ = one_vm(write_iops=2.0, size_gib=8.0)
    assert a.disks[vm].phase == b.disks[vm].phase
    assert np.array_equal(a.disks[vm].hot, b.disks[vm].hot)
    for x, y in zip(_drive(a, vm), _drive(b, vm), strict=True):
        assert np.array_equal(x, y)


def test_a_different_seed_gives_different_draws() -> None:
    a, vm = one_vm(write_iops=2.0, size_gib=8.0, seed=42)
    b, _ = one_vm(write_iops=2.0, size_gib=8.0, seed=43)
    same = (np.array_equal(a.disks[vm].hot, b.disks[vm].hot) and a.disks[vm].phase == b.disks[vm].phase
            and all(np.array_equal(x, y) for x, y in zip(_drive(a, vm), _drive(b, vm), strict=True)))
    assert not same


def test_adding_a_vm_to_the_fleet_does_not_change_another_vms_draws() -> None:
    wl = workload(write_iops=2.0)
    alone, _ = plane_for([template("a", count=1, size_gib=8.0, **wl)])
    crowd, specs = plane_for([template("z", count=2, size_gib=4.0, **wl), template("a", count=1, size_gib=8.0, **wl)])
    vm = "a-0001"
    assert [v.name for v in specs] == ["z-0001", "z-0002", vm]
    assert alone.disks[vm].phase == crowd.disks[vm].phase
    assert np.array_equal(alone.disks[vm].hot, crowd.disks[vm].hot)
    # the other VMs draw in between; a-0001's own draws stay the same
    crowd.durable("z-0001", 20.0)
    crowd.flush("z-0002", 9.0)
    got_alone = _drive(alone, vm)
    crowd.durable("z-0001", 50.0)
    got_crowd = _drive(crowd, vm)
    for x, y in zip(got_alone, got_crowd, strict=True):
        assert np.array_equal(x, y)


# ---- the cluster's data plane --------------------------------------------------------------------
def test_a_vm_that_is_not_running_never_writes_to_its_disk() -> None:
    """A stopped VM's disk does not change (the reason `offline` is expected app_consistent)."""
    busy = workload(daily_change_fraction=0.3)  # changes its working set daily: writes show in an hour
    sc = build(fleet=[template("off", count=1, running=False, **busy), template("on", count=1, **busy)], nodes=2)
    vms = place_fleet(sc)
    streams = Streams(sc.seed)
    cm = ClusterModel(sc, vms, LocalBackend([node_name(i) for i in range(2)]), streams)
    plane = _data_plane(sc, cm, streams)
    assert plane is not None
    assert plane.durable("on-0001", 3600.0).any()  # a running VM does write
    assert not plane.durable("off-0001", 3600.0).any(), "the off VM's disk changed while it was off"


def test_a_second_data_plane_of_the_same_scenario_starts_from_the_kept_disks_with_the_same_numbers() -> None:
    from cluster_sim.data import plane as plane_module

    fleet = [template("a", count=3, size_gib=2.0, **workload(write_iops=50.0, daily_change_fraction=0.3)),
             template("b", count=2, size_gib=4.0, running=False)]
    plane_module._STARTS.clear()
    first, vms = plane_for(fleet)  # drawn, and kept
    again, _ = plane_for(fleet)  # from what was kept
    plane_module._STARTS.clear()
    drawn, _ = plane_for(fleet)  # drawn anew
    for v in vms:
        a, b, c = first.disks[v.name], again.disks[v.name], drawn.disks[v.name]
        assert b.hot is a.hot and b.rate is a.rate  # (shared: only ever read)
        assert b.hot.tolist() == c.hot.tolist() and b.rate.tolist() == c.rate.tolist()
        assert (b.n, b.phase, b.down, b.flush_s) == (c.n, c.phase, c.down, c.flush_s)
        assert b.rng.bit_generator.state == c.rng.bit_generator.state
        assert b.versions is not a.versions and not b.versions.any()
    for p in (first, again, drawn):
        p.flush(vms[0].name, 3600.0)  # an hour of writes: the same blocks from the same draws
    assert again.durable(vms[0].name, 3600.0).tolist() == drawn.durable(vms[0].name, 3600.0).tolist()
    assert first.durable(vms[0].name, 3600.0).tolist() == drawn.durable(vms[0].name, 3600.0).tolist()
    assert drawn.durable(vms[0].name, 3600.0).any()
    assert plane_for(fleet, seed=7)[0].disks[vms[0].name].phase != drawn.disks[vms[0].name].phase  # (not kept)
