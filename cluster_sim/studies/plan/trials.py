"""One trial: the scenario with the trial's settings run for every seed (local node backend), and
the record Optuna and the outputs need: the seeds' mean of every metric, each constraint at the
worst seed, the objectives and feasibility."""

from __future__ import annotations

import math
import os
import socket
from typing import Any

from cluster_sim.scenario import (
    Scenario,
    ScenarioError,
)
from cluster_sim.studies.columns import (
    METRIC_KINDS,
    _cell,
)
from cluster_sim.studies.plan.spec import PlanSpec
from cluster_sim.studies.runs import execute_run
from cluster_sim.studies.spec import RunSpec

TRIAL_KEY = "plan_trial"  # the Optuna trial number, added to each trial's config
TRIAL_MAX_FAILURES = 3  # Tune restarts a trial whose worker or node died this many times


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _run_one(spec: RunSpec, scenario: Scenario, plan: str, cells: dict[str, Any]) -> dict[str, Any]:
    row = execute_run(spec, scenario, plan, cells)
    row["worker"] = _worker()
    return row


def run_seeds(spec: PlanSpec, params: dict[str, Any], label: str, parallel: bool = False) -> list[dict[str, Any]]:
    """One row per seed (sweep.execute_run's row plus `worker`). With `parallel` (inside a Ray
    trial), the first seed runs here and the others as Ray tasks; results do not depend on where."""
    cells = {a: _cell(params[a], spec.domains[a].cell_kind) for a in spec.domains if a in params}
    try:
        scenario = spec.scenario_for(params)
    except ScenarioError as exc:
        return [{"run_id": f"{label}-s{s}", "seed": s, "generation": spec.generation, **cells,
                 "error": f"ScenarioError: {exc}", "node_id": None, "worker": _worker()} for s in spec.seeds]
    runs = [RunSpec(f"{label}-s{s}", 0, s, spec.generation) for s in spec.seeds]
    if parallel and len(runs) > 1:
        import ray

        task = ray.remote(num_cpus=1, max_retries=TRIAL_MAX_FAILURES, retry_exceptions=False)(_run_one)
        sc_ref = ray.put(scenario)
        refs = [task.remote(r, sc_ref, spec.name, cells) for r in runs[1:]]
        first = _run_one(runs[0], scenario, spec.name, cells)
        return [first, *ray.get(refs)]
    return [_run_one(r, scenario, spec.name, cells) for r in runs]


def summarize(spec: PlanSpec, params: dict[str, Any], rows: list[dict[str, Any]],
              number: int | None = None, trial_id: str | None = None) -> dict[str, Any]:
    """A trial's record: seeds' mean, min and max of every metric, each constraint's verdict at the
    worst seed, the objectives (means) and feasibility."""
    errors = [r.get("error") for r in rows if r.get("error")]
    rec: dict[str, Any] = {"trial": number, "trial_id": trial_id, "params": dict(params),
                           "seeds": [r.get("seed") for r in rows], "error": errors[0] if errors else None,
                           "nodes": sorted({r.get("node_id") or "" for r in rows} - {""}),
                           "workers": [r.get("worker") for r in rows],
                           "wall_s": math.fsum(r.get("wall_s") or 0.0 for r in rows)}
    metrics: dict[str, float | None] = {}
    spread: dict[str, list[float | None]] = {}
    for m in METRIC_KINDS:
        vals = [float(r[m]) for r in rows if not r.get("error") and r.get(m) is not None]
        metrics[m] = math.fsum(vals) / len(vals) if vals and not errors else None
        spread[m] = [min(vals), max(vals)] if vals and not errors else [None, None]
    rec["metrics"], rec["spread"] = metrics, spread
    verdicts = []
    for c in spec.constraints:
        vals = [float(r[c.metric]) for r in rows if not r.get("error") and r.get(c.metric) is not None]
        if errors or not vals:
            verdicts.append({"text": c.text, "met": False, "worst": None, "slack": None, "violation": None})
            continue
        worst = min(vals, key=c.slack)
        verdicts.append({"text": c.text, "met": all(c.met(v) for v in vals), "worst": worst,
                         "slack": c.slack(worst), "violation": max(c.violation(v) for v in vals)})
    rec["constraints"] = verdicts
    rec["objectives"] = [metrics[o.metric] for o in spec.objectives]
    rec["feasible"] = not errors and all(v["met"] for v in verdicts)
    return rec


def evaluate(spec: PlanSpec, params: dict[str, Any], number: int | None = None) -> tuple[dict[str, Any], list]:
    """Run one point in this process (no Ray): its record and its runs."""
    rows = run_seeds(spec, params, f"trial-{number}")
    return summarize(spec, params, rows, number), rows
