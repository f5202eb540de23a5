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
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster_sim.backup.ignored import effective_key, ignored_paths
from cluster_sim.results import Summary
from cluster_sim.scenario import (
    GENERATIONS,
    Scenario,
    ScenarioError,
    _problems_from_validation,
    apply_overrides,
    read_yaml,
    scenario_from_dict,
)
from cluster_sim.simulation import GENERATION_COST
from cluster_sim.version import sim_version

RUNS_FILE = "runs.parquet"
STUDY_FILE = "study.json"  # how the study was made (versions, command line, files, times, counts)
RESOLVED_FILE = "scenario.resolved.yaml"  # the study's scenario with its fixed overrides
JOURNAL_FILE = "runs.journal.jsonl"
AGGREGATE_FILE = "aggregate.csv"
PLOTS_DIR = "plots"
DEFAULT_METRICS = ["backup_window_s", "hw_snapshots_created", "outcomes.failed", "io_latency_ms.backup_p99"]
CONFIDENCE = 0.95
MAX_RETRIES = 3  # Ray re-runs a task whose worker or node died this many times
ATTEMPTS = 2  # a run that fails or times out is run once more before its error is recorded
LOCK_FILE = ".sweep.lock"  # one sweep at a time writes into a study folder
# [P] Default wall-clock deadline of one run: a floor plus a budget per VM and backup job. One
# generation of the 800-VM scenario takes 5-10 s on one core; the default gives it 1100 s, so only a
# run that hangs (a frozen worker node, a stopped process) reaches it.
RUN_TIMEOUT_BASE_S = 300.0
RUN_TIMEOUT_S_PER_VM_JOB = 1.0
# Runs handed to Ray ahead of the free CPUs. Ray keeps a leased worker busy only while its owner has
# more tasks queued for it; a short queue (CPUs + 2) made every finished run wait for the driver to
# notice and submit the next one, measured 10 % slower on 2 cores [P]
IN_FLIGHT_PER_CPU = 8
IN_FLIGHT_MIN = 64
# Grid paths a study sets some other way.
RESERVED_PATHS = {
    "seed": "seeds are the study's own field: use `seeds:`",
    "name": "the scenario name is not a study axis",
    "backup.generations": "generations are the study's own field: use `generations:`",
}


class StudyError(ScenarioError):
    """A study that cannot run: names the study file, the field path and the reason."""


class StudyRunError(Exception):
    """The study is fine but cannot start (e.g. the Ray cluster at --address cannot be reached)."""


# ----------------------------------------------------------------------------------------------
# the study file
# ----------------------------------------------------------------------------------------------
class StudyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")] | None = None
    description: str | None = None
    scenario: Annotated[str, Field(min_length=1)]
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], Field(min_length=1)]
    seeds: Any = 1  # int N >= 1 or a list of distinct seeds; checked by load_study
    generations: Annotated[list[Literal["ws2008r2", "ws2012", "ws2012r2", "ws2016"]], Field(min_length=1)] | None = None
    metrics: Annotated[list[str], Field(min_length=1)] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    # wall-clock deadline of one run (one point, seed and generation); default: from the run's size
    run_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


# Columns of a run row that come from the summary: dotted name -> kind (int, float, bool, str, json).
def _kind_of(annotation: Any) -> str | type[BaseModel]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _kind_of(args[0])
        return "json"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    return "json"


def _summary_columns(model: type[BaseModel] = Summary, prefix: str = "") -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    for name, info in model.model_fields.items():
        kind = _kind_of(info.annotation)
        if isinstance(kind, type):
            cols += _summary_columns(kind, f"{prefix}{name}.")
        else:
            cols.append((f"{prefix}{name}", kind))
    return cols


# seed and generation are run-key columns already.
SUMMARY_COLUMNS = [(n, k) for n, k in _summary_columns() if n not in ("seed", "generation")]
RUN_COLUMNS = [("node_id", "str"), ("wall_s", "float"), ("finished_at", "float"), ("error", "str"),
               ("valid", "bool"), ("attempts", "int"), ("sim_version", "str")]
METRIC_KINDS = {n: k for n, k in SUMMARY_COLUMNS + [("wall_s", "float")] if k in ("int", "float", "bool")}


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    point: int  # index into StudyPlan.points
    seed: int
    generation: str


@dataclass
class StudyPlan:
    """A checked study: every grid point's scenario is valid."""

    file: Path
    name: str
    scenario_file: Path
    axes: list[str]
    axis_kinds: dict[str, str]
    points: list[dict[str, Any]]
    scenarios: list[Scenario]
    seeds: list[int]
    generations: list[str]
    metrics: list[str]
    fingerprint: str
    description: str | None = None
    run_timeout_s: float | None = None  # the study file's; None: from each run's size
    sim_version: str = field(default_factory=lambda: sim_version())
    base: dict[str, Any] = field(default_factory=dict)  # the scenario's data with the study's overrides
    overrides: dict[str, Any] = field(default_factory=dict)  # the study's fixed overrides
    _duplicates: dict[str, str] | None = field(default=None, repr=False)

    def timeout_s(self, point: int) -> float:
        """The wall-clock deadline of one run at this point."""
        if self.run_timeout_s is not None:
            return self.run_timeout_s
        return default_run_timeout_s(self.scenarios[point])

    def runs(self) -> list[RunSpec]:
        """Every run, seed-major so that an interrupted study has covered every point evenly."""
        return [RunSpec(self.run_id(p, s, g), p, s, g)
                for s in self.seeds for p in range(len(self.points)) for g in self.generations]

    def run_id(self, point: int, seed: int, generation: str) -> str:
        values = sorted((a, _canonical(v)) for a, v in self.points[point].items())
        # the simulator's version is part of the key: --resume after an upgrade runs everything again
        key = json.dumps([self.sim_version, self.fingerprint, values, seed, generation], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def point_cells(self, point: int) -> dict[str, Any]:
        return {a: _cell(self.points[point][a], self.axis_kinds[a]) for a in self.axes}

    def duplicates(self) -> dict[str, str]:
        """Runs whose effective scenario (what their generation reads: cluster_sim/backup/ignored.py)
        and seed equal an earlier run's: run_id -> that earlier run's run_id. They are not run; the
        earlier run's numbers are copied to them."""
        if self._duplicates is None:
            keys = {(p, g): effective_key(self.scenarios[p], g)
                    for p in range(len(self.points)) for g in self.generations}
            first: dict[tuple[str, int], str] = {}
            dup: dict[str, str] = {}
            for spec in self.runs():
                k = (keys[(spec.point, spec.generation)], spec.seed)
                if k in first:
                    dup[spec.run_id] = first[k]
                else:
                    first[k] = spec.run_id
            self._duplicates = dup
        return self._duplicates

    def ignored_axes(self) -> dict[str, list[str]]:
        """generation -> the grid axes it never reads (why some of its runs are identical)."""
        out = {}
        for g in self.generations:
            axes = [a for a in self.axes if a in ignored_paths(g)]
            if axes:
                out[g] = axes
        return out

    def run_size(self, point: int, generation: str) -> float:
        """The work of one run, for the ETA: VMs x backup jobs x the generation's relative cost [P]
        (the measured times of finished runs correct it as the study goes)."""
        sc = self.scenarios[point]
        jobs = len(sc.backup.schedule) if sc.backup and sc.backup.schedule else 1
        return sc.vm_count() * jobs * GENERATION_COST.get(generation, 1)

    @property
    def total_runs(self) -> int:
        return len(self.points) * len(self.seeds) * len(self.generations)

    def columns(self) -> list[tuple[str, str]]:
        """The columns of runs.parquet, in order, with their kinds."""
        return ([("run_id", "str"), ("study", "str")] + [(a, self.axis_kinds[a]) for a in self.axes]
                + [("seed", "int"), ("generation", "str")] + RUN_COLUMNS
                + [("duplicate_of", "str")]  # the run whose numbers this row copies (same effective scenario)
                + SUMMARY_COLUMNS)


def _canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _axis_kind(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


def _cell(value: Any, kind: str) -> Any:
    if kind == "float":
        return float(value)
    if kind == "json":
        return _canonical(value)
    return value


def _norm_path(path: str) -> str:
    """`fleet[0].count` (how scenario errors name fields) -> `fleet.0.count` (how overrides do)."""
    return re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")


def _point_text(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{a}: {_canonical(v)}" for a, v in point.items()) + "}"


def load_study(path: str | Path) -> StudyPlan:
    """Read and check a study file; raise `StudyError` (file, field path, reason) if it cannot run."""
    path = Path(path)
    fname = str(path)
    raw = read_mapping_file(path, "a study is a YAML mapping (study, scenario, grid, seeds, ...)")
    try:
        st = StudyFile.model_validate(raw)
    except ValidationError as err:
        problems = _problems_from_validation(err, StudyFile)
        problems = [(p, r + "; a study has: " + ", ".join(StudyFile.model_fields)
                     if r.startswith("unknown field") else r) for p, r in problems]
        raise StudyError(fname, problems) from None

    problems: list[tuple[str, str]] = []
    # metrics
    for i, m in enumerate(st.metrics):
        if m not in METRIC_KINDS:
            problems.append((f"metrics[{i}]", unknown_metric_reason(m)))
    if len(set(st.metrics)) != len(st.metrics):
        problems.append(("metrics", "a metric is listed twice"))
    # grid paths
    for axis, values in st.grid.items():
        parts = axis.split(".")
        if not axis or any(not p.strip() for p in parts):
            problems.append((f"grid.{axis}", "not a dotted field path (e.g. backup.vms_per_snapshot)"))
        elif axis in RESERVED_PATHS:
            problems.append((f"grid.{axis}", RESERVED_PATHS[axis]))
        canon = [_canonical(v) for v in values]
        if len(set(canon)) != len(canon):
            dup = sorted({c for c in canon if canon.count(c) > 1})
            problems.append((f"grid.{axis}", f"value listed twice: {', '.join(dup)}"))
    if st.generations and len(set(st.generations)) != len(st.generations):
        problems.append(("generations", "a generation is listed twice"))
    if problems:
        raise StudyError(fname, problems)

    # the scenario, with the study's fixed overrides
    scenario_file, base, base_sc = load_base_scenario(path, st.scenario, st.overrides, "a study compares backup runs")
    seeds = parse_seeds(st.seeds, base_sc.seed, fname)

    # every grid point, through the scenario machinery
    axes = list(st.grid)
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*(st.grid[a] for a in axes))]
    scenarios, problems = check_points(base, points, fname)
    if problems:
        raise StudyError(fname, problems)

    fingerprint = hashlib.sha256(_canonical(base).encode()).hexdigest()[:16]
    return StudyPlan(
        file=path, name=st.study or path.stem, scenario_file=scenario_file, axes=axes,
        axis_kinds={a: _axis_kind(st.grid[a]) for a in axes}, points=points, scenarios=scenarios,
        seeds=seeds, generations=list(st.generations or base_sc.backup.generations), metrics=list(st.metrics),
        fingerprint=fingerprint, description=st.description, run_timeout_s=st.run_timeout_s,
        base=base, overrides=dict(st.overrides),
    )


def read_mapping_file(path: Path, what: str, error: type[StudyError] = StudyError) -> dict[str, Any]:
    """A study or plan file's YAML, which must be a mapping (`what` says what it should hold)."""
    try:
        raw = read_yaml(path)
    except ScenarioError as exc:
        raise error(str(path), exc.problems) from None
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise error(str(path), [("", f"{what}; this file is {kind}")])
    return raw


def unknown_metric_reason(m: str) -> str:
    """Why `m` is not a metric, with the nearest known one."""
    near = difflib.get_close_matches(m, list(METRIC_KINDS), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(METRIC_KINDS)}"
    return f"unknown metric {m!r} (a number in summary.json, dotted){hint}"


def load_base_scenario(path: Path, scenario: str, overrides: dict[str, Any], purpose: str,
                       error: type[StudyError] = StudyError) -> tuple[Path, dict[str, Any], Scenario]:
    """The scenario a study (or plan) file names, relative to that file, with its fixed `overrides`:
    (scenario file, the data with the overrides applied, the checked scenario)."""
    fname = str(path)
    scenario_file = path.parent / scenario
    try:
        base = read_yaml(scenario_file)
        scenario_from_dict(base, str(scenario_file))
    except ScenarioError as exc:
        raise error(fname, [("scenario", str(exc))]) from None
    try:
        base = apply_overrides(base, list(overrides.items()), fname)
    except ScenarioError as exc:
        raise error(fname, [(f"overrides.{p}" if p else "overrides", r) for p, r in exc.problems]) from None
    try:
        base_sc = scenario_from_dict(base, fname)
    except ScenarioError as exc:
        raise error(fname, [(f"overrides: {_norm_path(p)}" if p else "overrides", r)
                            for p, r in exc.problems]) from None
    if base_sc.backup is None:
        raise error(fname, [("scenario", f"{scenario_file} has no backup section; {purpose}")])
    return scenario_file, base, base_sc


def parse_seeds(value: Any, first: int, fname: str, error: type[StudyError] = StudyError) -> list[int]:
    """`seeds:` of a study or plan file: a count N (the scenario's seed .. seed+N-1) or a list."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 100_000:
            raise error(fname, [("seeds", f"{value} runs per point: give 1 to 100000 (or a list of seeds)")])
        return [first + i for i in range(value)]
    if isinstance(value, list) and value:
        bad = [i for i, s in enumerate(value) if not (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63)]
        if bad:
            raise error(fname, [(f"seeds[{bad[0]}]", f"{value[bad[0]]!r} is not a seed (an integer >= 0)")])
        if len(set(value)) != len(value):
            raise error(fname, [("seeds", "a seed is listed twice")])
        return list(value)
    raise error(fname, [("seeds", f"expected a number of seeds (>= 1) or a list of seeds, got {value!r}")])


def check_points(base: dict[str, Any], points: list[dict[str, Any]], fname: str,
                 prefix: str = "grid") -> tuple[list[Scenario], list[tuple[str, str]]]:
    """Apply every point (dotted path -> value) to the scenario data and validate it: the scenarios,
    and the problems (at most about 8), each blamed on `<prefix>.<path>` where a path is at fault."""
    scenarios: list[Scenario] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for point in points:
        try:
            data = apply_overrides(base, list(point.items()), fname)
            scenarios.append(scenario_from_dict(data, fname))
            continue
        except ScenarioError as exc:
            found = exc.problems
        for p, reason in found:
            where, why = _blame(point, _norm_path(p) if p else "", reason, prefix)
            if (where, why) not in seen:
                seen.add((where, why))
                problems.append((where, why))
        if len(problems) >= 8:
            break
    return scenarios, problems


def default_run_timeout_s(sc: Scenario) -> float:
    """[P] RUN_TIMEOUT_BASE_S + RUN_TIMEOUT_S_PER_VM_JOB x VMs x backup jobs (see the constants)."""
    jobs = len(sc.backup.schedule) if sc.backup and sc.backup.schedule else 1
    return RUN_TIMEOUT_BASE_S + RUN_TIMEOUT_S_PER_VM_JOB * sc.vm_count() * jobs


def _blame(point: dict[str, Any], problem_path: str, reason: str, prefix: str = "grid") -> tuple[str, str]:
    """Attribute a scenario problem at one grid point to the axis it comes from, if any."""
    for axis, value in point.items():
        if (problem_path == axis or problem_path.startswith(axis + ".") or axis.startswith(problem_path + ".")
                or (not problem_path and axis in reason)):
            if reason.startswith("unknown field"):
                return f"{prefix}.{axis}", f"{reason} (at scenario field {problem_path})" if problem_path != axis else reason
            if reason.endswith("is a value, not a section") or "is not an index of" in reason:
                return f"{prefix}.{axis}", reason
            return f"{prefix}.{axis}", f"value {_canonical(value)}: {reason}"
    return prefix, f"at point {_point_text(point)}: scenario field {problem_path or '(top)'}: {reason}"


# ----------------------------------------------------------------------------------------------
# one run (a Ray task, or in process)
# ----------------------------------------------------------------------------------------------
def _node_id() -> str:
    ray = sys.modules.get("ray")  # a Ray worker has imported it; a serial run need not
    try:
        if ray is not None and ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        pass
    return "local"


def flatten_summary(summary: Summary) -> dict[str, Any]:
    d = summary.model_dump(mode="json")
    row: dict[str, Any] = {}
    for name, kind in SUMMARY_COLUMNS:
        v: Any = d
        for part in name.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        row[name] = _canonical(v) if kind == "json" else v
    return row


_HEAP_FROZEN = False


def _freeze_long_lived_heap() -> None:
    """Once per process: collect, then move every object alive now (modules, Ray's worker state) out
    of the cyclic collector's reach (gc.freeze). A worker runs many short simulations; without this,
    each full collection (gen 2) rescans the whole process heap: measured 31 ms in a Ray worker
    (about 90,000 objects) against runs of 60 ms. A 48-run study (benchmarks/sweep_bench.py) ran
    6 % faster with it, serially and on Ray. Objects a run allocates are collected as usual; what
    was alive at the freeze is never collected by the cycle collector (a long-lived process's
    modules and caches)."""
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        gc.collect()
        gc.freeze()
        _HEAP_FROZEN = True


def execute_run(spec: RunSpec, scenario: Scenario, study: str, cells: dict[str, Any],
                board: Any = None, attempt: int = 1) -> dict[str, Any]:
    """Run one (point, seed, generation) on the local node backend; never raises for a run's error.
    `board` (a Ray actor, see _StartBoard) is told when the run starts, so that the driver can time it."""
    from cluster_sim.simulation import run as run_sim

    if board is not None:
        board.started.remote(spec.run_id, attempt, os.getpid())
    _freeze_long_lived_heap()
    t0 = time.perf_counter()
    row: dict[str, Any] = {"run_id": spec.run_id, "study": study, **cells, "seed": spec.seed,
                           "generation": spec.generation, "node_id": _node_id(), "attempts": attempt,
                           "sim_version": sim_version()}
    try:
        result = run_sim(scenario, backend="local", seed=spec.seed, generations=[spec.generation])
        row.update(flatten_summary(result.generations[0].summary))
        row["error"] = None
        row["valid"] = bool(row.get("audit.ok"))  # an audit-failed run is recorded, not averaged
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, the study goes on
        row["error"] = _error_text(exc)
        row["valid"] = False
    row["wall_s"] = time.perf_counter() - t0
    row["finished_at"] = time.time()
    return row


class RunTimeout(BaseException):
    """A run passed its wall-clock deadline (a BaseException: the run's own `except Exception` must
    not record it as the run's error)."""


def _error_row(plan: StudyPlan, spec: RunSpec, attempt: int, error: str) -> dict[str, Any]:
    return {"run_id": spec.run_id, "study": plan.name, **plan.point_cells(spec.point), "seed": spec.seed,
            "generation": spec.generation, "node_id": None, "wall_s": None, "finished_at": time.time(),
            "error": error, "valid": False, "attempts": attempt, "sim_version": None}


def _timeout_text(waited_s: float, deadline_s: float) -> str:
    return (f"RunTimeout: no result after {waited_s:.0f} s (deadline {deadline_s:g} s: run_timeout_s in the "
            f"study file or --run-timeout)")


def _serial_attempt(plan: StudyPlan, spec: RunSpec, attempt: int) -> dict[str, Any]:
    """One attempt in this process, cut at its deadline (SIGALRM; only in the main thread)."""
    import signal
    import threading

    deadline = plan.timeout_s(spec.point)
    cells = plan.point_cells(spec.point)
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return execute_run(spec, plan.scenarios[spec.point], plan.name, cells, attempt=attempt)

    def expire(_signum: int, _frame: Any) -> None:
        raise RunTimeout

    t0 = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        return execute_run(spec, plan.scenarios[spec.point], plan.name, cells, attempt=attempt)
    except RunTimeout:
        return _error_row(plan, spec, attempt, _timeout_text(time.monotonic() - t0, deadline))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_ray(num_cpus: int | None, address: str | None, error: type[Exception]) -> Any:
    """A RaySession for a study or a plan (the address checked first: fast, and an authentication
    failure explained); a Ray that cannot be started or joined raises `error` saying why."""
    from cluster_sim.simulation import RaySession, RayUnavailable

    where = f"--address {address}" if address else "ray.init"
    try:
        return RaySession(num_cpus=num_cpus or os.cpu_count() or 1, address=address)
    except RayUnavailable as exc:
        raise error(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - ray.init raises ConnectionError, ValueError, RuntimeError...
        raise error(f"{where}: cannot start or join Ray: {_error_text(exc)}") from None


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > 2000:
        text = text[:2000] + "..."
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno})"
    return text


# ----------------------------------------------------------------------------------------------
# runs.parquet: a journal of finished rows, materialised atomically as Parquet
# ----------------------------------------------------------------------------------------------
_ARROW_TYPES = {"int": "int64", "float": "float64", "bool": "bool_", "str": "string", "json": "string"}


def _arrow_schema(columns: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, _ARROW_TYPES[k])()) for n, k in columns])


def _coerce(value: Any, kind: str) -> Any:
    if value is None:
        return None
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        if kind == "bool":
            return bool(value)
        if kind in ("str", "json"):
            return value if isinstance(value, str) else _canonical(value)
    except (TypeError, ValueError):
        return None
    return value


def arrow_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """The rows as a pyarrow Table with the columns' types (what runs.parquet holds)."""
    import pyarrow as pa

    schema = _arrow_schema(columns)
    arrays = [pa.array([_coerce(r.get(n), k) for r in rows], type=schema.field(n).type) for n, k in columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(path: Path, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(arrow_table(rows, columns), tmp)
    os.replace(tmp, path)


def read_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows recorded in DIR: runs.parquet plus any journal rows not yet in it (by run_id)."""
    out_dir = Path(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    pq_path = out_dir / RUNS_FILE
    if pq_path.is_file():
        import pyarrow.parquet as pq

        try:
            for r in pq.read_table(pq_path).to_pylist():
                rows[r["run_id"]] = r
        except Exception:  # noqa: BLE001 - a damaged file: the journal still has the rows
            pass
    journal = out_dir / JOURNAL_FILE
    if journal.is_file():
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption
                if isinstance(r, dict) and "run_id" in r:
                    rows[r["run_id"]] = r
    return list(rows.values())


class RunStore:
    """Rows of one study: appended to a journal as they finish, rewritten as Parquet now and then."""

    def __init__(self, out_dir: Path, plan: StudyPlan, flush_every_s: float = 2.0):
        self.out_dir = out_dir
        self.plan = plan
        self.columns = plan.columns()
        self.rows: dict[str, dict[str, Any]] = {}
        self.flush_every_s = flush_every_s
        self._last_flush = 0.0
        self._journal = None
        by_point = sorted(plan.runs(), key=lambda s: (s.point, plan.generations.index(s.generation), s.seed))
        self._order = {s.run_id: i for i, s in enumerate(by_point)}

    def open(self, keep: Iterable[dict[str, Any]]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for r in keep:
            self.rows[r["run_id"]] = r
        self.flush()  # runs.parquet now holds exactly the kept rows; the journal starts empty
        self._journal = open(self.out_dir / JOURNAL_FILE, "w", encoding="utf-8")  # noqa: SIM115

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["run_id"]] = row
        if self._journal is not None:
            self._journal.write(json.dumps(row, default=str) + "\n")
            self._journal.flush()
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def ordered(self) -> list[dict[str, Any]]:
        """Rows in study order: point, generation, seed."""
        return sorted(self.rows.values(), key=lambda r: self._order.get(r["run_id"], len(self._order)))

    def flush(self) -> None:
        write_parquet(self.out_dir / RUNS_FILE, self.ordered(), self.columns)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
            (self.out_dir / JOURNAL_FILE).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# running a study
# ----------------------------------------------------------------------------------------------
@dataclass
class StudyProgress:
    total: int
    ok: int = 0
    failed: int = 0  # runs with an error (both attempts failed or timed out)
    invalid: int = 0  # runs whose auditor failed: recorded, left out of means and intervals
    running: int = 0
    skipped: int = 0  # recorded before this invocation (--resume)
    retried: int = 0  # runs attempted a second time (the first failed or timed out)
    identical: int = 0  # runs identical to another run (same effective scenario and seed): not run
    copied: int = 0  # ... whose numbers have been copied from that run so far
    eta_s: float | None = None  # wall seconds left, from the runs' sizes and the measured times

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.invalid

    def count(self, row: dict[str, Any]) -> None:
        if row.get("error"):
            self.failed += 1
        elif row.get("valid") is False or row.get("audit.ok") is False:
            self.invalid += 1
        else:
            self.ok += 1


ProgressFn = Callable[[StudyProgress, "dict[str, Any] | None"], None]  # (counts, the row just finished)


class Eta:
    """Wall time left in a study, from the work left and the pace so far. Each run's work is its size
    (`StudyPlan.run_size`: VMs x jobs x a generation's guessed cost), corrected per generation by what
    the finished runs measured (their wall seconds per unit of size); the pace is the wall seconds of
    finished runs per second elapsed (the parallelism actually got). Runs identical to another cost
    nothing. Before any run has finished there is no estimate."""

    def __init__(self, sizes: dict[str, tuple[float, str]]):
        self.left = dict(sizes)  # run_id -> (size, generation), not finished yet
        self.size_done: dict[str, float] = {}
        self.wall_done: dict[str, float] = {}

    def finished(self, run_id: str, wall_s: float | None) -> None:
        size, gen = self.left.pop(run_id, (0.0, ""))
        if wall_s is not None and wall_s > 0 and size > 0:
            self.size_done[gen] = self.size_done.get(gen, 0.0) + size
            self.wall_done[gen] = self.wall_done.get(gen, 0.0) + wall_s

    def eta_s(self, elapsed_s: float) -> float | None:
        wall = sum(self.wall_done.values())
        if wall <= 0 or elapsed_s <= 0:
            return None
        overall = wall / sum(self.size_done.values())
        work = sum(size * (self.wall_done[g] / self.size_done[g] if g in self.size_done else overall)
                   for size, g in self.left.values())
        return work / (wall / elapsed_s)
StartFn = Callable[[RunSpec, int, int], None]  # (run, attempt, PID of the process running it)


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


def is_valid(row: dict[str, Any]) -> bool:
    """A run that ended (no error) with a clean audit: it counts in means and intervals."""
    if row.get("error"):
        return False
    valid = row.get("valid")
    return bool(row.get("audit.ok")) if valid is None else bool(valid)


def clear_outputs(out_dir: Path) -> None:
    """Remove what a previous study wrote into DIR (only our files)."""
    for name in (RUNS_FILE, JOURNAL_FILE, RUNS_FILE + ".tmp", AGGREGATE_FILE, STUDY_FILE, RESOLVED_FILE):
        (out_dir / name).unlink(missing_ok=True)
    plots = out_dir / PLOTS_DIR
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()


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


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class StudyLocked(StudyRunError):
    """Another sweep is writing into the same study folder."""


class StudyLock:
    """One sweep at a time per study folder: an exclusive flock on DIR/.sweep.lock, which holds who
    has it (PID, host, start). The kernel drops the lock when its process dies, so the lock of a
    killed sweep is taken over by the next one. (flock, not the filelock package: filelock truncates
    the file when it tries, which would erase the holder's name that the refusal shows.)"""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock or raise StudyLocked; returns who held it before if that sweep is gone."""
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise StudyLocked(f"{self.path.parent}: another sweep is writing into this folder "
                                  f"({_holder_text(holder)}); wait for it to end, or give another --out") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it between our open and our lock: take the new one
                os.close(fd)
                continue
            before = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.write(fd, (json.dumps(me) + "\n").encode())
            self.fd = fd
            return _holder_text(before) if before else None

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # (while still holding it: see acquire's inode check)
            os.close(self.fd)
            self.fd = None


def _holder_text(text: str) -> str:
    try:
        h = json.loads(text)
        return f"PID {h['pid']} on {h['host']}, started {h['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


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


class _StartBoard:
    """A Ray actor on the driver's node: each run tells it when it starts (run id, attempt, PID), and
    the driver reads the notes to time each run from its real start (not from when it was queued)."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, int, int]] = []

    def started(self, run_id: str, attempt: int, pid: int) -> None:
        self.notes.append((run_id, attempt, pid))

    def take(self) -> list[tuple[str, int, int]]:
        notes, self.notes = self.notes, []
        return notes


def _start_board(ray: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(num_cpus=0, max_restarts=0)(_StartBoard).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote()


def _run_on_ray(ray: Any, plan: StudyPlan, todo: list[RunSpec], state: StudyProgress,
                finished: Callable[[dict[str, Any]], None], progress: ProgressFn | None,
                on_start: StartFn | None = None) -> int:
    """Keep the cluster's CPUs busy (plus a queue) until every run has a row. A run is timed from
    its start; past its deadline it is cancelled; a run that failed or timed out is submitted once
    more, then recorded with its error."""
    inflight: dict[Any, tuple[RunSpec, int]] = {}  # ref -> (run, attempt)
    started: dict[Any, float] = {}  # ref -> when it (last) started running
    board = None
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(execute_run)
        board = _start_board(ray)
        scenario_refs: dict[int, Any] = {}
        pending: deque[tuple[RunSpec, int]] = deque((s, 1) for s in todo)
        cpus, checked = _cluster_cpus(ray), time.monotonic()
        read_board = 0.0

        def settle(ref: Any, row: dict[str, Any]) -> None:
            spec, attempt = inflight.pop(ref)
            started.pop(ref, None)
            if row.get("error") is None and row.get("sim_version") != plan.sim_version:
                row = {**row, "error": f"run by simulator {row.get('sim_version')}, but this study's is "
                                       f"{plan.sim_version}: install the same cluster_sim on every Ray node",
                       "valid": False}
            if row.get("error") and attempt < ATTEMPTS:
                state.retried += 1
                pending.appendleft((spec, attempt + 1))
                return
            state.running = min(len(inflight), cpus)
            finished(row)

        while pending or inflight:
            if time.monotonic() - checked > 2.0:  # nodes may join or leave
                cpus, checked = _cluster_cpus(ray), time.monotonic()
            while pending and len(inflight) < max(IN_FLIGHT_PER_CPU * cpus, IN_FLIGHT_MIN):
                spec, attempt = pending.popleft()
                if spec.point not in scenario_refs:
                    scenario_refs[spec.point] = ray.put(plan.scenarios[spec.point])
                ref = task.remote(spec, scenario_refs[spec.point], plan.name, plan.point_cells(spec.point),
                                  board, attempt)
                inflight[ref] = (spec, attempt)
            running = min(len(inflight), cpus)
            if running != state.running:
                state.running = running
                if progress:
                    progress(state, None)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if time.monotonic() - read_board >= 0.5 or not ready:
                read_board = time.monotonic()
                by_key = {(s.run_id, a): ref for ref, (s, a) in inflight.items()}
                try:
                    notes = ray.get(board.take.remote(), timeout=60)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError,
                        getattr(ray.exceptions, "ActorUnavailableError", ray.exceptions.RayActorError)):
                    # the board went with its node (or hangs): a new one; the runs whose start
                    # notes it held are timed from now (never cut early, at worst a little late)
                    board = _start_board(ray)
                    notes = [(s.run_id, a, 0) for s, a in inflight.values()
                             if not any(inflight.get(r) == (s, a) for r in started)]
                for run_id, attempt, pid in notes:
                    ref = by_key.get((run_id, attempt))
                    if ref is not None:
                        started[ref] = time.monotonic()  # (a task Ray retried starts its clock again)
                        if on_start:
                            on_start(inflight[ref][0], attempt, pid)
                now = time.monotonic()
                for ref, t0 in list(started.items()):
                    spec, attempt = inflight[ref]
                    if now - t0 > plan.timeout_s(spec.point):
                        try:
                            ray.cancel(ref, force=True)
                        except Exception:  # noqa: BLE001 - its node may be gone; the run is dropped anyway
                            pass
                        settle(ref, _error_row(plan, spec, attempt, _timeout_text(now - t0, plan.timeout_s(spec.point))))
            if not ready:
                continue
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
            for ref in ready:
                spec, attempt = inflight[ref]
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task's retries are spent (node/worker died)
                    row = _error_row(plan, spec, attempt, _error_text(exc))
                settle(ref, row)
        return cpus
    finally:
        for ref in inflight:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if board is not None:
            try:
                ray.kill(board)
            except Exception:  # noqa: BLE001
                pass


def _cluster_cpus(ray: Any) -> int:
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    except Exception:  # noqa: BLE001
        return 1


# ----------------------------------------------------------------------------------------------
# aggregation: mean and Student-t confidence interval over seeds
# ----------------------------------------------------------------------------------------------
def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(2, df - 1, 2):  # 1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3)
            term *= k / (k + 1) * c2
            total += term
        return 2 / math.pi * (theta + s * c * total)
    term, total = 1.0, 1.0
    for k in range(1, df - 2, 2):  # 1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2)
        term *= k / (k + 1) * c2
        total += term
    return s * total


@lru_cache(maxsize=4096)
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value: P(|T_df| < t) = confidence (t_{(1+c)/2, df})."""
    if df < 1:
        raise ValueError("t_critical needs df >= 1")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    sd: float
    low: float
    high: float


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean and Student-t interval; with fewer than two values the interval is NaN."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(xs)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    if n == 1:
        return MeanCI(1, xs[0], math.nan, math.nan, math.nan)
    if min(xs) == max(xs):  # no spread: exactly that value (no rounding noise in the interval)
        return MeanCI(n, xs[0], 0.0, xs[0], xs[0])
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_critical(n - 1, confidence) * sd / math.sqrt(n)
    return MeanCI(n, mean, sd, mean - half, mean + half)


def aggregate(plan: StudyPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (point, generation): axes, generation, runs (valid ones), failed (errors), invalid
    (audit failed), and per metric `<m>.mean`, `<m>.ci95_low`, `<m>.ci95_high`, `<m>.sd`, `<m>.n` over the
    seeds of the valid runs: a failed or invalid run's numbers (e.g. a window cut at run.until_s) would
    pass for results."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (_canonical([_coerce(r.get(a), plan.axis_kinds[a]) for a in plan.axes]), r.get("generation"))
        by_key.setdefault(key, []).append(r)
    out = []
    for p in range(len(plan.points)):
        cells = plan.point_cells(p)
        for g in plan.generations:
            group = by_key.get((_canonical([cells[a] for a in plan.axes]), g), [])
            ok = [r for r in group if is_valid(r)]
            failed = sum(1 for r in group if r.get("error"))
            rec: dict[str, Any] = {**cells, "generation": g, "runs": len(ok), "failed": failed,
                                   "invalid": len(group) - len(ok) - failed}
            for m in plan.metrics:
                ci = mean_ci(r.get(m) for r in ok)
                rec[f"{m}.mean"] = ci.mean
                rec[f"{m}.ci95_low"] = ci.low
                rec[f"{m}.ci95_high"] = ci.high
                rec[f"{m}.sd"] = ci.sd
                rec[f"{m}.n"] = ci.n
                if is_duration(m):  # the same in hours, as `run` shows durations
                    for k in HOUR_COLUMNS:
                        rec[f"{m}.{k}_h"] = rec[f"{m}.{k}"] / 3600
            out.append(rec)
    return out


HOUR_COLUMNS = ("mean", "ci95_low", "ci95_high")


def is_duration(metric: str) -> bool:
    """A metric in simulated seconds (its name has the unit `s`: backup_window_s, redirected_s_total),
    shown in hours; `wall_s` is the run's own wall-clock time and stays in seconds."""
    return metric != "wall_s" and "s" in metric.rsplit(".", 1)[-1].split("_")[1:]


def metric_label(metric: str) -> str:
    """A metric's name for a table or an axis: durations in hours (`backup_window (h)`)."""
    if not is_duration(metric):
        return metric
    head, _, last = metric.rpartition(".")
    name = "_".join(part for i, part in enumerate(last.split("_")) if not (i and part == "s"))
    return f"{head + '.' if head else ''}{name} (h)"


def write_aggregate_csv(path: Path, plan: StudyPlan, agg: list[dict[str, Any]]) -> None:
    import csv

    fields = [*plan.axes, "generation", "runs", "failed", "invalid"]
    for m in plan.metrics:
        fields += [f"{m}.mean", f"{m}.ci95_low", f"{m}.ci95_high", f"{m}.sd", f"{m}.n"]
        if is_duration(m):
            fields += [f"{m}.{k}_h" for k in HOUR_COLUMNS]

    def fmt(v: Any) -> Any:
        if isinstance(v, float):
            return "" if math.isnan(v) else repr(round(v, 6))
        return "" if v is None else v

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for rec in agg:
            w.writerow({k: fmt(rec.get(k)) for k in fields})
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# plots: each metric against each grid axis, one line per generation, CI bands
# ----------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_plots(plan: StudyPlan, agg: list[dict[str, Any]], folder: Path) -> list[Path]:
    """`plots/<metric>--<axis>.png`; with several axes, one panel per combination of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {g: f"C{i}" for i, g in enumerate(GENERATIONS)}
    for axis in plan.axes:
        others = [a for a in plan.axes if a != axis]
        xs_raw = list(dict.fromkeys(plan.point_cells(p)[axis] for p in range(len(plan.points))))
        numeric = plan.axis_kinds[axis] in ("int", "float")
        xpos = {x: (x if numeric else i) for i, x in enumerate(xs_raw)}
        logx = numeric and min(xs_raw) > 0 and max(xs_raw) / min(xs_raw) >= 50
        facets = list(dict.fromkeys(tuple(rec[a] for a in others) for rec in agg))
        for m in plan.metrics:
            scale = 3600.0 if is_duration(m) else 1.0  # durations in hours
            lowest = 0.0
            ncols = min(3, len(facets))
            nrows = math.ceil(len(facets) / ncols)
            fig_w, fig_h = max(7.0, 4.6 * ncols), 3.4 * nrows + 0.7
            fig, axs = plt.subplots(nrows, ncols, figsize=(fig_w, fig_h), squeeze=False, sharey=True)
            fig.subplots_adjust(left=0.85 / fig_w, right=1 - 0.2 / fig_w, bottom=0.6 / fig_h, top=1 - 0.75 / fig_h,
                                wspace=0.12, hspace=0.5)
            for k, facet in enumerate(facets):
                ax = axs[k // ncols][k % ncols]
                lines = 0
                for g in plan.generations:
                    pts = [rec for rec in agg if rec["generation"] == g and tuple(rec[a] for a in others) == facet]
                    pts.sort(key=lambda rec: xs_raw.index(rec[axis]))
                    x = [xpos[rec[axis]] for rec in pts]
                    y = [rec[f"{m}.mean"] / scale for rec in pts]
                    lo = [rec[f"{m}.ci95_low"] / scale for rec in pts]
                    hi = [rec[f"{m}.ci95_high"] / scale for rec in pts]
                    if all(math.isnan(v) for v in y):
                        continue
                    ax.plot(x, y, marker="o", color=colors.get(g), label=g)
                    ax.fill_between(x, lo, hi, color=colors.get(g), alpha=0.2, linewidth=0)
                    lowest = min([lowest, *(v for v in y + lo if not math.isnan(v))])
                    lines += 1
                if logx:
                    ax.set_xscale("log")
                if numeric and len(xs_raw) <= 12:
                    ax.set_xticks(xs_raw, [f"{v:g}" for v in xs_raw])
                    ax.minorticks_off()
                if not numeric:
                    ax.set_xticks(range(len(xs_raw)), [str(v) for v in xs_raw], rotation=30, ha="right")
                ax.set_xlabel(axis)
                if k % ncols == 0:
                    ax.set_ylabel(metric_label(m))
                if others:
                    ax.set_title(", ".join(f"{a}={v}" for a, v in zip(others, facet, strict=True)), fontsize=9)
                ax.grid(True, alpha=0.3)
                if lines:
                    ax.legend(fontsize=8)
                else:
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
            for k in range(len(facets), nrows * ncols):
                axs[k // ncols][k % ncols].set_visible(False)
            if lowest >= 0:  # the y axis starts at zero: a 1 % difference looks like one (the axes share y)
                axs[0][0].set_ylim(bottom=0)
            fig.suptitle(f"{plan.name}: {metric_label(m)} vs {axis}\n(mean and {CONFIDENCE:.0%} CI over "
                         f"{len(plan.seeds)} seeds; the y axis starts at 0)", fontsize=10)
            target = folder / f"{_safe(m)}--{_safe(axis)}.png"
            fig.savefig(target, dpi=90)
            plt.close(fig)
            written.append(target)
    return written


# ----------------------------------------------------------------------------------------------
# in Python: `cluster_sim.sweep(study)` -> the runs table, as Mesa's batch_run
# ----------------------------------------------------------------------------------------------
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


class _CallableModule(types.ModuleType):
    """`cluster_sim.sweep` is this module and, called, `run_table`: `cluster_sim.sweep("study.yaml")`."""

    def __call__(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return run_table(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
