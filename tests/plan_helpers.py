"""Plan files for the plan tests (tests/test_plan.py, tests/test_plan_cluster.py): the corpus'
valid tiny scenario (2 nodes, 2 CSVs, 6 VMs), and a plan over three ws2012r2 settings."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_FILE = Path(__file__).parent / "bad_inputs" / "plans" / "sc" / "tiny.yaml"

PLAN = """\
plan: tiny-plan
scenario: sc/tiny.yaml
generations: [ws2012r2]
search:
  backup.vms_per_snapshot: {int: [1, 6]}
  backup.concurrent_vms_per_node: {int: [1, 4]}
  backup.copy_stream_mib_s: {choice: [100, 400]}
objective: %(objective)s
constraints: %(constraints)s
seeds: 2
budget: {trials: %(trials)d}
"""


def write_tiny(folder: Path, count: int = 6, extra: tuple[dict, ...] = ()) -> Path:
    """`folder/sc/tiny.yaml`: the tiny scenario with `count` VMs in its template, plus `extra` templates."""
    data = yaml.safe_load(TINY_FILE.read_text())
    data["fleet"][0]["count"] = count
    data["fleet"] += list(extra)
    (folder / "sc").mkdir(parents=True, exist_ok=True)
    path = folder / "sc" / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_plan(folder: Path, trials: int = 8, objective: str = "{minimize: backup_window_s}",
              constraints: str = "[outcomes.failed == 0, hw_snapshots_created <= 3]", count: int = 6,
              extra: tuple[dict, ...] = ()) -> Path:
    write_tiny(folder, count, extra)
    path = folder / "plan.yaml"
    path.write_text(PLAN % {"trials": trials, "objective": objective, "constraints": constraints})
    return path
