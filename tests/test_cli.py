"""Command line: `cluster-sim validate` and `cluster-sim run` on good input, invoked in process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster_sim.cli import app

SCENARIOS = Path(__file__).parent.parent / "scenarios"
SMALL = SCENARIOS / "small-4node.yaml"
GENERATIONS = ["ws2008r2", "ws2012", "ws2012r2", "ws2016"]
VM_COLUMNS = [
    "vm", "template", "guest_os", "node", "csv", "generation", "outcome", "reason",
    "start_s", "end_s", "retries", "bytes_copied_mib", "downtime_s", "snapshot_id",
]
STRUCTURAL = ("vm", "template", "guest_os", "node", "csv", "generation")

STEADY = """\
name: steady-only
cluster:
  nodes: 2
storage:
  csvs: 2
fleet:
  - template: web
    count: 4
    disks: [{size_gib: 40}]
"""

runner = CliRunner()


def _flat(text: str) -> str:
    """Undo terminal-width line wrapping so fragments can be searched for."""
    return " ".join(text.split())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_cli(*args: str):
    return runner.invoke(app, ["run", *args])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """One full run of small-4node on the local backend, shared by the output checks."""
    out = tmp_path_factory.mktemp("small") / "out"
    result = run_cli(str(SMALL), "--out", str(out), "--backend", "local")
    assert result.exit_code == 0, result.output
    return out


# ----------------------------------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------------------------------
def test_validate_good_file_exits_0_and_prints_name_and_vm_count():
    result = runner.invoke(app, ["validate", str(SMALL)])
    assert result.exit_code == 0, result.output
    text = _flat(result.stdout)
    assert text.startswith(f"ok: {SMALL}: 'small-4node'")
    assert "4 nodes, 40 VMs, 4 CSVs" in text
    assert "generations: ws2008r2, ws2012, ws2012r2, ws2016" in text
    assert result.stderr == ""


def test_validate_prints_its_ok_line_as_one_line_when_not_on_a_terminal():
    # The ok line is a single record; piped or captured output must not be wrapped at 80 columns.
    result = runner.invoke(app, ["validate", str(SMALL)])
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1, repr(result.stdout)


def test_validate_applies_set_overrides():
    result = runner.invoke(app, ["validate", str(SMALL), "--set", "fleet.0.count=10", "--set",
                                 "backup.generations=[ws2016]"])
    assert result.exit_code == 0, result.output
    text = _flat(result.stdout)
    assert "20 VMs" in text
    assert "generations: ws2016" in text


def test_validate_scenario_without_backup_reports_steady_state(tmp_path):
    f = tmp_path / "steady.yaml"
    f.write_text(STEADY)
    result = runner.invoke(app, ["validate", str(f)])
    assert result.exit_code == 0, result.output
    assert "'steady-only', 2 nodes, 4 VMs, 2 CSVs, generations: none (steady state)" in _flat(result.stdout)


# ----------------------------------------------------------------------------------------------
# run: output layout
# ----------------------------------------------------------------------------------------------
def test_run_writes_one_folder_per_generation_with_all_result_files(small_run):
    assert sorted(p.name for p in small_run.iterdir() if p.is_dir()) == GENERATIONS
    for gen in GENERATIONS:
        for name in ("summary.json", "vms.csv", "csvs.csv", "trace.jsonl"):
            assert (small_run / gen / name).is_file(), f"{gen}/{name}"
    assert (small_run / "comparison.csv").is_file()
    assert (small_run / "comparison.md").is_file()
    assert [p.name for p in small_run.parent.iterdir()] == ["out"]  # no scratch folder left beside it


def test_comparison_csv_has_one_row_per_generation(small_run):
    rows = read_csv(small_run / "comparison.csv")
    assert [r["generation"] for r in rows] == GENERATIONS


def test_comparison_md_has_one_table_row_per_generation(small_run):
    lines = [ln for ln in (small_run / "comparison.md").read_text().splitlines() if ln.startswith("|")]
    header, rule, *body = lines
    assert header.startswith("| generation |")
    assert set(rule.replace("|", "")) == {"-"}
    assert [ln.split("|")[1].strip() for ln in body] == GENERATIONS


@pytest.mark.parametrize("gen", GENERATIONS)
def test_vms_csv_has_the_documented_columns_and_one_row_per_vm(small_run, gen):
    rows = read_csv(small_run / gen / "vms.csv")
    with open(small_run / gen / "vms.csv", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    assert header[: len(VM_COLUMNS)] == VM_COLUMNS
    assert len(rows) == 40
    assert {r["generation"] for r in rows} == {gen}
    assert rows[0]["vm"] == "win-app-0001"
    assert rows[0]["node"] == "node-1"
    assert rows[0]["csv"] == "csv-1"
    assert {r["outcome"] for r in rows} <= {"app_consistent", "crash_consistent", "saved_state", "offline", "failed"}


@pytest.mark.parametrize("gen", GENERATIONS)
def test_summary_json_names_scenario_generation_seed_and_counts(small_run, gen):
    s = json.loads((small_run / gen / "summary.json").read_text())
    assert s["scenario"] == "small-4node"
    assert s["generation"] == gen
    assert s["seed"] == 7
    assert (s["vm_count"], s["node_count"], s["csv_count"]) == (40, 4, 4)
    assert sum(s["outcomes"].values()) == 40
    assert s["audit"]["ok"] is True


def test_outcomes_in_summary_match_vms_csv(small_run):
    for gen in GENERATIONS:
        s = json.loads((small_run / gen / "summary.json").read_text())
        counted: dict[str, int] = {}
        for r in read_csv(small_run / gen / "vms.csv"):
            counted[r["outcome"]] = counted.get(r["outcome"], 0) + 1
        assert {k: v for k, v in s["outcomes"].items() if v} == counted, gen


def test_csvs_csv_lists_every_csv_with_its_coordinator(small_run):
    rows = read_csv(small_run / "ws2016" / "csvs.csv")
    assert [(r["csv"], r["coordinator"]) for r in rows] == [(f"csv-{i}", f"node-{i}") for i in range(1, 5)]
    assert sum(int(r["vms"]) for r in rows) == 40


def test_trace_jsonl_is_one_json_event_per_line_starting_with_cluster_start(small_run):
    lines = (small_run / "ws2012" / "trace.jsonl").read_text().splitlines()
    events = [json.loads(ln) for ln in lines]
    assert events[0]["event"] == "cluster_start"
    assert events[0]["vms"] == 40
    assert all("event" in e and "sim_time_s" in e for e in events)
    times = [e["sim_time_s"] for e in events]
    assert times == sorted(times)
    s = json.loads((small_run / "ws2012" / "summary.json").read_text())
    assert s["trace_events"] == len(events)


# ----------------------------------------------------------------------------------------------
# run: selecting generations, seeds
# ----------------------------------------------------------------------------------------------
def test_set_generations_runs_only_those(tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "--set", "backup.generations=[ws2016]")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "report.html", "run.json",
                                                    "scenario.resolved.yaml", "ws2016"]
    assert [r["generation"] for r in read_csv(out / "comparison.csv")] == ["ws2016"]
    assert json.loads((out / "ws2016" / "summary.json").read_text())["generation"] == "ws2016"


def test_generation_option_runs_only_that_generation(tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "-g", "ws2012r2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ws2012r2"]
    assert [r["generation"] for r in read_csv(out / "comparison.csv")] == ["ws2012r2"]


def test_unknown_generation_option_is_blamed_on_g_with_the_nearest_generation_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "-g", "ws2019")
    assert result.exit_code == 2, result.output
    assert _flat(result.stderr) == ("error: -g 'ws2019': not a generation; did you mean 'ws2016'? "
                                    "(choose from ws2008r2, ws2012, ws2012r2, ws2016)")
    assert str(SMALL) not in result.stderr  # the file is not at fault
    assert not out.exists()


def test_generation_option_outside_the_files_generations_is_blamed_on_g(tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "--set", "backup.generations=[ws2016]", "-g", "ws2012")
    assert result.exit_code == 2, result.output
    assert _flat(result.stderr) == (f"error: -g ws2012: not among the generations this scenario runs (ws2016: "
                                    f"backup.generations in {SMALL}); add it there or with --set "
                                    f"backup.generations=[...]")
    assert not out.exists()


def test_seed_option_is_recorded_and_changes_nothing_structural(small_run, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "--seed", "5")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in small_run.iterdir())
    for gen in GENERATIONS:
        s5 = json.loads((out / gen / "summary.json").read_text())
        s7 = json.loads((small_run / gen / "summary.json").read_text())
        assert (s5["seed"], s7["seed"]) == (5, 7)
        for key in ("scenario", "generation", "vm_count", "node_count", "csv_count"):
            assert s5[key] == s7[key], (gen, key)
        vms5 = [tuple(r[c] for c in STRUCTURAL) for r in read_csv(out / gen / "vms.csv")]
        vms7 = [tuple(r[c] for c in STRUCTURAL) for r in read_csv(small_run / gen / "vms.csv")]
        assert vms5 == vms7, gen
        csvs5 = [(r["csv"], r["coordinator"], r["vms"]) for r in read_csv(out / gen / "csvs.csv")]
        csvs7 = [(r["csv"], r["coordinator"], r["vms"]) for r in read_csv(small_run / gen / "csvs.csv")]
        assert csvs5 == csvs7, gen


def test_same_seed_gives_identical_summaries(small_run, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(SMALL), "--out", str(out), "--seed", "7", "-g", "ws2016")
    assert result.exit_code == 0, result.output
    assert (out / "ws2016" / "summary.json").read_bytes() == (small_run / "ws2016" / "summary.json").read_bytes()


# ----------------------------------------------------------------------------------------------
# run: steady state, output folder
# ----------------------------------------------------------------------------------------------
def test_scenario_without_backup_runs_the_steady_state(tmp_path):
    f = tmp_path / "steady.yaml"
    f.write_text(STEADY)
    out = tmp_path / "out"
    result = run_cli(str(f), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "scenario.resolved.yaml", "steady"]  # no comparison
    s = json.loads((out / "steady" / "summary.json").read_text())
    assert s["generation"] == "steady"
    assert s["scenario"] == "steady-only"
    assert (s["vm_count"], s["node_count"], s["csv_count"]) == (4, 2, 2)
    assert sum(s["outcomes"].values()) == 0
    assert s["sim_end_s"] == 3600
    assert (out / "steady" / "vms.csv").is_file()
    assert (out / "steady" / "csvs.csv").is_file()


def test_out_that_is_a_file_exits_2_and_leaves_it_alone(tmp_path):
    out = tmp_path / "out"
    out.write_text("keep me")
    result = run_cli(str(SMALL), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "--out:" in result.stderr
    assert "exists and is not a folder" in _flat(result.stderr)
    assert out.read_text() == "keep me"
