"""What per-VM snapshots really cost at scale (DOMAIN.md, last section), mechanism by mechanism,
each against numbers worked out by hand: one commit per snapshot set, the snapshot lifecycle
(surfacing, removal, deletion), writer enumeration (KB4014317), batches split by host and CSV,
change tracking before 2016 (a vendor filter) and RCT after a crash, daily change, copy-on-write
that ages, latency per VM and per CSV."""

from __future__ import annotations

import math
from typing import Any

import pytest
import simpy
from backup_helpers import run_gens, scenario_dict, template

from cluster_sim.cluster.storage import StorageArray
from cluster_sim.cluster.writes import (
    DAY_S,
    changed_mib,
    cow_decay_s,
    cow_share,
    hot_set_mib,
    write_model,
)
from cluster_sim.results import GenerationResult
from cluster_sim.scenario import Array, scenario_from_dict
from cluster_sim.scenario.placement import place_fleet

# Array defaults used in the hand computations below
BASE, PER_LUN, PER_PENDING, PER_EXISTING = 0.5, 0.05, 0.25, 0.02
SURF_BASE, SURF_LUN, SURF_HOST, SURF_ARRAY = 10.0, 4.0, 0.5, 0.05


def _events(g: GenerationResult, name: str, **match: Any) -> list[tuple[float, dict]]:
    return [(t, ids) for t, ev, ids in g.trace.events
            if ev == name and all(ids.get(k) == v for k, v in match.items())]


# =================================================================================================
# one commit per set
# =================================================================================================
def _array(**cfg: Any) -> tuple[simpy.Environment, StorageArray]:
    env = simpy.Environment()
    arr = StorageArray(env, Array(**cfg), [f"csv-{i}" for i in range(1, 5)], lambda *a, **k: None)
    return env, arr


def test_a_set_over_four_luns_commits_once_in_base_plus_a_small_increment_per_lun() -> None:
    env, arr = _array()
    p = env.process(arr.snapshot_set(["csv-1", "csv-2", "csv-3", "csv-4"], "node-1", "set-1"))
    env.run()
    res = p.value
    # 0.5 + 0.05 x 3 = 0.65 s, one commit for all four LUNs (they never queue behind each other)
    assert res.commit_s == pytest.approx(BASE + 3 * PER_LUN) == pytest.approx(0.65)
    assert res.waited_s == 0.0
    assert env.now == pytest.approx(0.65)
    assert sorted(res.snapshots) == ["csv-1", "csv-2", "csv-3", "csv-4"]
    assert (arr.created, arr.commits) == (4, 1)
    assert len({s.created_s for s in res.snapshots.values()}) == 1  # a consistency group: one instant


def test_a_set_waits_behind_another_nodes_set_at_a_shared_controller_and_that_wait_is_its_own() -> None:
    # csv-1 and csv-3 are on controller 0, csv-2 and csv-4 on controller 1.
    # t=0: A over [csv-1] asks controller 0; B over all four asks controller 0 (then 1).
    #   A: commit 0.5 + 0.25 x (2 requests at ctrl 0 - itself) = 0.75 s -> done at 0.75
    #   B: gets ctrl 0 at 0.75, ctrl 1 at once; others pending = (1 + 1) - 2 = 0;
    #      commit 0.5 + 0.05 x 3 + 0.02 x 1 (A's snapshot exists on csv-1) = 0.67 -> done at 1.42
    env, arr = _array()
    a = env.process(arr.snapshot_set(["csv-1"], "node-1", "A"))
    b = env.process(arr.snapshot_set(["csv-1", "csv-2", "csv-3", "csv-4"], "node-2", "B"))
    env.run()
    assert a.value.commit_s == pytest.approx(0.75)
    assert a.value.waited_s == pytest.approx(0.0)
    assert b.value.waited_s == pytest.approx(0.75)
    assert b.value.commit_s == pytest.approx(0.67)
    assert env.now == pytest.approx(1.42)
    assert arr.peak_pending == 5  # 1 + 4 LUN snapshots requested at once


def test_a_fault_on_one_lun_fails_the_whole_set_and_uses_up_each_faulted_luns_fault() -> None:
    env, arr = _array()
    arr.inject_fault("csv-2", "provider_veto")
    arr.inject_fault("csv-4", "out_of_space")

    def go():  # type: ignore[no-untyped-def]
        try:
            yield from arr.snapshot_set(["csv-1", "csv-2", "csv-3", "csv-4"], "node-1", "S")
        except Exception as exc:  # noqa: BLE001
            return exc
        return None

    p = env.process(go())
    env.run()
    assert p.value.code == "provider_veto" and p.value.csv == "csv-2"
    assert arr.created == 0 and arr.luns["csv-2"].faults == [] and arr.luns["csv-4"].faults == []


def test_deleting_a_snapshot_is_a_request_at_its_controller() -> None:
    # commit at 0.5 s, then delete: 2 s + 0.02 x (1 existing - itself) = 2.0 s -> gone at 2.5 s
    env, arr = _array()

    def go():  # type: ignore[no-untyped-def]
        res = yield from arr.snapshot_set(["csv-1"], "node-1", "S")
        yield from arr.delete(list(res.snapshots.values()))

    env.process(go())
    env.run()
    assert env.now == pytest.approx(0.5 + 2.0)
    assert arr.deleted == 1 and arr.existing_count() == 0


def _many_csvs(csvs: int, gens: list[str], nodes: int = 2, placement: str = "spread") -> dict[str, GenerationResult]:
    d = scenario_dict(fleet=[template("win", count=2 * csvs, size_gib=1)], nodes=nodes, csvs=csvs,
                      placement=placement, backup={"verify": False})
    return run_gens(d, gens)


@pytest.mark.parametrize("csvs", [8, 16, 32])
def test_ws2016_commits_its_set_over_every_csv_in_one_operation_within_the_hold_writes_limit(csvs: int) -> None:
    g = _many_csvs(csvs, ["ws2016"])["ws2016"]
    s = g.summary
    assert s.hold_writes_overruns == 0 and s.outcomes.failed == 0
    assert (s.snapshot_sets, s.hw_snapshots_created) == (1, csvs)
    (_, done), = _events(g, "snapshot_set_done")
    # writes are held only for the one commit: 0.5 + 0.05 (csvs - 1): 0.85 s, 1.25 s, 2.05 s
    assert done["hold_s"] == pytest.approx(BASE + PER_LUN * (csvs - 1))
    assert s.effective_vms_per_snapshot == pytest.approx(2.0)  # 2 VMs per CSV, one set


# =================================================================================================
# the snapshot lifecycle: surfacing, removal and deletion
# =================================================================================================
def test_ws2016_surfaces_its_set_once_and_the_cost_grows_with_snapshot_luns_on_host_and_array() -> None:
    g = _many_csvs(3, ["ws2016"], nodes=1, placement="round_robin")["ws2016"]
    (_, ev), = _events(g, "snapshots_surfaced")
    # 3 LUNs: 10 + 3 x 4 + 0.5 x (0 + 1 + 2) on the host + 0.05 x 3 x 3 existing on the array
    assert ev["luns"] == 3
    assert ev["s"] == pytest.approx(SURF_BASE + 3 * SURF_LUN + SURF_HOST * 3 + SURF_ARRAY * 3 * 3) == \
        pytest.approx(23.95)
    assert g.summary.snapshot_surfacing_s == pytest.approx(23.95)
    assert g.summary.hw_snapshots_deleted == 3
    assert g.summary.leaks.snapshots == 0


def test_ws2012r2_pays_surfacing_per_vm_inside_the_vss_lock() -> None:
    # one node, one CSV, 3 VMs one after the other (concurrency 1): each set surfaces one LUN; the
    # previous VM's LUN is removed and deleted after its copy, so each pays 10 + 4 + 0.05 x 1
    d = scenario_dict(fleet=[template("win", count=3, size_gib=1)], nodes=1, csvs=1,
                      backup={"verify": False, "concurrent_vms_per_node": 1})
    g = run_gens(d, ["ws2012r2"])["ws2012r2"]
    surf = [ev["s"] for _, ev in _events(g, "snapshots_surfaced")]
    assert surf == pytest.approx([SURF_BASE + SURF_LUN + SURF_ARRAY * 1] * 3)
    assert g.summary.snapshot_surfacing_s == pytest.approx(3 * 14.05)
    # the surfacing lies between the set's commit and the fix-up, inside the node's VSS lock
    for vm in ("win-0001", "win-0002", "win-0003"):
        t_fix = _events(g, "scsi_fixup_start", vm=vm)[0][0]
        (t_done, _), = [e for e in _events(g, "snapshot_set_done") if vm in _members(g, e[1]["set"])]
        assert t_fix == pytest.approx(t_done + 14.05 + 0.0, abs=1e-6)


def _members(g: GenerationResult, set_id: str) -> list[str]:
    return next(ids["members"] for _, ev, ids in g.trace.events if ev == "snapshot_set_start" and ids["set"] == set_id)


# =================================================================================================
# writer enumeration (KB4014317)
# =================================================================================================
def test_writer_enumeration_takes_the_slowest_nodes_time_from_its_vms_vhds_and_checkpoints() -> None:
    # round_robin over 2 nodes: node-1 runs the 3 "big" VMs (2 VHDs each), node-2 the 2 "small"
    # (1 VHD each)... templates alternate over nodes, so place them explicitly with counts:
    fleet = [template("big", count=2, disks=2, size_gib=1), template("small", count=2, disks=1, size_gib=1)]
    d = scenario_dict(fleet=fleet, nodes=2, csvs=2, backup={"verify": False, "concurrent_vms_per_node": 1})
    sc = scenario_from_dict(d)
    per_node: dict[str, list[int]] = {}
    for v in place_fleet(sc):
        per_node.setdefault(v.node, []).append(len(v.disks))
    # big-0001 -> node-1, big-0002 -> node-2, small-0001 -> node-1, small-0002 -> node-2
    assert per_node == {"node-1": [2, 1], "node-2": [2, 1]}
    g = run_gens(d, ["ws2012"])["ws2012"]
    first = _events(g, "writer_enumeration")[0][1]
    # both nodes: 0.5 + 2 VMs x 0.05 + 3 VHDs x 0.02 = 0.66 s (ws2012 makes no checkpoints)
    assert first["s"] == pytest.approx(0.5 + 2 * 0.05 + 3 * 0.02)
    assert g.summary.writer_enumeration_s == pytest.approx(4 * 0.66)  # one per VM's set


def test_writer_enumeration_counts_checkpoints_and_past_the_writer_limit_it_times_out() -> None:
    # 40 VMs on one node, 1 VHD each: 0.5 + 40 x 0.05 + 40 x 0.02 = 3.3 s; with a 3 s writer
    # limit every set times out (VSS_E_WRITERERROR_TIMEOUT) and the VMs fail after their retries
    d = scenario_dict(fleet=[template("win", count=40, size_gib=1)], nodes=1, csvs=1,
                      backup={"verify": False, "writer_freeze_limit_s": 3.0, "retries": 0})
    g = run_gens(d, ["ws2012r2"])["ws2012r2"]
    assert g.summary.failures_by_reason == {"vss_writer_timeout": 40}
    assert g.summary.hw_snapshots_created == 0
    # with the default limit (60 s) they succeed; ws2016 enumerates once for its whole set
    d["backup"]["writer_freeze_limit_s"] = 60.0
    res = run_gens(d, ["ws2012r2", "ws2016"])
    r2, w16 = res["ws2012r2"].summary, res["ws2016"].summary
    assert r2.outcomes.failed == 0 and w16.outcomes.failed == 0
    assert len(_events(res["ws2016"], "writer_enumeration")) == 1
    # ws2016's RCT-based set does not involve the Hyper-V writer for each VM: the base 0.5 s only,
    # though every VM has its checkpoint then (per VM it would be 3.3 + 40 x 0.1 = 7.3 s)
    assert w16.writer_enumeration_s == pytest.approx(0.5)
    # ws2012r2: 40 sets, each 3.3 s plus 0.1 s per checkpoint alive at that moment (>= its own
    # previous VMs' until their merges end); at least 40 x 3.3
    assert r2.writer_enumeration_s >= 40 * 3.3 - 1e-9


def test_checkpoints_per_node_follow_checkpoints_made_merged_and_vms_that_move() -> None:
    # 4 VMs on 2 nodes (round_robin: win-0001, win-0003 -> node-1; win-0002, win-0004 -> node-2)
    from cluster_sim.cluster.model import ClusterModel
    from cluster_sim.cluster.nodes import LocalBackend
    from cluster_sim.kernel.rng import Streams

    sc = scenario_from_dict(scenario_dict(fleet=[template("win", count=4, size_gib=1)], nodes=2, csvs=2))
    cm = ClusterModel(sc, place_fleet(sc), LocalBackend(["node-1", "node-2"]), Streams(sc.seed))
    cm.start()
    assert cm.checkpoints_by_node() == {}
    a1 = cm.array.create_checkpoint("win-0001", "backup")
    cm.array.create_checkpoint("win-0001", "backup")
    cm.array.create_checkpoint("win-0003", "backup")
    cm.array.create_checkpoint("win-0002", "backup")
    assert cm.checkpoints_by_node() == {"node-1": 3, "node-2": 1}
    cm.move_vm_ownership("win-0001", "node-1", "node-2")  # its 2 checkpoints go with it
    assert cm.checkpoints_by_node() == {"node-1": 1, "node-2": 3}
    cm.array.merge_checkpoint(a1)
    cm.array.merge_checkpoint(a1)  # (merged once: a second merge changes nothing)
    assert cm.checkpoints_by_node() == {"node-1": 1, "node-2": 2}
    cm.move_vm_ownership("win-0004", "node-2", "node-1")  # no checkpoint: nothing moves
    assert cm.checkpoints_by_node() == {"node-1": 1, "node-2": 2}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["crash-during-backup", "drain-during-backup"])
def test_writer_enumeration_kept_from_the_last_set_is_what_counting_every_node_again_gives(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A set's enumeration time is kept from the last set while the nodes' VMs, checkpoints and
    # membership are as they were. With VMs moving (drained, failed over) and a node lost mid-run,
    # each set's time equals the maximum over the live nodes counted again, and both the kept time
    # and a time counted anew occur.
    from pathlib import Path

    import cluster_sim
    from cluster_sim.backup.snapshots import SnapshotSteps

    made = SnapshotSteps.writer_enumeration
    seen = {"kept": 0, "counted": 0}

    def checked(self, node, per_vm=True):  # type: ignore[no-untyped-def]
        cm, cfg = self.cm, self.cfg
        if per_vm:
            inv, cps = cm.node_inventory(), cm.checkpoints_by_node()
            want = max((cfg.writer_enumeration_base_s + cfg.writer_enumeration_per_vm_s * inv.get(n, (0, 0))[0]
                        + cfg.writer_enumeration_per_vhd_s * inv.get(n, (0, 0))[1]
                        + cfg.writer_enumeration_per_checkpoint_s * cps.get(n, 0))
                       for n in cm.nodes if cm.is_up(n) and cm.is_alive(n))
            last = self._enumerated
        steps = made(self, node, per_vm)
        try:
            step = next(steps)  # (the time is taken before the first wait)
        except StopIteration as end:
            return end.value
        if per_vm:
            seen["kept" if self._enumerated is last else "counted"] += 1
            assert self._enumerated[3] == want
        while True:  # the rest as it was: what is sent or thrown in goes on to the step
            try:
                got = yield step
            except BaseException as exc:  # (an interrupt: a node lost)
                try:
                    step = steps.throw(exc)
                except StopIteration as end:
                    return end.value
                continue
            try:
                step = steps.send(got)
            except StopIteration as end:
                return end.value

    monkeypatch.setattr(SnapshotSteps, "writer_enumeration", checked)
    sc = cluster_sim.load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / f"{name}.yaml",
                                   ["run.workers=1"])  # (in this process, where the check is)
    cluster_sim.run(sc, backend="local", generations=["ws2012", "ws2012r2"])
    assert seen["kept"] > 0 and seen["counted"] > 1


# =================================================================================================
# batches honour the host constraint
# =================================================================================================
@pytest.mark.parametrize(("placement", "expected"), [("round_robin", 4.0), ("spread", 2.0)])
def test_batches_split_by_host_and_csv_and_the_effective_batch_size_is_reported(placement: str,
                                                                                 expected: float) -> None:
    # 8 VMs on 2 nodes and 2 CSVs, vms_per_snapshot 10. round_robin: each node's 4 VMs on the CSV
    # it coordinates -> 2 snapshots. spread: csv = (index // 2 + index) % 2 puts each node's VMs
    # 2 and 2 on the two CSVs -> 4 snapshots of 2 VMs.
    d = scenario_dict(fleet=[template("win", count=8, size_gib=1)], nodes=2, csvs=2, placement=placement,
                      backup={"verify": False, "vms_per_snapshot": 10})
    s = run_gens(d, ["ws2012r2"])["ws2012r2"].summary
    assert s.hw_snapshots_created == 8 / expected
    assert s.effective_vms_per_snapshot == pytest.approx(expected)


# =================================================================================================
# daily change, change tracking before 2016, RCT after a crash
# =================================================================================================
def test_the_hot_set_makes_a_days_distinct_writes_equal_the_daily_change() -> None:
    # w = 1 MiB/s, daily change 5000 MiB: a day writes 86400 MiB, so (1 - e^-x)/x = 5000/86400
    # -> x = 17.28 (e^-x ~ 3e-8), H = 86400 / 17.28 = 5000 MiB: the writes fall on just the daily
    # change; f(t) = exp(-w t / H) = exp(-t / 5000 s)
    h = hot_set_mib(1.0, 5000.0)
    assert h == pytest.approx(5000.0, rel=1e-6)
    assert h * (1 - math.exp(-1.0 * DAY_S / h)) == pytest.approx(5000.0)
    assert cow_share(h / 1.0, 5000.0) == pytest.approx(math.exp(-1.0))
    # slower writers: w = 0.1 MiB/s writes 8640 MiB a day for 5000 MiB of change: x solves
    # (1 - e^-x)/x = 0.5787 -> x = 1.2156 (e^-x = 0.2965, 0.7035 / 1.2156 = 0.5787), H = 7107.6 MiB
    h2 = hot_set_mib(0.1, 5000.0)
    x = 0.1 * DAY_S / h2
    assert -math.expm1(-x) / x == pytest.approx(5000 / 8640)
    assert h2 == pytest.approx(7107.6, rel=1e-4)
    assert hot_set_mib(0.01, 5000.0) == math.inf  # 864 MiB a day: every write is new data
    assert cow_share(math.inf, 1e6) == 1.0


def test_copy_on_write_share_of_a_headline_vm_decays_as_exp_minus_w_t_over_n() -> None:
    sc = scenario_from_dict(scenario_dict(fleet=[template(
        "win-app", count=1, disks=1, size_gib=260, workload={"write_iops": 50, "io_size_kib": 8})]))
    vm = place_fleet(sc)[0]
    w = 50 * 8 / 1024  # MiB/s
    d = 0.05 * vm.used_mib  # 6656 MiB a day
    tau = cow_decay_s(vm)
    h = tau * w
    assert h * (1 - math.exp(-w * DAY_S / h)) == pytest.approx(d)
    assert tau / 3600 == pytest.approx(4.764, rel=1e-3)  # about 4.8 h
    for hours in (0, 1, 4.764, 16):
        assert cow_share(tau, hours * 3600) == pytest.approx(math.exp(-w * hours * 3600 / h))


def test_expected_changed_blocks_after_a_day_are_the_daily_change() -> None:
    sc = scenario_from_dict(scenario_dict(fleet=[template("w", count=1, disks=1, size_gib=12.5)]))
    vm = place_fleet(sc)[0]  # 12.5 GiB x 0.5 used = 6400 MiB = 100 blocks of 64 MiB
    m = write_model(vm, 64.0)
    assert (m.n, m.ws) == (100, 30)
    assert m.changed_blocks(DAY_S) == pytest.approx(5.0)  # 5 % of 100 blocks
    assert changed_mib(vm, 64.0, DAY_S) == pytest.approx(320.0)
    assert changed_mib(vm, 64.0, 0.0) == 0.0


INC_FLEET = [template("win", count=4, disks=1, size_gib=25)]  # 12800 MiB used, 200 blocks each


def _schedule(events: list[dict] | None = None, **backup: Any) -> dict:
    d = scenario_dict(fleet=INC_FLEET, nodes=2, csvs=2, backup={
        "schedule": [{"at_s": 0, "mode": "full"}, {"at_s": 86400, "mode": "incremental"}], **backup})
    d["run"]["until_s"] = 3 * 86400
    d["events"] = events or []
    return d


def _copies(g: GenerationResult) -> dict[str, tuple[str, str]]:
    return {r.vm: (r.copy_kind, r.copy_reason) for r in g.vms}


@pytest.mark.parametrize("gen", ["ws2008r2", "ws2012", "ws2012r2"])
def test_pre_2016_incrementals_copy_the_daily_change_through_the_vendor_filter(gen: str) -> None:
    g = run_gens(_schedule(), [gen])[gen]
    inc = g.summary.jobs[1]
    assert inc.full_copies == 0 and inc.full_copy_reasons == {}
    assert set(_copies(g).values()) == {("incremental", "")}
    # about a day of change: 5 % of 4 x 200 blocks of 64 MiB = 2560 MiB (random, whole blocks)
    assert 0.5 * 2560 < inc.bytes_copied_mib < 1.6 * 2560
    assert g.summary.verification.claim_mismatches == 0 and g.summary.verification.lost_writes == 0


def test_without_change_tracking_pre_2016_incrementals_are_fulls() -> None:
    g = run_gens(_schedule(change_tracking="none"), ["ws2012r2"])["ws2012r2"]
    inc = g.summary.jobs[1]
    assert inc.full_copies == 4 and inc.full_copy_reasons == {"change_tracking_off": 4}
    assert inc.bytes_copied_mib == pytest.approx(4 * 12800)


MOVE = [{"kind": "migrate_vm", "at_s": 50000, "vm": "win-0001", "to": "node-2"}]
CRASH = [{"kind": "crash_node", "at_s": 50000, "node": "node-2"}, {"kind": "recover_node", "at_s": 60000, "node": "node-2"}]


def test_the_vendor_filter_map_is_lost_when_the_vm_moves_to_another_host() -> None:
    g = run_gens(_schedule(MOVE), ["ws2012r2"])["ws2012r2"]
    c = _copies(g)
    assert c["win-0001"] == ("full", "change_tracking_lost_vm_moved")
    assert {c[v] for v in ("win-0002", "win-0003", "win-0004")} == {("incremental", "")}
    assert g.summary.change_tracking_lost == {"host_crash": 0, "vm_moved": 1}
    assert g.summary.jobs[1].full_copy_reasons == {"change_tracking_lost_vm_moved": 1}
    assert next(r for r in g.vms if r.vm == "win-0001").bytes_copied_mib == pytest.approx(2 * 12800)  # full + full
    assert g.summary.verification.claim_mismatches == 0


def test_a_move_after_the_capture_point_but_before_the_backup_ends_still_loses_the_map() -> None:
    # win-0001's full: captured at its freeze, copied from 26.9 s to 58.9 s; it moves at 27.95 s,
    # mid-copy (allowed once its storage snapshot exists). The filter on node-1 had tracked its
    # writes since the capture; that map is gone, so the next night is a full.
    d = _schedule()
    first = run_gens(d, ["ws2012r2"])["ws2012r2"]
    t0 = next(t for t, ev, ids in first.trace.events if ev == "copy_start" and ids["vm"] == "win-0001")
    t1 = next(t for t, ev, ids in first.trace.events if ev == "copy_end" and ids["vm"] == "win-0001")
    assert t0 < 27.95 < t1
    d["events"] = [{"kind": "migrate_vm", "at_s": 27.95, "vm": "win-0001", "to": "node-2"}]
    g = run_gens(d, ["ws2012r2", "ws2016"])
    assert _copies(g["ws2012r2"])["win-0001"] == ("full", "change_tracking_lost_vm_moved")
    assert g["ws2012r2"].summary.change_tracking_lost == {"host_crash": 0, "vm_moved": 1}
    assert _copies(g["ws2016"])["win-0001"] == ("incremental", "")  # RCT moved with the VHDX
    for gen in g:
        assert g[gen].summary.verification.lost_writes == 0


def test_the_vendor_filter_map_is_lost_when_the_host_crashes() -> None:
    g = run_gens(_schedule(CRASH), ["ws2012r2"])["ws2012r2"]
    c = _copies(g)
    # node-2 ran win-0002 and win-0004: their maps died with it (and they failed over)
    assert c["win-0002"] == c["win-0004"] == ("full", "change_tracking_lost_host_crash")
    assert c["win-0001"] == c["win-0003"] == ("incremental", "")
    assert g.summary.change_tracking_lost == {"host_crash": 2, "vm_moved": 0}  # the failover is no second loss
    assert g.summary.verification.claim_mismatches == 0 and g.summary.verification.lost_writes == 0


def test_rct_follows_the_vm_and_after_a_crash_copies_whole_regions_instead_of_a_full() -> None:
    moved = run_gens(_schedule(MOVE), ["ws2016"])["ws2016"]
    assert set(_copies(moved).values()) == {("incremental", "")}
    crashed = run_gens(_schedule(CRASH), ["ws2016"])["ws2016"]
    c = _copies(crashed)
    assert c["win-0002"] == c["win-0004"] == ("incremental_regions", "rct_region_table_after_host_crash")
    assert c["win-0001"] == ("incremental", "")
    inc = {r.vm: r.bytes_copied_mib for r in crashed.vms}
    full = 12800.0
    for vm in ("win-0002", "win-0004"):
        # more than its changes, less than a full: whole 4-block regions around the changes
        assert 2 * full > inc[vm] - full > 0
        assert (inc[vm] - full) % (64.0 * 4) == 0 or inc[vm] - full == 200 * 64.0
    assert crashed.summary.jobs[1].full_copies == 0
    assert crashed.summary.verification.claim_mismatches == 0 and crashed.summary.verification.lost_writes == 0
    lost = run_gens(_schedule(CRASH, rct_survives_crash=False), ["ws2016"])["ws2016"]
    assert _copies(lost)["win-0002"] == ("full", "rct_lost_host_crash")


def test_a_vm_that_is_off_changes_nothing_so_its_incremental_copies_nothing() -> None:
    d = _schedule()
    d["fleet"] = INC_FLEET + [template("off", count=2, disks=1, size_gib=25, running=False)]
    g = run_gens(d, ["ws2016", "ws2012r2"])
    for gen in ("ws2016", "ws2012r2"):
        rows = {r.vm: r for r in g[gen].vms}
        assert rows["off-0001"].bytes_copied_mib == pytest.approx(12800.0), gen  # the full only
        assert rows["off-0001"].copy_kind == "incremental", gen


# =================================================================================================
# copy-on-write in the I/O model, latency per VM and per CSV
# =================================================================================================
def test_write_ops_of_a_protected_lun_pay_one_plus_twice_the_decayed_share_per_live_snapshot() -> None:
    from cluster_sim.cluster.io import IoModel

    class FakeArray:
        def __init__(self, times: list[float]):
            self.times = times
            self.luns = {"csv-1": type("L", (), {"existing": {"x": 1}})()}

        def live_snapshot_times(self, csv: str) -> list[float]:
            return self.times

    sc = scenario_from_dict(scenario_dict(fleet=[template("w", count=1, disks=1, size_gib=12.5)], nodes=1, csvs=1))
    vm = place_fleet(sc)[0]
    tau = cow_decay_s(vm)

    class Env:
        now = 2 * tau

    g = type("G", (), {"csv": "csv-1", "cow_decay_s": tau})()
    io = IoModel.__new__(IoModel)
    io.sc, io.write_overhead, io._protected = sc, 0.0, {"csv-1"}
    io.net = type("N", (), {"env": Env()})()
    io.array = FakeArray([0.0, tau])  # snapshots 2 tau and tau old
    # one COW area: the newest snapshot decides: 1 + 2 e^-1
    assert io._write_multiplier(g) == pytest.approx(1 + 2 * math.exp(-1))
    sc.storage.array.cow_per_snapshot = True  # a COW area per snapshot: e^-1 + e^-2
    assert io._write_multiplier(g) == pytest.approx(1 + 2 * (math.exp(-1) + math.exp(-2)))
    io.write_overhead = 0.05  # the vendor filter on top
    assert io._write_multiplier(g) == pytest.approx(1.05 * (1 + 2 * (math.exp(-1) + math.exp(-2))))
    sc.storage.array.snapshot_style = "row"
    assert io._write_multiplier(g) == pytest.approx(1.05 * 1.1)


def test_a_luns_groups_re_priced_together_pay_each_their_own_decayed_share() -> None:
    from cluster_sim.cluster.io import IoModel

    sc = scenario_from_dict(scenario_dict(fleet=[template("w", count=1, disks=1, size_gib=12.5)], nodes=1, csvs=1))
    io = IoModel.__new__(IoModel)
    io.sc, io.write_overhead, io._protected = sc, 0.05, {"csv-1"}
    io.net = type("N", (), {"env": type("E", (), {"now": 7.0})()})()
    io.array = type("A", (), {"live_snapshot_times": lambda self, csv: [0.0, 1.0]})()  # 7 s and 6 s old
    groups = [type("G", (), {"csv": "csv-1", "cow_decay_s": d})() for d in (3.0, 0.0, math.inf)]
    ages = io._ages("csv-1")
    # one COW area, the newest snapshot decides: 1.05 (1 + 2 e^(-6/tau)); tau 0: nothing left to
    # copy; tau inf: every write copies
    assert io._multipliers("csv-1", groups, ages) == pytest.approx([1.05 * (1 + 2 * math.exp(-2)), 1.05, 1.05 * 3])
    sc.storage.array.cow_per_snapshot = True  # an area per snapshot: e^(-7/3) + e^(-6/3) for tau 3
    assert io._multipliers("csv-1", groups, ages) == pytest.approx(
        [1.05 * (1 + 2 * (math.exp(-7 / 3) + math.exp(-2))), 1.05, 1.05 * 5])
    assert [io._write_multiplier(g) for g in groups] == io._multipliers("csv-1", groups, ages)
    io._protected = set()  # no live snapshot: the filter's overhead only
    assert io._multipliers("csv-1", groups, ages) == [1.05] * 3


def test_vms_on_the_lun_being_snapshotted_see_more_latency_than_the_others() -> None:
    # 2 nodes, 2 CSVs on the 2 controllers, an array busy enough that copy-on-write shows. With
    # spread placement every node backs up its csv-1 VMs first, then its csv-2 VMs: one LUN at a
    # time carries fresh per-VM snapshots, and only its controller pays copy-on-write
    fleet = [template("win", count=20, disks=1, size_gib=40, workload={"read_iops": 400, "write_iops": 400})]
    d = scenario_dict(fleet=fleet, nodes=2, csvs=2, array={"iops": 40000}, placement="spread",
                      backup={"verify": False, "concurrent_vms_per_node": 1})
    g = run_gens(d, ["ws2012r2"])["ws2012r2"]
    lat = g.summary.io_latency_ms
    assert lat.backup_p50 < lat.backup_p99
    assert lat.baseline_p50 == pytest.approx(lat.baseline_p99)  # identical VMs, identical paths
    by_csv = {c.csv: c for c in g.csvs}
    assert all(c.latency_ms_baseline is not None and c.latency_ms_backup is not None for c in by_csv.values())
    assert all(c.latency_ms_backup > c.latency_ms_baseline for c in by_csv.values())
