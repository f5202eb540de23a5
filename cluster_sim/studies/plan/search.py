"""Running a plan: the search as a Ray Tune experiment in DIR/tune/ (resumable with
`Tuner.restore`), the baseline (the scenario as written, same seeds) as Ray tasks beside it, the
progress, then the answer and the outputs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_sim.scenario import (
    scenario_from_dict,
)
from cluster_sim.studies.plan.answer import analyse, best_record, pareto_front
from cluster_sim.studies.plan.outputs import (
    BASELINE_FILE,
    EXPERIMENT,
    STATE_FILE,
    TUNE_DIR,
    TUNE_LOG,
    PlanOutcome,
    _read_json,
    _write_json,
    clear_outputs,
    write_outputs,
)
from cluster_sim.studies.plan.spec import PlanRunError, PlanSpec
from cluster_sim.studies.plan.trials import TRIAL_KEY, TRIAL_MAX_FAILURES, _run_one, run_seeds, summarize
from cluster_sim.studies.runs import open_ray
from cluster_sim.studies.spec import RunSpec


def _trial(config: dict[str, Any], spec: PlanSpec, parallel_seeds: bool = False) -> None:
    from ray import tune

    number = config.get(TRIAL_KEY)
    params = {a: config[a] for a in spec.domains}
    trial_id = tune.get_context().get_trial_id()
    rows = run_seeds(spec, params, f"trial-{number}", parallel=parallel_seeds)
    rec = summarize(spec, params, rows, number, trial_id)
    rec["runs"] = rows
    tune.report(_tune_result(spec, rec))


def _tune_result(spec: PlanSpec, rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"plan_record": json.dumps(rec, default=str), "feasible": bool(rec["feasible"]),
                           "plan_error": rec["error"] or ""}
    for i, v in enumerate(rec["objectives"]):
        out[f"objective_{i}"] = float("nan") if v is None else float(v)
    for i, c in enumerate(rec["constraints"]):
        out[f"violation_{i}"] = float("inf") if c["violation"] is None else float(c["violation"])
    return out


def _trial_dirname(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


@contextlib.contextmanager
def _tune_output_to(log: Path) -> Iterator[None]:
    """Tune prints its own tables and logs: send them to DIR/tune.log, keep the terminal ours."""
    names = ("ray.tune", "ray.train", "ray.air", "optuna", "py.warnings")
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in map(logging.getLogger, names)]
    with open(log, "a", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.captureWarnings(True)
        for lg, *_ in saved:
            lg.handlers = [handler]
            lg.propagate = False
            lg.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(fh):
                yield
        finally:
            logging.captureWarnings(False)
            for lg, handlers, propagate, level in saved:
                lg.handlers, lg.propagate = handlers, propagate
                lg.setLevel(level)


@dataclass
class PlanProgress:
    total: int
    done: int = 0  # trials finished (restored ones included)
    feasible: int = 0
    failed: int = 0
    best: dict[str, Any] | None = None  # the best feasible record so far (single objective)
    front: int = 0  # feasible non-dominated trials so far (two objectives)


ProgressFn = Callable[[PlanProgress], None]


def run_plan(spec: PlanSpec, out_dir: str | Path, *, resume: bool = False, address: str | None = None,
             num_cpus: int | None = None, progress: ProgressFn | None = None) -> PlanOutcome:
    """Run the plan's search on Ray Tune (or go on with the one in DIR with `resume`); write the outputs."""
    wall0 = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    state = _read_json(out_dir / STATE_FILE) if resume else None
    if state is not None and state.get("fingerprint") != spec.fingerprint:
        raise PlanRunError(f"--resume: {out_dir} holds the trials of another plan ({state.get('plan')}, or this "
                           "plan before its file or scenario changed); give another --out or leave out --resume")
    session = open_ray(num_cpus, address, PlanRunError)
    try:
        return _run_plan(spec, out_dir, session.ray, resume and state is not None, progress, wall0)
    finally:
        tuning = sys.modules.get("cluster_sim.studies.plan.searcher")
        if tuning is not None:
            tuning.LISTENERS.pop(str(out_dir), None)
        session.close()


def _run_plan(spec: PlanSpec, out_dir: Path, ray: Any, resume: bool, progress: ProgressFn | None,
              wall0: float) -> PlanOutcome:
    from ray import tune

    from cluster_sim.studies.plan import searcher

    if not resume:
        clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / STATE_FILE, {"plan": str(spec.file), "fingerprint": spec.fingerprint})
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))

    # the baseline (the scenario as written, same seeds), as Ray tasks beside the search
    baseline_rows = None
    saved = _read_json(out_dir / BASELINE_FILE) if resume else None
    if saved is not None and saved.get("fingerprint") == spec.fingerprint:
        baseline_rows = saved["runs"]
    baseline_refs = []
    if baseline_rows is None:
        scenario = scenario_from_dict(spec.base, str(spec.file))
        task = ray.remote(num_cpus=1, max_retries=TRIAL_MAX_FAILURES, retry_exceptions=False)(_run_one)
        sc_ref = ray.put(scenario)
        baseline_refs = [task.remote(RunSpec(f"baseline-s{s}", 0, s, spec.generation), sc_ref, spec.name, {})
                         for s in spec.seeds]

    # each trial holds one CPU per seed it runs at once (the trial's own and its seed tasks')
    per_trial = max(1, min(len(spec.seeds), cpus // spec.concurrency))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, spec=spec, parallel_seeds=per_trial > 1),
        tune.PlacementGroupFactory([{"CPU": 1}] * per_trial))
    exp_path = out_dir / TUNE_DIR / EXPERIMENT
    key = str(out_dir)
    live = PlanProgress(total=spec.trials)
    done_records: dict[str, dict[str, Any]] = {}

    def on_trial(result: dict[str, Any] | None, trial: Any) -> None:
        rec = _record_of(spec, result, trial)
        done_records[rec["trial_id"]] = rec
        _tally(spec, live, list(done_records.values()))
        if progress:
            progress(live)

    searcher.LISTENERS[key] = on_trial
    # Tune's default loggers (CSV, TensorBoard) off: trials log result.json only (JsonLoggerCallback)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    restored = 0
    with _tune_output_to(out_dir / TUNE_LOG):
        if resume and tune.Tuner.can_restore(str(exp_path)):
            tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
            try:  # the trials already done, for the progress display
                for r in tune.ExperimentAnalysis(str(exp_path)).trials:
                    if r.status == "TERMINATED" and r.last_result.get("plan_record"):
                        rec = _record_of(spec, r.last_result, r)
                        done_records[rec["trial_id"]] = rec
            except Exception:  # noqa: BLE001 - only the display depends on it
                pass
            restored = len(done_records)
        else:
            from ray.tune.logger import JsonLoggerCallback

            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher.make_searcher(spec), num_samples=spec.trials,
                                            time_budget_s=spec.time_s, reuse_actors=True,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out_dir / TUNE_DIR), verbose=0,
                                          callbacks=[searcher.PlanProgressCallback(key), JsonLoggerCallback()],
                                          failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES)))
        _tally(spec, live, list(done_records.values()))
        if progress:
            progress(live)
        fit0 = time.monotonic()
        grid = tuner.fit()
        fit_s = time.monotonic() - fit0

    records = []
    for r in grid:
        result = r.metrics or {}
        trial = _TrialView(trial_id=(result.get("trial_id") or (r.path or "").rsplit("trial-", 1)[-1]),
                           config=r.config or {}, error=r.error)
        if result.get("plan_record") or r.error is not None:
            records.append(_record_of(spec, result if result.get("plan_record") else None, trial))
    records.sort(key=lambda rec: (rec["trial"] if rec["trial"] is not None else 1 << 30, rec["trial_id"] or ""))

    if baseline_rows is None:
        baseline_rows = ray.get(baseline_refs)
        _write_json(out_dir / BASELINE_FILE, {"fingerprint": spec.fingerprint, "runs": baseline_rows})
    baseline = summarize(spec, {}, baseline_rows)
    baseline["runs"] = baseline_rows

    out_of_time = spec.time_s is not None and fit_s >= spec.time_s
    interrupted = len(records) < spec.trials and not out_of_time
    summary = analyse(spec, records, baseline)
    outcome = PlanOutcome(out_dir=out_dir, spec=spec, records=records, baseline=baseline, summary=summary,
                          wall_s=time.perf_counter() - wall0, interrupted=interrupted, out_of_time=out_of_time,
                          restored=restored, cpus=cpus)
    if not interrupted:
        write_outputs(outcome)
    return outcome


@dataclass
class _TrialView:
    trial_id: str
    config: dict[str, Any]
    error: Any = None


def _record_of(spec: PlanSpec, result: dict[str, Any] | None, trial: Any) -> dict[str, Any]:
    """The record a trial reported, or an error record for a trial that never reported (its worker died)."""
    if result and result.get("plan_record"):
        rec = json.loads(result["plan_record"])
        rec["trial_id"] = rec.get("trial_id") or getattr(trial, "trial_id", None)
        return rec
    config = getattr(trial, "config", {}) or {}
    params = {a: config.get(a) for a in spec.domains}
    err = getattr(trial, "error", None) or getattr(trial, "error_file", None) or "the trial did not report"
    rows = [{"seed": s, "error": f"trial failed: {str(err)[:500]}"} for s in spec.seeds]
    rec = summarize(spec, params, rows, config.get(TRIAL_KEY), getattr(trial, "trial_id", None))
    rec["runs"] = []
    return rec


def _tally(spec: PlanSpec, live: PlanProgress, records: list[dict[str, Any]]) -> None:
    live.done = len(records)
    live.feasible = sum(1 for r in records if r["feasible"])
    live.failed = sum(1 for r in records if r["error"])
    live.best = best_record(spec, records)
    live.front = len(pareto_front(spec, records)) if spec.pareto else int(live.best is not None)
