"""Running a study: every (point, seed, generation) not yet recorded, serially or on Ray; runs
identical to another (same effective scenario and seed) copied instead of run; progress with a
size-weighted ETA; then the aggregate and the plots."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from cluster_sim.studies.columns import is_valid
from cluster_sim.studies.errors import StudyRunError
from cluster_sim.studies.on_ray import _run_on_ray
from cluster_sim.studies.plots import write_plots
from cluster_sim.studies.progress import Eta, ProgressFn, StartFn, StudyProgress
from cluster_sim.studies.record import StudyOutcome, _now, write_study_json
from cluster_sim.studies.runs import ATTEMPTS, _serial_attempt, open_ray
from cluster_sim.studies.spec import RunSpec, StudyPlan
from cluster_sim.studies.stats import aggregate, write_aggregate_csv
from cluster_sim.studies.store import AGGREGATE_FILE, PLOTS_DIR, RunStore, StudyLock, clear_outputs, read_runs


def run_study(plan: StudyPlan, out_dir: str | Path, *, resume: bool = False, retry_failed: bool = False,
              executor: Literal["ray", "serial"] = "ray", address: str | None = None,
              num_cpus: int | None = None, progress: ProgressFn | None = None,
              outputs: bool = True, flush_every_s: float = 2.0, on_start: StartFn | None = None) -> StudyOutcome:
    """Run every (point, seed, generation) not yet recorded; write runs, aggregate and plots.

    Each run has a wall-clock deadline (`plan.timeout_s`); a run that fails or times out is run once
    more, and only then recorded with its error. Runs whose auditor failed are recorded with
    valid=false and left out of the means and intervals. One sweep at a time writes into `out_dir`
    (StudyLocked otherwise)."""
    wall0 = time.perf_counter()
    started_at = _now()
    out_dir = Path(out_dir)
    existed = out_dir.exists()
    lock = StudyLock(out_dir)
    took_over = lock.acquire()
    session = None
    try:
        runs = plan.runs()
        wanted = {s.run_id for s in runs}
        dups = plan.duplicates()
        keep: list[dict[str, Any]] = []
        dropped = 0
        if resume:
            for r in read_runs(out_dir):
                if r.get("run_id") not in wanted:
                    dropped += 1
                elif r.get("run_id") in dups:
                    continue  # (a copy: made again from the run it copies)
                elif not (retry_failed and r.get("error")):
                    keep.append(r)
        recorded = {r["run_id"] for r in keep}
        todo = [s for s in runs if s.run_id not in recorded and s.run_id not in dups]
        if executor == "ray" and todo:  # before anything is written: a Ray that cannot be reached is bad input
            session = open_ray(num_cpus, address, StudyRunError)
    except BaseException:
        lock.release()
        if not existed:
            try:
                out_dir.rmdir()  # nothing written: not even the folder the lock needed
            except OSError:
                pass
        raise
    try:
        outcome = _run_locked(plan, out_dir, runs, keep, todo, dropped, resume, executor, session, progress,
                              outputs, flush_every_s, on_start, wall0, took_over)
        write_study_json(out_dir, plan, outcome, started_at, executor, address)
        return outcome
    finally:
        if session is not None:
            session.close()
        lock.release()


def _run_locked(plan: StudyPlan, out_dir: Path, runs: list[RunSpec], keep: list[dict[str, Any]],
                todo: list[RunSpec], dropped: int, resume: bool, executor: str, session: Any,
                progress: ProgressFn | None, outputs: bool, flush_every_s: float, on_start: StartFn | None,
                wall0: float, took_over: str | None) -> StudyOutcome:
    if not resume:
        clear_outputs(out_dir)
    dups = plan.duplicates()
    by_id = {s.run_id: s for s in runs}
    copies_of: dict[str, list[RunSpec]] = {}
    for dup, first in dups.items():
        copies_of.setdefault(first, []).append(by_id[dup])
    state = StudyProgress(total=len(runs), skipped=len(keep), identical=len(dups))
    for r in keep:
        state.count(r)
    store = RunStore(out_dir, plan, flush_every_s)
    store.open(keep)
    executed = 0
    interrupted = False
    cpus = 0
    eta = Eta({s.run_id: (plan.run_size(s.point, s.generation), s.generation) for s in todo})
    t_start = time.monotonic()

    def copy_to_identical(row: dict[str, Any]) -> None:
        """The runs identical to this one get its numbers, under their own run_id and grid values."""
        for spec in copies_of.get(row["run_id"], []):
            copy = {**row, "run_id": spec.run_id, **plan.point_cells(spec.point), "duplicate_of": row["run_id"]}
            store.add(copy)
            state.count(copy)
            state.copied += 1

    for r in keep:
        copy_to_identical(r)

    def finished(row: dict[str, Any]) -> None:
        nonlocal executed
        store.add(row)
        executed += 1
        state.count(row)
        copy_to_identical(row)
        eta.finished(row["run_id"], row.get("wall_s"))
        state.eta_s = eta.eta_s(time.monotonic() - t_start)
        if progress:
            progress(state, row)

    try:
        if progress:
            progress(state, None)
        if executor == "serial":
            cpus = 1
            for spec in todo:
                state.running = 1
                for attempt in range(1, ATTEMPTS + 1):
                    if on_start:
                        on_start(spec, attempt, os.getpid())
                    row = _serial_attempt(plan, spec, attempt)
                    if not row.get("error"):
                        break
                    if attempt < ATTEMPTS:
                        state.retried += 1
                finished(row)
            state.running = 0
        elif session is not None:
            cpus = _run_on_ray(session.ray, plan, todo, state, finished, progress, on_start)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        store.close()
    state.running = 0
    rows = store.ordered()
    outcome = StudyOutcome(out_dir=out_dir, total=len(runs), executed=executed, skipped=len(keep), dropped=dropped,
                           failed=sum(1 for r in rows if r.get("error")), wall_s=time.perf_counter() - wall0,
                           interrupted=interrupted, rows=rows, ray_cpus=cpus,
                           invalid=sum(1 for r in rows if not r.get("error") and not is_valid(r)),
                           retried=state.retried, took_over=took_over, identical=len(dups), copied=state.copied)
    if outputs and not interrupted:
        outcome.aggregate = aggregate(plan, rows)
        write_aggregate_csv(out_dir / AGGREGATE_FILE, plan, outcome.aggregate)
        outcome.plots = write_plots(plan, outcome.aggregate, out_dir / PLOTS_DIR)
    return outcome
