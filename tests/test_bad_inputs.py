"""Bad scenario, study and plan files: every one is refused with a message naming the file, the field
path and the reason, exit code 2, and nothing written.

The corpus lives in tests/bad_inputs/ (scenarios), tests/bad_inputs/studies/ (studies) and
tests/bad_inputs/plans/ (plans), one problem per file; each folder's expected.yaml holds, per file,
the field path the message must name ("" for file-level problems), a fragment of the reason and,
for plans, the bad value as the message shows it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cluster_sim.cli import app
from cluster_sim.scenario import ScenarioError, load_scenario

CORPUS = Path(__file__).parent / "bad_inputs"
SMALL = Path(__file__).parent.parent / "scenarios" / "small-4node.yaml"
EXPECTED: dict[str, dict[str, str]] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
CASES = sorted(EXPECTED)
STUDIES = CORPUS / "studies"
STUDY_EXPECTED: dict[str, dict[str, str]] = yaml.safe_load((STUDIES / "expected.yaml").read_text(encoding="utf-8"))
PLANS = CORPUS / "plans"
PLAN_EXPECTED: dict[str, dict[str, str]] = yaml.safe_load((PLANS / "expected.yaml").read_text(encoding="utf-8"))

# A representative subset for the (slower) CLI checks: file-level, unknown field, type, range,
# choice, and the three whole-scenario feasibility checks.
CLI_CASES = [
    "yaml_syntax_error.yaml",
    "empty_file.yaml",
    "unknown_workload_read_iop.yaml",
    "nodes_string.yaml",
    "size_negative.yaml",
    "generation_unknown.yaml",
    "template_duplicate.yaml",
    "round_robin_too_few_csvs.yaml",
    "memory_does_not_fit.yaml",
    "event_unknown_vm.yaml",
    "event_at_horizon.yaml",
    "event_controller_does_not_exist.yaml",
]

runner = CliRunner()


def _flat(text: str) -> str:
    """Undo terminal-width line wrapping so fragments can be searched for."""
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------
# the corpus itself
# ----------------------------------------------------------------------------------------------
def test_corpus_has_an_expectation_for_every_file_and_a_file_for_every_expectation():
    files = {p.name for p in CORPUS.glob("*.yaml")} - {"expected.yaml"}
    assert files == set(EXPECTED)
    assert len(files) >= 50
    studies = {p.name for p in STUDIES.glob("*.yaml")} - {"expected.yaml"}
    assert studies == set(STUDY_EXPECTED)
    assert len(studies) >= 25


def test_every_expectation_has_a_path_and_a_non_empty_reason():
    for name, exp in [*EXPECTED.items(), *STUDY_EXPECTED.items()]:
        assert set(exp) == {"path", "reason"}, name
        assert isinstance(exp["path"], str), name
        assert exp["reason"], name


# ----------------------------------------------------------------------------------------------
# load_scenario
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_load_scenario_names_file_field_path_and_reason(name):
    path = CORPUS / name
    exp = EXPECTED[name]
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg
    assert name in msg
    assert exp["reason"] in msg
    # each corpus file holds exactly one problem, rendered as "<file>: <path>: <reason>"
    assert len(info.value.problems) == 1, msg
    got_path, got_reason = info.value.problems[0]
    assert exp["reason"] in got_reason
    if exp["path"]:
        assert exp["path"] in got_path
        assert msg.startswith(f"{path}: {got_path}: ")
    else:
        assert got_path == ""
        assert msg == f"{path}: {got_reason}"


def test_load_scenario_reports_every_problem_of_a_file_with_several(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(
        "name: two\ncluster: {nodes: 0}\nstorage: {csvs: 2}\n"
        "fleet: [{template: web, count: 1, disks: [{size_gib: -5}]}]\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(f)
    msg = str(info.value)
    assert msg.splitlines()[0] == f"{f}: 2 problems"
    assert {p for p, _ in info.value.problems} == {"cluster.nodes", "fleet[0].disks[0].size_gib"}
    assert "  cluster.nodes: Input should be greater than or equal to 1 (got 0)" in msg.splitlines()
    assert "  fleet[0].disks[0].size_gib: Input should be greater than 0 (got -5)" in msg.splitlines()


def test_load_scenario_of_a_missing_file_says_no_such_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match="no such file") as info:
        load_scenario(missing)
    assert str(info.value) == f"{missing}: no such file"


# ----------------------------------------------------------------------------------------------
# CLI (in process)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_validate_refuses_bad_file_with_exit_2_and_message_on_stderr(name):
    path = CORPUS / name
    exp = EXPECTED[name]
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    err = _flat(result.stderr)
    assert err.startswith("error: ")
    assert name in err
    assert exp["path"] in err
    assert result.stdout == ""


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_run_refuses_bad_file_with_exit_2_and_writes_nothing(name, tmp_path):
    path = CORPUS / name
    exp = EXPECTED[name]
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--backend", "local"])
    assert result.exit_code == 2, result.output
    err = _flat(result.stderr)
    assert name in err
    assert exp["path"] in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no scratch folder left behind either


def test_cli_shows_the_reason_verbatim_even_when_it_contains_square_brackets():
    # The template-name rule is the regex '^[a-z][a-z0-9-]{0,40}$'; the CLI must not treat
    # "[a-z]" as console markup and drop it.
    name = "template_uppercase.yaml"
    result = runner.invoke(app, ["validate", str(CORPUS / name)])
    assert result.exit_code == 2
    assert "fleet[0].template: String should match pattern '^[a-z][a-z0-9-]{0,40}$'" in result.stderr


def test_cli_shows_the_full_file_path_even_when_a_folder_name_has_square_brackets(tmp_path):
    folder = tmp_path / "site[west]"
    folder.mkdir()
    f = folder / "nodes_zero.yaml"
    shutil.copy(CORPUS / "nodes_zero.yaml", f)
    result = runner.invoke(app, ["validate", str(f)])
    assert result.exit_code == 2
    assert f"{f}: cluster.nodes: Input should be greater than or equal to 1" in result.stderr


def test_cli_validate_of_a_missing_file_exits_2(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert "nope.yaml: no such file" in _flat(result.stderr)


@pytest.mark.parametrize(
    ("args", "path", "reason"),
    [
        (["--set", "cluster.nodes=0"], "cluster.nodes", "greater than or equal to 1"),
        (["--set", "fleet.7.count=2"], "fleet.7.count", "'7' is not an index of a list of 3"),
        (["--set", "cluster.nodes.max=2"], "cluster.nodes.max", "cluster.nodes is a value, not a section"),
        (["--set", "no-equals-sign"], "", "expected dotted.path=value"),
        (["--backend", "slurm"], "'--backend'", "'slurm' is not one of 'local'"),  # (checked by the option)
        (["--seed", "-1"], "--seed -1 (on ", "seed: Input should be greater than or equal to 0"),
    ],
    ids=["set-range", "set-missing-index", "set-through-scalar", "set-no-equals", "backend", "seed"],
)
def test_cli_run_refuses_bad_options_with_exit_2_and_writes_nothing(args, path, reason, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(SMALL), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    err = _flat(result.stderr)
    assert path in err
    assert reason in err
    assert not out.exists()
    if args[0] in ("--backend", "--seed"):
        assert f"{SMALL}:" not in err  # an option's mistake is not the file's


def test_console_script_exits_2_on_a_bad_file(tmp_path):
    script = Path(sys.executable).parent / "cluster-sim"
    assert script.exists(), f"console script not installed next to {sys.executable}"
    path = CORPUS / "size_negative.yaml"
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(script), "run", str(path), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    err = _flat(proc.stderr)
    assert f"{path}: fleet[0].disks[0].size_gib: Input should be greater than 0" in err
    assert proc.stdout == ""
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# bad study files (cluster-sim sweep)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STUDY_EXPECTED))
def test_sweep_refuses_bad_study_with_file_field_path_reason_exit_2_and_writes_nothing(name, tmp_path):
    study = STUDIES / name
    exp = STUDY_EXPECTED[name]
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", str(study), "--out", str(out), "--serial"])
    assert res.exit_code == 2, res.output
    text = _flat(res.output)
    assert text.count("error:") == 1, text
    assert f"{study}: " in text and exp["reason"] in text, text
    if exp["path"]:
        assert f"{study}: {exp['path']}: " in text, text
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# bad plan files (cluster-sim plan)
# ----------------------------------------------------------------------------------------------
def test_plan_corpus_has_an_expectation_for_every_file_and_a_file_for_every_expectation():
    plans = {p.name for p in PLANS.glob("*.yaml")} - {"expected.yaml"}
    assert plans == set(PLAN_EXPECTED)
    assert len(plans) >= 15
    for name, exp in PLAN_EXPECTED.items():
        assert set(exp) == {"path", "value", "reason"} and exp["reason"], name


@pytest.mark.parametrize("name", sorted(PLAN_EXPECTED))
def test_plan_refuses_bad_plan_with_file_field_path_value_reason_exit_2_and_writes_nothing(name, tmp_path):
    plan = PLANS / name
    exp = PLAN_EXPECTED[name]
    out = tmp_path / "out"
    res = runner.invoke(app, ["plan", str(plan), "--out", str(out)])
    assert res.exit_code == 2, res.output
    text = _flat(res.output)
    assert text.count("error:") == 1 and text.count(f"{plan}") == 1, text
    assert f"{plan}: " in text and exp["reason"] in text and exp["value"] in text, text
    if exp["path"]:  # one problem: "file: path: ..."; several: "file: N problems path: ..."
        assert f"{plan}: {exp['path']}: " in text or f" problems {exp['path']}: " in text, text
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# run --overrides FILE
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,path,reason", [
    ("backup.vms_per_snapshot: 0\n", "backup.vms_per_snapshot", "Input should be greater than or equal to 1"),
    ("backup.vms_per_snaphot: 4\n", "backup.vms_per_snaphot", "unknown field"),
    ("- backup.vms_per_snapshot: 4\n", "", "an override file is a YAML mapping of dotted scenario paths"),
    ("", "", "this file is empty"),
    ("backup.: 4\n", "backup.", "not a dotted field path"),
    ("fleet.7.count: 4\n", "fleet.7.count", "'7' is not an index of a list of 3"),
])
def test_run_blames_a_bad_override_file_on_that_file_with_exit_2_and_writes_nothing(content, path, reason, tmp_path):
    bad = tmp_path / "best.yaml"
    bad.write_text(content)
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(SMALL), "--overrides", str(bad), "--out", str(out)])
    assert res.exit_code == 2, res.output
    text = _flat(res.output)
    assert text.count("error:") == 1 and reason in text, text
    assert (f"{bad}: {path}: " if path else f"{bad}: ") in text, text
    assert str(SMALL) not in text  # the scenario is fine: the override file is to blame
    assert not out.exists()


def test_run_overrides_file_applies_before_set(tmp_path):
    from cluster_sim.scenario import load_scenario

    f = tmp_path / "best.yaml"
    f.write_text("backup.vms_per_snapshot: 4\nbackup.concurrent_vms_per_node: 2\n")
    sc = load_scenario(SMALL, ["backup.concurrent_vms_per_node=5"], f)
    assert (sc.backup.vms_per_snapshot, sc.backup.concurrent_vms_per_node) == (4, 5)
