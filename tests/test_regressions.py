"""Named regression scenarios: failing examples found by the property tests (tests/test_properties.py),
shrunk and kept as YAML under scenarios/regressions/. Each file's comment header says what goes
wrong, the invariant it violates and the suspected code.

Every file is loaded with `cluster_sim.load_scenario`, run on the local backend, and must keep
every invariant (`strategies.check_fault_invariants`: those of `check_invariants` - a clean audit,
leaks only where the generation really leaks, no lost writes, no undocumented claim mismatch -
with what injected fault events left behind counted against them, and the fault events' own). A scenario that needs a node actor
to die behind the cluster's back says so in a header line, `# kill_actors: node-2@123.5` (several:
comma-separated) or `# kill_actors: [('node-2', 123.5)]`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from chaos import run_killing
from strategies import check_fault_invariants

import cluster_sim

REGRESSIONS = Path(__file__).resolve().parent.parent / "scenarios" / "regressions"
FILES = sorted(REGRESSIONS.glob("*.yaml"))
KILL = re.compile(r"^#\s*kill_actors:(.*)$", re.M)


def kill_actors(text: str) -> list[tuple[str, float]]:
    """The `kill_actors` of a regression file's header (see the module docstring)."""
    out: list[tuple[str, float]] = []
    for spec in KILL.findall(text):
        spec = spec.strip()
        if spec.startswith("["):
            out += [(str(node), float(at)) for node, at in ast.literal_eval(spec)]
        else:
            for item in filter(None, (x.strip() for x in spec.split(","))):
                node, at = item.split("@")
                out.append((node, float(at)))
    return out


def test_kill_actors_headers_are_read_in_both_spellings() -> None:
    assert kill_actors("# kill_actors: node-1@5.0, node-3@7\nname: x\n") == [("node-1", 5.0), ("node-3", 7.0)]
    assert kill_actors("# kill_actors: [('node-1', 47.199)]\n") == [("node-1", 47.199)]
    assert kill_actors("# no kill here\n") == []


def test_the_regression_folder_holds_scenarios() -> None:
    assert FILES, REGRESSIONS


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_regression_scenario_keeps_every_invariant(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), f"{path.name}: start with a comment saying what goes wrong"
    sc = cluster_sim.load_scenario(path)
    kill = kill_actors(text)
    res = run_killing(sc, kill or None, backend="local")
    assert [g.summary.generation for g in res.generations] == list(sc.backup.generations)
    for g in res.generations:
        check_fault_invariants(sc, g)
