"""Every shipped scenario's summaries equal their golden files byte for byte (tests/golden/, see
tests/golden_results.py; `make golden` regenerates them after a change meant to move results)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from golden_results import GOLDEN, golden_name, shipped_scenarios, summaries

import cluster_sim

BIG = 200  # [P] scenarios with this many VMs or more are marked slow
# [P] scenarios this big (8000vm-64node: about 80 s on 2 cores) are checked only with
# CLUSTER_SIM_HUGE=1 (`make golden-check`), to keep `make test` under 10 minutes
HUGE = 5000
RUN_HUGE = os.environ.get("CLUSTER_SIM_HUGE") == "1"


def _marks(path: Path) -> list:  # type: ignore[type-arg]
    vms = cluster_sim.load_scenario(path).vm_count()
    if vms >= HUGE:
        return [pytest.mark.slow, pytest.mark.skipif(not RUN_HUGE, reason="set CLUSTER_SIM_HUGE=1 (make golden-check)")]
    return [pytest.mark.slow] if vms >= BIG else []


CASES = [pytest.param(p, id=golden_name(p), marks=_marks(p)) for p in shipped_scenarios()]


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
