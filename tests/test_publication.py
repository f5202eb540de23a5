"""`cluster-sim run` publishes its results folder atomically (issue 15, item 4): the whole folder is
written under a scratch name beside --out and swapped in with one rename, run.json last; an
unwritable --out is refused before simulating; scenario.resolved.yaml reproduces the run byte for
byte; generation worker processes die with the run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from proc_helpers import gone, pids_where
from typer.testing import CliRunner

from cluster_sim import simulation as sim
from cluster_sim.cli import app, publish

SCENARIOS = Path(__file__).parent.parent / "scenarios"
SMALL = SCENARIOS / "small-4node.yaml"
runner = CliRunner()
# what `run` writes besides generation folders
TOP = ["comparison.csv", "comparison.md", "run.json", "scenario.resolved.yaml"]


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> SHA-256)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["run", *args])


def test_run_json_is_written_last_and_records_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli(str(SMALL), "--out", str(out), "--set", "backup.retries=1", "-g", "ws2016", "-g", "ws2012",
                  "--seed", "3", "--no-report")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(TOP + ["ws2012", "ws2016"])
    info = json.loads((out / "run.json").read_text())
    assert info["tool"] == "cluster-sim"
    assert info["version"] == "0.1.0"
    assert info["sim_version"].startswith("0.1.0+") and len(info["sim_version"]) == len("0.1.0+") + 12
    assert isinstance(info["argv"], list) and info["argv"]
    assert (info["seed"], info["backend"], info["scenario"]) == (3, "local", "small-4node")
    assert info["overrides"] == {"set": ["backup.retries=1"], "file": None, "generations": ["ws2016", "ws2012"]}
    assert info["scenario_path"] == str(SMALL.resolve())
    assert info["generations"] == ["ws2016", "ws2012"] and info["audit_ok"] is True
    assert info["scenario_resolved"] == "scenario.resolved.yaml"
    start, end = datetime.fromisoformat(info["started_at"]), datetime.fromisoformat(info["ended_at"])
    assert start.tzinfo is not None and start <= end
    # the completion marker is the newest file of the folder
    newest = max((p for p in out.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime_ns)
    assert (out / "run.json").stat().st_mtime_ns == newest.stat().st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing else beside it


def test_the_resolved_scenario_reproduces_the_run_byte_for_byte(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    over = tmp_path / "best.yaml"  # an override file (as a plan's best.yaml) is part of the effective scenario
    over.write_text("backup.concurrent_vms_per_node: 2\nbackup.retries: 1\n")
    res = run_cli(str(SMALL), "--out", str(first), "--overrides", str(over), "--set", "backup.vms_per_snapshot=3",
                  "--set", "cluster.migration.max_concurrent_per_node=1", "--seed", "9", "-g", "ws2012r2",
                  "-g", "ws2008r2", "--workers", "2", "--no-report")
    assert res.exit_code == 0, res.output
    resolved = yaml.safe_load((first / "scenario.resolved.yaml").read_text())
    assert (resolved["seed"], resolved["backup"]["vms_per_snapshot"]) == (9, 3)
    assert (resolved["backup"]["concurrent_vms_per_node"], resolved["backup"]["retries"]) == (2, 1)
    assert resolved["backup"]["generations"] == ["ws2012r2", "ws2008r2"]
    assert json.loads((first / "run.json").read_text())["overrides"]["file"] == str(over.resolve())
    res = run_cli(str(first / "scenario.resolved.yaml"), "--out", str(second), "--no-report")
    assert res.exit_code == 0, res.output
    a, b = files(first), files(second)
    for name in ("run.json", "scenario.resolved.yaml"):  # (they name the command and the source file)
        a.pop(name), b.pop(name)
    assert sorted(a) == sorted(b)
    assert "ws2012r2/summary.json" in a and "ws2008r2/trace.jsonl" in a
    assert a == b
    # resolving a resolved scenario changes nothing but the comment naming its source
    body = [(f / "scenario.resolved.yaml").read_text().split("\n", 2)[2] for f in (first, second)]
    assert body[0] == body[1]


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_out_exits_2_before_simulating_and_writes_nothing(tmp_path: Path, monkeypatch, where) -> None:
    def no_simulation(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AssertionError("simulated before checking --out")

    monkeypatch.setattr(sim, "run", no_simulation)
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "results"
    else:
        out = Path("/proc") / "cluster-sim-results"  # read-only even for root
    res = run_cli(str(SMALL), "--out", str(out))
    assert res.exit_code == 2, res.output
    assert f"error: --out: cannot write results beside {out}:" in " ".join(res.stderr.split())
    if where == "under-a-file":
        assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_folder_that_does_not_hold_results_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = run_cli(str(SMALL), "--out", str(out), "--no-report")
    assert res.exit_code == 2, res.output
    assert "does not hold cluster-sim results" in " ".join(res.stderr.split())
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_force_replaces_the_whole_folder_of_another_run(tmp_path: Path, monkeypatch, exchange: bool) -> None:
    out = tmp_path / "out"
    assert run_cli(str(SMALL), "--out", str(out), "--no-report").exit_code == 0
    (out / "ws2008r2" / "stale.txt").write_text("from before")
    if not exchange:
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)  # a system without renameat2
    res = run_cli(str(SMALL), "--out", str(out), "-g", "ws2016", "--no-report", "--force")
    assert res.exit_code == 0, res.output
    # the old generations are gone with the old folder (they were kept item by item before)
    assert sorted(p.name for p in out.iterdir()) == sorted(TOP + ["ws2016"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize(("again", "difference"), [
    (["--seed", "99"], "seed 7 there, 99 now"),
    (["-g", "ws2016"], "generations ws2012r2, ws2008r2 there, ws2016 now"),
    (["--set", "backup.retries=1"], "--set none there, backup.retries=1 now"),
    (["--scenario", "10vm-2node.yaml"], "scenario small-4node there, 10vm-2node now; scenario file "),
], ids=["seed", "generations", "set", "scenario"])
def test_an_out_holding_another_run_is_refused_without_force_and_left_as_it_was(tmp_path: Path, again, difference):
    out = tmp_path / "out"
    assert run_cli(str(SMALL), "--out", str(out), "-g", "ws2012r2", "-g", "ws2008r2", "--no-report").exit_code == 0
    before = files(out)
    if again[0] == "--scenario":
        res = run_cli(str(SCENARIOS / again[1]), "--out", str(out), "-g", "ws2012r2", "-g", "ws2008r2", "--no-report")
    else:
        gens = [] if "-g" in again else ["-g", "ws2012r2", "-g", "ws2008r2"]
        res = run_cli(str(SMALL), "--out", str(out), *gens, *again, "--no-report")
    assert res.exit_code == 2, res.output
    message = " ".join(res.stderr.split())
    assert message.startswith(f"error: --out: {out} holds the results of another run (")
    assert difference in message and message.endswith("--force replaces them, or choose another --out")
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_same_run_again_replaces_its_own_folder_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(SMALL), "--out", str(out), "-g", "ws2016", "--seed", "4", "--set", "backup.retries=1", "--no-report"]
    assert run_cli(*args).exit_code == 0
    first = json.loads((out / "run.json").read_text())["started_at"]
    (out / "ws2016" / "stale.txt").write_text("from before")
    res = run_cli(*args, "--backend", "local", "--workers", "1")  # (how it runs does not make it another run)
    assert res.exit_code == 0, res.output
    assert not (out / "ws2016" / "stale.txt").exists()
    assert json.loads((out / "run.json").read_text())["started_at"] >= first


def test_results_that_no_run_json_describes_are_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(str(SMALL), "--out", str(out), "-g", "ws2016", "--no-report").exit_code == 0
    (out / "run.json").unlink()  # (as an older cluster-sim left it)
    res = run_cli(str(SMALL), "--out", str(out), "-g", "ws2016", "--no-report")
    assert res.exit_code == 2, res.output
    assert "holds results that no run.json describes" in " ".join(res.stderr.split())
    res = run_cli(str(SMALL), "--out", str(out), "-g", "ws2016", "--no-report", "--force")
    assert res.exit_code == 0, res.output
    assert (out / "run.json").is_file()


def test_force_never_replaces_a_folder_that_does_not_hold_results(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = run_cli(str(SMALL), "--out", str(out), "--no-report", "--force")
    assert res.exit_code == 2, res.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_run_that_fails_while_writing_leaves_the_old_results_intact(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    assert run_cli(str(SMALL), "--out", str(out), "--no-report").exit_code == 0
    before = files(out)
    import cluster_sim.results as results

    real, calls = results.write_generation, []

    def second_one_fails(g, folder):  # type: ignore[no-untyped-def]
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(g, folder)

    monkeypatch.setattr(results, "write_generation", second_one_fails)
    res = run_cli(str(SMALL), "--out", str(out), "--seed", "8", "--no-report", "--force")
    assert res.exit_code != 0 and isinstance(res.exception, OSError)
    assert files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # its scratch folder is gone too


def test_scratch_folders_of_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.cluster-sim-{dead.pid}-abc"
    stale_old = tmp_path / f".out.old-{dead.pid}-def"
    live = tmp_path / f".out.cluster-sim-{os.getppid()}-ghi"  # (the test runner's parent: alive)
    other = tmp_path / ".other.cluster-sim-1-jkl"  # another --out's: not ours to judge
    for d in (stale, stale_old, live, other):
        d.mkdir()
    res = run_cli(str(SMALL), "--out", str(tmp_path / "out"), "-g", "ws2016", "--no-report")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other.name])


@pytest.mark.slow
def test_a_killed_run_leaves_no_worker_behind_and_the_old_results_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(str(SMALL), "--out", str(out), "--no-report").exit_code == 0
    before = files(out)
    script = Path(sys.executable).parent / "cluster-sim"
    # two generations of the 800-VM scenario side by side: seconds of work per worker
    proc = subprocess.Popen([str(script), "run", str(SCENARIOS / "800vm-8node.yaml"), "--backend", "local",
                             "--workers", "2", "-g", "ws2012r2", "-g", "ws2016", "--no-report", "--out", str(out),
                              "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    give_up = time.monotonic() + 300
    while len(workers) < 2 and proc.poll() is None and time.monotonic() < give_up:
        workers = pids_where(parent=proc.pid)
        time.sleep(0.02)
    assert len(workers) >= 2 and proc.poll() is None, "the run ended before its workers could be seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [w for w in workers if not gone(w, within_s=60)]
    try:
        assert left == [], f"worker processes {left} outlived their killed parent"
    finally:
        for w in left:
            os.kill(w, signal.SIGKILL)
    assert files(out) == before  # the old results, untouched
    scratch = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert len(scratch) == 1 and scratch[0].startswith(f".out.cluster-sim-{proc.pid}-")
    # the next run clears what the killed one left
    assert run_cli(str(SMALL), "--out", str(out), "-g", "ws2016", "--no-report", "--force").exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("path", sorted(SCENARIOS.rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_survives_the_resolved_yaml_round_trip(path: Path) -> None:
    import cluster_sim
    from cluster_sim.results import scenario_yaml
    from cluster_sim.scenario import scenario_from_dict

    sc = cluster_sim.load_scenario(path)
    assert scenario_from_dict(yaml.safe_load(scenario_yaml(sc, str(path)))) == sc
