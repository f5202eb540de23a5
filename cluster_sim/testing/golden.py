"""Golden results for your own tests: each generation's summary.json kept in a folder and compared
byte for byte (written instead with `--cluster-sim-update-golden`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster_sim.results import RunResult


def compare_golden(result: RunResult, folder: str | Path, update: bool = False) -> None:
    """Each generation's summary.json against `folder/<generation>.json`; with `update`, write them.
    Fails with the first lines that differ (or the file that is missing)."""
    from cluster_sim.results import summary_json

    folder = Path(folder)
    problems = []
    for g in result.generations:
        path = folder / f"{g.summary.generation}.json"
        text = summary_json(g.summary)
        if update:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        if not path.exists():
            problems.append(f"{path}: no golden file (run pytest with --cluster-sim-update-golden to write it)")
            continue
        want = path.read_text(encoding="utf-8")
        if want != text:
            diff = list(difflib.unified_diff(want.splitlines(), text.splitlines(), str(path), "this run",
                                             lineterm="", n=0))
            problems.append("\n".join(diff[:40]))
    if problems:
        raise AssertionError("results differ from the golden files (if the change is meant, run pytest "
                             "with --cluster-sim-update-golden and review the diff):\n" + "\n".join(problems))
