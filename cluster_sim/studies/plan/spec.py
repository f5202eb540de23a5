"""The plan file and its checks: `load_plan` reads a plan file into a `PlanSpec` (each domain's
bounds and choices applied to the scenario and validated, as a study's grid points are) or raises
`PlanError` naming the plan file, the field path, the value and the reason."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from cluster_sim.scenario import (
    Generation,
    Scenario,
    _problems_from_validation,
    apply_overrides,
    scenario_from_dict,
)
from cluster_sim.studies.columns import (
    _canonical,
)
from cluster_sim.studies.errors import StudyError
from cluster_sim.studies.inputs import check_points, load_base_scenario, parse_seeds, read_mapping_file
from cluster_sim.studies.plan.domains import (
    _MISSING,
    Constraint,
    Domain,
    Objective,
    _parse_domain,
    _parse_objective,
    _Strict,
    _value_at,
    parse_constraint,
)

# Search paths a plan sets some other way.
RESERVED_PATHS = {
    "seed": "seeds are the plan's own field: use `seeds:`",
    "name": "the scenario name is not a setting",
    "backup.generations": "the generation is the plan's own field: use `generations:`",
}


class PlanError(StudyError):
    """A plan that cannot run: names the plan file, the field path, the value and the reason."""


class PlanRunError(Exception):
    """The plan is fine but cannot start (Ray unreachable, DIR holds another plan's trials)."""


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
