"""Model bugs that cheap invariants find (issue 15, item 5), and the auditor's invariants that find them:
- with migration_policy abort_backup, a migration that cannot go anywhere must not abort the backup;
- a CSV whose coordinator fails while every survivor is drained moves to a live node anyway;
- every CSV is coordinated by a node the cluster holds up; the migration counters add up; no job's
  window is below its copy-time lower bound.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from backup_helpers import scenario_dict, template

import cluster_sim
from cluster_sim.audit import _csv_coordinators, _migration_counters, _windows
from cluster_sim.cluster.migration import MigrationStats
from cluster_sim.results import GenerationResult
from cluster_sim.scenario import scenario_from_dict

REGRESSIONS = Path(__file__).resolve().parent.parent / "scenarios" / "regressions"


def events(g: GenerationResult, name: str, **match) -> list[tuple[float, dict]]:  # type: ignore[no-untyped-def]
    return [(t, ids) for t, ev, ids in g.trace.events if ev == name and all(ids.get(k) == v for k, v in match.items())]


# ---- (a) abort_backup: no target, no abort ----------------------------------------------------------
def test_a_migration_with_no_target_fails_without_aborting_the_backup_under_abort_backup() -> None:
    sc = cluster_sim.load_scenario(REGRESSIONS / "abort-policy-migration-without-target-aborts-backup.yaml")
    (g,) = cluster_sim.run(sc, backend="local").generations
    s = g.summary
    # node-2 is drained: the migration of win-0001 at 32 s (in its guest freeze) has nowhere to go
    assert [(t, ids["reason"]) for t, ids in events(g, "migration_failed", vm="win-0001")] == [(32.0, "no_target")]
    assert events(g, "backup_aborted_by_migration") == []
    assert s.migrations.model_dump() == {"requested": 2, "completed": 1, "refused": 0, "retried": 0,
                                         "aborted": 0, "failed": 1}  # (the drain moved win-0002)
    # so the backup went on: both VMs app-consistent (before the fix: win-0001 failed, aborted_by_migration)
    assert {r.vm: (r.outcome, r.reason) for r in g.vms} == {"win-0001": ("app_consistent", ""),
                                                           "win-0002": ("app_consistent", "")}
    assert s.audit.ok, s.audit.violations


def test_a_refused_migration_with_no_target_fails_at_once_instead_of_waiting_for_the_backup() -> None:
    # block_and_retry: the same migration used to be refused every retry_s (30 s) until the VM left its
    # critical section, then fail for want of a target; now it fails when asked, and nothing waits.
    d = scenario_from_dict({**_abort_dict(), "backup": {**_abort_dict()["backup"],
                                                        "migration_policy": "block_and_retry"}})
    (g,) = cluster_sim.run(d, backend="local").generations
    m = g.summary.migrations
    assert (m.refused, m.retried, m.failed) == (0, 0, 1)
    assert g.summary.migration_delay_s_total == 0.0


def _abort_dict() -> dict:
    import yaml

    return yaml.safe_load((REGRESSIONS / "abort-policy-migration-without-target-aborts-backup.yaml").read_text())


def test_a_migration_that_enters_the_critical_section_while_waiting_for_a_slot_counts_its_abort() -> None:
    # One migration at a time per node: win-0003 waits for win-0001's slot (29.5 s -> 31.36 s); by then
    # the backup (started at 30 s) has frozen it, so under abort_backup taking the slot aborts its
    # backup. That abort was not counted (migrations.aborted 0 with a backup aborted by a migration).
    d = scenario_dict(fleet=[template(count=3, memory_gib=2)], nodes=2,
                      backup={"generations": ["ws2012r2"], "start_s": 30, "migration_policy": "abort_backup",
                              "retries": 0})
    d["cluster"]["migration"] = {"max_concurrent_per_node": 1}
    d["events"] = [{"kind": "migrate_vm", "at_s": 29.5, "vm": "win-0001", "to": "node-2"},
                   {"kind": "migrate_vm", "at_s": 29.5, "vm": "win-0003", "to": "node-2"}]
    (g,) = cluster_sim.run(scenario_from_dict(d), backend="local", generations=["ws2012r2"]).generations
    aborts = events(g, "backup_aborted_by_migration")
    assert [ids["vm"] for _t, ids in aborts] == ["win-0003"]
    assert aborts[0][0] == events(g, "migration_start", vm="win-0003")[0][0]  # when it got the slot
    assert g.summary.migrations.aborted == 1
    assert (g.summary.migrations.completed, g.summary.migrations.requested) == (2, 2)


# ---- (b) a CSV never keeps a dead coordinator ------------------------------------------------------
def test_a_csv_whose_coordinator_fails_while_every_survivor_is_drained_moves_to_a_drained_node() -> None:
    sc = cluster_sim.load_scenario(REGRESSIONS / "csv-coordinator-fails-while-survivors-drained.yaml")
    for g in cluster_sim.run(sc, backend="local").generations:
        # node-1 crashes at 20 s, is declared failed at 30 s (10 x 1 s heartbeats): csv-1 moves at once
        # to the drained node-2 (fewest CSVs, then the lowest index)
        assert [(t, ids["node"]) for t, ids in events(g, "csv_owner_moved", csv="csv-1")][:1] == [(30.0, "node-2")]
        assert {c.csv: c.coordinator for c in g.csvs} == {"csv-1": "node-2", "csv-2": "node-2", "csv-3": "node-3"}
        assert "csv_failover" not in g.summary.failures_by_reason, g.summary.generation
        assert g.summary.outcomes.failed == 0
        assert g.summary.audit.ok, g.summary.audit.violations


def test_csvs_whose_nodes_all_failed_move_to_the_first_node_that_returns() -> None:
    d = scenario_dict(fleet=[template(count=2)], nodes=2, backup={"generations": ["ws2016"], "start_s": 30})
    d["events"] = [{"kind": "crash_node", "at_s": 5.0, "node": "node-1"},
                   {"kind": "crash_node", "at_s": 6.0, "node": "node-2"},
                   {"kind": "recover_node", "at_s": 100.0, "node": "node-2"}]
    (g,) = cluster_sim.run(scenario_from_dict(d), backend="local").generations
    # node-1 fails at 15 s with node-2 already dead (not yet noticed): nobody can take csv-1 then;
    # node-2 returns at 100 s and takes both
    assert [(t, ids["csv"], ids["node"]) for t, ids in events(g, "csv_owner_moved")] == [(100.0, "csv-1", "node-2")]
    assert {c.csv: c.coordinator for c in g.csvs} == {"csv-1": "node-2", "csv-2": "node-2"}
    assert g.summary.audit.ok, g.summary.audit.violations


# ---- the auditor's new invariants, on hand-made states ---------------------------------------------
def _cm(coordinators: dict[str, str], up: set[str], alive: set[str] | None = None):  # type: ignore[no-untyped-def]
    return SimpleNamespace(csvs=[SimpleNamespace(name=c, coordinator=n) for c, n in coordinators.items()],
                           up=up, alive=alive if alive is not None else set(up))


def test_the_auditor_reports_a_csv_coordinated_by_a_failed_node_while_another_node_is_up() -> None:
    cm = _cm({"csv-1": "node-1", "csv-2": "node-2"}, up={"node-2"})
    assert _csv_coordinators(cm) == ["csv-1: coordinated by node-1, which the cluster holds failed"]
    assert _csv_coordinators(_cm({"csv-1": "node-1"}, up=set())) == []  # nobody up: nothing to move to
    assert _csv_coordinators(_cm({"csv-1": "node-2"}, up={"node-2"}, alive=set())) == []  # (crashed, unnoticed)


@pytest.mark.parametrize(("stats", "expected"), [
    (MigrationStats(requested=3, completed=2, failed=1), []),
    (MigrationStats(requested=3, completed=1, failed=1, in_flight=1, refused=1), []),  # one waits after a refusal
    (MigrationStats(requested=3, completed=2, failed=0), ["requested 3 != completed 2 + failed 0 + in flight 0"]),
    (MigrationStats(requested=1, completed=1, refused=2, retried=1),
     ["refused 2 - retried 1 - refused too long 0 = 1, not between 0 and in flight 0"]),
    (MigrationStats(requested=1, completed=1, aborted=2), ["aborted 2 > requested 1"]),
])
def test_the_auditor_checks_that_the_migration_counters_add_up(stats: MigrationStats, expected: list[str]) -> None:
    stats.failed_by.update({"no_target": stats.failed})
    found = _migration_counters(SimpleNamespace(migrations=SimpleNamespace(stats=stats)))
    assert [v.removeprefix("migrations: ") for v in found] == expected


def test_the_auditor_reports_a_window_below_its_copy_time_lower_bound() -> None:
    sc = scenario_from_dict(scenario_dict(nodes=2))
    # the narrowest pipe: the 2000 MiB/s backup target (fabric 2 x 1600, streams 2 x 3 x 400, array 6000)
    rec = SimpleNamespace(bytes_copied_mib=20_000.0)
    job = SimpleNamespace(index=0, started_s=100.0, ended_s=105.0, records={"a": rec})
    cm = SimpleNamespace(sc=sc, env=SimpleNamespace(now=200.0))
    assert _windows(cm, [job]) == ["job 0: window 5.000000 s is below its copy-time lower bound 10.000000 s"]
    job.ended_s = 110.0
    assert _windows(cm, [job]) == []
