"""Named regression scenarios: failing examples found by the property tests (tests/test_properties.py),
shrunk and kept as YAML under scenarios/regressions/. Each file's comment header says what goes
wrong, the invariant it violates and the suspected code.

Every file is loaded with `cluster_sim.load_scenario`, run on the local backend, and must keep
every invariant (`strategies.check_invariants`: a clean audit, leaks only where the generation
really leaks, no lost writes, no undocumented claim mismatch). A scenario that needs a node actor
to die behind the cluster's back says so in a header line `# kill_actors: node-2@123.5`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from strategies import check_invariants

import cluster_sim

REGRESSIONS = Path(__file__).resolve().parent.parent / "scenarios" / "regressions"
FILES = sorted(REGRESSIONS.glob("*.yaml"))
KILL = re.compile(r"^#\s*kill_actors:\s*(\S+)@([0-9.]+)\s*$", re.M)


def test_the_regression_folder_holds_scenarios() -> None:
    assert FILES, REGRESSIONS


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_regression_scenario_keeps_every_invariant(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), f"{path.name}: start with a comment saying what goes wrong"
    sc = cluster_sim.load_scenario(path)
    assert sc.name == path.stem, "name the scenario after its file"
    kill = [(node, float(at)) for node, at in KILL.findall(text)]
    res = cluster_sim.run(sc, backend="local", kill_actors=kill or None)
    assert [g.summary.generation for g in res.generations] == list(sc.backup.generations)
    for g in res.generations:
        check_invariants(sc, g)
