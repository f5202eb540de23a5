"""Studies reject what they cannot trust (issue 15, item 3): a per-run deadline (default from the
run's size, settable in the study file and with --run-timeout); a run that fails or times out is run
once more, then recorded as an error; audit-failed runs are recorded valid=false and left out of the
means (counted beside them) and make the sweep exit 1; the resume key includes the simulator
version; one sweep at a time per study folder."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_sweep import TINY
from typer.testing import CliRunner

import cluster_sim.simulation as simulation
from cluster_sim import version
from cluster_sim.cli import app
from cluster_sim.sweep import (
    LOCK_FILE,
    RUNS_FILE,
    StudyLock,
    default_run_timeout_s,
    load_study,
    mean_ci,
    run_study,
)

runner = CliRunner()



def make_study(folder: Path, body: str) -> Path:
    (folder / "sc").mkdir(parents=True, exist_ok=True)
    (folder / "sc" / "tiny.yaml").write_text(TINY % {"count": 6})
    path = folder / "study.yaml"
    path.write_text("study: guards\nscenario: sc/tiny.yaml\n" + body)
    return path


def rows_of(out: Path) -> list[dict]:
    return pq.read_table(out / RUNS_FILE).to_pylist()


def flat(text: str) -> str:
    return " ".join(text.split())


# ---- invalid runs -----------------------------------------------------------------------------------------
def test_audit_failed_runs_are_recorded_invalid_left_out_of_the_means_and_the_sweep_exits_1(tmp_path: Path) -> None:
    # run.until_s 10 s cuts every backup of the first point (the auditor: "job did not end before
    # run.until_s"); its "window" would be the horizon, not a result
    study = make_study(tmp_path, "grid: {run.until_s: [10, 50000]}\nseeds: 2\ngenerations: [ws2016]\n")
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 1, res.output
    text = flat(res.output)
    assert "2 ok, 0 failed, 2 invalid of 4" in text
    assert "invalid (audit failed, left out of the means): seed 1 ws2016 run.until_s=10" in text
    rows = rows_of(out)
    cut = [r for r in rows if r["run.until_s"] == 10]
    assert len(cut) == 2 and all(r["valid"] is False and r["audit.ok"] is False and r["error"] is None for r in cut)
    assert all("job did not end before run.until_s" in r["audit.violations"] for r in cut)
    assert all(r["valid"] is True for r in rows if r["run.until_s"] == 50000)
    with open(out / "aggregate.csv", newline="") as fh:
        agg = {a["run.until_s"]: a for a in csv.DictReader(fh)}
    assert (agg["10"]["runs"], agg["10"]["invalid"], agg["10"]["failed"]) == ("0", "2", "0")
    assert agg["10"]["backup_window_s.mean"] == "" and agg["10"]["backup_window_s.n"] == "0"
    good = [r["backup_window_s"] for r in rows if r["run.until_s"] == 50000]
    assert (agg["50000"]["runs"], agg["50000"]["invalid"]) == ("2", "0")
    assert float(agg["50000"]["backup_window_s.mean"]) == pytest.approx(mean_ci(good).mean, abs=1e-6)


# ---- deadlines and the second attempt -------------------------------------------------------------------
def test_the_default_run_deadline_grows_with_the_runs_size_and_the_study_or_the_option_sets_it(tmp_path) -> None:
    grid = "overrides: {fleet.0.memory_gib: 1}\ngrid: {fleet.0.count: [6, 600]}\n"
    plan = load_study(make_study(tmp_path, grid))
    assert [plan.timeout_s(p) for p in range(2)] == [306.0, 900.0]  # 300 s + 1 s per VM and backup job
    sched = "  backup.schedule: [{at_s: 0, mode: full}, {at_s: 9000, mode: incremental}]\n"
    plan = load_study(make_study(tmp_path, grid.replace("}\ngrid", "}\n" + "overrides:\n" + sched + "grid", 0)
                                 .replace("overrides: {fleet.0.memory_gib: 1}\n", "overrides:\n  fleet.0.memory_gib: 1\n"
                                          + sched)))
    assert [plan.timeout_s(p) for p in range(2)] == [312.0, 1500.0]  # two jobs
    assert default_run_timeout_s(plan.scenarios[0]) == 312.0
    plan = load_study(make_study(tmp_path, grid + "run_timeout_s: 42\n"))
    assert [plan.timeout_s(p) for p in range(2)] == [42.0, 42.0]


class Hang:
    """simulation.run that sleeps (as a stuck run would) on the calls numbered in `hang_on`."""

    def __init__(self, hang_on: set[int]):
        self.real, self.calls, self.hang_on = simulation.run, 0, hang_on

    def __call__(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls in self.hang_on:
            time.sleep(3600)
        return self.real(*a, **kw)


def test_a_run_past_its_deadline_is_cut_and_run_once_more(tmp_path: Path, monkeypatch) -> None:
    hang = Hang({1})  # the first attempt of the first run hangs; its second attempt does not
    monkeypatch.setattr(simulation, "run", hang)
    study = make_study(tmp_path, "grid: {backup.retries: [0]}\nseeds: 1\ngenerations: [ws2016]\n")
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial", "--run-timeout", "1"])
    assert res.exit_code == 0, res.output
    assert "1 run a second time after an error or a timeout" in flat(res.output)
    (row,) = rows_of(out)
    assert (row["error"], row["valid"], row["attempts"]) == (None, True, 2)


def test_a_run_that_times_out_twice_is_an_error_row_and_the_sweep_exits_1(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(simulation, "run", Hang({1, 2}))
    study = make_study(tmp_path, "grid: {backup.retries: [0, 1]}\nseeds: 1\ngenerations: [ws2016]\nrun_timeout_s: 1\n")
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 1, res.output
    assert "1 ok, 1 failed, 0 invalid of 2" in flat(res.output)
    rows = {r["backup.retries"]: r for r in rows_of(out)}
    assert rows[0]["error"].startswith("RunTimeout: no result after 1 s (deadline 1 s: run_timeout_s")
    assert (rows[0]["valid"], rows[0]["attempts"]) == (False, 2)
    assert (rows[1]["error"], rows[1]["attempts"]) == (None, 1)


# ---- the simulator's version in the resume key --------------------------------------------------------
def test_resume_after_a_simulator_change_runs_everything_again(tmp_path: Path, monkeypatch) -> None:
    study = make_study(tmp_path, "grid: {backup.retries: [0, 1]}\nseeds: 1\ngenerations: [ws2016]\n")
    out = tmp_path / "out"
    plan = load_study(study)
    first = run_study(plan, out, executor="serial", outputs=False)
    assert first.executed == 2
    assert {r["sim_version"] for r in rows_of(out)} == {plan.sim_version}
    assert plan.sim_version == version.sim_version() and "+" in plan.sim_version
    again = run_study(load_study(study), out, executor="serial", resume=True, outputs=False)
    assert (again.skipped, again.executed) == (2, 0)  # same simulator: nothing to do
    monkeypatch.setattr(version, "sim_version", lambda: "0.1.0+0123456789ab")  # an upgraded simulator
    upgraded = load_study(study)
    assert {s.run_id for s in upgraded.runs()}.isdisjoint({r["run_id"] for r in rows_of(out)})
    res = run_study(upgraded, out, executor="serial", resume=True, outputs=False)
    assert (res.skipped, res.dropped, res.executed) == (0, 2, 2)


# ---- one sweep per folder ------------------------------------------------------------------------------
def test_a_second_sweep_into_the_same_folder_is_refused_with_exit_2(tmp_path: Path) -> None:
    study = make_study(tmp_path, "grid: {backup.retries: [0]}\nseeds: 1\n")
    out = tmp_path / "out"
    held = StudyLock(out)
    assert held.acquire() is None
    try:
        res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    finally:
        held.release()
    assert res.exit_code == 2, res.output
    err = flat(res.stderr)
    assert f"error: {out}: another sweep is writing into this folder (PID {os.getpid()} on " in err
    assert "wait for it to end, or give another --out" in err
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written (the holder's lock file is gone too)


def test_the_lock_of_a_killed_sweep_is_taken_over(tmp_path: Path) -> None:
    study = make_study(tmp_path, "grid: {backup.retries: [0]}\nseeds: 1\ngenerations: [ws2016]\n")
    out = tmp_path / "out"
    # a sweep that took the lock and was killed: its lock file stays, naming it
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from cluster_sim.sweep import StudyLock;"
        f"StudyLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
        assert res.exit_code == 2, res.output  # alive: refused
        assert f"(PID {holder.pid} on " in flat(res.stderr)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_FILE).is_file()
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 0, res.output
    assert f"took over the lock of a sweep that is gone (PID {holder.pid} on " in flat(res.output)
    assert not (out / LOCK_FILE).exists()  # released at the end


# ---- a frozen Ray worker ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_ray_worker_stopped_mid_run_is_cut_at_the_deadline_and_the_run_retried(tmp_path: Path) -> None:
    # 3000 VMs: a run takes seconds (1.7 s measured), so the worker is stopped in the middle of it (the
    # driver hears of a start within about a second); a deadline far above a run's time (15 s: 9x, room
    # for a machine three times slower), far below Ray's own keepalive watchdog (minutes), which would
    # otherwise kill the stopped worker and retry the task itself
    big = ("overrides: {fleet.0.count: 3000, cluster.nodes: 8, storage.csvs: 8, cluster.node_memory_gib: 4096}\n"
           "grid: {backup.retries: [0, 1]}\nseeds: 1\ngenerations: [ws2016]\nrun_timeout_s: 15\n")
    plan = load_study(make_study(tmp_path, big))
    stopped: list[int] = []

    def freeze_first(spec, attempt, pid) -> None:  # type: ignore[no-untyped-def]
        if not stopped:  # the process running the first run to start: as a frozen worker node
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    t0 = time.monotonic()
    try:
        res = run_study(plan, tmp_path / "out", num_cpus=2, on_start=freeze_first, outputs=False)
    finally:
        for pid in stopped:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    assert stopped
    assert (res.failed, res.invalid, res.retried) == (0, 0, 1)
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 2 and sorted(r["attempts"] for r in rows) == [1, 2]
    assert all(r["error"] is None and r["valid"] for r in rows)
    assert time.monotonic() - t0 < 600  # it did not wait for the stopped run (generous: a busy machine)
