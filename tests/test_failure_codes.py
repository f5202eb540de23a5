"""Each VSS / storage failure code of DOMAIN.md "VSS limits", provoked through scenario knobs,
and the retry policy (retry only failed VMs, after retry_wait_s, up to `retries` times)."""

from __future__ import annotations

import pytest
from backup_helpers import (
    ALL_GENS,
    PRE_2016,
    assert_clean,
    attempts_by_vm,
    run_gens,
    scenario_dict,
    template,
)

from cluster_sim.results import GenerationResult

RETRY_WAIT_S = 60.0
WIN = 4  # Windows VMs in the small fleets (2 nodes x 2)


def _failed_attempts(g: GenerationResult) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {r.vm: [] for r in g.vms}
    for _t, event, ids in g.trace.events:
        if event == "vm_attempt_failed":
            out[ids["vm"]].append(ids["reason"])
    return out


def _assert_spaced_by_retry_wait(g: GenerationResult, wait_s: float) -> None:
    for vm, starts in attempts_by_vm(g).items():
        for a, b in zip(starts, starts[1:], strict=False):
            assert b - a >= wait_s, (vm, starts)


# ---- VSS_E_HOLD_WRITES_TIMEOUT -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_commit() -> dict[str, GenerationResult]:
    sc = scenario_dict(
        fleet=[template("win", count=WIN, disks=2)],
        nodes=2,
        array={"snapshot_commit_base_s": 15},
        backup={"hold_writes_limit_s": 10, "retries": 1, "retry_wait_s": RETRY_WAIT_S},
    )
    return run_gens(sc, ALL_GENS)


@pytest.mark.parametrize("gen", ["ws2012", "ws2012r2", "ws2016"])
def test_commit_over_hold_writes_limit_fails_with_vss_hold_writes_timeout_after_retries(slow_commit, gen) -> None:
    g = slow_commit[gen]
    s = g.summary
    assert s.outcomes.failed == WIN
    assert s.failures_by_reason == {"vss_hold_writes_timeout": WIN}
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [("failed", "vss_hold_writes_timeout", 1)] * WIN
    assert s.torn_undetected == 0
    _assert_spaced_by_retry_wait(g, RETRY_WAIT_S)
    assert_clean(g)  # the aborted shadow copies and checkpoints were released


def test_ws2008r2_does_not_detect_a_hold_writes_overrun_and_reports_torn_backups(slow_commit) -> None:
    g = slow_commit["ws2008r2"]
    s = g.summary
    assert s.outcomes.app_consistent == WIN
    assert s.failures_by_reason == {}
    assert s.torn_undetected == WIN
    assert [r.retries for r in g.vms] == [0] * WIN
    assert_clean(g)


@pytest.mark.parametrize("gen", ALL_GENS)
def test_commit_under_hold_writes_limit_is_not_a_failure_nor_torn(gen: str) -> None:
    sc = scenario_dict(fleet=[template("win", count=WIN)], nodes=2,
                       array={"snapshot_commit_base_s": 8}, backup={"hold_writes_limit_s": 10, "retries": 0})
    s = run_gens(sc, [gen])[gen].summary
    assert s.outcomes.app_consistent == WIN
    assert s.torn_undetected == 0


# ---- VSS_E_WRITERERROR_TIMEOUT -------------------------------------------------------------------------
SLOW_GUEST = {"guest_freeze_median_s": 200, "guest_freeze_sigma": 0, "retries": 1, "retry_wait_s": RETRY_WAIT_S}


@pytest.fixture(scope="module")
def slow_guest() -> dict[str, GenerationResult]:
    sc = scenario_dict(fleet=[template("win", count=WIN, disks=2)], nodes=2, backup=SLOW_GUEST)
    return run_gens(sc, ALL_GENS)


@pytest.mark.parametrize("gen", PRE_2016)
def test_guest_freeze_over_60_s_fails_with_vss_writer_timeout_after_retries(slow_guest, gen: str) -> None:
    g = slow_guest[gen]
    assert g.summary.failures_by_reason == {"vss_writer_timeout": WIN}
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [("failed", "vss_writer_timeout", 1)] * WIN
    _assert_spaced_by_retry_wait(g, RETRY_WAIT_S)
    assert_clean(g)


def test_ws2016_falls_back_to_a_standard_checkpoint_when_the_guest_writer_times_out(slow_guest) -> None:
    g = slow_guest["ws2016"]
    assert g.summary.outcomes.crash_consistent == WIN
    assert g.summary.failures_by_reason == {}
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [
        ("crash_consistent", "standard_checkpoint_fallback", 0)] * WIN
    assert_clean(g)


def test_ws2016_without_fallback_fails_a_writer_timeout_after_retries() -> None:
    sc = scenario_dict(fleet=[template("win", count=WIN)], nodes=2,
                       backup=SLOW_GUEST | {"allow_standard_checkpoint_fallback": False})
    g = run_gens(sc, ["ws2016"])["ws2016"]
    assert g.summary.failures_by_reason == {"vss_writer_timeout": WIN}
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [("failed", "vss_writer_timeout", 1)] * WIN
    _assert_spaced_by_retry_wait(g, RETRY_WAIT_S)
    assert_clean(g)


def test_default_policy_retries_a_failing_vm_three_times_ten_minutes_apart() -> None:
    sc = scenario_dict(fleet=[template("win", count=2)], nodes=2,
                       backup={"guest_freeze_median_s": 200, "guest_freeze_sigma": 0})
    g = run_gens(sc, ["ws2012"])["ws2012"]
    assert [(r.outcome, r.reason, r.retries) for r in g.vms] == [("failed", "vss_writer_timeout", 3)] * 2
    _assert_spaced_by_retry_wait(g, 600.0)


# ---- Linux freeze timeout ----------------------------------------------------------------------------
LX = 2
SLOW_LINUX = {"linux_freeze_median_s": 30, "guest_freeze_sigma": 0, "retries": 1, "retry_wait_s": RETRY_WAIT_S}
LINUX_FLEET = [template("win", count=WIN), template("lx", count=LX, guest_os="linux", filesystem="ext4")]


@pytest.fixture(scope="module")
def slow_linux() -> dict[str, GenerationResult]:
    return run_gens(scenario_dict(fleet=LINUX_FLEET, nodes=2, backup=SLOW_LINUX), ALL_GENS)


def _by_template(g: GenerationResult, tpl: str) -> list[tuple[str, str, int]]:
    return [(r.outcome, r.reason, r.retries) for r in g.vms if r.template == tpl]


def test_ws2012r2_linux_freeze_over_10_s_fails_with_linux_freeze_timeout(slow_linux) -> None:
    g = slow_linux["ws2012r2"]
    assert g.summary.failures_by_reason == {"linux_freeze_timeout": LX}
    assert _by_template(g, "lx") == [("failed", "linux_freeze_timeout", 1)] * LX
    assert _by_template(g, "win") == [("app_consistent", "", 0)] * WIN  # only failed VMs are retried
    assert_clean(g)


def test_ws2016_without_fallback_fails_linux_freeze_timeout() -> None:
    sc = scenario_dict(fleet=LINUX_FLEET, nodes=2, backup=SLOW_LINUX | {"allow_standard_checkpoint_fallback": False})
    g = run_gens(sc, ["ws2016"])["ws2016"]
    assert g.summary.failures_by_reason == {"linux_freeze_timeout": LX}
    assert _by_template(g, "lx") == [("failed", "linux_freeze_timeout", 1)] * LX
    assert _by_template(g, "win") == [("app_consistent", "", 0)] * WIN
    assert_clean(g)


def test_ws2016_linux_freeze_timeout_with_fallback_is_reported_as_standard_checkpoint_not_frozen(slow_linux) -> None:
    # DOMAIN.md ws2016: if the production checkpoint (the Linux fs freeze) fails, fall back to a
    # standard checkpoint when allowed. The VM is crash-consistent but its file systems were
    # NOT frozen, so its reason must say it fell back, as it does for Windows guests.
    g = slow_linux["ws2016"]
    assert g.summary.outcomes.crash_consistent == LX
    assert _by_template(g, "lx") == [("crash_consistent", "standard_checkpoint_fallback", 0)] * LX


def test_legacy_linux_saved_state_does_not_freeze_and_cannot_time_out(slow_linux) -> None:
    for gen in ("ws2008r2", "ws2012"):
        g = slow_linux[gen]
        assert g.summary.failures_by_reason == {}, gen
        assert _by_template(g, "lx") == [("saved_state", "linux_guest", 0)] * LX, gen


# ---- storage snapshot limit per LUN -------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_snapshot_per_lun() -> dict[str, GenerationResult]:
    sc = scenario_dict(
        fleet=[template("win", count=6, size_gib=10)],  # 5 GiB to copy per VM keeps its snapshot alive
        nodes=1, csvs=1,
        array={"max_snapshots_per_lun": 1},
        backup={"concurrent_vms_per_node": 3, "retries": 0},
    )
    return run_gens(sc, ALL_GENS)


@pytest.mark.parametrize("gen", PRE_2016)
def test_full_lun_fails_further_snapshots_with_snapshot_limit(one_snapshot_per_lun, gen: str) -> None:
    g = one_snapshot_per_lun[gen]
    s = g.summary
    assert set(s.failures_by_reason) == {"snapshot_limit"}
    assert 1 <= s.outcomes.failed < 6
    assert s.outcomes.app_consistent + s.outcomes.failed == 6
    assert s.peak_snapshots_per_lun <= 1
    assert all(r.retries == 0 for r in g.vms)
    assert_clean(g)


def test_ws2016_needs_one_snapshot_per_lun_so_a_limit_of_one_is_enough(one_snapshot_per_lun) -> None:
    s = one_snapshot_per_lun["ws2016"].summary
    assert s.outcomes.app_consistent == 6
    assert s.hw_snapshots_created == 1
    assert s.peak_snapshots_per_lun == 1
    assert s.audit.ok


# ---- VSS_E_SNAPSHOT_SET_IN_PROGRESS -------------------------------------------------------------------
@pytest.mark.parametrize("gen", PRE_2016)
def test_waiting_past_the_limit_for_this_nodes_vss_fails_with_snapshot_set_in_progress(gen: str) -> None:
    sc = scenario_dict(fleet=[template("win", count=6)], nodes=2,
                       backup={"snapshot_set_wait_limit_s": 0.5, "concurrent_vms_per_node": 3, "retries": 0})
    g = run_gens(sc, [gen])[gen]
    s = g.summary
    # per node 3 workers start at once: one takes the VSS lock (held for seconds), two give up at 0.5 s
    assert s.outcomes.app_consistent == 2
    assert s.failures_by_reason == {"snapshot_set_in_progress": 4}
    for r in g.vms:
        if r.outcome == "failed":
            assert r.end_s == pytest.approx(0.5)
    assert_clean(g)


# ---- retry only failed VMs ----------------------------------------------------------------------------
@pytest.mark.parametrize("gen", PRE_2016)
def test_only_failed_vms_are_retried_after_retry_wait(gen: str) -> None:
    # one node, 3 VMs, 3 workers: each round one VM gets the VSS lock, the others fail at 0.5 s
    sc = scenario_dict(fleet=[template("win", count=3)], nodes=1,
                       backup={"snapshot_set_wait_limit_s": 0.5, "concurrent_vms_per_node": 3,
                               "retries": 3, "retry_wait_s": 100})
    g = run_gens(sc, [gen])[gen]
    assert g.summary.outcomes.app_consistent == 3
    assert sorted(r.retries for r in g.vms) == [0, 1, 2]
    fails = _failed_attempts(g)
    for r in g.vms:
        assert len(fails[r.vm]) == r.retries
        assert set(fails[r.vm]) <= {"snapshot_set_in_progress"}
    starts = attempts_by_vm(g)
    for r in g.vms:
        assert len(starts[r.vm]) == r.retries + 1
        assert r.start_s == pytest.approx(starts[r.vm][0])
    _assert_spaced_by_retry_wait(g, 100)
    assert_clean(g)


@pytest.mark.parametrize("gen", ALL_GENS)
def test_vms_that_succeed_first_time_have_no_retries_and_retried_ones_waited(gen: str) -> None:
    # median freeze at the 60 s limit: about half the draws time out; each retry draws again
    sc = scenario_dict(
        fleet=[template("win", count=8)], nodes=2, seed=3,
        backup={"guest_freeze_median_s": 60, "guest_freeze_sigma": 0.5, "retries": 3, "retry_wait_s": 100,
                "allow_standard_checkpoint_fallback": False},
    )
    g = run_gens(sc, [gen])[gen]
    fails = _failed_attempts(g)
    first_time = [r for r in g.vms if not fails[r.vm]]
    retried = [r for r in g.vms if fails[r.vm]]
    assert first_time and retried
    assert all(r.retries == 0 for r in first_time)
    for r in retried:
        assert r.retries >= 1
        if r.outcome == "failed":  # every attempt failed: the first try plus `retries` retries
            assert (r.reason, r.retries, len(fails[r.vm])) == ("vss_writer_timeout", 3, 4), r
        else:  # one retry per failed attempt, then success
            assert r.retries == len(fails[r.vm]), r
    recovered = [r for r in retried if r.outcome == "app_consistent"]
    assert recovered, "some VM should succeed on a retry"
    _assert_spaced_by_retry_wait(g, 100)
    assert_clean(g)
