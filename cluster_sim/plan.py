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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster_sim.scenario import (
    Generation,
    Scenario,
    ScenarioError,
    _problems_from_validation,
    apply_overrides,
    scenario_from_dict,
)
from cluster_sim.sweep import (
    METRIC_KINDS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    RunSpec,
    StudyError,
    _axis_kind,
    _canonical,
    _cell,
    check_points,
    execute_run,
    load_base_scenario,
    open_ray,
    parse_seeds,
    read_mapping_file,
    unknown_metric_reason,
    write_parquet,
)

PLAN_JSON = "plan.json"
STATE_FILE = "plan-state.json"
BASELINE_FILE = "baseline.json"
TRIALS_FILE = "trials.parquet"
RUNS_FILE = "runs.parquet"
BEST_FILE = "best.yaml"
FRONT_DIR = "front"
PARETO_PNG = "pareto.png"
REPORT_HTML = "report.html"
TUNE_DIR = "tune"
EXPERIMENT = "search"
TUNE_LOG = "tune.log"
OUTPUTS = (PLAN_JSON, STATE_FILE, BASELINE_FILE, TRIALS_FILE, RUNS_FILE, BEST_FILE, PARETO_PNG, REPORT_HTML,
           TUNE_LOG)

TRIAL_KEY = "plan_trial"  # the Optuna trial number, added to each trial's config
TPE_STARTUP_TRIALS = 10  # [P] Optuna's default: random trials before TPE models the space
NSGA_POPULATION_MIN = 4  # [P] NSGA-II population: a fifth of the budget, within these bounds,
NSGA_POPULATION_MAX = 50  # so that a small budget still sees several generations (Optuna's default is 50)
TRIAL_MAX_FAILURES = 3  # Tune restarts a trial whose worker or node died this many times
TOP_TRIALS = 15  # trials listed in plan.json / the report
# Search paths a plan sets some other way.
RESERVED_PATHS = {
    "seed": "seeds are the plan's own field: use `seeds:`",
    "name": "the scenario name is not a setting",
    "backup.generations": "the generation is the plan's own field: use `generations:`",
}
OPS = ("<=", ">=", "==", "<", ">")


class PlanError(StudyError):
    """A plan that cannot run: names the plan file, the field path, the value and the reason."""


class PlanRunError(Exception):
    """The plan is fine but cannot start (Ray unreachable, DIR holds another plan's trials)."""


# ----------------------------------------------------------------------------------------------
# the plan file
# ----------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=False)


class _RangeDomain(_Strict):
    """{int: [lo, hi]} or {float: [lo, hi]}, optionally on a log scale."""

    _kind = ""
    _log_low_rule = ""  # what a log scale needs of the lower bound
    bounds: list  # (typed by the subclasses)
    log: bool = False

    @staticmethod
    def _log_ok(low: float) -> bool:
        return low > 0

    @model_validator(mode="after")
    def _ordered(self) -> _RangeDomain:
        lo, hi = self.bounds
        shown = f"{self._kind}: [{lo:g}, {hi:g}]"
        if lo >= hi:
            raise ValueError(f"{shown}: the lower bound must be below the upper bound "
                             "(a single value is a fixed setting: put it under `overrides:`)")
        if self.log and not self._log_ok(lo):
            raise ValueError(f"{shown}: a log scale needs a lower bound {self._log_low_rule}")
        return self


class _IntDomain(_RangeDomain):
    _kind, _log_low_rule = "int", "of at least 1"
    bounds: Annotated[list[int], Field(alias="int", min_length=2, max_length=2)]

    @staticmethod
    def _log_ok(low: float) -> bool:
        return low >= 1


class _FloatDomain(_RangeDomain):
    _kind, _log_low_rule = "float", "above 0"
    bounds: Annotated[list[float], Field(alias="float", min_length=2, max_length=2)]


class _ChoiceDomain(_Strict):
    choice: Annotated[list[Any], Field(min_length=1)]

    @model_validator(mode="after")
    def _scalars(self) -> _ChoiceDomain:
        for i, v in enumerate(self.choice):
            if not (v is None or isinstance(v, bool | int | str) or (isinstance(v, float) and math.isfinite(v))):
                raise ValueError(f"choice[{i}]: {_canonical(v)} is not a number, a string or a boolean")
        canon = [_canonical(v) for v in self.choice]
        if len(set(canon)) != len(canon):
            dup = sorted({c for c in canon if canon.count(c) > 1})
            raise ValueError(f"choice: value listed twice: {', '.join(dup)}")
        return self


_DOMAIN_MODELS: dict[str, type[_Strict]] = {"int": _IntDomain, "float": _FloatDomain, "choice": _ChoiceDomain}
DOMAIN_HELP = "a domain is {int: [lo, hi]}, {float: [lo, hi]} (either with log: true) or {choice: [a, b, ...]}"


@dataclass(frozen=True)
class Domain:
    """One searched setting: `kind` int (bounds inclusive), float, or choice."""

    path: str
    kind: Literal["int", "float", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        import optuna

        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def probe_values(self) -> list[Any]:
        """Values checked against the scenario before anything runs: the bounds, or every choice."""
        return [self.low, self.high] if self.kind != "choice" else list(self.choices)

    @property
    def cell_kind(self) -> str:
        return self.kind if self.kind != "choice" else _axis_kind(list(self.choices))

    def short(self) -> str:
        if self.kind == "choice":
            return "|".join(_canonical(c).strip('"') for c in self.choices)
        return f"{self.low:g}..{self.high:g}" + (" log" if self.log else "")

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(_canonical(c) for c in self.choices)
        return f"{self.kind} {self.low:g} .. {self.high:g}" + (" (log scale)" if self.log else "")


@dataclass(frozen=True)
class Constraint:
    """`metric op limit`, met by a trial when every seed meets it."""

    text: str
    metric: str
    op: str
    limit: float

    def met(self, value: float) -> bool:
        return {"<=": value <= self.limit, "<": value < self.limit, ">=": value >= self.limit,
                ">": value > self.limit, "==": value == self.limit}[self.op]

    @property
    def scale(self) -> float:
        return abs(self.limit) if self.limit != 0 else 1.0

    def slack(self, value: float) -> float:
        """How far inside the limit, as a fraction of it (negative: outside; 0 for a met equality)."""
        if self.op in ("<=", "<"):
            return (self.limit - value) / self.scale
        if self.op in (">=", ">"):
            return (value - self.limit) / self.scale
        return -abs(value - self.limit) / self.scale

    def violation(self, value: float) -> float:
        """For Optuna's constrained samplers: <= 0 when met, > 0 (growing with the excess) when not."""
        v = -self.slack(value)
        if not self.met(value):
            return max(v, 1e-9)  # a strict limit reached exactly is violated, by a hair
        return min(v, 0.0)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Literal["minimize", "maximize"]

    def key(self, value: float) -> float:
        """Smaller is better."""
        return value if self.direction == "minimize" else -value


class _Budget(_Strict):
    trials: Annotated[int, Field(ge=1, le=100_000)]
    time_s: Annotated[float, Field(gt=0)] | None = None


class PlanFile(_Strict):
    plan: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")] | None = None
    description: str | None = None
    scenario: Annotated[str, Field(min_length=1)]
    overrides: dict[str, Any] = Field(default_factory=dict)
    generations: Annotated[list[Generation], Field(min_length=1)] | None = None
    search: Annotated[dict[str, Any], Field(min_length=1)]
    objective: Any
    constraints: list[str] = Field(default_factory=list)
    seeds: Any = 1  # int N >= 1 or a list of distinct seeds; checked by load_plan
    budget: _Budget
    sampler_seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1


@dataclass
class PlanSpec:
    """A checked plan; picklable (it travels to the trials)."""

    file: Path
    name: str
    scenario_file: Path
    base: dict[str, Any]  # the scenario's data with the plan's fixed overrides
    fixed_overrides: dict[str, Any]
    generation: str
    domains: dict[str, Domain]
    objectives: list[Objective]
    constraints: list[Constraint]
    seeds: list[int]
    trials: int
    time_s: float | None
    sampler_seed: int
    concurrency: int
    fingerprint: str
    description: str | None = None

    @property
    def pareto(self) -> bool:
        return len(self.objectives) == 2

    def scenario_for(self, params: dict[str, Any]) -> Scenario:
        data = apply_overrides(self.base, list(params.items()), str(self.file))
        return scenario_from_dict(data, str(self.file))

    def baseline_values(self) -> dict[str, Any]:
        """Each searched setting's value in the scenario as written (None where it has no value)."""
        sc = scenario_from_dict(self.base, str(self.file)).model_dump(mode="json")
        out = {}
        for path in self.domains:
            v: Any = sc
            for part in path.split("."):
                if isinstance(v, list) and part.isdigit() and int(part) < len(v):
                    v = v[int(part)]
                elif isinstance(v, dict):
                    v = v.get(part)
                else:
                    v = None
            out[path] = v
        return out

    def constraint_metrics(self) -> list[str]:
        return list(dict.fromkeys(c.metric for c in self.constraints))


_CONSTRAINT_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<limit>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_constraint(text: str) -> Constraint:
    """`metric <op> number` (op one of <=, <, >=, >, ==), strictly: no expressions, no eval."""
    m = _CONSTRAINT_RE.match(text)
    if not m:
        hint = ""
        ops = re.findall(r"[<>=!]+", text)
        if not ops:
            hint = ": no comparison found"
        elif any(o not in OPS for o in ops) or len(ops) > 1:
            bad = next((o for o in ops if o not in OPS), ops[-1])
            hint = f": {bad!r} is not a comparison here (use one of {', '.join(OPS)}, once)"
        else:
            left, right = text.split(ops[0], 1)
            if not re.fullmatch(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*", right):
                hint = f": the limit {right.strip()!r} is not a number"
            elif not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*", left):
                hint = f": {left.strip()!r} is not a metric name"
        raise ValueError(f"{text!r} is not `metric <op> number` with <op> one of {', '.join(OPS)}{hint}")
    metric, op, limit = m.group("metric"), m.group("op"), float(m.group("limit"))
    if metric not in METRIC_KINDS:
        raise ValueError(f"{text!r}: {unknown_metric_reason(metric)}")
    return Constraint(text=" ".join(text.split()), metric=metric, op=op, limit=limit)


def _parse_objective(raw: Any) -> tuple[list[Objective], list[tuple[str, str]]]:
    usage = ("expected {minimize: METRIC} or {maximize: METRIC}, or a list of two of them for a Pareto front; "
             f"got {_canonical(raw)}")
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not 1 <= len(raw) <= 2:
        return [], [("objective", f"a list of {len(raw)}: give one objective, or two for a Pareto front")]
    objectives: list[Objective] = []
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = f"objective[{i}]" if isinstance(raw, list) else "objective"
        if not (isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("minimize", "maximize")):
            problems.append((where, usage))
            continue
        direction, metric = next(iter(item.items()))
        if not isinstance(metric, str):
            problems.append((f"{where}.{direction}", f"{_canonical(metric)} is not a metric name"))
        elif metric not in METRIC_KINDS:
            problems.append((f"{where}.{direction}", unknown_metric_reason(metric)))
        elif METRIC_KINDS[metric] == "bool":
            problems.append((f"{where}.{direction}", f"{metric!r} is a yes/no value, not something to "
                                                     "minimise or maximise (make it a constraint)"))
        elif any(o.metric == metric for o in objectives):
            problems.append((f"{where}.{direction}", f"{metric!r} is already objective[0]"))
        else:
            objectives.append(Objective(metric, direction))
    return objectives, problems


def _parse_domain(path: str, raw: Any) -> tuple[Domain | None, list[tuple[str, str]]]:
    where = f"search.{path}"
    if not isinstance(raw, dict):
        return None, [(where, f"{_canonical(raw)}: {DOMAIN_HELP}")]
    kinds = [k for k in raw if k in _DOMAIN_MODELS]
    if len(kinds) != 1:
        what = "none of int, float, choice" if not kinds else f"both {' and '.join(kinds)}"
        return None, [(where, f"{_canonical(raw)} has {what}: {DOMAIN_HELP}")]
    kind = kinds[0]
    try:
        model = _DOMAIN_MODELS[kind].model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            loc = [p for p in e.get("loc", ()) if not str(p).startswith("function-")]
            # (scenario._loc_to_path would drop "int" and "float": pydantic names union members so)
            p = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
            value = _value_at(raw, p)
            r = e.get("msg", "invalid").removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                r = f"unknown field; {DOMAIN_HELP}"
            if not p and ": " in r:  # the model's own checks name their field: "int: [6, 1]: reason"
                p, r = r.split(": ", 1)
                value = _MISSING
            shown = f"{_canonical(value)}: " if value is not _MISSING else ""
            problems.append((f"{where}.{p}" if p else where, f"{shown}{r}"))
        return None, problems
    if isinstance(model, _ChoiceDomain):
        return Domain(path, "choice", choices=tuple(model.choice)), []
    lo, hi = model.bounds  # type: ignore[attr-defined]
    return Domain(path, kind, lo, hi, model.log), []  # type: ignore[arg-type, attr-defined]


def load_plan(path: str | Path) -> PlanSpec:
    """Read and check a plan file; raise `PlanError` (file, field path, value, reason) if it cannot run."""
    path = Path(path)
    fname = str(path)
    raw = read_mapping_file(path, "a plan is a YAML mapping (scenario, search, objective, constraints, seeds, "
                                  "budget, ...)", PlanError)
    try:
        pf = PlanFile.model_validate(raw)
    except ValidationError as err:
        problems = []
        for p, r in _problems_from_validation(err, PlanFile, quote_values=False):
            if r.startswith("unknown field"):
                r += "; a plan has: " + ", ".join(PlanFile.model_fields)
            else:
                value = _value_at(raw, p)
                if value is not _MISSING:
                    r = f"{_canonical(value)}: {r}"
            problems.append((p, r))
        raise PlanError(fname, problems) from None

    problems: list[tuple[str, str]] = []
    domains: dict[str, Domain] = {}
    for axis, spec in pf.search.items():
        parts = axis.split(".")
        if not axis or any(not p.strip() for p in parts):
            problems.append((f"search.{axis}", "not a dotted field path (e.g. backup.vms_per_snapshot)"))
            continue
        if axis in RESERVED_PATHS:
            problems.append((f"search.{axis}", RESERVED_PATHS[axis]))
            continue
        if axis in pf.overrides:
            problems.append((f"search.{axis}", "also fixed under `overrides:`; a setting is searched or fixed"))
            continue
        dom, found = _parse_domain(axis, spec)
        problems += found
        if dom is not None:
            domains[axis] = dom
    objectives, found = _parse_objective(pf.objective)
    problems += found
    constraints: list[Constraint] = []
    for i, text in enumerate(pf.constraints):
        try:
            constraints.append(parse_constraint(text))
        except ValueError as exc:
            problems.append((f"constraints[{i}]", str(exc)))
    texts = [c.text for c in constraints]
    if len(set(texts)) != len(texts):
        problems.append(("constraints", "a constraint is listed twice"))
    if pf.generations and len(set(pf.generations)) != len(pf.generations):
        problems.append(("generations", "a generation is listed twice"))
    if problems:
        raise PlanError(fname, problems)

    scenario_file, base, base_sc = load_base_scenario(path, pf.scenario, pf.overrides,
                                                      "a plan tunes a backup's settings", PlanError)
    gens = list(pf.generations or base_sc.backup.generations)  # type: ignore[union-attr]
    if len(gens) != 1:
        where = "generations" if pf.generations else "scenario"
        raise PlanError(fname, [(where, f"{_canonical(gens)}: a plan tunes one generation's settings; give "
                                        "`generations: [one]` (one plan per generation compares them)")])
    seeds = parse_seeds(pf.seeds, base_sc.seed, fname, PlanError)

    # every bound and choice, alone and together, through the scenario machinery
    points = [{axis: v} for axis, d in domains.items() for v in d.probe_values()]
    if len(domains) > 1:
        for pick in (0, -1):
            points.append({a: d.probe_values()[pick] for a, d in domains.items()})
    _, found = check_points(base, points, fname, prefix="search")
    for where, why in found:  # one problem per setting is enough (both bounds often fail alike)
        if where not in {p for p, _ in problems}:
            problems.append((where, why))
    if problems:
        raise PlanError(fname, problems)

    content = {"base": base, "generation": gens[0], "search": {a: d.__dict__ for a, d in domains.items()},
               "objectives": [o.__dict__ for o in objectives], "constraints": texts, "seeds": seeds,
               "budget": pf.budget.model_dump(), "sampler_seed": pf.sampler_seed, "concurrency": pf.concurrency}
    fingerprint = hashlib.sha256(_canonical(content).encode()).hexdigest()[:16]
    return PlanSpec(
        file=path, name=pf.plan or path.stem, scenario_file=scenario_file, base=base,
        fixed_overrides=dict(pf.overrides), generation=gens[0], domains=domains, objectives=objectives,
        constraints=constraints, seeds=seeds, trials=pf.budget.trials, time_s=pf.budget.time_s,
        sampler_seed=pf.sampler_seed, concurrency=pf.concurrency, fingerprint=fingerprint,
        description=pf.description,
    )


_MISSING = object()


def _value_at(raw: Any, path: str) -> Any:
    """The value a validation error's path points at in the raw file (for the message)."""
    if not path:
        return _MISSING
    v = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(v, list) or idx >= len(v):
                return _MISSING
            v = v[idx]
        elif isinstance(v, dict) and part in v:
            v = v[part]
        else:
            return _MISSING
    return v


# ----------------------------------------------------------------------------------------------
# one trial: every seed, then the numbers Optuna and the outputs need
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Ray Tune: the trainable, the searcher, the progress callback
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# running a plan
# ----------------------------------------------------------------------------------------------
@dataclass
class PlanProgress:
    total: int
    done: int = 0  # trials finished (restored ones included)
    feasible: int = 0
    failed: int = 0
    best: dict[str, Any] | None = None  # the best feasible record so far (single objective)
    front: int = 0  # feasible non-dominated trials so far (two objectives)


ProgressFn = Callable[[PlanProgress], None]


@dataclass
class PlanOutcome:
    out_dir: Path
    spec: PlanSpec
    records: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    summary: dict[str, Any]
    wall_s: float
    interrupted: bool = False
    out_of_time: bool = False
    restored: int = 0  # trials found done in DIR (--resume)
    cpus: int = 0


def clear_outputs(out_dir: Path) -> None:
    """Remove what a previous plan wrote into DIR (only our files)."""
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for folder in (TUNE_DIR, FRONT_DIR):
        if (out_dir / folder).is_dir():
            shutil.rmtree(out_dir / folder)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
        tuning = sys.modules.get("cluster_sim.plan_tune")
        if tuning is not None:
            tuning.LISTENERS.pop(str(out_dir), None)
        session.close()


def _run_plan(spec: PlanSpec, out_dir: Path, ray: Any, resume: bool, progress: ProgressFn | None,
              wall0: float) -> PlanOutcome:
    from ray import tune

    from cluster_sim import plan_tune

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

    plan_tune.LISTENERS[key] = on_trial
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
                tune_config=tune.TuneConfig(search_alg=plan_tune.make_searcher(spec), num_samples=spec.trials,
                                            time_budget_s=spec.time_s, reuse_actors=True,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out_dir / TUNE_DIR), verbose=0,
                                          callbacks=[plan_tune.PlanProgressCallback(key), JsonLoggerCallback()],
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


# ----------------------------------------------------------------------------------------------
# the answer: best trial, Pareto front, binding constraint, what made a plan infeasible
# ----------------------------------------------------------------------------------------------
def dominates(a: list[float], b: list[float]) -> bool:
    """a is no worse than b everywhere and better somewhere (keys: smaller is better)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(spec: PlanSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feasible trials no other feasible trial dominates (first of equal points only), by first objective."""
    feasible = [r for r in records if r["feasible"]]
    keys = {id(r): [o.key(v) for o, v in zip(spec.objectives, r["objectives"], strict=True)] for r in feasible}
    front, seen = [], set()
    for r in feasible:
        k = keys[id(r)]
        if any(dominates(keys[id(q)], k) for q in feasible) or tuple(k) in seen:
            continue
        seen.add(tuple(k))
        front.append(r)
    return sorted(front, key=lambda r: keys[id(r)])


def best_record(spec: PlanSpec, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best feasible trial: lowest objective key; with two objectives, the front's best on the first."""
    feasible = [r for r in records if r["feasible"]]
    if not feasible:
        return None
    return min(feasible, key=lambda r: ([o.key(v) for o, v in zip(spec.objectives, r["objectives"], strict=True)],
                                        r["trial"] if r["trial"] is not None else 0))


def binding_constraint(spec: PlanSpec, rec: dict[str, Any],
                       records: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The constraint closest to its limit at `rec` (smallest slack at the worst seed) among those the
    settings move: a constraint whose value was the same in every trial (e.g. failures no setting can
    avoid) and an equality (always exactly at its limit) say nothing about the choice, so they are
    named only when no other constraint is left."""
    if not spec.constraints:
        return None
    ran = [r for r in records or [] if not r["error"]]
    moved = {i for i in range(len(spec.constraints))
             if len({r["constraints"][i]["worst"] for r in ran}) > 1}
    cands = [(i, c, v) for i, (c, v) in enumerate(zip(spec.constraints, rec["constraints"], strict=True))
             if v["slack"] is not None]
    pool = ([x for x in cands if x[1].op != "==" and x[0] in moved] or [x for x in cands if x[1].op != "=="]
            or cands)
    if not pool:
        return None
    i, c, v = min(pool, key=lambda x: x[2]["slack"])
    return {"text": c.text, "metric": c.metric, "op": c.op, "limit": c.limit, "worst": v["worst"],
            "slack": v["slack"], "moved_by_settings": i in moved}


def diagnose_infeasible(spec: PlanSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Why no trial was feasible: the constraints no trial met, or the one met least often."""
    ran = [r for r in records if not r["error"]]
    counts = [sum(1 for r in ran if r["constraints"][i]["met"]) for i in range(len(spec.constraints))]
    never = [c.text for c, n in zip(spec.constraints, counts, strict=True) if n == 0]
    out: dict[str, Any] = {"trials_run": len(ran), "trials_failed": len(records) - len(ran),
                           "met_counts": dict(zip([c.text for c in spec.constraints], counts, strict=True)),
                           "never_met": never, "least_met": None}
    if spec.constraints and not never and ran:
        i = min(range(len(counts)), key=lambda k: counts[k])
        out["least_met"] = {"text": spec.constraints[i].text, "met": counts[i], "of": len(ran)}
    # how close the trials came to each never-met constraint: the best worst-seed value
    closest = {}
    for i, c in enumerate(spec.constraints):
        if c.text in never:
            vals = [r["constraints"][i] for r in ran if r["constraints"][i]["slack"] is not None]
            if vals:
                closest[c.text] = max(vals, key=lambda v: v["slack"])["worst"]
    out["closest"] = closest
    return out


def _comparison(spec: PlanSpec, baseline: dict[str, Any] | None, best: dict[str, Any] | None) -> list[dict]:
    """Rows of the baseline-vs-best table: settings, then objectives, then constraint metrics."""
    rows: list[dict[str, Any]] = []
    base_vals = spec.baseline_values()
    for path, d in spec.domains.items():
        rows.append({"kind": "setting", "name": path, "baseline": base_vals.get(path),
                     "best": best["params"].get(path) if best else None, "domain": d.describe(),
                     "short": d.short()})
    metrics = [(o.metric, f"objective: {o.direction}") for o in spec.objectives]
    metrics += [(m, "") for m in spec.constraint_metrics() if m not in {o.metric for o in spec.objectives}]
    for m, role in metrics:
        row: dict[str, Any] = {"kind": "objective" if role else "metric", "name": m, "role": role,
                               "baseline": baseline["metrics"].get(m) if baseline else None,
                               "best": best["metrics"].get(m) if best else None, "constraints": []}
        for i, c in enumerate(spec.constraints):
            if c.metric == m:
                row["constraints"].append({
                    "text": c.text, "limit": f"{c.op} {_fmt(c.limit)}", "op": c.op, "value": c.limit,
                    "baseline_met": baseline["constraints"][i]["met"] if baseline else None,
                    "best_met": best["constraints"][i]["met"] if best else None})
        b, x = row["baseline"], row["best"]
        row["change"] = None if b is None or x is None else x - b
        row["change_pct"] = None if b in (None, 0) or x is None else (x - b) / abs(b) * 100
        rows.append(row)
    return rows


def analyse(spec: PlanSpec, records: list[dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the terminal summary and the HTML report show (written as plan.json)."""
    best = best_record(spec, records)
    front = pareto_front(spec, records) if spec.pareto else ([best] if best else [])
    feasible = [r for r in records if r["feasible"]]
    summary: dict[str, Any] = {
        "plan": spec.name, "file": str(spec.file), "description": spec.description,
        "scenario": str(spec.scenario_file), "scenario_name": spec.base.get("name"),
        "generation": spec.generation, "seeds": spec.seeds, "fingerprint": spec.fingerprint,
        "search": {a: d.describe() for a, d in spec.domains.items()},
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in spec.objectives],
        "constraints": [c.text for c in spec.constraints],
        "budget": {"trials": spec.trials, "time_s": spec.time_s},
        "sampler": ("NSGA-II" if spec.pareto else "TPE") + f" (Optuna, seed {spec.sampler_seed})",
        "concurrency": spec.concurrency,
        "trials": len(records), "feasible": len(feasible), "failed": sum(1 for r in records if r["error"]),
        "runs": len(records) * len(spec.seeds),
        "baseline": _slim(baseline), "best": _slim(best), "front": [_slim(r) for r in front],
        "binding": binding_constraint(spec, best, records) if best else None,
        "infeasible": None if best else diagnose_infeasible(spec, records),
        "comparison": _comparison(spec, baseline, best),
    }
    if best and baseline and not baseline["error"]:
        imp = []
        for o, b, x in zip(spec.objectives, baseline["objectives"], best["objectives"], strict=True):
            if b is None or x is None:
                imp.append(None)
                continue
            gain = (b - x) if o.direction == "minimize" else (x - b)
            imp.append({"metric": o.metric, "baseline": b, "best": x, "gain": gain,
                        "gain_pct": gain / abs(b) * 100 if b else None})
        summary["improvement"] = imp
    else:
        summary["improvement"] = None
    ranked = sorted(records, key=lambda r: (not r["feasible"], bool(r["error"]),
                                            [o.key(v) if v is not None else math.inf
                                             for o, v in zip(spec.objectives, r["objectives"], strict=True)]))
    summary["top_trials"] = [_slim(r) for r in ranked[:TOP_TRIALS]]
    summary["answer"] = summary_lines(summary)
    return summary


def _slim(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without its per-seed runs and without the metrics nobody asked for."""
    if rec is None:
        return None
    return {k: v for k, v in rec.items() if k not in ("runs", "metrics", "spread")} | {
        "metrics": {k: v for k, v in rec["metrics"].items() if v is not None}}


# ----------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------
def trial_columns(spec: PlanSpec) -> list[tuple[str, str]]:
    cols = [("trial", "int"), ("trial_id", "str"), ("feasible", "bool"), ("best", "bool"), ("on_front", "bool"),
            ("error", "str")]
    cols += [(a, d.cell_kind) for a, d in spec.domains.items()]
    for c in spec.constraints:
        cols += [(f"met: {c.text}", "bool"), (f"worst: {c.text}", "float")]
    cols += [("seeds", "int"), ("wall_s", "float"), ("nodes", "json"), ("workers", "json")]
    for m in METRIC_KINDS:
        if m != "wall_s":
            cols += [(m, "float"), (f"{m}.min", "float"), (f"{m}.max", "float")]
    return cols


def trial_row(spec: PlanSpec, rec: dict[str, Any], best_id: Any, front_ids: set) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": rec["trial"], "trial_id": rec["trial_id"], "feasible": rec["feasible"],
                           "best": rec["trial_id"] == best_id, "on_front": rec["trial_id"] in front_ids,
                           "error": rec["error"], "seeds": len(rec["seeds"]), "wall_s": rec["wall_s"],
                           "nodes": rec["nodes"], "workers": rec["workers"]}
    row.update({a: rec["params"].get(a) for a in spec.domains})
    for c, v in zip(spec.constraints, rec["constraints"], strict=True):
        row[f"met: {c.text}"] = v["met"]
        row[f"worst: {c.text}"] = v["worst"]
    for m in METRIC_KINDS:
        row[m] = rec["metrics"].get(m)
        lo, hi = rec["spread"].get(m, [None, None])
        row[f"{m}.min"], row[f"{m}.max"] = lo, hi
    return row


def run_columns(spec: PlanSpec) -> list[tuple[str, str]]:
    return ([("role", "str"), ("trial", "int"), ("run_id", "str")]
            + [(a, d.cell_kind) for a, d in spec.domains.items()]
            + [("seed", "int"), ("generation", "str")] + RUN_COLUMNS + [("worker", "str")] + SUMMARY_COLUMNS)


def best_overrides(spec: PlanSpec, rec: dict[str, Any]) -> dict[str, Any]:
    """The overrides that turn the scenario file into the trial's scenario (for `run --overrides`)."""
    out = dict(spec.fixed_overrides)
    out["backup.generations"] = [spec.generation]
    out.update(rec["params"])
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_override_file(path: Path, spec: PlanSpec, rec: dict[str, Any], what: str) -> None:
    import yaml

    rel = os.path.relpath(spec.scenario_file.absolute(), path.parent.absolute())
    objs = ", ".join(f"{o.metric} {_fmt(v)}" for o, v in zip(spec.objectives, rec["objectives"], strict=True))
    lines = [f"# cluster-sim plan {spec.name}: {what} (trial {rec['trial']})",
             f"# {objs} (mean over seeds {', '.join(map(str, spec.seeds))}; {spec.generation})"]
    for v in rec["constraints"]:
        lines.append(f"#   {v['text']}: {_fmt(v['worst'])} at the worst seed")
    lines.append(f"# apply: cluster-sim run {rel} --overrides {path.name} --seed {spec.seeds[0]}")
    body = yaml.safe_dump(best_overrides(spec, rec), sort_keys=False, default_flow_style=None)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(outcome: PlanOutcome) -> None:
    spec, out_dir, records, summary = outcome.spec, outcome.out_dir, outcome.records, outcome.summary
    best = summary["best"]
    best_id = best["trial_id"] if best else None
    front_ids = {r["trial_id"] for r in summary["front"]}
    write_parquet(out_dir / TRIALS_FILE, [trial_row(spec, r, best_id, front_ids) for r in records],
                  trial_columns(spec))
    runs = []
    for role, recs in (("baseline", [outcome.baseline] if outcome.baseline else []), ("trial", records)):
        for rec in recs:
            for row in rec.get("runs") or []:
                runs.append({**row, "role": role, "trial": rec["trial"]})
    write_parquet(out_dir / RUNS_FILE, runs, run_columns(spec))
    (out_dir / BEST_FILE).unlink(missing_ok=True)
    if (out_dir / FRONT_DIR).is_dir():
        shutil.rmtree(out_dir / FRONT_DIR)
    by_id = {r["trial_id"]: r for r in records}
    if best_id is not None:
        write_override_file(out_dir / BEST_FILE, spec, by_id[best_id],
                            "the best feasible trial" + (" on the first objective" if spec.pareto else ""))
    if spec.pareto and front_ids:
        (out_dir / FRONT_DIR).mkdir()
        for r in summary["front"]:
            write_override_file(out_dir / FRONT_DIR / f"trial-{r['trial']}.yaml", spec, by_id[r["trial_id"]],
                                "a trial on the Pareto front")
    summary["outputs"] = {"trials": TRIALS_FILE, "runs": RUNS_FILE, "best": BEST_FILE if best_id else None,
                          "front": sorted(p.name for p in (out_dir / FRONT_DIR).glob("*.yaml"))
                          if spec.pareto else [], "plot": PARETO_PNG}
    summary["wall_s"] = outcome.wall_s
    write_plot(spec, records, summary, out_dir / PARETO_PNG)
    _write_json(out_dir / PLAN_JSON, summary)


def _tally(spec: PlanSpec, live: PlanProgress, records: list[dict[str, Any]]) -> None:
    live.done = len(records)
    live.feasible = sum(1 for r in records if r["feasible"])
    live.failed = sum(1 for r in records if r["error"])
    live.best = best_record(spec, records)
    live.front = len(pareto_front(spec, records)) if spec.pareto else int(live.best is not None)


def write_plot(spec: PlanSpec, records: list[dict[str, Any]], summary: dict[str, Any], target: Path) -> Path:
    """Two objectives: every trial in objective space (feasible, infeasible), the front, the baseline.
    One objective: the objective of each trial in order, with the best feasible so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    ok = [r for r in records if r["feasible"]]
    bad = [r for r in records if not r["feasible"] and not r["error"]]
    base = summary.get("baseline")
    if spec.pareto:
        def xy(rs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
            return [r["objectives"][0] for r in rs], [r["objectives"][1] for r in rs]

        ax.scatter(*xy(bad), marker="x", color="0.6", label=f"infeasible ({len(bad)})")
        ax.scatter(*xy(ok), color="C0", label=f"feasible ({len(ok)})")
        front = summary["front"]
        if front:
            fx, fy = xy(front)
            ax.plot(fx, fy, color="C3", marker="o", drawstyle="steps-post" if len(front) > 1 else "default",
                    label=f"Pareto front ({len(front)})")
        if base and base["objectives"][0] is not None:
            ax.scatter([base["objectives"][0]], [base["objectives"][1]], marker="*", s=220, color="C1",
                       edgecolor="k", zorder=5, label="baseline (scenario as written)")
        ax.set_xlabel(f"{spec.objectives[0].metric} ({spec.objectives[0].direction})")
        ax.set_ylabel(f"{spec.objectives[1].metric} ({spec.objectives[1].direction})")
    else:
        o = spec.objectives[0]
        ax.scatter([r["trial"] for r in bad], [r["objectives"][0] for r in bad], marker="x", color="0.6",
                   label=f"infeasible ({len(bad)})")
        ax.scatter([r["trial"] for r in ok], [r["objectives"][0] for r in ok], color="C0",
                   label=f"feasible ({len(ok)})")
        xs, ys, cur = [], [], None
        for r in sorted(records, key=lambda r: r["trial"] if r["trial"] is not None else 0):
            if r["feasible"] and (cur is None or o.key(r["objectives"][0]) < o.key(cur)):
                cur = r["objectives"][0]
            if cur is not None:
                xs.append(r["trial"])
                ys.append(cur)
        if xs:
            ax.plot(xs, ys, color="C3", drawstyle="steps-post", label="best feasible so far")
        if base and base["objectives"][0] is not None:
            ax.axhline(base["objectives"][0], color="C1", linestyle="--", label="baseline (scenario as written)")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{o.metric} ({o.direction}, mean over {len(spec.seeds)} seeds)")
    failed = sum(1 for r in records if r["error"])
    title = f"{spec.name}: {len(records)} trials of {spec.generation}"
    if failed:
        title += f", {failed} failed (not shown)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = target.with_name(target.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, target)
    return target


# ----------------------------------------------------------------------------------------------
# the terminal summary, as lines (the CLI prints them with rich)
# ----------------------------------------------------------------------------------------------
def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The answer in words: improvement, binding constraint, or why nothing was feasible."""
    lines = []
    best, base = summary["best"], summary["baseline"]
    if best is None:
        inf = summary["infeasible"] or {}
        lines.append(f"no feasible trial in {summary['trials']} trials ({summary['runs']} runs).")
        if inf.get("never_met"):
            for text in inf["never_met"]:
                closest = inf.get("closest", {}).get(text)
                near = f"; closest a trial came: {_fmt(closest)} at its worst seed" if closest is not None else ""
                lines.append(f"no trial met the constraint {text}{near}")
        elif inf.get("least_met"):
            lm = inf["least_met"]
            lines.append(f"every constraint was met by some trial, never all at once; the one met least often: "
                         f"{lm['text']} ({lm['met']} of {lm['of']} trials)")
        if inf.get("trials_failed"):
            lines.append(f"{inf['trials_failed']} trials failed to run (see trials.parquet, column error)")
        return lines
    for imp in summary.get("improvement") or []:
        if imp is None:
            continue
        if imp["gain"] == 0:
            lines.append(f"{imp['metric']}: {_fmt(imp['best'])}, the same as the scenario as written")
            continue
        word = "better" if imp["gain"] > 0 else "worse"
        pct = f"{abs(imp['gain_pct']):.1f} % " if imp["gain_pct"] is not None else ""
        diff = "less" if imp["best"] < imp["baseline"] else "more"
        lines.append(f"{imp['metric']}: {_fmt(imp['baseline'])} -> {_fmt(imp['best'])}: {pct}{word} than the "
                     f"scenario as written ({_fmt(abs(imp['best'] - imp['baseline']))} {diff})")
    if base and not base["feasible"] and not base["error"]:
        missed = [v["text"] for v in base["constraints"] if not v["met"]]
        lines.append("the scenario as written does not meet: " + ", ".join(missed))
    b = summary.get("binding")
    if b:
        where = ("exactly at its limit" if b["op"] == "==" else
                 f"{abs(b['slack']) * 100:.1f} % {'inside' if b['slack'] >= 0 else 'outside'} its limit")
        lines.append(f"binding constraint: {b['text']} ({_fmt(b['worst'])} at the worst seed, {where})")
    return lines


def fmt_value(v: Any) -> str:
    return _fmt(v)
