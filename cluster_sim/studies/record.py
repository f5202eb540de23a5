"""What one invocation of a study did (`StudyOutcome`) and its record in the study folder:
study.json (versions, command line, files, settings, counts, start and end) and
scenario.resolved.yaml."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster_sim.scenario import scenario_from_dict
from cluster_sim.studies.spec import StudyPlan
from cluster_sim.studies.store import RESOLVED_FILE, STUDY_FILE, _write_atomically


@dataclass
class StudyOutcome:
    out_dir: Path
    total: int
    executed: int  # runs this invocation finished
    skipped: int  # runs found recorded (--resume)
    dropped: int  # recorded rows that are not part of this study any more
    failed: int  # rows of the study with an error
    wall_s: float
    interrupted: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    ray_cpus: int = 0
    invalid: int = 0  # rows whose auditor failed
    retried: int = 0  # runs this invocation attempted twice
    took_over: str | None = None  # the lock of a sweep that had died, taken over
    identical: int = 0  # runs identical to another (same effective scenario and seed): never run
    copied: int = 0  # ... whose numbers were copied (all of them unless interrupted)


def _now() -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")  # ISO 8601, with the UTC offset


def write_study_json(out_dir: Path, plan: StudyPlan, outcome: StudyOutcome, started_at: str, executor: str,
                     address: str | None) -> None:
    """DIR/study.json (what made the study: versions, command line, files, settings, counts, start and
    end) and DIR/scenario.resolved.yaml (the study's scenario with its fixed overrides; each run then
    sets its grid point, seed and generation). Written at the end of every invocation, an
    interrupted one included."""
    from cluster_sim.results import scenario_yaml
    from cluster_sim.version import package_version

    resolved = scenario_from_dict(plan.base, str(plan.file)) if plan.base else None
    if resolved is not None:
        _write_atomically(out_dir / RESOLVED_FILE, scenario_yaml(
            resolved, f"{plan.scenario_file} with the overrides of study {plan.file}; each run then sets its "
                      f"grid point, seed and generation"))
    info = {
        "tool": "cluster-sim",
        "version": package_version(),
        "sim_version": plan.sim_version,
        "argv": list(sys.argv),
        "study": plan.name,
        "study_file": str(plan.file),
        "study_path": str(Path(plan.file).resolve()),
        "scenario_file": str(plan.scenario_file),
        "scenario_resolved": RESOLVED_FILE if resolved is not None else None,
        "overrides": plan.overrides,
        "grid": {a: list(dict.fromkeys(p[a] for p in plan.points)) for a in plan.axes},
        "seeds": plan.seeds,
        "generations": plan.generations,
        "metrics": plan.metrics,
        "executor": executor,
        "address": address,
        "runs": {"total": outcome.total, "run_now": outcome.executed, "recorded_before": outcome.skipped,
                 "identical_to_another": outcome.identical, "failed": outcome.failed, "invalid": outcome.invalid,
                 "retried": outcome.retried},
        "identical_because": identical_reasons(plan),
        "interrupted": outcome.interrupted,
        "started_at": started_at,
        "ended_at": _now(),
    }
    _write_atomically(out_dir / STUDY_FILE, json.dumps(info, indent=2, default=str) + "\n")


def identical_reasons(plan: StudyPlan) -> list[str]:
    """Why some runs are identical to others: `ws2016 ignores backup.vms_per_snapshot`."""
    return [f"{g} ignores {', '.join(axes)}" for g, axes in plan.ignored_axes().items()]
