"""Golden results, as SimGrid's tesh files are: the summary.json of every generation of every
shipped scenario, kept under tests/golden/<scenario>/<generation>.json and checked byte for byte by
tests/test_golden.py. A change that moves a result must regenerate them on purpose:

    make golden        # runs every shipped scenario on the local backend and rewrites the files

and the diff of tests/golden/ is reviewed in the commit (say in its message which numbers moved
and why). Shipped scenarios: scenarios/*.yaml, scenarios/faults/*.yaml and the regression
scenarios that need no test hook (scenarios/regressions/*.yaml without a `# kill_actors:` header).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def shipped_scenarios() -> list[Path]:
    files = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "scenarios" / "faults").glob("*.yaml"))
    files += [p for p in sorted((ROOT / "scenarios" / "regressions").glob("*.yaml"))
              if "# kill_actors:" not in p.read_text(encoding="utf-8")]
    return files


def golden_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "scenarios")
    return str(rel.with_suffix("")).replace("/", "__")


def summaries(path: Path) -> dict[str, str]:
    """{generation: summary.json text} of one scenario, on the local backend."""
    import cluster_sim
    from cluster_sim.results import summary_json

    sc = cluster_sim.load_scenario(path, ["run.backend=local"])
    res = cluster_sim.run(sc, backend="local")
    return {g.summary.generation: summary_json(g.summary) for g in res.generations}


def main(argv: list[str]) -> int:
    """Rewrite every golden file (or those of the scenarios named on the command line)."""
    wanted = set(argv)
    for path in shipped_scenarios():
        name = golden_name(path)
        if wanted and name not in wanted and path.name not in wanted:
            continue
        folder = GOLDEN / name
        folder.mkdir(parents=True, exist_ok=True)
        got = summaries(path)
        for old in folder.glob("*.json"):
            if old.stem not in got:
                old.unlink()
        for gen, text in got.items():
            (folder / f"{gen}.json").write_text(text, encoding="utf-8")
        print(f"{name}: {', '.join(got)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
