"""Load studies: a grid of scenario overrides x seeds x generations, run as Ray tasks.

A study file (YAML)::

    study: r2-batch-size
    scenario: ../scenarios/800vm-8node.yaml      # relative to the study file
    overrides: {run.until_s: 200000}             # optional: fixed overrides for every point
    grid:                                        # cartesian product of dotted scenario paths
      backup.vms_per_snapshot: [1, 5, 10, 25, 50, 100]
      backup.concurrent_vms_per_node: [2, 4, 8]
    seeds: 10                                    # or a list; N means the scenario's seed .. seed+N-1
    generations: [ws2012r2, ws2016]              # default: the scenario's backup.generations
    metrics: [backup_window_s, hw_snapshots_created, outcomes.failed, io_latency_ms.backup_p99]
    run_timeout_s: 1800                          # optional: wall-clock deadline of one run (s)

`load_study` checks everything before anything runs (every grid point is applied to the scenario
with the scenario machinery and validated) and raises `StudyError` naming the study file, the
field path and the reason. `run_study` runs each (point, seed, generation) as one Ray task
(local node backend inside the task), streams one row per run into `DIR/runs.parquet`, and
writes `DIR/aggregate.csv` (mean and Student-t 95 % interval over seeds) and `DIR/plots/*.png`.

A run that fails or passes its deadline (default: from its size, `default_run_timeout_s`) is run
once more, then recorded with its error. A run whose auditor failed is recorded with valid=false and
left out of the means and intervals (counted in `invalid`). Each row's run_id includes the simulator
version (`cluster_sim.version.sim_version`: package version + a hash of the package's source), so
`--resume` never mixes rows of two simulators. One sweep at a time writes into a folder (DIR/.sweep.lock).

Modules, by job: spec.py (the study file, load_study, StudyPlan), inputs.py and columns.py (what
studies and plans share: reading their files and scenario, seeds, checking points; the columns of
a run row), runs.py (one run, in process or as a Ray task; open_ray), execute.py (run_study),
on_ray.py (the runs on Ray), progress.py (counts and ETA), store.py (runs.parquet, the journal, the
lock), record.py (study.json), stats.py (means, intervals, aggregate.csv), plots.py, frame.py (the
runs as a DataFrame: `cluster_sim.sweep(...)`). Plans (`cluster-sim plan`) are in plan/.
`cluster_sim.sweep` is this package's API as a module you can call.
"""

from cluster_sim.studies.columns import (
    METRIC_KINDS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    flatten_summary,
    is_valid,
    unknown_metric_reason,
)
from cluster_sim.studies.errors import StudyError, StudyLocked, StudyRunError
from cluster_sim.studies.execute import run_study
from cluster_sim.studies.frame import run_table, runs_frame
from cluster_sim.studies.inputs import check_points, load_base_scenario, parse_seeds, read_mapping_file
from cluster_sim.studies.on_ray import IN_FLIGHT_MIN, IN_FLIGHT_PER_CPU, MAX_RETRIES
from cluster_sim.studies.plots import write_plots
from cluster_sim.studies.progress import Eta, ProgressFn, StartFn, StudyProgress
from cluster_sim.studies.record import StudyOutcome, identical_reasons, write_study_json
from cluster_sim.studies.runs import ATTEMPTS, RunTimeout, execute_run, open_ray
from cluster_sim.studies.spec import (
    DEFAULT_METRICS,
    RESERVED_PATHS,
    RUN_TIMEOUT_BASE_S,
    RUN_TIMEOUT_S_PER_VM_JOB,
    RunSpec,
    StudyFile,
    StudyPlan,
    default_run_timeout_s,
    load_study,
)
from cluster_sim.studies.stats import (
    CONFIDENCE,
    HOUR_COLUMNS,
    MeanCI,
    aggregate,
    is_duration,
    mean_ci,
    metric_label,
    t_critical,
    write_aggregate_csv,
)
from cluster_sim.studies.store import (
    AGGREGATE_FILE,
    JOURNAL_FILE,
    LOCK_FILE,
    PLOTS_DIR,
    RESOLVED_FILE,
    RUNS_FILE,
    STUDY_FILE,
    RunStore,
    StudyLock,
    arrow_table,
    clear_outputs,
    read_runs,
    write_parquet,
)

__all__ = [
    "AGGREGATE_FILE", "ATTEMPTS", "CONFIDENCE", "DEFAULT_METRICS", "HOUR_COLUMNS", "IN_FLIGHT_MIN",
    "IN_FLIGHT_PER_CPU", "JOURNAL_FILE", "LOCK_FILE", "MAX_RETRIES", "METRIC_KINDS", "PLOTS_DIR", "RESERVED_PATHS",
    "RESOLVED_FILE", "RUNS_FILE", "RUN_COLUMNS", "RUN_TIMEOUT_BASE_S", "RUN_TIMEOUT_S_PER_VM_JOB", "STUDY_FILE",
    "SUMMARY_COLUMNS", "Eta", "MeanCI", "ProgressFn", "RunSpec", "RunStore", "RunTimeout", "StartFn", "StudyError",
    "StudyFile", "StudyLock", "StudyLocked", "StudyOutcome", "StudyPlan", "StudyProgress", "StudyRunError",
    "aggregate", "arrow_table", "check_points", "clear_outputs", "default_run_timeout_s", "execute_run",
    "flatten_summary", "identical_reasons", "is_duration", "is_valid", "load_base_scenario", "load_study",
    "mean_ci", "metric_label", "open_ray", "parse_seeds", "read_mapping_file", "read_runs", "run_study",
    "run_table", "runs_frame", "t_critical", "unknown_metric_reason", "write_aggregate_csv", "write_parquet",
    "write_plots", "write_study_json",
]
