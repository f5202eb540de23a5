"""Errors that say what was wrong and where: the bad value quoted, the nearest field name for a
misspelt one, the command line blamed for its own mistakes, a directory called a directory, a
single value read as a one-item list, and YAML alias bombs refused fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster_sim.cli import app
from cluster_sim.scenario import MAX_VALUE_CHARS, ScenarioError, load_scenario
from cluster_sim.sweep import StudyError, load_study

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small-4node.yaml"
runner = CliRunner()


def _error(*sets: str, path: Path = SMALL) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, list(sets))
    return info.value


def test_a_bad_choice_quotes_what_was_given() -> None:
    e = _error("backup.generations=[ws2019]")
    assert e.problems == [("backup.generations[0]",
                           "Input should be 'ws2008r2', 'ws2012', 'ws2012r2' or 'ws2016' (got 'ws2019')")]


def test_a_number_given_as_text_quotes_the_text() -> None:
    e = _error('fleet.0.disks.0.size_gib="60GB"')
    assert e.problems == [("fleet[0].disks[0].size_gib", "Input should be a valid number (got '60GB')")]


def test_a_long_bad_value_is_cut_to_80_characters() -> None:
    e = _error(f"backup.provider={'x' * 500}")
    reason = e.problems[0][1]
    got = reason[reason.index("(got ") + 5 : -1]
    assert len(got) == MAX_VALUE_CHARS and got.endswith("...")


@pytest.mark.parametrize(("typo", "near"), [("backup.vms_per_snapshots", "vms_per_snapshot"),
                                            ("cluster.nodse", "nodes"),
                                            ("fleet.0.workload.read_iop", "read_iops")])
def test_a_misspelt_field_gets_the_nearest_known_name(typo: str, near: str) -> None:
    e = _error(f"{typo}=1")
    assert len(e.problems) == 1
    assert e.problems[0][1].startswith(f"unknown field (did you mean {near!r}?)")


def test_a_misspelt_event_field_is_suggested_from_that_kind_of_event_and_the_path_has_no_kind_tag(tmp_path) -> None:
    text = SMALL.read_text().replace("run:", "events:\n  - {at_s: 10, kind: migrate_vm, vmm: web-0001}\nrun:", 1)
    f = tmp_path / "ev.yaml"
    f.write_text(text)
    e = _error(path=f)
    assert e.problems == [("events[0].vm", "Field required"),
                          ("events[0].vmm", "unknown field (did you mean 'vm'?); see the scenario reference in "
                                            "README.md")]


def test_a_mistake_made_with_set_is_blamed_on_set_not_on_the_file() -> None:
    e = _error("backup.vms_per_snapshot=0")
    assert e.file == f"--set backup.vms_per_snapshot=0 (on {SMALL})"
    assert str(e).startswith("--set backup.vms_per_snapshot=0 (on ")


def test_a_mistake_in_the_file_is_still_the_files_even_with_sets(tmp_path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(SMALL.read_text().replace("nodes: 4", "nodes: 0"))
    e = _error("backup.retries=1", path=f)
    assert e.file == str(f)


def test_a_single_value_where_a_list_is_expected_is_a_one_item_list() -> None:
    sc = load_scenario(SMALL, ["backup.generations=ws2016"])
    assert sc.backup.generations == ["ws2016"]


def test_a_directory_is_called_a_directory() -> None:
    e = _error(path=ROOT / "scenarios")
    assert e.problems == [("", "is a directory, not a YAML file")]
    r = runner.invoke(app, ["validate", str(ROOT / "scenarios")])
    assert r.exit_code == 2 and "is a directory" in r.output


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_scenario_is_refused_in_under_a_second(tmp_path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    t0 = time.perf_counter()
    r = runner.invoke(app, ["validate", str(f)])
    assert time.perf_counter() - t0 < 1.0
    assert r.exit_code == 2
    assert "expands to more than 1,000,000 values" in r.output


def test_a_yaml_alias_bomb_in_a_study_grid_is_refused_in_under_a_second(tmp_path) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(BOMB + f"scenario: {SMALL}\ngrid: {{backup.retries: *i}}\n")
    t0 = time.perf_counter()
    with pytest.raises(StudyError) as info:
        load_study(f)
    assert time.perf_counter() - t0 < 1.0
    assert "expands to more than 1,000,000 values" in str(info.value)


def test_a_misspelt_study_field_is_suggested_from_the_study_fields(tmp_path) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(f"scenario: {SMALL}\ngrid: {{backup.retries: [1]}}\nmetric: [backup_window_s]\n")
    with pytest.raises(StudyError) as info:
        load_study(f)
    (path, reason), = info.value.problems
    assert path == "metric" and reason.startswith("unknown field (did you mean 'metrics'?)")
