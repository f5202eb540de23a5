"""Load studies (`cluster-sim sweep`): study checking, runs.parquet, resume, the t-interval, plots,
and on a real multi-node Ray cluster (ray.cluster_utils.Cluster): tasks on every node, a worker
node killed mid-study, resume after an interruption."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import cluster_sim
from cluster_sim.cli import app
from cluster_sim.results import summary_json
from cluster_sim.studies.runs import _node_id
from cluster_sim.sweep import (
    JOURNAL_FILE,
    RUNS_FILE,
    aggregate,
    load_study,
    mean_ci,
    read_runs,
    run_study,
    t_critical,
)

ROOT = Path(__file__).parent.parent
runner = CliRunner()

TINY = """\
name: tiny
seed: 1
cluster: {nodes: 2}
storage: {csvs: 2}
fleet:
  - template: win
    count: %(count)d
    disks: [{size_gib: 4}, {size_gib: 2}]
backup: {generations: [ws2012r2, ws2016], retry_wait_s: 60}
run: {until_s: 50000}
"""

STUDY = """\
study: tiny-study
scenario: sc/tiny.yaml
grid:
  backup.vms_per_snapshot: [1, 3]
  backup.concurrent_vms_per_node: %(conc)s
seeds: %(seeds)s
metrics: [backup_window_s, hw_snapshots_created, outcomes.failed, io_latency_ms.backup_p99]
"""


def make_study(folder: Path, count: int = 6, conc: str = "[1, 2]", seeds: str = "2", body: str | None = None) -> Path:
    (folder / "sc").mkdir(parents=True, exist_ok=True)
    (folder / "sc" / "tiny.yaml").write_text(TINY % {"count": count})
    path = folder / "study.yaml"
    path.write_text(body if body is not None else STUDY % {"conc": conc, "seeds": seeds})
    return path


def rows_of(out: Path) -> list[dict]:
    return pq.read_table(out / RUNS_FILE).to_pylist()


# ----------------------------------------------------------------------------------------------
# the confidence interval
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                                         (9, 2.2622), (10, 2.2281), (29, 2.0452), (30, 2.0423),
                                         (100, 1.9840), (1000, 1.9623)])
def test_t_critical_matches_the_printed_table(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=5e-5)


def test_ci_of_a_known_sample_is_the_hand_computed_t_interval(tmp_path):
    # x = 2 4 4 5 7 8: mean 5, squared deviations 9+1+1+0+4+9 = 24, s^2 = 24/5 = 4.8,
    # se = sqrt(4.8/6) = 0.894427, t(0.975, 5) = 2.570582, half-width 2.299198
    ci = mean_ci([2, 4, 4, 5, 7, 8])
    assert ci.n == 6 and ci.mean == 5.0
    assert ci.sd == pytest.approx(math.sqrt(4.8))
    assert ci.low == pytest.approx(5 - 2.299198, abs=1e-6)
    assert ci.high == pytest.approx(5 + 2.299198, abs=1e-6)
    # one value: no interval; no values: nothing; no spread: a zero-width interval
    assert mean_ci([3.0]).mean == 3.0 and math.isnan(mean_ci([3.0]).high)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([None]).mean)
    assert mean_ci([0.785] * 3) == mean_ci([0.785] * 3).__class__(3, 0.785, 0.0, 0.785, 0.785)

    # the same numbers through aggregate(): one point, six seeds; a failed run is left out
    plan = load_study(make_study(tmp_path, conc="[2]", seeds="[1, 2, 3, 4, 5, 6, 7]"))
    plan.points, plan.scenarios = plan.points[:1], plan.scenarios[:1]
    plan.generations = ["ws2016"]
    rows = [{"run_id": s.run_id, "backup.vms_per_snapshot": 1, "backup.concurrent_vms_per_node": 2,
             "seed": s.seed, "generation": "ws2016", "error": None, "valid": True, "backup_window_s": x}
            for s, x in zip(plan.runs(), [2, 4, 4, 5, 7, 8], strict=False)]
    rows.append({**rows[0], "seed": 7, "error": "boom", "valid": False, "backup_window_s": None})
    # an audit-failed run (e.g. cut at run.until_s: its "window" is the horizon) is left out too
    rows.append({**rows[0], "seed": 8, "valid": False, "audit.ok": False, "backup_window_s": 50000.0})
    (rec,) = aggregate(plan, rows)
    assert rec["runs"] == 6 and rec["failed"] == 1 and rec["invalid"] == 1
    assert rec["backup_window_s.mean"] == 5.0 and rec["backup_window_s.n"] == 6
    assert rec["backup_window_s.ci95_low"] == pytest.approx(2.700802, abs=1e-6)
    assert rec["backup_window_s.ci95_high"] == pytest.approx(7.299198, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# bad study files: the corpus in tests/bad_inputs/studies/ (tests/test_bad_inputs.py)
# ----------------------------------------------------------------------------------------------
def test_a_point_that_breaks_the_whole_scenario_is_named_by_its_axis(tmp_path):
    # 40 VMs of 8 GiB on 2 nodes of 100 GiB do not fit: the problem is the fleet, caused by the axis
    body = ("study: x\nscenario: sc/tiny.yaml\noverrides: {cluster.node_memory_gib: 100}\n"
            "grid:\n  fleet.0.count: [6, 40]\n")
    with pytest.raises(cluster_sim.ScenarioError) as exc:
        load_study(make_study(tmp_path, body=body))
    assert exc.value.problems[0][0] == "grid.fleet.0.count"
    assert "value 40: placement cannot work" in exc.value.problems[0][1]


def test_shipped_studies_are_valid():
    plans = {p.stem: load_study(p) for p in sorted((ROOT / "studies").glob("*.yaml"))}
    assert set(plans) >= {"vm-count-scaling", "r2-batch-size", "drain-timing"}
    r2 = plans["r2-batch-size"]
    assert r2.axes == ["backup.vms_per_snapshot", "backup.concurrent_vms_per_node"]
    assert r2.total_runs == 6 * 3 * 10 * 2 and r2.generations == ["ws2012r2", "ws2016"]
    vc = plans["vm-count-scaling"]
    assert [sc.vm_count() for sc in vc.scenarios] == [100, 200, 400, 800, 1200, 1600]
    assert all(sc.cluster.nodes == 8 for sc in vc.scenarios) and len(vc.generations) == 4
    dt = plans["drain-timing"]
    assert dt.axes == ["events.0.at_s"] and all(sc.events[0].kind == "drain_node" for sc in dt.scenarios)
    assert sorted({sc.events[0].at_s for sc in dt.scenarios}) == [p["events.0.at_s"] for p in dt.points]
    sc_ = plans["scale"]
    assert sc_.axes == ["fleet.0.count", "storage.csvs", "backup.vms_per_snapshot"]
    assert sorted({s.vm_count() for s in sc_.scenarios}) == [100, 200, 400, 800, 1600, 3200]
    assert sorted({s.storage.csvs for s in sc_.scenarios}) == [8, 16, 32]
    assert all(s.backup.mode == "incremental" and s.placement == "spread" for s in sc_.scenarios)
    assert sc_.total_runs == 6 * 3 * 2 * 3 * 2 and sc_.generations == ["ws2012r2", "ws2016"]


# ----------------------------------------------------------------------------------------------
# running in process (--serial): rows, aggregate, plots, failures, resume
# ----------------------------------------------------------------------------------------------
def test_serial_study_writes_one_row_per_run_aggregate_and_plots(tmp_path):
    study = make_study(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 0, res.output
    assert "16 ok, 0 failed, 0 invalid of 16" in " ".join(res.output.split())
    rows = rows_of(out)
    assert len(rows) == 2 * 2 * 2 * 2 and len({r["run_id"] for r in rows}) == 16
    cols = set(rows[0])
    assert {"backup.vms_per_snapshot", "backup.concurrent_vms_per_node", "seed", "generation", "node_id",
            "wall_s", "error", "backup_window_s", "outcomes.failed", "io_latency_ms.backup_p99",
            "leaks.snapshots", "audit.ok", "failures_by_reason"} <= cols
    assert all(r["error"] is None and r["node_id"] == "local" and r["wall_s"] > 0 for r in rows)
    assert {r["seed"] for r in rows} == {1, 2}  # seeds: 2 -> the scenario's seed and the next
    assert not (out / JOURNAL_FILE).exists()
    # a row holds exactly the summary of that run
    r = next(r for r in rows if r["backup.vms_per_snapshot"] == 3 and r["backup.concurrent_vms_per_node"] == 2
             and r["seed"] == 2 and r["generation"] == "ws2012r2")
    sc = cluster_sim.load_scenario(tmp_path / "sc" / "tiny.yaml",
                                   ["backup.vms_per_snapshot=3", "backup.concurrent_vms_per_node=2"])
    s = json.loads(summary_json(cluster_sim.run(sc, backend="local", seed=2, generations=["ws2012r2"])
                                .generations[0].summary))
    assert r["backup_window_s"] == s["backup_window_s"] and r["hw_snapshots_created"] == s["hw_snapshots_created"]
    assert r["outcomes.app_consistent"] == s["outcomes"]["app_consistent"]
    assert r["io_latency_ms.backup_p99"] == s["io_latency_ms"]["backup_p99"]

    with open(out / "aggregate.csv", newline="") as fh:
        agg = list(csv.DictReader(fh))
    assert len(agg) == 4 * 2
    assert {"backup_window_s.mean", "backup_window_s.ci95_low", "backup_window_s.ci95_high",
            "outcomes.failed.n"} <= set(agg[0])
    a = next(a for a in agg if a["backup.vms_per_snapshot"] == "3" and a["backup.concurrent_vms_per_node"] == "2"
             and a["generation"] == "ws2012r2")
    ws = [x["backup_window_s"] for x in rows if x["backup.vms_per_snapshot"] == 3
          and x["backup.concurrent_vms_per_node"] == 2 and x["generation"] == "ws2012r2"]
    ci = mean_ci(ws)
    assert float(a["backup_window_s.mean"]) == pytest.approx(ci.mean, abs=1e-6)
    assert float(a["backup_window_s.ci95_high"]) == pytest.approx(ci.high, abs=1e-6)
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 4 * 2 and "backup_window_s--backup.vms_per_snapshot.png" in plots
    assert all((out / "plots" / p).stat().st_size > 5000 for p in plots)


def test_a_run_that_raises_is_recorded_the_study_goes_on_exit_1(tmp_path, monkeypatch):
    import cluster_sim.simulation as simulation

    real = simulation.run

    def flaky(sc, *a, seed=None, generations=None, **kw):
        if seed == 2 and generations == ["ws2012r2"] and sc.backup.vms_per_snapshot == 3:
            raise RuntimeError("simulated model bug")
        return real(sc, *a, seed=seed, generations=generations, **kw)

    monkeypatch.setattr(simulation, "run", flaky)
    study = make_study(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 1, res.output
    rows = rows_of(out)
    failed = [r for r in rows if r["error"]]
    assert len(rows) == 16 and len(failed) == 2  # both concurrency values of that point and seed
    assert all("RuntimeError: simulated model bug" in r["error"] and r["backup_window_s"] is None for r in failed)
    assert "14 ok, 2 failed, 0 invalid of 16" in " ".join(res.output.split())
    with open(out / "aggregate.csv", newline="") as fh:
        agg = [a for a in csv.DictReader(fh) if a["backup.vms_per_snapshot"] == "3" and a["generation"] == "ws2012r2"]
    assert all(a["runs"] == "1" and a["failed"] == "1" for a in agg)
    # --resume --retry-failed runs exactly the failed ones again (now fixed)
    monkeypatch.setattr(simulation, "run", real)
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial", "--resume", "--retry-failed"])
    assert res.exit_code == 0, res.output
    # (the 4 ws2016 runs with 3 VMs per snapshot are copies of those with 1: ws2016 has no batches)
    assert "2 run now, 10 already recorded" in " ".join(res.output.split())
    assert not any(r["error"] for r in rows_of(out))


class Interrupt:
    """A progress callback that interrupts the study (as Ctrl-C would) after `after` runs."""

    def __init__(self, after: int):
        self.after = after

    def __call__(self, state, row):
        if row is not None and state.done >= self.after:
            raise KeyboardInterrupt


def test_resume_after_interruption_runs_only_what_is_missing(tmp_path):
    plan = load_study(make_study(tmp_path, seeds="3"))
    out = tmp_path / "out"
    # 24 runs, 6 of them copies (ws2016 ignores vms_per_snapshot: 3 VMs per snapshot = 1)
    identical = len(plan.duplicates())
    assert (plan.total_runs, identical) == (24, 6)
    # seed 1: (1, 1) ws2012r2; (1, 1) ws2016 and its copy (3, 1) ws2016; (1, 2) ws2012r2; (1, 2) ws2016 and
    # its copy (3, 2) ws2016: 6 done after 4 runs
    first = run_study(plan, out, executor="serial", progress=Interrupt(5))
    assert first.interrupted and first.executed == 4
    before = {r["run_id"]: r for r in rows_of(out)}
    assert len(before) == 6 and not (out / "aggregate.csv").exists()
    assert sum(1 for r in before.values() if r["duplicate_of"] in before) == 2
    second = run_study(plan, out, executor="serial", resume=True, outputs=False)
    assert not second.interrupted and (second.skipped, second.executed) == (4, plan.total_runs - identical - 4)
    after = rows_of(out)
    assert len(after) == plan.total_runs == len({r["run_id"] for r in after})
    for r in after:  # the recorded runs were not run again
        if r["run_id"] in before:
            assert r["finished_at"] == before[r["run_id"]]["finished_at"]
    # resuming a finished study runs nothing
    third = run_study(plan, out, executor="serial", resume=True, outputs=False)
    assert (third.executed, third.skipped) == (0, plan.total_runs - identical)
    # a changed grid keeps the runs it shares and drops the others: concurrency 2 is kept (3 runs a seed
    # and a copy), concurrency 1 dropped (4 rows a seed, its copy included), concurrency 3 run (3 a seed)
    plan2 = load_study(make_study(tmp_path, conc="[2, 3]", seeds="3"))
    fourth = run_study(plan2, out, executor="serial", resume=True, outputs=False)
    assert (fourth.skipped, fourth.dropped, fourth.executed) == (9, 12, 9)


def test_rows_in_the_journal_of_a_killed_driver_count_as_recorded(tmp_path):
    plan = load_study(make_study(tmp_path))
    out = tmp_path / "out"
    first = run_study(plan, out, executor="serial", progress=Interrupt(3))
    rows = rows_of(out)
    # as if the driver died between two Parquet rewrites: rows only in the journal, a torn last line
    (out / RUNS_FILE).unlink()
    with open(out / JOURNAL_FILE, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
        fh.write('{"run_id": "abc", "seed"')
    assert {r["run_id"] for r in read_runs(out)} == {r["run_id"] for r in rows}
    res = run_study(plan, out, executor="serial", resume=True, outputs=False)
    assert len(rows) == 3 and first.executed == 2  # (and the copy of the second)
    assert (res.skipped, res.executed) == (2, plan.total_runs - len(plan.duplicates()) - 2)


# ----------------------------------------------------------------------------------------------
# on a multi-node Ray cluster
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    # A killed node is declared dead after ~3 s instead of Ray's default ~15 s; only then does
    # Ray retry the task that was running on it.
    health = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": health})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        # Ray prestarts a worker on the driver's node only: until the other node's worker has
        # started and imported cluster_sim, the head finishes quick runs alone (seen in CI, all 9
        # runs of the two-node test on the head). One pinned task per node warms both.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        warm = ray.remote(num_cpus=1)(_node_id)  # cluster_sim.sweep's own: imports it on the worker
        ids = sorted(_alive_node_ids())
        assert ray.get([warm.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                        for n in ids], timeout=120) == ids
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _alive_node_ids() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.mark.slow
def test_two_node_ray_cluster_runs_tasks_on_both_nodes(ray_cluster, tmp_path):
    plan = load_study(make_study(tmp_path, count=30, conc="[2]", seeds="3"))
    res = run_study(plan, tmp_path / "out", address=ray_cluster.address, outputs=False)
    # (3 of the 12 are ws2016 with 3 VMs per snapshot: copies of those with 1)
    assert res.failed == 0 and res.executed == plan.total_runs - len(plan.duplicates()) == 12 - 3
    rows = rows_of(tmp_path / "out")
    assert len({r["run_id"] for r in rows}) == 12
    nodes = {r["node_id"] for r in rows}
    assert len(_alive_node_ids()) == 2 and nodes == _alive_node_ids()
    # the same numbers as in process
    serial = run_study(plan, tmp_path / "serial", executor="serial", outputs=False)
    key = {r["run_id"]: r["backup_window_s"] for r in serial.rows}
    assert all(r["backup_window_s"] == key[r["run_id"]] for r in rows)


@pytest.mark.slow
def test_killing_a_worker_node_mid_study_still_records_every_run_once(ray_cluster, tmp_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    victim = ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    victim_id = victim.node_id
    # a worker on the new node imports cluster_sim before the study starts, or the two warm nodes
    # may finish every run before the victim takes its first (seen on a fast machine)
    warm = ray.remote(num_cpus=1)(_node_id).options(  # cluster_sim.sweep's own: imports it on the worker
        scheduling_strategy=NodeAffinitySchedulingStrategy(victim_id, soft=False))
    assert ray.get(warm.remote(), timeout=120) == victim_id
    plan = load_study(make_study(tmp_path, count=60, conc="[1, 2]", seeds="3"))
    killed: list[int] = []

    def kill_when_busy(state, row):
        # right after the victim finished a run it has the next one queued: kill it mid-task
        if row is not None and not killed and row["node_id"] == victim_id and state.done < plan.total_runs - 4:
            killed.append(state.done)
            ray_cluster.remove_node(victim, allow_graceful=False)

    res = run_study(plan, tmp_path / "out", address=ray_cluster.address, progress=kill_when_busy, outputs=False)
    assert killed and killed[0] < plan.total_runs
    rows = rows_of(tmp_path / "out")
    assert res.failed == 0 and not any(r["error"] for r in rows)
    assert len(rows) == plan.total_runs == 24 and len({r["run_id"] for r in rows}) == 24
    on_victim = [r for r in rows if r["node_id"] == victim_id]
    assert on_victim and len(on_victim) < 24  # it ran some, the survivors ran the rest
    deadline = time.monotonic() + 20  # Ray declares it dead within ~3 s (health checks above)
    while victim_id in _alive_node_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim_id not in _alive_node_ids()


@pytest.mark.slow
def test_resume_on_ray_after_interruption_does_not_repeat_runs(ray_cluster, tmp_path):
    study = make_study(tmp_path, count=20, seeds="3")
    plan = load_study(study)
    out = tmp_path / "out"
    first = run_study(plan, out, address=ray_cluster.address, progress=Interrupt(6), outputs=False)
    assert first.interrupted
    before = {r["run_id"]: r for r in rows_of(out)}
    assert 6 <= len(before) < plan.total_runs
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--resume", "--address", ray_cluster.address])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    ran = [r for r in before.values() if not r["duplicate_of"]]  # (copies are made again from what they copy)
    identical = len(plan.duplicates())
    assert f"{plan.total_runs - identical - len(ran)} run now, {len(ran)} already recorded" in text, text
    rows = rows_of(out)
    assert len(rows) == plan.total_runs == len({r["run_id"] for r in rows})
    assert all(r["finished_at"] == before[r["run_id"]]["finished_at"] for r in rows if r["run_id"] in before)
    assert (out / "aggregate.csv").exists() and len(list((out / "plots").glob("*.png"))) == 8
