"""The backup policy API (cluster_sim/backup/policy.py, issue 19): the built-in behaviour is the
base Policy, scenarios name policies by import path or entry point with their arguments checked,
a policy's answers are checked, and its hooks hear the cluster's signals."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from cluster_sim.backup.policy import GiveUp, Policy, Retry
from cluster_sim.testing import assert_every_vm_has_one_outcome, assert_no_leaks, small_cluster

ROOT = Path(__file__).resolve().parent.parent
TEN = ROOT / "scenarios" / "10vm-2node.yaml"
GOLDEN_TEN = ROOT / "tests" / "golden" / "10vm-2node"


# ---- policies of these tests (importable as test_policy_api:<Class>) ------------------------------
class Recorder(Policy):
    """The built-in decisions, recording every signal it hears."""

    heard: ClassVar[list[tuple]] = []

    def on_node_failed(self, view, cmd, node):
        Recorder.heard.append(("node_failed", view.now_s, node, view.node_is_up(node)))

    def on_csv_owner_changed(self, view, cmd, csv, previous, owner):
        Recorder.heard.append(("csv_owner_changed", view.now_s, csv, previous, owner, view.csv_owner(csv)))

    def on_migration_request(self, view, vm):
        Recorder.heard.append(("migration_request", view.now_s, vm, view.in_critical_section(vm)))
        return super().on_migration_request(view, vm)


class AllowMigrations(Policy):
    def on_migration_request(self, view, vm):
        return "ok"


class NeverRetry(Policy):
    def on_vm_failed(self, view, cmd, failure):
        return GiveUp()


class RetryAtOnce(Policy):
    def on_vm_failed(self, view, cmd, failure):
        return Retry(0.0) if failure.attempt <= 1 else GiveUp()


class LosesAVm(Policy):
    def order(self, view, vms):
        return vms[1:]


class MixesCsvs(Policy):
    def snapshot_groups(self, view, node, vms):
        return [list(vms)]


class OneSetAtATime(Policy):
    def sets_in_flight(self, view):
        return 1


class NotAPolicy:
    pass


def test_naming_the_base_policy_gives_the_golden_bytes_of_every_generation(cluster_sim_run):
    from cluster_sim.results import summary_json

    res = cluster_sim_run(TEN, policy="cluster_sim.backup.policy:Policy")
    for g in res.generations:
        assert summary_json(g.summary) == (GOLDEN_TEN / f"{g.summary.generation}.json").read_text(encoding="utf-8")


# ---- scenario references and arguments: exit 2, field path, value, reason --------------------------
@pytest.mark.parametrize("value, message", [
    ("test_policy_api:Nope", "backup.policy: module 'test_policy_api' has no 'Nope'"),
    ("no_such_pkg.mod:X", "backup.policy: cannot import module 'no_such_pkg.mod': No module named 'no_such_pkg'"),
    ("test_policy_api:NotAPolicy", "backup.policy: test_policy_api:NotAPolicy is not a subclass of "
                                   "cluster_sim.backup.policy.Policy"),
    ("not a path", "backup.policy: not an import path (package.module:Class) nor an entry point of "
                   "cluster_sim.policies"),
    ("mod:1x", "backup.policy: an import path is package.module:Class (got 'mod:1x')"),
])
def test_a_bad_policy_reference_exits_2_naming_field_value_and_reason(value, message):
    from cluster_sim.cli import app

    res = CliRunner().invoke(app, ["validate", str(TEN), "--set", f"backup.policy={value}"])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert str(TEN) in res.output


def test_bad_policy_arguments_are_checked_by_the_policys_own_model():
    from cluster_sim.cli import app

    ref = "backup.policy=backup_policies.throttle:LatencyThrottle"
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(TEN), "--set", ref, "--set", "backup.policy_args.recheck_s=-5"])
    assert res.exit_code == 2, res.output
    assert ("backup.policy_args.recheck_s: Input should be greater than 0 (got -5) (LatencyThrottle.Args)"
            in res.output)
    res = runner.invoke(app, ["validate", str(TEN), "--set", ref, "--set", "backup.policy_args.p99_limt_ms=5"])
    assert res.exit_code == 2
    assert "backup.policy_args.p99_limt_ms: unknown field (did you mean 'p99_limit_ms'?)" in res.output
    res = runner.invoke(app, ["validate", str(TEN), "--set", "backup.policy_args.x=1"])
    assert res.exit_code == 2
    assert "backup.policy_args: given without backup.policy" in res.output


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))


# ---- what a policy answers is checked ---------------------------------------------------------------
def test_an_order_that_loses_a_vm_is_refused_by_name(cluster_sim_run):
    from cluster_sim.backup.policy import PolicyError

    with pytest.raises(PolicyError, match=r"test_policy_api:LosesAVm.order must return each VM it was given "
                                          r"exactly once \(missing \['win-0001'\]"):
        cluster_sim_run(small_cluster(), policy=LosesAVm, generations=["ws2012r2"])


def test_a_group_over_two_csvs_is_refused(cluster_sim_run):
    from cluster_sim.backup.policy import PolicyError

    with pytest.raises(PolicyError, match="MixesCsvs.snapshot_groups: a group's VMs must share one CSV"):
        # 2 nodes, 3 CSVs, 6 VMs round robin: each node holds VMs of several CSVs
        cluster_sim_run(small_cluster(nodes=2, csvs=3, vms=6), policy=MixesCsvs, generations=["ws2012"])


# ---- decisions ---------------------------------------------------------------------------------------
OUTAGE = small_cluster(nodes=2, vms=4, disk_gib=40, retries=3, retry_wait_s=600,
                       events=[{"at_s": 30, "kind": "target_outage", "duration_s": 100}])


def test_retry_decisions_replace_retries_and_retry_wait(cluster_sim_run):
    builtin = cluster_sim_run(OUTAGE, generations=["ws2012r2"]).generations[0].summary
    never = cluster_sim_run(OUTAGE, policy=NeverRetry, generations=["ws2012r2"]).generations[0].summary
    at_once = cluster_sim_run(OUTAGE, policy=RetryAtOnce, generations=["ws2012r2"]).generations[0].summary
    # the outage (30 s to 130 s) fails the copy of each of the 4 VMs
    assert (builtin.retried_vms, builtin.retries, builtin.outcomes.failed) == (4, 4, 0)
    assert builtin.backup_window_s > 600  # the retries wait retry_wait_s = 600 s, past the outage
    assert (never.retried_vms, never.outcomes.failed) == (0, 4)
    assert never.failures_by_reason == {"target_unreachable": 4}
    # retried at once, the copies meet the outage again and give up after the 2nd failure
    assert (at_once.retried_vms, at_once.retries, at_once.outcomes.failed) == (4, 4, 4)
    assert at_once.backup_window_s < 130
    for s in (never, at_once):
        assert s.audit.ok, s.audit.violations


def test_sets_in_flight_one_puts_one_snapshot_at_a_time_on_the_array(cluster_sim_run):
    sc = small_cluster(nodes=3, vms=9)
    builtin = cluster_sim_run(sc, generations=["ws2012r2"]).generations[0].summary
    one = cluster_sim_run(sc, policy=OneSetAtATime, generations=["ws2012r2"]).generations[0].summary
    assert builtin.peak_pending_snapshots >= 2  # each of the 3 nodes commits its own groups
    assert one.peak_pending_snapshots == 1
    assert one.backup_window_s > builtin.backup_window_s
    assert one.hw_snapshots_created == builtin.hw_snapshots_created == 9


# ---- signals --------------------------------------------------------------------------------------------
def test_the_policy_hears_a_node_failure_and_the_csv_owner_change_it_causes(cluster_sim_run):
    Recorder.heard.clear()
    res = cluster_sim_run(TEN, policy=Recorder, generations=["ws2012r2"])
    # node-2 crashes at 900 s; the cluster declares it failed after heartbeat 1 s x threshold 10 = 910 s,
    # and moves csv-2 (coordinated by node-2) to node-1 first; the view already shows both
    assert Recorder.heard == [("csv_owner_changed", 910.0, "csv-2", "node-2", "node-1", "node-1"),
                              ("node_failed", 910.0, "node-2", False)]
    assert_every_vm_has_one_outcome(res)


SLOW_FREEZE = small_cluster(nodes=2, vms=2, disk_gib=4, guest_freeze_median_s=30, guest_freeze_sigma=0,
                            events=[{"at_s": 10, "kind": "migrate_vm", "vm": "win-0001"}])


def test_the_policy_is_asked_about_a_migration_in_the_critical_section(cluster_sim_run):
    Recorder.heard.clear()
    s = cluster_sim_run(SLOW_FREEZE, policy=Recorder, generations=["ws2012r2"]).generations[0].summary
    asked = [h for h in Recorder.heard if h[0] == "migration_request"]
    assert asked and asked[0][1:] == (10.0, "win-0001", True)  # frozen at 10 s (freeze takes 30 s)
    assert s.migrations.refused == len(asked)  # the built-in answer: refuse (block_and_retry)


def test_a_policy_may_let_a_vm_in_its_critical_section_move(cluster_sim_run):
    refused = cluster_sim_run(SLOW_FREEZE, generations=["ws2012r2"]).generations[0]
    allowed = cluster_sim_run(SLOW_FREEZE, policy=AllowMigrations, generations=["ws2012r2"]).generations[0]
    assert refused.summary.migrations.refused >= 1
    assert allowed.summary.migrations.refused == 0
    moved = {row.vm: row.migrated_during_backup for row in allowed.vms}
    assert moved["win-0001"] and not {row.vm: row.migrated_during_backup for row in refused.vms}["win-0001"]
    assert_no_leaks(allowed)
    assert_every_vm_has_one_outcome(allowed)


# ---- Ray ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_policy_gives_the_same_bytes_on_the_ray_backend(cluster_sim_run):
    from cluster_sim.results import summary_json

    args = {"p99_limit_ms": 0.8, "recheck_s": 10}
    sc = small_cluster(nodes=3, vms=12, disk_gib=40)
    ref = "backup_policies.throttle:LatencyThrottle"
    local = cluster_sim_run(sc, policy=ref, policy_args=args, backend="local")
    ray = cluster_sim_run(sc, policy=ref, policy_args=args, backend="ray")
    assert [summary_json(g.summary) for g in ray.generations] == [summary_json(g.summary) for g in local.generations]


def test_the_ray_runtime_env_ships_the_code_of_the_policies_named(cluster_sim_run):
    from cluster_sim.simulation import package_runtime_env

    cluster_sim_run(small_cluster(nodes=2, vms=2), policy="backup_policies.owner_groups:GroupByCsvOwner",
                    generations=["ws2016"])
    assert str(ROOT / "examples" / "backup_policies") in package_runtime_env()["py_modules"]


class PauseAfterNodeFailure(Policy):
    def on_node_failed(self, view, cmd, node):
        cmd.pause_new_groups(600.0)  # every node, until the failover has settled


def test_pausing_new_groups_after_a_node_failure_holds_every_start_for_600_s(cluster_sim_run):
    builtin = cluster_sim_run(TEN, generations=["ws2012r2"]).generations[0]
    paused = cluster_sim_run(TEN, policy=PauseAfterNodeFailure, generations=["ws2012r2"]).generations[0]
    starts = [t for t, ev, _ids in paused.trace.events if ev == "vm_attempt"]
    before = [t for t, ev, _ids in builtin.trace.events if ev == "vm_attempt"]
    # node-2 is declared failed at 910 s: no attempt starts in [910, 1510) with the pause; some do without
    assert not [t for t in starts if 910.0 <= t < 1510.0]
    assert [t for t in before if 910.0 <= t < 1510.0]
    assert [t for t in starts if t < 910.0] == [t for t in before if t < 910.0]
    assert paused.summary.backup_window_s > builtin.summary.backup_window_s
    assert_every_vm_has_one_outcome(paused)
    assert_no_leaks(paused)


def test_a_local_ray_instance_gets_only_policy_code_its_workers_would_not_find(tmp_path, monkeypatch):
    # the workers of a local instance see this machine's packages and PYTHONPATH: an installed
    # package is not shipped, a module found through a sys.path entry this process added is, and
    # a package uninstalled since (its folder gone) is shipped nowhere
    import pydantic

    from cluster_sim.scenario import policy_ref
    from cluster_sim.simulation import ray_session

    mine = tmp_path / "mypolicies"
    mine.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))
    installed = str(Path(pydantic.__file__).parent)
    monkeypatch.setattr(policy_ref, "_CODE", {"gone": str(tmp_path / "gone"), "mine": str(mine),
                                              "pydantic": installed})
    assert ray_session.local_policy_code() == [str(mine)]
    assert ray_session.package_runtime_env()["py_modules"][1:] == [str(mine), installed]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # now the workers find it themselves
    assert ray_session.local_policy_code() == []
