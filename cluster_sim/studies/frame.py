"""In Python: `cluster_sim.sweep(study)` runs a study and returns its runs table as a pandas
DataFrame, as Mesa's `batch_run` does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from cluster_sim.studies.execute import run_study
from cluster_sim.studies.progress import ProgressFn
from cluster_sim.studies.spec import StudyPlan, load_study
from cluster_sim.studies.store import arrow_table


def runs_frame(plan: StudyPlan, rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """The runs as a tidy pandas DataFrame: one row per (point, seed, generation), the columns of
    runs.parquet (grid axes, seed, generation, every number of summary.json dotted, error, valid,
    duplicate_of, ...), integers and booleans as pandas' nullable types (a failed run's are NA)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("cluster_sim.sweep returns a pandas DataFrame: pip install 'cluster_sim[pandas]'") from None
    import pyarrow as pa

    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}
    return arrow_table(rows, plan.columns()).to_pandas(types_mapper=nullable.get)


def run_table(study: str | Path | StudyPlan, out: str | Path | None = None, *,
              executor: Literal["ray", "serial"] = "ray", address: str | None = None, num_cpus: int | None = None,
              resume: bool = False, retry_failed: bool = False, progress: ProgressFn | None = None):  # type: ignore[no-untyped-def]
    """Run a study (a study file, or a plan from `load_study`) and return its runs table as a pandas
    DataFrame (`runs_frame`), as Mesa's `batch_run` returns its runs. `out`: the study folder
    (runs.parquet, aggregate.csv, plots, study.json; `resume` goes on from it); None: a temporary
    folder, removed afterwards (no aggregate or plots are drawn). `executor`: "ray" (a local Ray
    instance, or the cluster at `address`, default $RAY_ADDRESS) or "serial" (this process, one run at
    a time). Raises StudyError for a bad study file, StudyRunError when it cannot start (Ray
    unreachable, another sweep writing into `out`), KeyboardInterrupt if interrupted (what finished
    is recorded in `out`)."""
    import shutil
    import tempfile

    plan = study if isinstance(study, StudyPlan) else load_study(study)
    if executor == "ray":
        address = address or os.environ.get("RAY_ADDRESS") or None
    scratch = None if out is not None else tempfile.mkdtemp(prefix="cluster-sim-sweep-")
    try:
        outcome = run_study(plan, out if out is not None else scratch, resume=resume, retry_failed=retry_failed,
                            executor=executor, address=address, num_cpus=num_cpus, progress=progress,
                            outputs=out is not None)
        if outcome.interrupted:
            raise KeyboardInterrupt
        return runs_frame(plan, outcome.rows)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
