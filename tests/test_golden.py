"""Every shipped scenario's summaries equal their golden files byte for byte (tests/golden/, see
tests/golden_results.py; `make golden` regenerates them after a change meant to move results)."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_results import GOLDEN, golden_name, shipped_scenarios, summaries

import cluster_sim

BIG = 200  # [P] scenarios with this many VMs or more are marked slow
CASES = [pytest.param(p, id=golden_name(p),
                      marks=[pytest.mark.slow] if cluster_sim.load_scenario(p).vm_count() >= BIG else [])
         for p in shipped_scenarios()]


def test_every_shipped_scenario_has_golden_files_and_no_golden_folder_is_orphaned() -> None:
    names = {golden_name(p) for p in shipped_scenarios()}
    folders = {p.name for p in GOLDEN.iterdir() if p.is_dir()}
    assert folders == names, (sorted(names - folders), sorted(folders - names))


@pytest.mark.parametrize("path", CASES)
def test_summaries_equal_the_golden_files_byte_for_byte(path: Path) -> None:
    folder = GOLDEN / golden_name(path)
    expected = {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.json"))}
    got = summaries(path)
    assert sorted(got) == sorted(expected)
    for gen, text in got.items():
        assert text == expected[gen], f"{golden_name(path)}/{gen}.json differs: run `make golden` if meant"
