"""The study file and its checks: `load_study` reads a study file into a `StudyPlan` (every grid
point's scenario valid) or raises `StudyError` naming the file, the field path and the reason."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster_sim import version
from cluster_sim.backup.ignored import effective_key, ignored_paths
from cluster_sim.scenario import (
    Generation,
    Scenario,
    _problems_from_validation,
)
from cluster_sim.studies.columns import (
    METRIC_KINDS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    _axis_kind,
    _canonical,
    _cell,
    unknown_metric_reason,
)
from cluster_sim.studies.errors import StudyError
from cluster_sim.studies.inputs import check_points, load_base_scenario, parse_seeds, read_mapping_file

DEFAULT_METRICS = ["backup_window_s", "hw_snapshots_created", "outcomes.failed", "io_latency_ms.backup_p99"]
# [P] Default wall-clock deadline of one run: a floor plus a budget per VM and backup job. One
# generation of the 800-VM scenario takes 5-10 s on one core; the default gives it 1100 s, so only a
# run that hangs (a frozen worker node, a stopped process) reaches it.
RUN_TIMEOUT_BASE_S = 300.0
RUN_TIMEOUT_S_PER_VM_JOB = 1.0
# Grid paths a study sets some other way.
RESERVED_PATHS = {
    "seed": "seeds are the study's own field: use `seeds:`",
    "name": "the scenario name is not a study axis",
    "backup.generations": "generations are the study's own field: use `generations:`",
}


class StudyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")] | None = None
    description: str | None = None
    scenario: Annotated[str, Field(min_length=1)]
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], Field(min_length=1)]
    seeds: Any = 1  # int N >= 1 or a list of distinct seeds; checked by load_study
    generations: Annotated[list[Generation], Field(min_length=1)] | None = None
    metrics: Annotated[list[str], Field(min_length=1)] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    # wall-clock deadline of one run (one point, seed and generation); default: from the run's size
    run_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


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
    sim_version: str = field(default_factory=lambda: version.sim_version())
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
            axes = [a for a in self.axes if all(a in ignored_paths(g, sc) for sc in self.scenarios)]
            if axes:
                out[g] = axes
        return out

    def run_size(self, point: int, generation: str) -> float:
        """The work of one run, for the ETA: backup jobs x the generation's cost at the scenario's size
        (`registry.cost_of`; a VM a millisecond without a backup) [P] (the measured times of finished
        runs correct it as the study goes)."""
        sc = self.scenarios[point]
        jobs = len(sc.backup.schedule) if sc.backup and sc.backup.schedule else 1
        from cluster_sim.backup.registry import cost_of

        return jobs * (cost_of(generation, sc.vm_count(), sc.cluster.nodes) or float(sc.vm_count()))

    @property
    def total_runs(self) -> int:
        return len(self.points) * len(self.seeds) * len(self.generations)

    def columns(self) -> list[tuple[str, str]]:
        """The columns of runs.parquet, in order, with their kinds."""
        return ([("run_id", "str"), ("study", "str")] + [(a, self.axis_kinds[a]) for a in self.axes]
                + [("seed", "int"), ("generation", "str")] + RUN_COLUMNS
                + [("duplicate_of", "str")]  # the run whose numbers this row copies (same effective scenario)
                + SUMMARY_COLUMNS)


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


def default_run_timeout_s(sc: Scenario) -> float:
    """[P] RUN_TIMEOUT_BASE_S + RUN_TIMEOUT_S_PER_VM_JOB x VMs x backup jobs (see the constants)."""
    jobs = len(sc.backup.schedule) if sc.backup and sc.backup.schedule else 1
    return RUN_TIMEOUT_BASE_S + RUN_TIMEOUT_S_PER_VM_JOB * sc.vm_count() * jobs
