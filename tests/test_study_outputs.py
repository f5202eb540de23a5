"""What a study records and shows (issue 16): runs identical to another (same effective scenario and
seed) are run once and copied, and the study says how many; study.json and scenario.resolved.yaml;
durations in hours (table, aggregate.csv hour columns, plots) with y axes from zero; an ETA from run
sizes and measured times; `cluster_sim.sweep(study)` returning the tidy runs table as a DataFrame."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_sweep import make_study
from typer.testing import CliRunner

import cluster_sim
from cluster_sim.cli import app
from cluster_sim.results import summary_json
from cluster_sim.scenario import scenario_from_dict
from cluster_sim.sweep import (
    RESOLVED_FILE,
    RUNS_FILE,
    STUDY_FILE,
    SUMMARY_COLUMNS,
    Eta,
    load_study,
    metric_label,
    run_study,
    write_plots,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path, object]:
    """The tiny study (2 x 2 points, 2 seeds, ws2012r2 and ws2016) swept in process, through the CLI."""
    from rich.console import Console

    from cluster_sim.cli import sweep as sweep_cli

    folder = tmp_path_factory.mktemp("study")
    study = make_study(folder)
    out = folder / "out"
    with pytest.MonkeyPatch.context() as mp:  # a wide terminal: the table's headers on one line
        mp.setattr(sweep_cli, "out", Console(highlight=False, width=200))
        res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 0, res.output
    return study, out, res


def test_runs_identical_to_another_are_copied_not_run_and_the_study_says_how_many(swept) -> None:
    study, out, res = swept
    text = flat(res.output)
    # ws2016 reads no vms_per_snapshot (one set over every LUN): its runs with 3 equal those with 1
    assert ("16 runs (4 identical to another run, copied instead of run: ws2016 ignores "
            "backup.vms_per_snapshot)") in text
    assert "16 ok, 0 failed, 0 invalid of 16 (12 run, 4 identical to another run, not run again)" in text
    rows = {r["run_id"]: r for r in pq.read_table(out / RUNS_FILE).to_pylist()}
    copies = [r for r in rows.values() if r["duplicate_of"]]
    assert len(rows) == 16 and len(copies) == 4
    for c in copies:
        first = rows[c["duplicate_of"]]
        assert (c["generation"], c["seed"], first["backup.vms_per_snapshot"], c["backup.vms_per_snapshot"],
                c["backup.concurrent_vms_per_node"]) == ("ws2016", first["seed"], 1, 3,
                                                          first["backup.concurrent_vms_per_node"])
        assert first["duplicate_of"] is None
        assert all(c[n] == first[n] for n, _ in SUMMARY_COLUMNS)
    # and a copy holds what running it gives, byte for byte
    c = copies[0]
    sc = cluster_sim.load_scenario(study.parent / "sc" / "tiny.yaml", [
        "backup.vms_per_snapshot=3", f"backup.concurrent_vms_per_node={c['backup.concurrent_vms_per_node']}"])
    ran = json.loads(summary_json(cluster_sim.run(sc, backend="local", seed=c["seed"], generations=["ws2016"])
                                  .generations[0].summary))
    assert c["backup_window_s"] == ran["backup_window_s"] and c["trace_events"] == ran["trace_events"]
    assert c["io_latency_ms.backup_p99"] == ran["io_latency_ms"]["backup_p99"]


def test_the_shipped_batch_size_study_runs_ws2016_once_per_concurrency_and_seed() -> None:
    plan = load_study(ROOT / "studies" / "r2-batch-size.yaml")
    # 6 batch sizes x 3 concurrencies x 10 seeds x 2 generations = 360 runs; ws2016's 180 are 30 distinct
    assert (plan.total_runs, len(plan.duplicates())) == (360, 150)
    assert plan.ignored_axes() == {"ws2016": ["backup.vms_per_snapshot"]}


def test_study_json_and_the_resolved_scenario_record_how_the_study_was_made(swept) -> None:
    study, out, _res = swept
    from cluster_sim.version import package_version, sim_version

    info = json.loads((out / STUDY_FILE).read_text())
    assert (info["tool"], info["version"], info["sim_version"]) == ("cluster-sim", package_version(), sim_version())
    assert info["study"] == "tiny-study" and info["study_path"] == str(study.resolve())
    assert isinstance(info["argv"], list) and info["argv"]
    assert info["grid"] == {"backup.vms_per_snapshot": [1, 3], "backup.concurrent_vms_per_node": [1, 2]}
    assert (info["seeds"], info["generations"], info["executor"]) == ([1, 2], ["ws2012r2", "ws2016"], "serial")
    assert info["runs"] == {"total": 16, "run_now": 12, "recorded_before": 0, "identical_to_another": 4,
                            "failed": 0, "invalid": 0, "retried": 0}
    assert info["identical_because"] == ["ws2016 ignores backup.vms_per_snapshot"]
    assert info["started_at"] <= info["ended_at"] and info["interrupted"] is False
    resolved = yaml.safe_load((out / RESOLVED_FILE).read_text())
    assert scenario_from_dict(resolved) == cluster_sim.load_scenario(study.parent / "sc" / "tiny.yaml")


def test_durations_are_in_hours_in_the_table_and_beside_the_seconds_in_aggregate_csv(swept) -> None:
    _study, out, res = swept
    table = res.output.split("aggregate.csv")[0]
    assert "backup_window (h)" in table and "backup_window_s" not in table
    with open(out / "aggregate.csv", newline="") as fh:
        agg = list(csv.DictReader(fh))
    first = agg[0]  # (1, 1, ws2012r2): its window in hours, as the table shows it
    half = (float(first["backup_window_s.ci95_high_h"]) - float(first["backup_window_s.ci95_low_h"])) / 2
    assert f"{float(first['backup_window_s.mean_h']):.3g} ± {half:.3g}" in table
    for a in agg:
        for k in ("mean", "ci95_low", "ci95_high"):
            seconds, hours = a[f"backup_window_s.{k}"], a[f"backup_window_s.{k}_h"]
            assert float(hours) == pytest.approx(float(seconds) / 3600, abs=1e-6)  # (6 decimals, as every column)
        assert "hw_snapshots_created.mean_h" not in a  # a count has no hours
    assert metric_label("redirected_s_total") == "redirected_total (h)" and metric_label("wall_s") == "wall_s"


def test_plots_show_durations_in_hours_on_an_axis_from_zero(swept, tmp_path, monkeypatch) -> None:
    study, _out, _res = swept
    import matplotlib.figure

    plan = load_study(study)
    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: seen.append((Path(path), fig)))
    # a window of 57,400-57,900 s: a 0.9 % difference must look like one
    agg = [{"backup.vms_per_snapshot": v, "backup.concurrent_vms_per_node": c, "generation": g, "runs": 2,
            "failed": 0, "invalid": 0,
            **{f"{m}.{k}": (57400.0 + 500 * (v == 3)) + d for m in plan.metrics
               for k, d in (("mean", 0), ("ci95_low", -20), ("ci95_high", 20), ("sd", 0), ("n", 0))}}
           for v in (1, 3) for c in (1, 2) for g in plan.generations]
    write_plots(plan, agg, tmp_path / "plots")
    figs = {p.name: fig for p, fig in seen}
    window = figs["backup_window_s--backup.vms_per_snapshot.png"]
    ax = window.axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_ylabel() == "backup_window (h)"
    top = max(line.get_ydata().max() for line in ax.get_lines())
    assert top == pytest.approx(57900 / 3600)
    assert "the y axis starts at 0" in window._suptitle.get_text()
    assert figs["hw_snapshots_created--backup.vms_per_snapshot.png"].axes[0].get_ylim()[0] == 0


def test_the_eta_weighs_runs_by_size_and_by_what_each_generation_measured() -> None:
    # four runs left, of different sizes; two CPUs
    eta = Eta({"a": (100.0, "ws2012r2"), "b": (100.0, "ws2016"), "c": (400.0, "ws2012r2"), "d": (100.0, "ws2016"),
               "e": (50.0, "ws2012")})
    assert eta.eta_s(10.0) is None  # nothing measured yet
    eta.finished("a", 40.0)  # ws2012r2: 0.4 s per unit
    eta.finished("b", 10.0)  # ws2016: 0.1 s per unit
    # 50 wall seconds of runs in 25 s: a pace of 2. Left: c 400 x 0.4 = 160, d 100 x 0.1 = 10, e (ws2012,
    # not measured yet) 50 x 50/200 = 12.5: 182.5 s of work, 91.25 s at that pace
    assert eta.eta_s(25.0) == pytest.approx(91.25)
    # counting runs instead (2 of 5 done in 25 s) would say 37.5 s: what issue 16 saw
    eta.finished("c", 160.0)
    eta.finished("d", 10.0)
    eta.finished("e", 12.5)
    assert eta.eta_s(120.0) == 0.0


def test_the_progress_of_a_study_carries_an_eta_once_a_run_has_finished(tmp_path) -> None:
    plan = load_study(make_study(tmp_path, conc="[2]", seeds="1"))
    seen = []
    run_study(plan, tmp_path / "out", executor="serial", outputs=False,
              progress=lambda state, row: seen.append((row is not None, state.eta_s, state.done, state.copied)))
    assert seen[0] == (False, None, 0, 0)
    assert all(eta is not None for finished, eta, _done, _copied in seen if finished)
    assert seen[-1][1] == 0.0 and seen[-1][2] == plan.total_runs == 4 and seen[-1][3] == 1


def test_cluster_sim_sweep_returns_the_tidy_runs_table_as_a_dataframe(tmp_path, monkeypatch) -> None:
    import pandas as pd

    study = make_study(tmp_path, conc="[2]", seeds="2")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    df = cluster_sim.sweep(study, executor="serial")
    assert isinstance(df, pd.DataFrame) and len(df) == 8  # 2 points x 2 seeds x 2 generations
    assert list(scratch.iterdir()) == []  # its temporary folder is gone
    assert df["duplicate_of"].notna().sum() == 2
    assert pd.api.types.is_float_dtype(df["backup_window_s"]) and pd.api.types.is_integer_dtype(df["hw_snapshots_created"])
    assert pd.api.types.is_integer_dtype(df["seed"]) and pd.api.types.is_bool_dtype(df["valid"])
    assert set(df["generation"]) == {"ws2012r2", "ws2016"} and df["valid"].all()
    by = df.groupby("generation")["hw_snapshots_created"].mean()
    assert by["ws2012r2"] > by["ws2016"]
    # with a folder: the same table, and what `cluster-sim sweep` writes
    out = tmp_path / "out"
    again = cluster_sim.sweep(load_study(study), out, executor="serial")
    cols = [c for c in df.columns if c not in ("wall_s", "finished_at")]
    pd.testing.assert_frame_equal(df[cols], again[cols])
    assert (out / RUNS_FILE).is_file() and (out / "aggregate.csv").is_file() and (out / STUDY_FILE).is_file()
    assert not math.isnan(again["backup_window_s"].mean())
