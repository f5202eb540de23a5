"""`cluster-sim plan`: the plan file's pieces (constraints, domains), the answer (best trial, Pareto
front, binding constraint, what made a plan infeasible), and on a local Ray instance: the advisor
against an exhaustive grid, the same trials for the same plan file, resume after an interruption,
best.yaml reproducing the best trial through `run --overrides`, the report page, infeasible plans.
(The plan corpus of bad files is in tests/test_bad_inputs.py; the two-environment Ray cluster in
tests/test_plan_cluster.py.)"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from plan_helpers import make_plan
from typer.testing import CliRunner

from cluster_sim.cli import app
from cluster_sim.plan import (
    BEST_FILE,
    PLAN_JSON,
    RUNS_FILE,
    TRIALS_FILE,
    Constraint,
    Objective,
    binding_constraint,
    diagnose_infeasible,
    evaluate,
    load_plan,
    pareto_front,
    parse_constraint,
    run_plan,
    summarize,
)
from cluster_sim.sweep import SUMMARY_COLUMNS

runner = CliRunner()

def trials_of(out: Path) -> list[dict]:
    return pq.read_table(out / TRIALS_FILE).to_pylist()


def sequence(rows: list[dict]) -> list[tuple]:
    """What must repeat: each trial's number, settings, objective and feasibility."""
    keys = ("backup.vms_per_snapshot", "backup.concurrent_vms_per_node", "backup.copy_stream_mib_s")
    return [(r["trial"], *(r[k] for k in keys), r["backup_window_s"], r["feasible"]) for r in rows]


# ----------------------------------------------------------------------------------------------
# constraints, worked by hand
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,metric,op,limit", [
    ("outcomes.failed == 0", "outcomes.failed", "==", 0.0),
    ("hw_snapshots_created<=200", "hw_snapshots_created", "<=", 200.0),
    ("  io_latency_ms.backup_p99 <  8.5 ", "io_latency_ms.backup_p99", "<", 8.5),
    ("avhdx_vm_s >= 3.6e5", "avhdx_vm_s", ">=", 360000.0),
    ("backup_window_s > -1", "backup_window_s", ">", -1.0),
])
def test_constraint_parser_reads_metric_comparison_and_number(text, metric, op, limit):
    c = parse_constraint(text)
    assert (c.metric, c.op, c.limit) == (metric, op, limit)


@pytest.mark.parametrize("text,reason", [
    ("outcomes.failed = 0", "'=' is not a comparison here"),
    ("hw_snapshots_created <= 2*100", "the limit '2*100' is not a number"),
    ("__import__('os') <= 1", "is not a metric name"),
    ("hw_snapshots_created <= 200 or True", "the limit '200 or True' is not a number"),
    ("hw_snapshot_created <= 200", "did you mean 'hw_snapshots_created'"),
    ("backup_window_s", "no comparison found"),
])
def test_constraint_parser_refuses_anything_but_metric_comparison_number(text, reason):
    with pytest.raises(ValueError, match=None) as info:
        parse_constraint(text)
    assert reason in str(info.value)


def test_constraint_slack_and_violation_are_fractions_of_the_limit():
    c = Constraint("hw_snapshots_created <= 200", "hw_snapshots_created", "<=", 200.0)
    assert c.slack(150) == pytest.approx(0.25)  # 50 below a limit of 200
    assert c.violation(150) == pytest.approx(-0.25)  # <= 0: met
    assert c.violation(260) == pytest.approx(0.30)  # 60 over: 0.3 of the limit
    assert c.violation(200) == 0.0  # at the limit is met
    g = Constraint("x >= 10", "avhdx_vm_s", ">=", 10.0)
    assert g.violation(12) == pytest.approx(-0.2) and g.violation(8) == pytest.approx(0.2)
    eq = Constraint("outcomes.failed == 0", "outcomes.failed", "==", 0.0)
    assert eq.violation(0) == 0.0 and eq.violation(3) == pytest.approx(3.0)  # a zero limit scales by 1
    strict = Constraint("backup_window_s < 100", "backup_window_s", "<", 100.0)
    assert not strict.met(100) and strict.violation(100) > 0  # reached exactly: violated, by a hair


def test_trial_record_takes_seeds_mean_and_judges_constraints_at_the_worst_seed(tmp_path):
    spec = load_plan(make_plan(tmp_path))
    rows = [{"seed": 1, "backup_window_s": 100.0, "hw_snapshots_created": 2, "outcomes.failed": 0},
            {"seed": 2, "backup_window_s": 140.0, "hw_snapshots_created": 4, "outcomes.failed": 0}]
    rec = summarize(spec, {"backup.vms_per_snapshot": 3}, rows)
    assert rec["objectives"] == [120.0]  # mean of 100 and 140
    assert rec["spread"]["backup_window_s"] == [100.0, 140.0]
    failed, snaps = rec["constraints"]
    assert failed["met"] and failed["worst"] == 0
    assert not snaps["met"] and snaps["worst"] == 4  # seed 2 breaks hw_snapshots_created <= 3
    assert snaps["violation"] == pytest.approx(1 / 3)
    assert rec["feasible"] is False
    errored = summarize(spec, {}, [rows[0], {"seed": 2, "error": "boom"}])
    assert errored["feasible"] is False and errored["error"] == "boom" and errored["objectives"] == [None]


# ----------------------------------------------------------------------------------------------
# the answer, on hand-made records
# ----------------------------------------------------------------------------------------------
def _rec(trial, objectives, feasible=True, worst=(), error=None, spec=None):
    cons = [{"text": c.text, "met": c.met(w), "worst": w, "slack": c.slack(w), "violation": c.violation(w)}
            for c, w in zip(spec.constraints, worst, strict=True)] if spec else []
    return {"trial": trial, "trial_id": f"t{trial}", "objectives": list(objectives), "feasible": feasible,
            "constraints": cons, "error": error, "params": {}, "metrics": {}, "spread": {}}


def test_pareto_front_keeps_feasible_trials_no_other_feasible_trial_dominates(tmp_path):
    spec = load_plan(make_plan(tmp_path, objective="[{minimize: backup_window_s}, {maximize: hw_snapshots_created}]"))
    recs = [_rec(0, [10, 5]), _rec(1, [12, 9]), _rec(2, [11, 4]),  # 2 is dominated by 0 (slower, fewer)
            _rec(3, [15, 9]),  # dominated by 1 (slower, same)
            _rec(4, [9, 20], feasible=False),  # would dominate everything, but infeasible
            _rec(5, [10, 5])]  # the same point as 0: listed once
    assert [r["trial"] for r in pareto_front(spec, recs)] == [0, 1]


def test_binding_constraint_is_the_closest_to_its_limit_among_those_the_settings_move(tmp_path):
    spec = load_plan(make_plan(tmp_path, constraints="[outcomes.failed <= 8, hw_snapshots_created <= 200, "
                                                     "avhdx_vm_s <= 1000]"))
    # failed is 8 in every trial (no setting moves it): at its limit but not binding
    best = _rec(1, [5], worst=(8, 150, 950), spec=spec)  # slack 25 % and 5 %
    other = _rec(2, [6], worst=(8, 190, 400), spec=spec)
    b = binding_constraint(spec, best, [best, other])
    assert b["text"] == "avhdx_vm_s <= 1000" and b["slack"] == pytest.approx(0.05) and b["moved_by_settings"]
    # with no other trial to compare, failed (slack 0) is the closest
    assert binding_constraint(spec, best, [best])["text"] == "outcomes.failed <= 8"


def test_infeasible_diagnosis_names_the_never_met_constraint_or_the_least_met(tmp_path):
    spec = load_plan(make_plan(tmp_path, constraints="[outcomes.failed == 0, hw_snapshots_created <= 3]"))
    never = [_rec(i, [1], feasible=False, worst=(2, s), spec=spec) for i, s in enumerate((1, 2, 6))]
    d = diagnose_infeasible(spec, never)
    assert d["never_met"] == ["outcomes.failed == 0"] and d["closest"] == {"outcomes.failed == 0": 2}
    # each met by some trial, never both at once: failed met once, snapshots twice
    split = [_rec(0, [1], False, (0, 6), spec=spec), _rec(1, [1], False, (1, 2), spec=spec),
             _rec(2, [1], False, (2, 3), spec=spec)]
    d = diagnose_infeasible(spec, split)
    assert d["never_met"] == [] and d["least_met"] == {"text": "outcomes.failed == 0", "met": 1, "of": 3}


def test_objective_key_makes_smaller_better_for_either_direction():
    assert Objective("backup_window_s", "minimize").key(5) < Objective("backup_window_s", "minimize").key(6)
    assert Objective("x", "maximize").key(6) < Objective("x", "maximize").key(5)


def test_plan_fingerprint_changes_with_what_the_trials_depend_on(tmp_path):
    a = load_plan(make_plan(tmp_path / "a"))
    b = load_plan(make_plan(tmp_path / "b"))
    c = load_plan(make_plan(tmp_path / "c", trials=9))
    d = load_plan(make_plan(tmp_path / "d", count=5))
    assert a.fingerprint == b.fingerprint and len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


# ----------------------------------------------------------------------------------------------
# on a local Ray instance
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session):
    """One 8-trial plan on the tiny scenario, run to the end. The plans of this module run on one
    local Ray instance (conftest's ray_session, which a plan joins and leaves running): about 6 s of
    Ray's start and shutdown per plan saved."""
    folder = tmp_path_factory.mktemp("reference")
    spec = load_plan(make_plan(folder))
    outcome = run_plan(spec, folder / "out", num_cpus=2)
    assert not outcome.interrupted
    return folder, spec, outcome


@pytest.mark.slow
def test_plan_writes_trials_runs_best_yaml_plot_and_plan_json(reference):
    folder, spec, outcome = reference
    out = folder / "out"
    rows = trials_of(out)
    assert [r["trial"] for r in rows] == list(range(8))
    best = [r for r in rows if r["best"]]
    assert len(best) == 1 and best[0]["feasible"]
    feasible = [r for r in rows if r["feasible"]]
    assert best[0]["backup_window_s"] == min(r["backup_window_s"] for r in feasible)
    for r in rows:  # feasibility per constraint and the seed spread
        assert r["feasible"] == (r["met: outcomes.failed == 0"] and r["met: hw_snapshots_created <= 3"])
        assert r["backup_window_s.min"] <= r["backup_window_s"] <= r["backup_window_s.max"]
        assert r["met: hw_snapshots_created <= 3"] == (r["worst: hw_snapshots_created <= 3"] <= 3)
    runs = pq.read_table(out / RUNS_FILE).to_pylist()
    assert len(runs) == (8 + 1) * 2  # every trial and the baseline, 2 seeds each
    assert {r["seed"] for r in runs} == {1, 2} and all(r["error"] is None for r in runs)
    for r in rows:  # the trial's numbers are the mean of its runs
        mine = [x["backup_window_s"] for x in runs if x["role"] == "trial" and x["trial"] == r["trial"]]
        assert r["backup_window_s"] == pytest.approx(sum(mine) / 2)
    base = [x for x in runs if x["role"] == "baseline"]
    assert [x["backup.vms_per_snapshot"] for x in base] == [None, None]
    summary = json.loads((out / PLAN_JSON).read_text())
    # tiny as written: 6 VMs, one snapshot each > 3 allowed
    assert summary["baseline"]["constraints"][1]["worst"] == 6 and not summary["baseline"]["feasible"]
    assert summary["best"]["trial"] == best[0]["trial"]
    assert summary["binding"]["text"] == "hw_snapshots_created <= 3"
    assert (out / "pareto.png").stat().st_size > 10_000
    best_yaml = yaml.safe_load((out / BEST_FILE).read_text())
    assert best_yaml == {"backup.generations": ["ws2012r2"],
                         **{a: best[0][a] for a in spec.domains}}


@pytest.mark.slow
def test_same_plan_file_gives_the_same_trials(reference, tmp_path):
    folder, spec, _ = reference
    again = run_plan(load_plan(folder / "plan.yaml"), tmp_path / "again", num_cpus=2)
    assert not again.interrupted
    assert sequence(trials_of(tmp_path / "again")) == sequence(trials_of(folder / "out"))
    # and not by accident: another sampler seed samples other settings
    other = run_plan(dataclasses.replace(spec, sampler_seed=7, trials=4), tmp_path / "other", num_cpus=2)
    assert sequence(trials_of(tmp_path / "other"))[:4] != sequence(trials_of(folder / "out"))[:4]
    assert other.summary["trials"] == 4


@pytest.mark.slow
def test_run_with_best_yaml_as_overrides_reproduces_the_best_trial(reference, tmp_path):
    folder, spec, outcome = reference
    out = folder / "out"
    best = outcome.summary["best"]
    runs = {r["seed"]: r for r in pq.read_table(out / RUNS_FILE).to_pylist()
            if r["role"] == "trial" and r["trial"] == best["trial"]}
    numeric = [n for n, k in SUMMARY_COLUMNS if k in ("int", "float") and n != "trace_events"]
    for seed in spec.seeds:
        dest = tmp_path / f"run-{seed}"
        res = runner.invoke(app, ["run", str(folder / "sc" / "tiny.yaml"), "--overrides", str(out / BEST_FILE),
                                  "--seed", str(seed), "--no-report", "--out", str(dest)])
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == ["ws2012r2"]  # the plan's generation only
        s = json.loads((dest / "ws2012r2" / "summary.json").read_text())
        flat = {}
        for name in numeric:
            v = s
            for part in name.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            flat[name] = v
        assert flat == {n: runs[seed][n] for n in numeric}, seed


@pytest.mark.slow
def test_plan_report_page_shows_the_answer_and_is_rebuilt_by_report(reference):
    folder, _, outcome = reference
    out = folder / "out"
    (out / "report.html").unlink(missing_ok=True)  # (run_plan leaves the page to the CLI)
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    best = outcome.summary["best"]
    assert 'id="plan-comparison"' in html and 'id="plan-trials"' in html
    assert f"(trial {best['trial']})" in html
    assert "binding constraint: hw_snapshots_created &lt;= 3" in html
    assert html.count("data:image/png;base64,") == 1  # pareto.png, embedded
    assert "backup.generations: [ws2012r2]" in html  # best.yaml shown as is


@pytest.mark.slow
def test_plan_report_page_loads_in_headless_chromium_without_errors(reference, tmp_path):
    import re

    from browser_helpers import chromium, dump_dom

    from cluster_sim.report.html import build_report

    folder, _, _ = reference
    dom = dump_dom(chromium(), build_report(folder / "out").html, tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r'<p id="page-status"([^>]*)>', dom.stdout).group(1)))
    assert {k: status.get(k) for k in ("data-loaded", "data-images", "data-broken-images")} == {
        "data-loaded": "1", "data-images": "1", "data-broken-images": "0"}, status
    assert re.search(r'<pre id="console-errors" data-count="0"></pre>', dom.stdout)


@pytest.mark.slow
def test_resume_after_an_interruption_goes_on_to_the_same_trials(reference, tmp_path):
    folder, spec, _ = reference
    out = tmp_path / "out"

    def interrupt_after_three(state):  # Ctrl-C once 3 trials are done: Tune saves its state and stops
        if state.done >= 3 and not getattr(interrupt_after_three, "sent", False):
            interrupt_after_three.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    first = run_plan(spec, out, num_cpus=2, progress=interrupt_after_three)
    assert first.interrupted and 3 <= len(first.records) < 8
    assert not (out / TRIALS_FILE).exists()  # an interrupted plan writes no answer
    res = runner.invoke(app, ["plan", str(folder / "plan.yaml"), "--out", str(out), "--resume", "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    assert "restored" in res.output
    rows = trials_of(out)
    assert sequence(rows) == sequence(trials_of(folder / "out"))  # no trial lost, repeated or changed


@pytest.mark.slow
def test_resume_refuses_a_folder_of_another_plan(reference, tmp_path):
    folder, _, _ = reference
    other = make_plan(tmp_path / "other", trials=5)
    res = runner.invoke(app, ["plan", str(other), "--out", str(folder / "out"), "--resume"])
    assert res.exit_code == 2
    assert "holds the trials of another plan" in " ".join(res.output.split())
    assert len(trials_of(folder / "out")) == 8  # untouched


@pytest.mark.slow
def test_infeasible_plan_says_so_and_names_the_constraint_no_trial_met(tmp_path, ray_session):
    # a VM without a SCSI controller always fails on ws2012r2 (Event 10103)
    noscsi = {"template": "noscsi", "count": 1, "disks": [{"size_gib": 4}], "scsi_controller": False}
    plan = make_plan(tmp_path, trials=4, extra=(noscsi,))
    res = runner.invoke(app, ["plan", str(plan), "--out", str(tmp_path / "out"), "--num-cpus", "2"])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "no feasible trial in 4 trials" in text
    assert "no trial met the constraint outcomes.failed == 0; closest a trial came: 1 at its worst seed" in text
    assert not (tmp_path / "out" / BEST_FILE).exists()
    summary = json.loads((tmp_path / "out" / PLAN_JSON).read_text())
    assert summary["best"] is None and summary["infeasible"]["never_met"] == ["outcomes.failed == 0"]
    assert summary["infeasible"]["met_counts"]["outcomes.failed == 0"] == 0


@pytest.mark.slow
def test_two_objective_plan_draws_the_pareto_front_with_nsga2(tmp_path, ray_session):
    plan = make_plan(tmp_path, trials=10, objective="[{minimize: backup_window_s}, {minimize: avhdx_vm_s}]",
                     constraints="[outcomes.failed == 0]")
    out = tmp_path / "out"
    outcome = run_plan(load_plan(plan), out, num_cpus=2)
    rows = trials_of(out)
    front = [r for r in rows if r["on_front"]]
    feasible = [r for r in rows if r["feasible"]]
    assert front and len(front) == len(outcome.summary["front"])
    for f in front:  # nothing feasible is at least as good on both and better on one
        assert not any(q["backup_window_s"] <= f["backup_window_s"] and q["avhdx_vm_s"] <= f["avhdx_vm_s"]
                       and (q["backup_window_s"], q["avhdx_vm_s"]) != (f["backup_window_s"], f["avhdx_vm_s"])
                       for q in feasible)
    assert sorted(p.name for p in (out / "front").iterdir()) == sorted(f"trial-{r['trial']}.yaml" for r in front)
    assert "NSGA-II" in outcome.summary["sampler"]


# ----------------------------------------------------------------------------------------------
# the advisor against the truth: an exhaustive grid
# ----------------------------------------------------------------------------------------------
GRID_SCENARIO = """\
name: grid-small
seed: 3
cluster: {nodes: 3, networks: {backup_target_mib_s: 4000}}
storage: {csvs: 3}
fleet:
  - template: app
    count: 24
    memory_gib: 8
    disks: [{size_gib: 40}, {size_gib: 60}]
    workload: {read_iops: 100, write_iops: 50, io_size_kib: 8, dirty_mib_s: 20, working_set_fraction: 0.3}
  - template: web
    count: 6
    guest_os: linux
    memory_gib: 4
    disks: [{size_gib: 30}]
backup: {generations: [ws2012r2], retry_wait_s: 120}
run: {until_s: 86400}
"""

GRID_PLAN = """\
plan: grid-small
scenario: sc.yaml
generations: [ws2012r2]
search:
  backup.vms_per_snapshot: {int: [1, 10]}
  backup.concurrent_vms_per_node: {int: [1, 6]}
  backup.copy_stream_mib_s: {choice: [100, 200, 400]}
objective: {minimize: backup_window_s}
constraints: [outcomes.failed == 0, hw_snapshots_created <= 8, avhdx_vm_s <= 20000]
seeds: 1
budget: {trials: 60}     # a third of the 180-point grid
sampler_seed: 0
"""


@pytest.mark.slow
def test_advisor_reaches_the_grid_optimum_within_2_percent_with_a_third_of_the_runs(tmp_path, ray_session):
    (tmp_path / "sc.yaml").write_text(GRID_SCENARIO)
    (tmp_path / "plan.yaml").write_text(GRID_PLAN)
    spec = load_plan(tmp_path / "plan.yaml")
    # the truth: every point of the grid, in this process
    grid = []
    for b, c, s in itertools.product(range(1, 11), range(1, 7), (100, 200, 400)):
        rec, _ = evaluate(spec, {"backup.vms_per_snapshot": b, "backup.concurrent_vms_per_node": c,
                                 "backup.copy_stream_mib_s": s})
        grid.append(rec)
    assert len(grid) == 180
    feasible = [r for r in grid if r["feasible"]]
    optimum = min(r["objectives"][0] for r in feasible)
    near = [r for r in feasible if r["objectives"][0] <= optimum * 1.02]
    # not a flat landscape: few points are within 2 % (and the unconstrained optimum is infeasible)
    assert len(near) <= 4 and min(r["objectives"][0] for r in grid) < optimum
    outcome = run_plan(spec, tmp_path / "out", num_cpus=2)
    runs = len(outcome.records) * len(spec.seeds)
    assert runs <= len(grid) / 3
    best = outcome.summary["best"]
    assert best["objectives"][0] <= optimum * 1.02
    # every trial's numbers are the grid's for its settings (same runs, Ray or not)
    by_point = {tuple(r["params"].values()): r["objectives"][0] for r in grid}
    for rec in outcome.records:
        assert rec["objectives"][0] == by_point[tuple(rec["params"].values())]
    assert not math.isnan(best["objectives"][0])


@pytest.mark.parametrize("command", ["plan", "sweep"])
def test_ray_address_from_the_environment_is_used_and_an_unreachable_one_is_refused(command, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    plan = make_plan(tmp_path)
    if command == "sweep":
        plan.write_text("scenario: sc/tiny.yaml\ngrid: {backup.vms_per_snapshot: [1, 2]}\n")
    out = tmp_path / "out"
    res = runner.invoke(app, [command, str(plan), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"--address 127.0.0.1:{port}: cannot connect" in " ".join(res.output.split())
    assert not out.exists()


@pytest.mark.slow
def test_a_plan_over_a_scenario_with_a_policy_runs_every_trial_under_that_policy(tmp_path, monkeypatch):
    # ws2016 takes one snapshot set over both CSVs; GroupByCsvOwner one set per owner node: the 2
    # CSVs of the tiny cluster are coordinated by its 2 nodes, so every run has 2 sets (the policy's
    # code reaches the Ray workers with the plan's runs; before, every trial failed to import it)
    import ray

    ray.shutdown()  # (the module's shared Ray has no policy code: this plan starts its own, which ships it)
    from plan_helpers import TINY_FILE

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    data = yaml.safe_load(TINY_FILE.read_text())
    data["backup"]["policy"] = "backup_policies.owner_groups:GroupByCsvOwner"
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    plan = tmp_path / "plan.yaml"
    plan.write_text("plan: policy-plan\nscenario: sc/tiny.yaml\ngenerations: [ws2016]\n"
                    "search:\n  backup.concurrent_vms_per_node: {int: [1, 4]}\n"
                    "objective: {minimize: backup_window_s}\nconstraints: [outcomes.failed == 0]\n"
                    "seeds: 2\nbudget: {trials: 3}\n")
    res = runner.invoke(app, ["plan", str(plan), "--out", str(tmp_path / "out"), "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    runs = pq.read_table(tmp_path / "out" / RUNS_FILE).to_pylist()
    assert len(runs) >= 3 * 2 and not any(r["error"] for r in runs)
    assert {r["snapshot_sets"] for r in runs} == {2}  # (the built-in ws2016 takes one set per job)
