"""Plans: search a scenario's backup settings for the best window within limits, on Ray Tune with
Optuna's samplers (TPE for one objective, NSGA-II for a Pareto front of two).

A plan file (YAML)::

    plan: r2-window
    scenario: ../scenarios/800vm-8node.yaml       # relative to the plan file
    overrides: {run.until_s: 200000}              # optional: fixed for every trial (and the baseline)
    generations: [ws2012r2]                       # the one generation whose settings are tuned
    search:                                       # dotted scenario paths, a domain each
      backup.vms_per_snapshot: {int: [1, 64], log: true}
      backup.concurrent_vms_per_node: {int: [1, 8]}
      backup.copy_stream_mib_s: {choice: [200, 400, 800]}
      backup.start_s: {float: [0, 14400]}
    objective: {minimize: backup_window_s}        # or a list of two for a Pareto front
    constraints: [outcomes.failed == 0, hw_snapshots_created <= 200]
    seeds: 3                                      # a trial is feasible only if every seed meets every constraint
    budget: {trials: 60, time_s: 1800}
    sampler_seed: 0                               # the sampler's seed: same plan, same trials (concurrency 1)
    concurrency: 1                                # trials at once

`load_plan` checks everything before anything runs (each domain's bounds and choices are applied
to the scenario and validated, as a study's grid points are) and raises `PlanError` naming the
plan file, the field path, the value and the reason. `run_plan` runs the search as a Ray Tune
experiment in `DIR/tune/` (resumable with `Tuner.restore`): each trial applies its sampled
values, runs the scenario for every seed (local node backend; the trial's first seed in the
trial's own process, the others as Ray tasks in the trial's placement group), and reports the
seeds' mean of every metric. A trial's objective is the mean over seeds; a constraint is met only
if every seed meets it. Infeasible trials are told to Optuna with their constraint violations
(`Trial.set_constraint`: Optuna's constrained TPE and NSGA-II rank every feasible trial above
every infeasible one), and never count as best. Outputs: `trials.parquet`, `runs.parquet`,
`best.yaml`, `pareto.png`, `plan.json` (what the terminal summary and the HTML report show).

Modules: spec.py (the plan file, load_plan), domains.py (domains, constraints, objectives),
trials.py (one trial: every seed, its record), search.py (run_plan on Ray Tune), searcher.py (the
Optuna searcher and Tune callback, imported only when a plan runs), answer.py (best trial, Pareto
front, binding constraint, plan.json's summary), outputs.py (what a plan writes).
"""

from cluster_sim.studies.plan.answer import (
    TOP_TRIALS,
    analyse,
    best_record,
    binding_constraint,
    diagnose_infeasible,
    dominates,
    fmt_value,
    pareto_front,
    summary_lines,
)
from cluster_sim.studies.plan.domains import DOMAIN_HELP, OPS, Constraint, Domain, Objective, parse_constraint
from cluster_sim.studies.plan.outputs import (
    BASELINE_FILE,
    BEST_FILE,
    EXPERIMENT,
    FRONT_DIR,
    OUTPUTS,
    PARETO_PNG,
    PLAN_JSON,
    REPORT_HTML,
    RUNS_FILE,
    STATE_FILE,
    TRIALS_FILE,
    TUNE_DIR,
    TUNE_LOG,
    PlanOutcome,
    best_overrides,
    clear_outputs,
    run_columns,
    trial_columns,
    trial_row,
    write_outputs,
    write_override_file,
    write_plot,
)
from cluster_sim.studies.plan.search import PlanProgress, ProgressFn, run_plan
from cluster_sim.studies.plan.spec import (
    RESERVED_PATHS,
    PlanError,
    PlanFile,
    PlanRunError,
    PlanSpec,
    load_plan,
)
from cluster_sim.studies.plan.trials import TRIAL_KEY, TRIAL_MAX_FAILURES, evaluate, run_seeds, summarize

__all__ = [
    "BASELINE_FILE", "BEST_FILE", "DOMAIN_HELP", "EXPERIMENT", "FRONT_DIR", "OPS", "OUTPUTS", "PARETO_PNG",
    "PLAN_JSON", "REPORT_HTML", "RESERVED_PATHS", "RUNS_FILE", "STATE_FILE", "TOP_TRIALS", "TRIALS_FILE",
    "TRIAL_KEY", "TRIAL_MAX_FAILURES", "TUNE_DIR", "TUNE_LOG", "Constraint", "Domain", "Objective", "PlanError",
    "PlanFile", "PlanOutcome", "PlanProgress", "PlanRunError", "PlanSpec", "ProgressFn", "analyse",
    "best_overrides", "best_record", "binding_constraint", "clear_outputs", "diagnose_infeasible", "dominates",
    "evaluate", "fmt_value", "load_plan", "pareto_front", "parse_constraint", "run_columns", "run_plan",
    "run_seeds", "summarize", "summary_lines", "trial_columns", "trial_row", "write_outputs",
    "write_override_file", "write_plot",
]
